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
    """StError → one line on stderr and its exit code; anything else → exit 3 (ST_DEBUG=1 re-raises).

    SIGINT, SIGTERM and SIGHUP unwind like an exception (temps are removed on the way) and exit
    130, 143 and 129 with one line.
    """
    try:
        with fsio.signals_raise():
            yield
    except StError as e:
        if os.environ.get("ST_DEBUG"):
            raise
        render.error(str(e))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        render.error("interrupted by SIGINT")
        raise typer.Exit(130) from None
    except fsio.Terminated as e:
        render.error(f"interrupted by {e}")
        raise typer.Exit(e.exit_code) from None
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
    from st_cli.model.model import build as build_folder
    from st_cli.threads import thread_count

    if format not in ("portable", "st6"):
        render.error(f"--format: expected portable or st6, got {format!r}")
        raise typer.Exit(EXIT_BAD_INPUT)
    with user_errors(), thread_count():
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


@app.command()
def inspect(
    model: ModelArg,
    *,
    json_out: JsonOpt = False,
    weights: Annotated[bool, typer.Option("--weights", help="List every tensor with its shape and dtype.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit) of a Hub id.")
    ] = None,
) -> None:
    """Show what a model folder holds, from its JSON files and safetensors headers alone.

    Never imports torch and never runs code from the folder. Shows the modules.json stack with
    configs, dimensions and weights, then findings (error, warning, info) and which loaders
    (sentence-transformers <=5.3, 5.4-5.x, >=6, TEI) can read the folder. Exits 0 whenever a
    summary is printed, even with error findings; an unreadable folder exits 2.

    Examples:
      st inspect out/minilm
      st inspect sentence-transformers/all-MiniLM-L6-v2 --json
      st inspect out/minilm --weights
    """
    from st_cli.format.summary import summarize

    with user_errors():
        summary = summarize(model, revision=revision)
    render.model_summary(summary, as_json=json_out, tensors=weights)


@app.command()
def verify(
    model: ModelArg,
    *,
    atol: Annotated[
        float, typer.Option("--atol", min=0.0, help="Tolerance (max abs difference) for embedding comparisons.")
    ] = 1e-5,
    json_out: JsonOpt = False,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Also compare with another folder or Hub id; 'sentence-transformers' loads this folder with it.",
        ),
    ] = None,
    trust_remote_code: TrustOpt = False,
    require_portable: Annotated[
        bool,
        typer.Option("--require-portable", help="Fail unless every loader (ST<=5.3, ST5.4-5.x, ST>=6, TEI) reads it."),
    ] = False,
    record: Annotated[
        bool,
        typer.Option("--record", help="Write st_manifest.json for a folder that has none, if every check passes."),
    ] = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write the report as JUnit XML to FILE.", show_default=False)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --junit FILE.")] = False,
) -> None:
    """Reload a saved model and check its files and embeddings (for CI).

    Checks: layout, integrity (sha256 against st_manifest.json),
    dimensions, reload, reference (the manifest's probe embeddings
    within --atol), batch invariance, normalization, portability; with
    --against, a comparison naming the first module that diverges.
    Without st_manifest.json, integrity and reference are skipped;
    --record writes one.

    Exit codes: 0 all checks passed or were skipped, 1 a check failed,
    2 bad usage, an unreadable folder or untrusted custom code,
    3 an internal error.

    Examples:
      st verify out/minilm
      st verify out/minilm --json --junit verify.xml
      st verify out/minilm --against sentence-transformers
      st verify ./downloaded-model --record
    """
    from st_cli.errors import EXIT_MISMATCH, EXIT_OK
    from st_cli.format.layout import looks_like_model
    from st_cli.fsio import claim, refuse_output_in_folders
    from st_cli.threads import thread_count
    from st_cli.verify.verify import verify_model

    with user_errors(), thread_count():
        if junit is not None:
            refuse_output_in_folders(junit, [f for f in (model, against) if looks_like_model(f)], "--junit")
        junit_claim = claim(junit, force=force) if junit is not None else None  # refused before the checks run
        report = verify_model(
            model,
            atol=atol,
            against=against,
            trust_remote_code=trust_remote_code,
            require_portable=require_portable,
            record=record,
        )
        if junit_claim is not None:
            report.write_junit(junit_claim)
    render.verify_report(report, as_json=json_out)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_MISMATCH)


