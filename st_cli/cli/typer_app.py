"""The `st` command line: thin typer commands over the library API (parse → one call → render)."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from st_cli import fsio
from st_cli._version import __version__
from st_cli.cli import render
from st_cli.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, StError

# transformers' own progress bars and advice would drown st's output; read when it is first imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class _OneLineErrors(TyperGroup):
    """Typer's usage errors (bad option values, a missing option, an unknown one) as one `error: …` line, exit 2.

    Typer prints them as a multi-line rich panel; running the group with standalone_mode=False makes
    typer re-raise them here instead. Living in the group, this also holds under typer.testing.CliRunner.
    """

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:
        args = _with_optional_values(sys.argv[1:] if args is None else list(args))
        _readable_metavars(self)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            render.error("aborted")
            sys.exit(1)
        except Exception as e:
            if not _is_usage_error(e):
                raise
            if type(e).__name__ != "NoArgsIsHelpError":  # the help text is already printed
                render.error(_usage_message(e))
            sys.exit(getattr(e, "exit_code", EXIT_BAD_INPUT))
        sys.exit(code if isinstance(code, int) else 0)


# Typer writes an option's type as <int>, <list[str]>, <bool>: what a value looks like, in the
# conventional capitals, and nothing for a flag (it takes no value).
_METAVARS = {"str": "TEXT", "int": "N", "float": "NUMBER", "path": "PATH"}


class _HelpNames:
    help_option_names = ("-h", "--help")  # app's context_settings: what get_help_option needs of a context


def _readable_metavars(group: Any) -> None:
    """Give every option without a metavar a readable one (N, TEXT, PATH; none for a flag), help included."""
    for command in [group, *getattr(group, "commands", {}).values()]:
        params = list(command.params)
        help_option = command.get_help_option(_HelpNames())
        for param in [*params, *([help_option] if help_option is not None else [])]:
            if param.metavar is not None:
                continue
            if param.param_type_name == "argument":  # RECIPE, MODEL: what it is, in usage and the table
                param.metavar = param.name.upper()  # typer adds "..." to one that takes several
                continue
            if param.is_flag:
                param.metavar = ""
                continue
            label = param.bare_type().lower()
            label = label[label.find("[") + 1 : label.rfind("]")] if "[" in label else label
            param.metavar = _METAVARS.get(label, label.upper())


# Options whose value may be left out, with the value a bare one means (typer has no optional values).
# A value is taken only where it looks like one (a Ray address: auto, local, HOST:PORT, ray://…),
# so `--ray corpus.txt` keeps corpus.txt an input.
OPTIONAL_VALUES = {"--ray": ("local", lambda v: v in ("auto", "local") or (":" in v and not Path(v).exists()))}


def _with_optional_values(args: list[str]) -> list[str]:
    """`--ray` alone → `--ray=local`; `--ray auto`, `--ray=HOST:PORT` stay as they are."""
    result: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return result + args[i:]
        spec = OPTIONAL_VALUES.get(arg)
        following = args[i + 1] if i + 1 < len(args) else None
        if spec is not None and (following is None or not spec[1](following)):
            result.append(f"{arg}={spec[0]}")
        else:
            result.append(arg)
    return result


def _is_usage_error(error: Exception) -> bool:
    """Typer's (vendored click's) ClickException family: it has exit_code and format_message()."""
    return isinstance(getattr(error, "exit_code", None), int) and callable(getattr(error, "format_message", None))


def _usage_message(error: Exception) -> str:
    """`st encode: invalid value for '--batch-size': 0 is not in the range x>=1 (see st encode --help)`."""
    message = " ".join(str(error.format_message()).split())  # type: ignore[attr-defined]
    message = message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message
    ctx = getattr(error, "ctx", None)
    command = getattr(ctx, "command_path", None) or "st"
    return f"{command}: {message.rstrip('.')} (see {command} --help)"


app = typer.Typer(
    cls=_OneLineErrors,
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Assemble, inspect, run and validate sentence-embedding models (sentence-transformers folder layout).",
)

# Option spellings shared by every command.
ModelArg = Annotated[str, typer.Argument(help="Model folder, Hub id, or package:pkg/dir.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document on stdout.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No status line, progress bar or summary line (errors still print).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace an existing output of the same kind (never an input).")
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow custom module code stored in the model folder to run.")
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        envvar="ST_BACKEND",
        help="torch, or run the Transformer's exported file on onnx (ONNX Runtime) or openvino; "
        "the modules after it run as on torch.",
    ),
]
BackendFileOpt = Annotated[
    str | None,
    typer.Option(
        "--backend-file",
        metavar="FILE",
        help="The exported file to run, in the model folder (default onnx/model.onnx or "
        "openvino/openvino_model.xml), e.g. onnx/model_qint8_avx512_vnni.onnx.",
        show_default=False,
    ),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """StError → one line on stderr and its exit code; anything else → exit 3 (ST_DEBUG=1 re-raises).

    SIGINT, SIGTERM and SIGHUP unwind like an exception (temps are removed on the way) and exit
    130, 143 and 129 with one line; what was kept for a rerun (the exception's notes) goes on that line.
    """
    try:
        with fsio.signals_raise():
            yield
    except StError as e:
        if os.environ.get("ST_DEBUG"):
            raise
        render.error(str(e))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:
        render.error(_interrupted("SIGINT", e))
        raise typer.Exit(130) from None
    except fsio.Terminated as e:
        render.error(_interrupted(str(e), e))
        raise typer.Exit(e.exit_code) from None
    except Exception as e:
        if os.environ.get("ST_DEBUG"):
            raise
        render.error(f"internal error: {type(e).__name__}: {e} (re-run with ST_DEBUG=1 for a traceback)")
        raise typer.Exit(EXIT_INTERNAL) from None


def _interrupted(signal_name: str, error: BaseException) -> str:
    """`interrupted by SIGINT`, then what the interrupted command kept (an encode's finished windows)."""
    return "; ".join([f"interrupted by {signal_name}", *getattr(error, "__notes__", [])])


def _version(value: bool) -> None:
    if value:
        typer.echo(f"st {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Assemble, inspect, run and validate sentence-embedding models (sentence-transformers folder layout)."""


def main() -> None:
    try:
        app()
    except OSError as e:  # stdout itself failed (a full disk, /dev/full): reports are rendered outside user_errors
        render.error(f"cannot write the report to stdout: {e.strerror or e}")
        sys.exit(EXIT_BAD_INPUT)
