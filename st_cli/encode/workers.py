"""`st encode --workers N`: N processes (one per GPU with --device cuda) encode the N shards of one
job side by side, then the parts are merged into the output: equal to a single run, byte for byte.

The parts live in `.OUT.st-partial.workers/` beside the output (no pid in the name: a killed or
interrupted run's parts wait for `--resume`, which keeps each finished part of the same job and
continues the others from their journals).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_cli import fsio
from st_cli.encode.inputs import STDIN, count_records, resolved_inputs
from st_cli.encode.journal import PARTIAL_TAG, journal_path, parse
from st_cli.encode.shards import merge_shards, read_sidecar, sidecar_path
from st_cli.errors import StError

if TYPE_CHECKING:
    from st_cli.encode.options import EncodeOptions, EncodeSummary, ProgressFn, WarnFn


def workers_folder(target: Path) -> Path:
    return target.with_name(f".{target.name}.{PARTIAL_TAG}.workers")


def encode_with_workers(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: EncodeOptions,
    *,
    model: str | os.PathLike[str] | None,
    workers: int,
    resume: bool = False,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> EncodeSummary:
    """Encode the shards of the job in `workers` processes at once, then merge them into `output`.

    `progress` gets (rows done, rows total, 0), the rows done read from the parts' journals. An
    interrupt (Ctrl-C, SIGTERM) keeps the parts for --resume, as a dead worker does.
    """
    from st_cli.encode.options import EncodeSummary

    started = time.perf_counter()
    target = Path(output)
    options.check(target)
    if any(str(item) == STDIN for item in inputs):
        raise StError("--workers: stdin cannot be split between processes; save it to a file first")
    if not options.force and os.path.lexists(target):
        raise StError(f"{target}: already exists; pass --force to replace it")
    folder = workers_folder(target)
    if folder.exists() and any(folder.iterdir()) and not (resume or options.force):
        raise StError(
            f"{target}: a killed --workers run left its parts in {folder.name}; "
            "continue it with --resume, or pass --force to start over"
        )
    if options.force and not resume:
        fsio.remove(folder)
    warnings = []
    if resume and not (folder.exists() and any(folder.iterdir())):
        warnings.append(f"--resume: nothing to resume for {target}; encoding from the start")
        if warn is not None:
            warn(warnings[0])
    folder.mkdir(exist_ok=True)
    parts = [folder / f"part{i}{target.suffix}" for i in range(workers)]
    devices = _devices(options.device, workers)
    threads = options.threads
    if threads is None and devices[0] is None:  # CPU workers share the cores
        threads = max(1, _usable_cpus() // workers)
    worker_options = dataclasses.replace(options, threads=threads)
    jobs = [([str(i) for i in inputs], part, worker_options, model, (i, workers), resume, devices[i])
            for i, part in enumerate(parts)]  # fmt: skip
    try:
        summaries = _run_all(jobs, report=_reporter(inputs, target, options, parts, progress))
        merged = merge_shards(parts, target, precision=options.precision, force=options.force)
    except (KeyboardInterrupt, fsio.Terminated) as error:  # the parts wait for --resume
        error.add_note(_kept(parts, folder))
        raise
    except BaseException as error:
        if not resume and not isinstance(error, WorkerDied):  # a dead worker's siblings' parts wait for --resume
            fsio.remove(folder)
        raise
    fsio.remove(folder)
    summary = EncodeSummary(target, merged.rows, merged.dimension, merged.precision)
    for part in summaries:
        summary.skipped_empty = part.skipped_empty
        summary.truncated += part.truncated
        summary.tokens += part.tokens
        summary.padded_tokens += part.padded_tokens
        summary.resumed_rows += part.resumed_rows
        summary.load_seconds = max(summary.load_seconds, part.load_seconds)
        summary.threads = part.threads
        for line in part.warnings:
            # Said once, however many parts give it; the parts' own "nothing to resume" are the run's above.
            if line in summary.warnings or (warnings and "nothing to resume" in line):
                continue
            summary.warnings.append(line)
            if warn is not None:
                warn(line)
    summary.warnings = warnings + summary.warnings
    summary.side_files = merged.side_files
    summary.seconds = time.perf_counter() - started - summary.load_seconds
    return summary


class WorkerDied(StError):
    """A worker process ended without a result (OOM, kill -9): the finished windows stay for --resume."""


Job = tuple[list[str], Path, "EncodeOptions", "str | os.PathLike[str] | None", tuple[int, int], bool, "str | None"]


def _reporter(
    inputs: Sequence[str | os.PathLike[str]],
    target: Path,
    options: EncodeOptions,
    parts: Sequence[Path],
    progress: ProgressFn | None,
) -> Callable[[], None] | None:
    """A function reporting the rows the workers have journaled so far (None without `progress`)."""
    if progress is None:
        return None
    with resolved_inputs(inputs, None, spool_beside=target, input_format=options.input_format) as sources:
        tally = count_records(sources, options.read)
    total = tally.records - tally.empty if options.skip_empty else tally.records

    def report() -> None:
        done = 0
        for part in parts:
            if sidecar_path(part).exists():
                done += _rows_in_sidecar(part)
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                done += int(parse(journal_path(part).read_bytes())[1][-1]["rows"])
        progress(done, total, 0)

    return report


def _kept(parts: Sequence[Path], folder: Path) -> str:
    """What an interrupted --workers run leaves: the rows its parts journaled or finished."""
    done, total, known = 0, 0, 0  # known: parts whose rows are known (a part not started has no journal yet)
    for part in parts:
        with contextlib.suppress(OSError, ValueError, IndexError, KeyError, TypeError, StError):
            if sidecar_path(part).exists():
                info = read_sidecar(part)
                done, total, known = done + info.rows, total + info.rows, known + 1
                continue
            header, entries = parse(journal_path(part).read_bytes())
            done += int(entries[-1]["rows"]) if entries else 0
            if header is not None:
                total, known = total + int(header["rows"]), known + 1
    of = f" of {total:,}" if known == len(parts) else ""
    return f"{done:,}{of} rows kept in {folder.name}; rerun with --resume to continue"


def _rows_in_sidecar(part: Path) -> int:
    try:
        return read_sidecar(part).rows
    except StError:
        return 0


def _run_all(jobs: Sequence[Job], poll: float = 0.5, report: Callable[[], None] | None = None) -> list[EncodeSummary]:
    """Start a process per job and wait for all; the first error (or a worker that died) stops the
    others at once, and so does an exception here (Ctrl-C, SIGTERM): no worker outlives the command."""
    context = get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_worker, args=(i, results, job), daemon=True) for i, job in enumerate(jobs)]
    for process in processes:
        process.start()
    done: dict[int, EncodeSummary] = {}
    try:
        while len(done) < len(jobs):
            try:
                index, ok, value = results.get(timeout=poll)
            except queue.Empty:
                if report is not None:
                    report()
                for index, process in enumerate(processes):
                    if index not in done and process.exitcode not in (None, 0) and results.empty():
                        raise WorkerDied(
                            f"--workers: worker {index} died (exit {process.exitcode}); "
                            "run the same command with --resume to continue"
                        ) from None
                continue
            if not ok:
                raise StError(value)
            done[index] = value
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
    return [done[i] for i in range(len(jobs))]


def _worker(index: int, results: Any, job: Job) -> None:
    """A worker process's body: its summary, or its error as one line, goes back on `results`."""
    try:
        results.put((index, True, _run_shard(*job)))
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal: its journal is kept
        sys.exit(130)
    except StError as e:
        results.put((index, False, str(e)))
    except Exception as e:  # noqa: BLE001 - reported by the parent as one line
        results.put((index, False, f"worker {index}: {type(e).__name__}: {e}"))


def _run_shard(
    inputs: list[str],
    part: Path,
    options: EncodeOptions,
    model: str | os.PathLike[str] | None,
    shard: tuple[int, int],
    resume: bool,
    gpu: str | None,
) -> EncodeSummary:
    """One worker process: its GPU made the only visible one before torch loads, then `--shard I/N`."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from st_cli.encode.run import encode

    return encode(inputs, part, options, model=model, shard=shard, resume=resume)


def _devices(device: str, workers: int) -> list[str | None]:
    """The GPU each worker sees (CUDA_VISIBLE_DEVICES), round robin; None for CPU workers."""
    if device not in ("cuda", "auto"):
        return [None] * workers
    import torch

    if not torch.cuda.is_available():
        if device == "cuda":
            raise StError("--device cuda: no CUDA device is available")
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    ids = ids or [str(i) for i in range(torch.cuda.device_count())]
    return [ids[i % len(ids)] for i in range(workers)]


def _usable_cpus() -> int:
    from st_cli.threads import usable_cpus

    return usable_cpus()