@app.command()
def encode(
    inputs: Annotated[
        list[str], typer.Argument(help="Text files (.txt, .jsonl, .csv, .tsv) or - for stdin.", show_default=False)
    ],
    *,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output file: .npy, .safetensors or .jsonl.", show_default=False)
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model folder or Hub id (default: $ST_MODEL, else all-MiniLM-L6-v2)."),
    ] = None,
    field: Annotated[str, typer.Option("--field", help="The JSON field holding the text in .jsonl inputs.")] = "text",
    column: Annotated[str, typer.Option("--column", help="The column holding the text in .csv/.tsv inputs.")] = "text",
    precision: Annotated[
        str, typer.Option("--precision", help="float32, float16, int8, uint8 (calibrated), binary or ubinary (bits).")
    ] = "float32",
    truncate_dim: Annotated[
        int | None, typer.Option("--truncate-dim", min=1, help="Keep the first N dimensions.", show_default=False)
    ] = None,
    normalize: Annotated[bool, typer.Option("--normalize", help="L2-normalise every row.")] = False,
    prompt_name: Annotated[
        str | None, typer.Option("--prompt-name", help="A prompt the model defines (default: its default prompt).")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="A literal prompt put before every text.", show_default=False)
    ] = None,
    kw: Annotated[
        list[str] | None,
        typer.Option("--kw", help="key=value for a keyword a module declares in modules.json (repeatable)."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="query or document: a Router's route, and the task's prompt if the model has one "
            "(sentence-transformers' encode_query / encode_document).",
            show_default=False,
        ),
    ] = None,
    skip_empty: Annotated[
        bool, typer.Option("--skip-empty", help="Drop empty records; write the kept line numbers to OUT.lines.txt.")
    ] = False,
    errors: Annotated[
        str, typer.Option("--errors", help="Invalid UTF-8: strict (an error naming file and line) or replace.")
    ] = "strict",
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-batch-tokens",
            min=1,
            help="Padded tokens per batch (default: 512 on CPU, 2048 for bfloat16 on CPU, 16384 on CUDA).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="At most this many texts per batch.", show_default=False)
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, mps or auto.")] = "cpu",
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="auto (float16 on CUDA, else float32), float32, float16 or bfloat16 (autocast: faster, less exact).",
        ),
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="torch threads (default: the CPUs other processes leave free); a static model's numpy "
            "threads (default: every CPU st may use).",
        ),
    ] = None,
    window: Annotated[
        int,
        typer.Option(
            "--window", min=1, help="Records sorted and batched together; also the unit of --shard and --resume."
        ),
    ] = 8192,  # batching.DEFAULT_WINDOW (not imported: --help stays light); a test keeps them equal
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="I/N: encode the I-th (from 0) of N runs of whole windows, plus OUT.shard.json; join with st merge.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed run of this same command from its last finished window.")
    ] = False,
    force: ForceOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.")] = False,
    json_out: JsonOpt = False,
    trust_remote_code: TrustOpt = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run shards on Ray Data actors: --ray alone starts a local cluster for this run; "
            "--ray auto joins the running one; --ray HOST:PORT or ray://HOST:PORT another.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes encoding shards at once, then merged (--device cuda: one per GPU; default 1); "
            "with --ray: actors (default: one per GPU or CPU slice).",
            show_default=False,
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float, typer.Option("--gpus-per-worker", min=0, help="With --ray: GPUs per actor (1: one actor per GPU).")
    ] = 0.0,
    cpus_per_worker: Annotated[
        float | None,
        typer.Option(
            "--cpus-per-worker",
            min=0.01,
            help="With --ray: CPUs per actor, also its torch threads "
            "(default: a local cluster's CPUs / --workers; else 1).",
            show_default=False,
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards", min=1, help="With --ray: shards of whole windows (default: 4 per worker).", show_default=False
        ),
    ] = None,
) -> None:
    """Embed text files into an array: exactly one row per input record, in input order.

    Empty lines are embedded as "" unless --skip-empty; inputs longer than the
    model's max_seq_length are truncated and counted. OUT is written under a
    temporary name and renamed at the end, so a failed run leaves nothing;
    an existing OUT is replaced only with --force. int8/uint8 ranges go to
    OUT.calibration.json (or the .safetensors metadata).

    Past one machine: --shard I/N writes one of N parts (shard on other
    machines, then st merge the parts: equal to one run bit for bit);
    --workers N runs N shards at once here (one per GPU) and merges them. A
    run killed outright keeps a journal; the same command with --resume goes
    on from its last finished window.

    Examples:
      st encode corpus.txt --out emb.npy
      st encode corpus.txt --out part1.npy --shard 1/4 --resume
      st encode corpus.txt --out emb.npy --device cuda --workers 8
      st encode docs.jsonl --field body -m out/minilm --out emb.safetensors --precision int8
      cat queries.txt | st encode - --out q.jsonl --prompt-name query --normalize
      st encode queries.txt -m asym-model --task query --out q.npy
      st encode a.csv b.csv --column text --out emb.npy --threads 1 --force
      st encode corpus.txt --out emb.npy --ray --workers 2
      st encode /shared/corpus.jsonl -m /shared/minilm --out /shared/emb.npy --ray auto --gpus-per-worker 1

    With --ray, shards of whole windows run on Ray Data actors and are
    merged into OUT (bit for bit one run with the workers' --threads);
    inputs, model and OUT's folder must be at the same paths on every node.
    Parts wait in OUT.parts/: rerunning the same command after a failure
    runs only the shards still missing.
    """
    from st_cli.encode.api import encode_file
    from st_cli.encode.options import EncodeOptions, parse_kwargs
    from st_cli.encode.shards import parse_shard
    from st_cli.threads import cpu_runs_natively

    if device == "cpu" and cpu_runs_natively(dtype) is False:
        render.warning(f"--dtype {dtype}: this CPU has no native {dtype} instructions; expect it slower than float32")
    ray_only: dict[str, object] = {"--shards": shards, "--gpus-per-worker": gpus_per_worker or None}
    ray_only["--cpus-per-worker"] = cpus_per_worker
    if ray is None and any(value is not None for value in ray_only.values()):
        given = next(name for name, value in ray_only.items() if value is not None)
        render.error(f"st encode: {given} needs --ray (see st encode --help)")
        raise typer.Exit(EXIT_BAD_INPUT)
    if ray is not None and shard is not None:
        render.error("st encode: --shard cannot go with --ray, which plans the shards itself (--shards K)")
        raise typer.Exit(EXIT_BAD_INPUT)
    with user_errors():  # the job's options, the same whether Ray or this process runs it
        options = EncodeOptions(
            field=field,
            column=column,
            precision=precision,
            truncate_dim=truncate_dim,
            normalize=normalize,
            prompt_name=prompt_name,
            prompt=prompt,
            kwargs=parse_kwargs(kw or []) | ({"task": task} if task else {}),
            skip_empty=skip_empty,
            errors=errors,
            max_batch_tokens=max_batch_tokens,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            threads=threads,
            force=force,
            trust_remote_code=trust_remote_code,
            window=window,
        )
    if ray is not None:  # --resume needs no saying: --ray always resumes its shards
        from st_cli.encode.ray import encode_files_ray

        with user_errors(), render.ray_progress(sys.stderr.isatty() and not quiet) as ray_progress:
            ray_summary = encode_files_ray(
                inputs,
                model,
                out,
                address=None if ray == "local" else ray,
                workers=workers,
                gpus_per_worker=gpus_per_worker,
                cpus_per_worker=cpus_per_worker,
                shards=shards,
                progress=ray_progress,
                options=options,
            )
        if json_out or not quiet:
            render.ray_summary(ray_summary, as_json=json_out)
        return
    with user_errors():
        with render.encode_progress(sys.stderr.isatty() and not quiet) as progress:
            summary = encode_file(
                inputs,
                out,
                options,
                model=model,
                shard=parse_shard(shard) if shard is not None else None,
                resume=resume,
                workers=workers or 1,
                progress=progress,
            )
    if json_out or not quiet:
        render.encode_summary(summary, as_json=json_out)


