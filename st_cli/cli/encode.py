"""`st encode` (files of text → embeddings, here, on workers or on Ray) and `st merge` (shards → one output)."""

import io
import json
from pathlib import Path
from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.typer_app import (
    BackendFileOpt,
    BackendOpt,
    ForceOpt,
    JsonOpt,
    QuietOpt,
    TrustOpt,
    app,
    user_errors,
)
from st_cli.encode.inputs import COMPRESSIONS, INPUT_FORMATS, READERS
from st_cli.errors import EXIT_BAD_INPUT

_INPUTS_HELP = f"Input files ({', '.join(READERS)}; also {', '.join(COMPRESSIONS)} compressed) or - for stdin."


@app.command()
def encode(
    inputs: Annotated[
        list[str] | None, typer.Argument(help=_INPUTS_HELP, show_default=False, metavar="INPUT")
    ] = None,
    *,
    out: Annotated[
        str | None,
        typer.Option(
            "--out", "-o", metavar="OUT",
            help="Output file: .npy, .safetensors, .jsonl or .parquet; - for JSON lines on stdout.",
            show_default=False,
        ),
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text", "-t", metavar="TEXT",
            help="Embed this text (repeatable) instead of files; prints JSON lines unless --out.", show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", metavar="MODEL",
            help="Model folder or Hub id (default: $ST_MODEL, else all-MiniLM-L6-v2).",
        ),
    ] = None,
    field: Annotated[
        str, typer.Option("--field", metavar="NAME", help="The field holding the text in .jsonl/.json/.parquet inputs.")
    ] = "text",
    column: Annotated[
        str, typer.Option("--column", metavar="NAME", help="The column holding the text in .csv/.tsv inputs.")
    ] = "text",
    id_field: Annotated[
        str | None,
        typer.Option(
            "--id-field", metavar="NAME",
            help="Carry each record's id (this field or column) into the output, in input order: inside "
            ".jsonl and .parquet, in OUT.ids.jsonl beside .npy and .safetensors.",
            show_default=False,
        ),
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(
            "--input-format", metavar="FORMAT",
            help=f"Read every input (stdin too) as {', '.join(INPUT_FORMATS)}, optionally compressed "
            "(jsonl.gz), whatever its suffix.",
            show_default=False,
        ),
    ] = None,
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
        typer.Option(
            "--kw", metavar="KEY=VALUE", help="key=value for a keyword a module declares in modules.json (repeatable)."
        ),
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
    max_active_dims: Annotated[
        int | None,
        typer.Option(
            "--max-active-dims", min=1,
            help="SparseEncoder: keep the N largest values per row (default: the model's, e.g. a CSR model's k).",
            show_default=False,
        ),
    ] = None,
    decode: Annotated[
        bool, typer.Option("--decode", help="SparseEncoder, .jsonl: write {token: weight} rows, largest first.")
    ] = False,
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
            envvar="ST_BATCH_TOKENS",
            help="Padded tokens per batch (default: 512 on CPU, 4096 on MPS, 16384 on CUDA).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="At most this many texts per batch.", show_default=False)
    ] = None,
    device: Annotated[str, typer.Option("--device", envvar="ST_DEVICE", help="cpu, cuda, mps or auto.")] = "cpu",
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
            envvar="ST_THREADS",
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
            metavar="I/N",
            help="I/N: encode the I-th (from 0) of N runs of whole windows, plus OUT.shard.json; join with st merge.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted (Ctrl-C) or killed run of this same command from its last finished "
            "window, on the thread count it recorded.",
        ),
    ] = False,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    trust_remote_code: TrustOpt = False,
    backend: BackendOpt = "torch",
    backend_file: BackendFileOpt = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
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

    A SparseEncoder (SPLADE, inference-free SPLADE, CSR) writes .safetensors
    as a CSR matrix (indices, indptr, values; the shape in the metadata),
    .jsonl as {"indices", "values"} rows ({token: weight} with --decode),
    and .npy dense.

    Past one machine: --shard I/N writes one of N parts (shard on other
    machines, then st merge the parts: equal to one run bit for bit);
    --workers N runs N shards at once here (one per GPU) and merges them. A
    run killed or interrupted (Ctrl-C: exit 130) after its first window keeps
    its finished windows; the same command plus --resume goes on from there,
    on the thread count it recorded, to the bytes of an uninterrupted run.

    Examples:
      st encode corpus.txt --out emb.npy
      st encode -t "a quick check" -t "another sentence"
      st encode docs.jsonl.gz --id-field id --out emb.parquet
      st encode data.parquet --field body --out - | head -1
      st encode dump.log --input-format jsonl --out emb.npy
      st encode corpus.txt --out part1.npy --shard 1/4 --resume
      st encode corpus.txt --out emb.npy --device cuda --workers 8
      st encode docs.jsonl --field body --out emb.safetensors --precision int8
      cat queries.txt | st encode - -o q.jsonl --prompt-name query --normalize
      st encode queries.txt -m asym-model --task query --out q.npy
      st encode docs.txt -m splade --out docs.safetensors --max-active-dims 256
      st encode q.txt -m splade --task query --out q.jsonl --decode
      st encode a.csv b.csv --column text --out emb.npy --threads 1 --force
      st encode corpus.txt --out emb.npy --backend onnx \\
          --backend-file onnx/model_qint8_avx512_vnni.onnx
      st encode corpus.txt --out emb.npy --ray --workers 2
      st encode /shared/corpus.jsonl -m /shared/minilm -o /shared/emb.npy \\
          --ray auto --gpus-per-worker 1

    With --ray, shards of whole windows run on Ray Data actors and are
    merged into OUT (bit for bit one run with the workers' --threads);
    inputs, model and OUT's folder must be at the same paths on every node.
    Parts wait in OUT.parts/: rerunning the same command after a failure
    runs only the shards still missing.
    """
    from st_cli.encode.api import STDOUT, encode_file
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
    stdin = None
    if text:  # texts on the command line: read as JSON lines from a stdin of our own (a text may hold a newline)
        if inputs:
            render.error("st encode: give input files or --text, not both (see st encode --help)")
            raise typer.Exit(EXIT_BAD_INPUT)
        inputs, input_format, out = ["-"], "jsonl", out or STDOUT
        stdin = io.BytesIO("".join(json.dumps({"text": t}) + "\n" for t in text).encode())
        field = "text"
    if not inputs or out is None:
        missing = "option '--out'" if inputs else "argument 'INPUT...' (or --text)"
        render.error(f"st encode: missing {missing} (see st encode --help)")
        raise typer.Exit(EXIT_BAD_INPUT)
    to_stdout = out == STDOUT
    if ray is not None and to_stdout:
        render.error("st encode: --out - (or --text) cannot go with --ray, whose parts are files; give --out FILE")
        raise typer.Exit(EXIT_BAD_INPUT)
    with user_errors():  # the job's options, the same whether Ray or this process runs it
        options = EncodeOptions(
            field=field,
            column=column,
            id_field=id_field,
            input_format=input_format,
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
            backend=backend,
            backend_file=backend_file,
            max_active_dims=max_active_dims,
            decode=decode,
        )
    if ray is not None:  # --resume needs no saying: --ray always resumes its shards
        from st_cli.encode.ray import encode_files_ray

        with user_errors(), render.ray_progress(render.talks(quiet)) as ray_progress:
            ray_summary = encode_files_ray(
                inputs,
                model,
                Path(out),
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
        with render.encode_progress(render.talks(quiet)) as progress:
            summary = encode_file(
                inputs,
                out if to_stdout else Path(out),
                options,
                model=model,
                shard=parse_shard(shard) if shard is not None else None,
                resume=resume,
                workers=workers or 1,
                progress=progress,
                stdin=stdin,
                warn=render.warning,
            )
    for note in summary.notes if not quiet else ():
        render.info(f"note: {note}")
    if json_out or (not quiet and not to_stdout):  # stdout carries the rows: no summary line unless asked
        render.encode_summary(summary, as_json=json_out, to_stderr=to_stdout)


@app.command()
def merge(
    parts: Annotated[
        list[Path], typer.Argument(help="The parts written by st encode --shard I/N (any order).", show_default=False)
    ],
    *,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output file: .npy, .safetensors, .jsonl or .parquet.", show_default=False),
    ],
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="Default: the job's. Shards of float32 or int8/uint8 jobs allow any."),
    ] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Join the shards of one st encode --shard I/N job into what a single run writes.

    Checks that shards 0..N-1 are each given once, of one job (same inputs,
    model and options, per their PART.shard.json), with their rows contiguous
    and their files unchanged (PART and its .lines.txt / .ids.jsonl, by
    sha256); then streams their rows into OUT (any output
    format) under a temporary name, renamed at the end. int8/uint8 jobs are
    calibrated here, over all rows. --skip-empty line numbers are joined too.

    Examples:
      st merge part0.npy part1.npy part2.npy --out emb.npy
      st merge parts/*.npy --out emb.safetensors --precision int8 --json
    """
    from st_cli.encode.shards import merge_shards

    with user_errors(), render.merge_progress(render.talks(quiet)) as progress:
        summary = merge_shards(parts, out, precision=precision, force=force, progress=progress)
    if json_out or not quiet:
        render.merge_summary(summary, as_json=json_out)
