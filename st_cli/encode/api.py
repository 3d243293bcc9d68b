"""The public entry point of `st encode`: `encode_file`, one process or several (`--workers`).

The run loop is `run.py`, its options `options.py`; this file only picks who runs the job.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from st_cli.encode.options import EncodeOptions, EncodeSummary, ProgressFn, WarnFn
from st_cli.encode.run import encode
from st_cli.encode.workers import encode_with_workers
from st_cli.errors import StError

if TYPE_CHECKING:
    from st_cli.encode.run import Encoder

__all__ = ["STDOUT", "EncodeOptions", "EncodeSummary", "encode_file"]

STDOUT = "-"  # as the output: JSON lines on stdout


def encode_file(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: EncodeOptions | None = None,
    *,
    model: Encoder | str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    stdin: IO[bytes] | None = None,
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    model_name: str | None = None,
    workers: int = 1,
    stdout: IO[bytes] | None = None,
    warn: WarnFn | None = None,
    **fields: Any,
) -> EncodeSummary:
    """Embed every record of `inputs` into `output` (.npy, .safetensors, .jsonl or .parquet), one row each,
    in order; output "-" writes JSON lines (as .jsonl) to `stdout` (default: sys.stdout).

    Args:
        inputs: .txt (a line each), .jsonl (`field`), .csv/.tsv (`column`) files, or "-" for stdin.
        options: the job's options (`EncodeOptions`: precision, normalize, prompt, device, window, ...);
            `fields` given as keywords replace single fields of it (`encode_file(a, b, normalize=True)`).
        model: a Model, a folder or Hub id; default $ST_MODEL, else all-MiniLM-L6-v2.
        progress: called after each batch with (rows done, rows total, tokens done).
        shard: (I, N): encode only the I-th (0-based) of N contiguous runs of whole windows, and write
            OUTPUT.shard.json beside it; `merge_shards` joins the N parts into a single run's output.
        resume: continue a killed run of the same job from its first unfinished window.
        model_name: with a loaded Model, the folder or Hub id it came from: recorded in the output's
            metadata and the job's fingerprint as if `model` had been that name (Ray workers load once).
        workers: run the job's shards in this many processes at once (one per GPU with device
            "cuda", else sharing the CPUs) and merge them; the model must be a folder or Hub id.
        warn: called at once with each warning (also in the summary's `warnings`): a `resume` that
            finds nothing to resume, or starts over under --force.
    """
    options = EncodeOptions.of(options, **fields)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if str(output) == STDOUT:
        if shard is not None or resume:
            raise StError("--out -: stdout cannot be sharded or resumed; give a file")
        if options.skip_empty or options.precision in ("int8", "uint8"):
            side = "--skip-empty" if options.skip_empty else f"--precision {options.precision}"
            raise StError(f"--out -: {side} writes a file beside the output; give a file")
        with tempfile.TemporaryDirectory(prefix="st-stdout-") as tmp:
            # Written whole under a temp name like any output (a failed run prints nothing), then copied.
            spooled = Path(tmp) / "stdout.jsonl"
            summary = encode_file(
                items, spooled, options, model=model, progress=progress, stdin=stdin, model_name=model_name,
                workers=workers,
            )
            with open(spooled, "rb") as f:
                target = stdout or sys.stdout.buffer
                shutil.copyfileobj(f, target)
                target.flush()
        summary.output = Path(STDOUT)
        summary.side_files = []
        return summary
    if workers < 1:
        raise StError(f"--workers must be at least 1, got {workers}")
    if workers > 1:
        if shard is not None:
            raise StError("--workers and --shard: give one of them (each worker already runs one shard)")
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise StError("--workers: give the model as a folder or Hub id (each worker process loads it)")
        return encode_with_workers(
            items, output, options, model=model, workers=workers, resume=resume, progress=progress, warn=warn
        )
    return encode(
        items,
        output,
        options,
        model=model,
        progress=progress,
        stdin=stdin,
        shard=shard,
        resume=resume,
        model_name=model_name,
        warn=warn,
    )