@app.command()
def merge(
    parts: Annotated[
        list[Path], typer.Argument(help="The parts written by st encode --shard I/N (any order).", show_default=False)
    ],
    *,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output file: .npy, .safetensors or .jsonl.", show_default=False)
    ],
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="Default: the job's. Shards of float32 or int8/uint8 jobs allow any."),
    ] = None,
    force: ForceOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Join the shards of one st encode --shard I/N job into what a single run writes.

    Checks that shards 0..N-1 are each given once, of one job (same inputs,
    model and options, per their PART.shard.json), with their rows contiguous
    and their files unchanged; then streams their rows into OUT (any output
    format) under a temporary name, renamed at the end. int8/uint8 jobs are
    calibrated here, over all rows. --skip-empty line numbers are joined too.

    Examples:
      st merge part0.npy part1.npy part2.npy --out emb.npy
      st merge parts/*.npy --out emb.safetensors --precision int8 --json
    """
    from st_cli.encode.shards import merge_shards

    with user_errors(), render.merge_progress(sys.stderr.isatty() and not quiet) as progress:
        summary = merge_shards(parts, out, precision=precision, force=force, progress=progress)
    if json_out or not quiet:
        render.merge_summary(summary, as_json=json_out)


@app.command()
def train(
    model: ModelArg,
    *,
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="Training data (repeatable): text files for distill, .jsonl/.csv pairs for contrastive.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The model folder to write.", show_default=False)],
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Distillation target: a folder or Hub id (default: the model's stack without its untrained modules).",
        ),
    ] = None,
    loss: Annotated[
        str, typer.Option("--loss", help="distill (plain text) or contrastive (anchor/positive pairs).")
    ] = "distill",
    train_: Annotated[
        str,
        typer.Option("--train", help="Which modules learn: untrained (per the manifest), all, or indices like 2,3."),
    ] = "untrained",
    epochs: Annotated[int, typer.Option("--epochs", min=0, help="Passes over the data (0: only --init).")] = 1,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            min=0.0,
            help="Peak learning rate (default 1e-3 for added layers, 2e-5 with the Transformer).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Texts (or pairs) per step.")] = 64,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps in all.", show_default=False)
    ] = None,
    eval_fraction: Annotated[
        float,
        typer.Option("--eval", min=0.0, max=0.99, help="Fraction of the data held out for the per-epoch evaluation."),
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the split, the shuffling and dropout.")] = 0,
    init: Annotated[
        str | None,
        typer.Option(
            "--init", help="pca: set a narrowing Dense to the teacher's principal directions first.", show_default=False
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format", help="portable: loads in sentence-transformers 2.2–6.x and TEI; st6: what ST 6.2 writes."
        ),
    ] = "portable",
    field: Annotated[
        str, typer.Option("--field", help="The JSON field holding the text in .jsonl inputs (distill).")
    ] = "text",
    column: Annotated[
        str, typer.Option("--column", help="The column holding the text in .csv/.tsv inputs (distill).")
    ] = "text",
    anchor: Annotated[str, typer.Option("--anchor", help="The anchor field/column of pairs.")] = "anchor",
    positive: Annotated[str, typer.Option("--positive", help="The positive field/column of pairs.")] = "positive",
    negative: Annotated[
        str, typer.Option("--negative", help="The optional negative field/column of pairs.")
    ] = "negative",
    symmetric: Annotated[
        bool, typer.Option("--symmetric", help="Contrastive: also rank each positive's anchor first.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, mps or auto.")] = "cpu",
    force: ForceOpt = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last epoch checkpoint of an interrupted run on OUTPUT.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary lines.")] = False,
    json_out: JsonOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Fine-tune the modules a recipe added (random-init layers), and write a new model folder.

    distill (default): the student learns to reproduce the teacher's embeddings of
    the texts (MSE when the widths agree, the teacher's in-batch cosine
    similarities when the student is narrower). contrastive: pairs with
    in-batch negatives. Only the manifest's untrained modules learn by default;
    the frozen modules before them run once per text, not once per epoch.
    A checkpoint is kept after each epoch beside OUTPUT; --resume continues
    from it. OUTPUT's manifest records the data (sha256), loss, settings and
    the held-out metric per epoch.

    Examples:
      st train out/minilm-128 --data corpus.txt -o out/minilm-128-trained --init pca --epochs 3
      st train out/minilm-linear --data corpus.txt -o out/trained --trust-remote-code
      st train out/minilm --loss contrastive --data pairs.jsonl --train all -o out/tuned --symmetric
    """
    from st_cli.threads import thread_count
    from st_cli.training.train import PairColumns
    from st_cli.training.train import train as train_model

    with user_errors(), thread_count():
        with render.train_progress(sys.stderr.isatty() and not quiet and not json_out) as progress:
            report = train_model(
                model,
                data,
                output=output,
                teacher=teacher,
                loss=loss,
                train=train_,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                max_steps=max_steps,
                eval_fraction=eval_fraction,
                seed=seed,
                init=init,
                format=format,  # type: ignore[arg-type]
                force=force,
                resume=resume,
                device=device,
                field=field,
                column=column,
                columns=PairColumns(anchor, positive, negative),
                symmetric=symmetric,
                trust_remote_code=trust_remote_code,
                progress=progress,
            )
    if json_out or not quiet:
        render.train_report(report, as_json=json_out)

def main() -> None:
    try:
        app()
    except OSError as e:  # stdout itself failed (a full disk, /dev/full): reports are rendered outside user_errors
        render.error(f"cannot write the report to stdout: {e.strerror or e}")
        sys.exit(EXIT_BAD_INPUT)
