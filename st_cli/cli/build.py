"""`st build`: a recipe → a model folder."""

from pathlib import Path
from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.typer_app import ForceOpt, JsonOpt, QuietOpt, app, user_errors
from st_cli.errors import EXIT_BAD_INPUT


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
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a recipe value, e.g. --set modules[2].out_features=128 (repeatable).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build a model folder from a recipe.

    The folder is written beside OUTPUT under a temporary name and renamed at the end, so a
    failed build leaves nothing behind; an existing OUTPUT is replaced only with --force.

    Examples:
      st build recipes/minilm.yaml -o out/minilm
      st build recipes/minilm-dense-prompts.yaml -o out/m256 \\
          --set modules[2].out_features=128 --force
    """
    from st_cli.model.model import build as build_folder
    from st_cli.threads import thread_count

    if format not in ("portable", "st6"):
        render.error(f"--format: expected portable or st6, got {format!r}")
        raise typer.Exit(EXIT_BAD_INPUT)
    from st_cli.model.cross_encoder_recipe import KIND, recipe_kind

    if recipe_kind(recipe) == KIND:  # a reranker: its own recipe keys and folder (docs/how-to/rerankers.md)
        _build_cross_encoder(recipe, output, force=force, json_out=json_out, quiet=quiet)
        return
    with user_errors(), thread_count(), render.status(render.talks(quiet)) as status:
        model, folder = build_folder(
            recipe, output, format=format, force=force, overrides=set_ or [], status=status  # type: ignore[arg-type]
        )
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
    elif not quiet:
        stack = " → ".join(summary["modules"])  # type: ignore[arg-type]
        render.info(f"built {folder} ({format}): {stack}, dimension {summary['dimension']}")


def _build_cross_encoder(recipe: Path, output: Path, *, force: bool, json_out: bool, quiet: bool) -> None:
    from st_cli.model.cross_encoder_recipe import build_cross_encoder
    from st_cli.threads import thread_count

    with user_errors(), thread_count(), render.status(render.talks(quiet)):
        reranker, folder = build_cross_encoder(recipe, output, force=force)
    summary = {
        "output": str(folder),
        "kind": "CrossEncoder",
        "num_labels": reranker.num_labels,
        "activation": reranker.activation,
        "max_length": reranker.max_length,
    }
    if json_out:
        render.print_json(summary)
    elif not quiet:
        render.info(f"built {folder}: a CrossEncoder, {reranker.num_labels} label(s), activation {reranker.activation}")
