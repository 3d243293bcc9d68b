"""The `st` command line: thin typer commands over the library API (parse → one call → render)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from st_cli import __version__, render
from st_cli.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, StError

# transformers' own progress bars and advice would drown st's output; read when it is first imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Assemble, inspect, run and validate sentence-embedding models (sentence-transformers folder layout).",
)

# Option spellings shared by every command.
ModelArg = Annotated[str, typer.Argument(help="Model folder, Hub id, or package:pkg/dir.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document on stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
TrustOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow custom module code stored in the model folder to run.")
]


@contextmanager
def user_errors() -> Iterator[None]:
    """StError → one line on stderr and its exit code; anything else → exit 3 (ST_DEBUG=1 re-raises)."""
    try:
        yield
    except StError as e:
        if os.environ.get("ST_DEBUG"):
            raise
        render.error(str(e))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        render.error("interrupted")
        raise typer.Exit(130) from None
    except Exception as e:
        if os.environ.get("ST_DEBUG"):
            raise
        render.error(f"internal error: {type(e).__name__}: {e} (re-run with ST_DEBUG=1 for a traceback)")
        raise typer.Exit(EXIT_INTERNAL) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"st {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Assemble, inspect, run and validate sentence-embedding models (sentence-transformers folder layout)."""


@app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="The YAML recipe.", show_default=False)],
    *,
    output: Annotated[Path, typer.Option("--output", "-o", help="The model folder to write.", show_default=False)],
    force: ForceOpt = False,
    format: Annotated[
        str,
        typer.Option(
            "--format", help="portable: loads in sentence-transformers 2.2–6.x and TEI; st6: what ST 6.2 writes."
        ),
    ] = "portable",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe value, e.g. --set modules[2].out_features=128 (repeatable)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a model folder from a recipe.

    The folder is written beside OUTPUT under a temporary name and renamed at the end, so a
    failed build leaves nothing behind; an existing OUTPUT is replaced only with --force.

    Examples:
      st build recipes/minilm.yaml -o out/minilm
      st build recipes/minilm-dense-prompts.yaml -o out/m256 --set modules[2].out_features=128 --force
    """
    from st_cli.model import build as build_folder

    if format not in ("portable", "st6"):
        render.error(f"--format: expected portable or st6, got {format!r}")
        raise typer.Exit(EXIT_BAD_INPUT)
    with user_errors():
        model, folder = build_folder(recipe, output, format=format, force=force, overrides=set_ or [])  # type: ignore[arg-type]
    untrained = [f"{i}:{type(m).__name__}" for i, m in enumerate(model.stack) if m.untrained]
    if untrained:
        names = ", ".join(untrained)
        render.warning(
            f"untrained modules ({names}): freshly initialised weights; fine-tune before using the embeddings"
        )
    summary = {
        "output": str(folder),
        "format": format,
        "modules": [type(m).__name__ for m in model.stack],
        "dimension": model.get_sentence_embedding_dimension(),
        "max_seq_length": model.get_max_seq_length(),
        "untrained_modules": untrained,
    }
    if json_out:
        render.print_json(summary)
    else:
        stack = " → ".join(summary["modules"])  # type: ignore[arg-type]
        render.info(f"built {folder} ({format}): {stack}, dimension {summary['dimension']}")


def main() -> None:
    app()
