"""`st encode`: files of text → embeddings, one row per record, in input order, in bounded memory.

The job (DESIGN.md §5): `inputs` reads and counts the records, `batching` cuts windows of them into
batches sorted by token length, the model runs each batch under `torch.inference_mode()`, and
`outputs` writes the rows into a file of final size under a temporary name, renamed at the end.
Every option that shapes the job is one field of the frozen `EncodeOptions`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from st_cli import fsio, threads
from st_cli.encode.batching import (
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_WINDOW,
    PAD_MULTIPLE,
    Batch,
    BatchPlan,
    Window,
    chunked,
    plan_batches,
    prefetched,
    token_lengths,
    windows,
)
from st_cli.encode.inputs import (
    STDIN,
    ReadOptions,
    Record,
    Source,
    Tally,
    count_records,
    iter_records,
    resolved_inputs,
    tallied,
)
from st_cli.encode.journal import Journal, JournalBusy
from st_cli.encode.outputs import OUTPUT_SUFFIXES, PRECISIONS, Sink, side_paths
from st_cli.encode.shards import (
    VERSIONED,
    ShardInfo,
    ShardPlan,
    differences,
    file_sha256,
    fingerprint,
    finished_shard,
    job_id,
    plan_shard,
    read_sidecar,
    sidecar_path,
    stored_precision,
    valid_shard,
)
from st_cli.errors import StError
from st_cli.format import hub, layout
from st_cli.model import static

if TYPE_CHECKING:
    import torch

    from st_cli.model.model import Model

    Encoder = Model | static.StaticEncoder

# Re-exported: older callers import these from st_cli.encode.api.
__all__ = [
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_WINDOW",
    "OUTPUT_SUFFIXES",
    "PAD_MULTIPLE",
    "PRECISIONS",
    "STDIN",
    "EncodeOptions",
    "EncodeSummary",
    "encode",
    "encode_file",
    "parse_kwargs",
    "plan_batches",
    "token_lengths",
]

DEVICES = ("cpu", "cuda", "mps", "auto")
DTYPES = ("auto", "float32", "float16", "bfloat16")
# What "auto" runs per device: GPUs have fast float16 units; on CPUs float32 is exact and a reduced
# dtype is an explicit choice (bfloat16 ~2x where the CPU has it, see README "Speed").
AUTO_DTYPE = {"cuda": "float16"}
# Padded tokens per batch by device when --max-batch-tokens is not given: a GPU needs big batches
# to fill its units, a CPU wants the activations to stay in cache (see batching.py).
DEVICE_MAX_BATCH_TOKENS = {"cuda": 16384, "mps": 4096}
# ...and by device and dtype where that differs: a CPU's bfloat16 matmul kernels (AMX, avx512_bf16)
# want more rows per call, float32's do not (1,000 lines of MiniLM on 2 cores: bfloat16 1.48x float32
# at 512 tokens, 2.18x at 1,024, 2.24x at 2,048; float32 itself 1.02x at 1,024).
DTYPE_MAX_BATCH_TOKENS = {("cpu", "bfloat16"): 2048}
# Tokenize ahead in a background thread: on a GPU the CPU is otherwise idle while it runs; on a
# 2-core CPU the thread competes with torch's (measured ~1.0x), so it is off there.
DEVICE_PREFETCH = {"cuda": True}
ERRORS = ("strict", "replace")

# Allocations from this size up are served by mmap and unmapped on free (glibc's M_MMAP_THRESHOLD).
# Left dynamic, glibc raises the threshold to the largest block freed so far, after which activations
# of ever-changing sizes fragment the heap and RSS grows with the input (DESIGN.md §5).
MMAP_THRESHOLD = 4 << 20

ProgressFn = Callable[[int, int, int], None]  # (rows done, rows total, tokens done)


@dataclass(frozen=True)
class EncodeOptions:
    """Everything that shapes an encode job except its inputs, output and model.

    Attributes:
        field: the JSON field holding the text in .jsonl inputs.
        column: the column holding the text in .csv/.tsv inputs.
        kwargs: encode-time keyword arguments for the modules that declare them in modules.json.
        skip_empty: drop empty records and write the kept line numbers to OUTPUT.lines.txt.
        errors: "strict" (invalid UTF-8 is an error naming file and line) or "replace".
        max_batch_tokens: padded tokens per batch; `batch_size` also caps the rows.
        window: records sorted together; memory grows with it, not with the input.
        prefetch: tokenize the next window in a background thread while the model runs.
    """

    field: str = "text"
    column: str = "text"
    precision: str = "float32"
    truncate_dim: int | None = None
    normalize: bool = False
    prompt_name: str | None = None
    prompt: str | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    skip_empty: bool = False
    errors: str = "strict"
    max_batch_tokens: int | None = None  # None: by device (DEVICE_MAX_BATCH_TOKENS, else 512)
    batch_size: int | None = None
    device: str = "cpu"
    dtype: str = "auto"
    threads: int | None = None
    force: bool = False
    trust_remote_code: bool = False
    window: int = DEFAULT_WINDOW
    prefetch: bool | None = None  # None: by device (DEVICE_PREFETCH)
    pad_multiple: int = PAD_MULTIPLE

    @property
    def read(self) -> ReadOptions:
        return ReadOptions(field=self.field, column=self.column, errors=self.errors)

    def for_device(self, device: str) -> EncodeOptions:
        """These options with the device-dependent defaults (dtype, batch budget, prefetch) filled in."""
        dtype = AUTO_DTYPE.get(device, "float32") if self.dtype == "auto" else self.dtype
        budget = DTYPE_MAX_BATCH_TOKENS.get((device, dtype))
        budget = budget or DEVICE_MAX_BATCH_TOKENS.get(device, DEFAULT_MAX_BATCH_TOKENS)
        return dataclasses.replace(
            self,
            device=device,
            dtype=dtype,
            max_batch_tokens=self.max_batch_tokens or budget,
            prefetch=DEVICE_PREFETCH.get(device, False) if self.prefetch is None else self.prefetch,
        )

    def check(self, output: Path) -> None:
        """Refuse bad values with one line naming the option, before anything is read."""
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise StError(f"{output}: unknown output type {output.suffix!r}; use {', '.join(OUTPUT_SUFFIXES)}")
        for name, allowed in (("precision", PRECISIONS), ("dtype", DTYPES), ("errors", ERRORS), ("device", DEVICES)):
            value = getattr(self, name)
            if value not in allowed:
                raise StError(f"--{name}: expected one of {', '.join(allowed)}, got {value!r}")
        if (self.max_batch_tokens is not None and self.max_batch_tokens < 1) or self.window < 1:
            raise StError("--max-batch-tokens and the window size must be positive")
        if self.truncate_dim is not None and self.truncate_dim <= 0:
            raise StError(f"--truncate-dim must be positive, got {self.truncate_dim}")


@dataclass
class EncodeSummary:
    """What `encode_file` did. `to_json()` keys are part of the CLI's `--json` API."""

    output: Path
    rows: int
    dimension: int
    precision: str
    skipped_empty: int = 0
    truncated: int = 0
    tokens: int = 0  # real tokens, after truncation
    padded_tokens: int = 0  # tokens the model ran, padding included
    seconds: float = 0.0  # encoding, from the loaded model to the renamed output
    load_seconds: float = 0.0  # reading the inputs once and loading the model
    threads: int = 0  # threads the batches ran with (torch: st's policy unless --threads; static: the pool)
    side_files: list[Path] = dataclasses.field(default_factory=list)
    resumed_rows: int = 0  # rows a killed run had finished (--resume): not encoded again
    shard: ShardInfo | None = None  # what --shard I/N wrote to OUTPUT.shard.json

    @property
    def texts_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_fraction(self) -> float:
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "rows": self.rows,
            "dimension": self.dimension,
            "precision": self.precision,
            "skipped_empty": self.skipped_empty,
            "truncated": self.truncated,
            "tokens": self.tokens,
            "padding_fraction": round(self.padding_fraction, 4),
            "seconds": round(self.seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
            "threads": self.threads,
            "texts_per_second": round(self.texts_per_second, 1),
            "side_files": [str(p) for p in self.side_files],
            "resumed_rows": self.resumed_rows,
            "shard": _shard_json(self.shard),
        }


def _shard_json(info: ShardInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    keys = ("shard", "of", "first_row", "rows", "total_rows", "window", "precision", "sha256", "job")
    return {key: getattr(info, key) for key in keys}


# ---------------------------------------------------------------- running the model


_mmap_threshold_pinned = False


def pin_mmap_threshold(size: int = MMAP_THRESHOLD) -> None:
    """Pin glibc's mmap threshold once per process (a no-op elsewhere, or with size 0)."""
    global _mmap_threshold_pinned
    if _mmap_threshold_pinned or size <= 0 or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, size)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        return
    _mmap_threshold_pinned = True


def resolve_device(device: str) -> str:
    import torch

    if device not in DEVICES:
        raise StError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise StError("--device cuda: no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise StError("--device mps: no MPS device is available")
    return device


def _autocast(device: str, dtype: str) -> contextlib.AbstractContextManager[Any]:
    import torch

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=getattr(torch, dtype))


@contextlib.contextmanager
def reduced_linears(model: Model, dtype: str) -> Iterator[None]:
    """Run `model`'s Linear layers with `dtype` weights and biases, the float32 ones put back after.

    Under autocast a float32 Linear's weight and bias are cast again at every call: with bf16 on a
    CPU those copies took a quarter of the time (torch.profiler, MiniLM). Cast once here, they are
    the very values autocast would make, so the embeddings are bit-identical and bf16 ran ~1.2x faster.
    Only plain `torch.nn.Linear` (not subclasses, which may read their weight in their own code).
    """
    import torch

    target = getattr(torch, dtype)
    if target == torch.float32:
        yield
        return
    saved = []
    for module in model.modules():
        if type(module) is not torch.nn.Linear:
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype == torch.float32:
                saved.append((module, name, param))
                module._parameters[name] = torch.nn.Parameter(param.detach().to(target), requires_grad=False)
    try:
        yield
    finally:
        for module, name, param in reversed(saved):
            module._parameters[name] = param


def _to_device(features: dict[str, Any], device: str) -> dict[str, Any]:
    """Tensors to `device`; to CUDA through pinned memory without waiting, so copies overlap compute."""
    if device == "cpu":
        return features
    if device == "cuda":
        pinned = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in features.items()}
        return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in pinned.items()}
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def _embed_batch(model: Model, batch: Batch, options: EncodeOptions) -> torch.Tensor:
    import torch

    # Modules add their outputs to the dict they get: give them a copy, or every batch's token
    # embeddings would stay referenced by the window until it ends (hundreds of MB).
    features = _to_device(dict(batch.features), options.device)
    with torch.inference_mode(), _autocast(options.device, options.dtype):
        out = model.forward(features, **options.kwargs)["sentence_embedding"]
    return out.float()


def _encode_stream(
    model: Model,
    prepared: Iterable[Window],
    sink: Sink,
    options: EncodeOptions,
    summary: EncodeSummary,
    progress: ProgressFn | None,
    *,
    done: int = 0,
    after_window: Callable[[int], None] | None = None,
) -> int:
    """Run every batch; rows go to the sink one window at a time, in input order.

    A window's embeddings stay on the device until its last batch ran, then come back in one copy:
    on a GPU the batches queue up without waiting for each other (truncation and normalization are
    row by row, so finishing them together changes nothing).
    """
    import torch

    for win in prepared:
        block = np.empty((win.size, summary.dimension), np.float32)
        outputs, indices = [], []
        for batch in win.batches:
            outputs.append(_embed_batch(model, batch, options))
            indices.append(batch.indices)
            done += len(batch.indices)
            summary.tokens += batch.tokens
            summary.padded_tokens += batch.padded_tokens
            if progress is not None:
                progress(done, summary.rows, summary.tokens)
        if outputs:
            rows = model.finish(torch.cat(outputs), normalize=options.normalize, truncate_dim=options.truncate_dim)
            block[np.concatenate(indices)] = rows
        summary.truncated += win.truncated
        sink.write(win.start, block)
        if after_window is not None:
            after_window(win.start + win.size)
        fsio.pause_point("encode:window")
    return done


def _encode_static_stream(
    encoder: static.StaticEncoder,
    records: Iterable[Record],
    prompt: str,
    sink: Sink,
    options: EncodeOptions,
    summary: EncodeSummary,
    progress: ProgressFn | None,
    *,
    done: int = 0,
    after_window: Callable[[int], None] | None = None,
) -> int:
    """A static model's rows, a window at a time, in numpy: no padding, so no sorting by length either;
    chunks of the window and the next one run on `summary.threads` threads while this one is written.

    `done` rows were written by an earlier run (--resume); windows count on from there.
    """
    chunks = chunked(records, options.window, start=done)
    windows_of_texts = ((start, [r.text for r in chunk]) for start, chunk in chunks)
    # Closed even when writing fails: the pool stops and tokenizers' setting is back before the error leaves.
    with contextlib.closing(encoder.embed_chunks(windows_of_texts, prompt, workers=summary.threads)) as results:
        for _, parts in results:
            for part in parts:  # written as they come: joining a window's chunks would cost a copy
                sink.write(done, encoder.finish(part, normalize=options.normalize, truncate_dim=options.truncate_dim))
                done += len(part)
            if progress is not None:
                progress(done, summary.rows, summary.tokens)
            if after_window is not None:
                after_window(done)
            fsio.pause_point("encode:window")
    return done


# ---------------------------------------------------------------- the job


def _load(model: Encoder | str | os.PathLike[str] | None, options: EncodeOptions) -> tuple[Encoder, str]:
    """The model to run: a static folder as a numpy StaticEncoder (torch is never imported), else a Model.

    The numpy path runs on the CPU in the table's dtype; --device cuda/mps or a reduced --dtype asks for torch.
    """
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model, ""
    name = str(model) if model is not None else (os.environ.get("ST_MODEL") or hub.DEFAULT_MODEL)
    numpy_ok = options.device in ("cpu", "auto") and options.dtype in ("auto", "float32")
    root = hub.find_local(name) if numpy_ok else None
    fast = static.static_encoder(root) if root is not None else None
    if fast is not None:
        return fast, name
    from st_cli.model.model import load_model
    from st_cli.model.modules.transformer import inference_only

    with inference_only():  # only run, never saved: a BERT skips importing transformers' modeling code
        return load_model(name, trust_remote_code=options.trust_remote_code), name


def _load_while_counting(
    model: Encoder | str | os.PathLike[str] | None,
    options: EncodeOptions,
    sources: Sequence[Source],
    *,
    hash_folder: bool = False,
) -> tuple[Encoder, str, Tally, dict[str, str] | None]:
    """Count (and check) the inputs in a thread while torch and the model load: the costs overlap.
    With `hash_folder`, a model given as a local folder is hashed for the job's fingerprint meanwhile
    too (else the fourth item is None and `_fingerprint` hashes the model).

    Reading and hashing release the GIL and importing torch spends most of its time in C, so on two
    cores the counting pass of a large input comes almost for free (and the 30 ms of hashing a static
    model's table). A bad input is the error reported even when the model fails to load too, as when
    counting came first.
    """
    from concurrent.futures import ThreadPoolExecutor

    folder = Path(model).expanduser() if hash_folder and isinstance(model, (str, os.PathLike)) else None
    root = folder if folder is not None and folder.is_dir() else None  # what hub.find_local gives it, no Hub id
    with ThreadPoolExecutor(2, thread_name_prefix="st-count") as pool:
        counting = pool.submit(count_records, sources, options.read)
        hashing = pool.submit(layout.file_digests, root) if root is not None else None
        try:
            encoder, name = _load(model, options)
        except BaseException:
            counting.result()
            raise
        return encoder, name, counting.result(), hashing.result() if hashing is not None else None


def _claim_outputs(targets: Sequence[Path], inputs: Sequence[str | os.PathLike[str]], force: bool) -> list[fsio.Claim]:
    """Refuse outputs that are folders, inputs, or (without --force) existing files; note what exists."""
    sources = [Path(item) for item in inputs if str(item) != STDIN]
    for path in targets:
        if path.is_dir():
            raise StError(f"{path}: is a folder; give a file name ending in {', '.join(OUTPUT_SUFFIXES)}")
        if any(_same_file(path, source) for source in sources):
            raise StError(f"{path}: is also an input; write the output to another file")
    if not targets[0].parent.is_dir():
        raise StError(f"{targets[0].parent}: no such folder for the output")
    return [fsio.claim(path, force=force) for path in targets]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _embedding_dim(model: Encoder, truncate_dim: int | None) -> int:
    dim = model.get_sentence_embedding_dimension()
    if dim is None:  # a custom last module that does not say: ask it
        dim = int(model.embed([""]).shape[-1])
    if truncate_dim is not None and truncate_dim > dim:
        raise StError(f"--truncate-dim {truncate_dim}: wider than the model's {dim} dimensions")
    limit = truncate_dim or model.truncate_dim
    return min(dim, limit) if limit else dim


def _noting_lines(records: Iterator[Record], out: IO[str]) -> Iterator[Record]:
    for record in records:
        out.write(f"{record.line}\n")
        yield record


def _check_same_records(counted: Tally, read_again: Tally, done: int, rows: int) -> None:
    """The counting pass sized the output; the encoding pass must have read exactly the same records."""
    if read_again.records != counted.records or done != rows:
        raise StError(
            f"the inputs changed while being read: {counted.records} records counted, then {read_again.records} read"
        )
    if not read_again.same_as(counted):
        raise StError("the inputs changed while being read: the records differ between the two passes")


def _publish_all(temps: dict[str, Path], claims: dict[str, fsio.Claim], order: Sequence[str]) -> None:
    """Publish side files first and the output last; if one is refused, take back the ones already published."""
    published: list[Path] = []
    try:
        for name in order:
            fsio.publish(temps[name], claims[name])
            del temps[name]  # published: no longer ours to remove
            published.append(claims[name].path)
    except BaseException:
        for path in published:
            fsio.remove(path)
        raise


# Errors while writing the output; any other OSError came from reading an input.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _os_error(error: OSError, target: Path) -> StError:
    if error.errno in _WRITE_ERRNOS:
        return fsio.write_error(error, target)
    return StError(f"{error.filename or target}: {error.strerror or error}")


def encode(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: EncodeOptions,
    *,
    model: Encoder | str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    stdin: IO[bytes] | None = None,
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    model_name: str | None = None,
) -> EncodeSummary:
    """Embed every record of `inputs` into `output` as `options` say; see `encode_file`.

    Publishing is safe (fsio): the output and its side files are written under temp names beside
    them and renamed into place at the end, never over a file that appeared after the run started.
    A run on files keeps a journal (journal.py), so a killed run can be continued with `resume`.
    """
    started = time.perf_counter()
    threads.open_sample_window()  # what follows (checks, counting, loading) is the window it reads
    target = Path(output)
    if target.is_dir():
        raise StError(f"{target}: is a folder; give a file name ending in {', '.join(OUTPUT_SUFFIXES)}")
    options.check(target)
    if isinstance(model, (str, os.PathLike)) and layout.looks_like_model(model):  # never over its own model files
        fsio.refuse_output_in_folders(target, [str(model)], "--out")
    from_stdin = any(str(item) == STDIN for item in inputs)
    if from_stdin and (shard is not None or resume):
        raise StError("-: stdin cannot be sharded or resumed (it can be read only once); save it to a file first")
    if shard is not None and not valid_shard(shard):
        raise StError(f"--shard {shard[0]}/{shard[1]}: expected I/N with 0 <= I < N")
    stored = stored_precision(options.precision, shard is not None)
    side = side_paths(target, skip_empty=options.skip_empty, precision=stored)
    last = {"shard": sidecar_path(target)} if shard is not None else {}
    names = ["output", *side, *last]
    # --resume on a finished shard: kept if it is of this same job (checked once the model is loaded)
    finished = shard is not None and resume and last["shard"].is_file()
    claimed = _claim_outputs([target, *side.values(), *last.values()], inputs, options.force or finished)
    claims = dict(zip(names, claimed, strict=True))
    read = options.read
    with resolved_inputs(inputs, stdin, spool_beside=target) as sources:
        # The folder hashed while it loads is the one the fingerprint names: the model as given.
        hash_early = not from_stdin and model_name is None
        encoder, loaded_name, counted, digests = _load_while_counting(model, options, sources, hash_folder=hash_early)
        model_name = model_name or loaded_name
        options, plan = prepare_job(encoder, options)
        prompt, fast, device = plan.prompt, isinstance(encoder, static.StaticEncoder), options.device
        if not isinstance(encoder, static.StaticEncoder):
            encoder.to(device)
        if device == "cpu":
            pin_mmap_threshold(MMAP_THRESHOLD)
        total = counted.records - counted.empty if options.skip_empty else counted.records
        part = plan_shard(total, options.window, shard)
        summary = EncodeSummary(target, part.rows, _embedding_dim(encoder, options.truncate_dim), stored)
        summary.skipped_empty = counted.empty if options.skip_empty else 0
        fp = None if from_stdin else _fingerprint(sources, encoder, model_name, options, plan, digests)
        if finished and fp is not None and (intact := _finished_shard(target, fp, options.force)) is not None:
            summary.shard, summary.resumed_rows = intact, intact.rows
            summary.side_files = [*side.values(), *last.values()]
            return summary
        journal = None
        if fp is not None:
            header = {"job": job_id(fp), "shard": part.shard, "of": part.of, "rows": part.rows}
            header |= {"window": options.window, "suffix": target.suffix.lower(), "fingerprint": fp}
            # The output's own metadata names the model as given: a .safetensors header (and so where its
            # rows start) changes with that spelling, so resuming under another one is another job.
            header |= {"model": model_name}
            journal = _open_journal(target, header, resume=resume, force=options.force)
        summary.resumed_rows = journal.done if journal is not None else 0
        summary.load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        metadata = {"format": "st_cli.encode.api", "model": model_name, "precision": stored, "rows": str(part.rows)}
        temps: dict[str, Path] = {}
        sink: Sink | None = None
        try:
            sink = Sink(
                target,
                part.rows,
                summary.dimension,
                stored,
                metadata,
                partial=journal.data if journal is not None else None,
                resume=(journal.done, journal.state) if journal is not None and journal.done else None,
            )
            if "lines" in side:
                temps["lines"] = fsio.temp_file(side["lines"])
            # A static folder's pool of numpy threads: --threads, else every CPU this process may use.
            torch_threads: contextlib.AbstractContextManager[int]
            if fast:
                torch_threads = contextlib.nullcontext(options.threads or threads.usable_cpus())
            else:
                torch_threads = threads.thread_count(options.threads)
            with torch_threads as summary.threads, contextlib.ExitStack() as stack:
                read_again = Tally()
                every = tallied(iter_records(sources, read, skip_empty=False), read_again)
                kept = (r for r in every if r.text != "") if options.skip_empty else every
                records: Iterator[Record] = itertools.islice(kept, part.first_row, part.first_row + part.rows)
                if "lines" in temps:
                    records = _noting_lines(records, stack.enter_context(open(temps["lines"], "w", encoding="utf-8")))
                todo = itertools.islice(records, summary.resumed_rows, None)
                after_window = _journaling(journal, sink)
                if isinstance(encoder, static.StaticEncoder):
                    done = _encode_static_stream(
                        encoder,
                        todo,
                        prompt,
                        sink,
                        options,
                        summary,
                        progress,
                        done=summary.resumed_rows,
                        after_window=after_window,
                    )
                else:
                    stack.enter_context(reduced_linears(encoder, options.dtype))
                    prepared = windows(encoder, todo, options.window, plan, start=summary.resumed_rows)
                    done = _encode_stream(
                        encoder,
                        prefetched(prepared) if options.prefetch else prepared,
                        sink,
                        options,
                        summary,
                        progress,
                        done=summary.resumed_rows,
                        after_window=after_window,
                    )
                for _ in every:  # the rest of the inputs: the second pass must see every record too
                    pass
            _check_same_records(counted, read_again, done, part.rows)
            temps["output"] = sink.finish()
            if "calibration" in side:
                temps["calibration"] = fsio.temp_file(side["calibration"])
                temps["calibration"].write_text(json.dumps(sink.calibration(), indent=2) + "\n", encoding="utf-8")
            if fp is not None and shard is not None:
                summary.shard = _shard_info(part, total, options, summary, model_name, temps["output"], fp)
                temps["shard"] = fsio.temp_file(last["shard"])
                temps["shard"].write_text(json.dumps(summary.shard.to_json(), indent=2) + "\n", encoding="utf-8")
            fsio.pause_point("encode:publish")
            _publish_all(temps, claims, order=[*side, "output", *last])  # the sidecar last: it marks a finished shard
        except OSError as e:
            raise _os_error(e, target) from None
        finally:
            if sink is not None:
                sink.discard()
            for path in temps.values():
                fsio.remove(path)
            if journal is not None:
                journal.close()
    summary.side_files = list(side.values()) + list(last.values())
    summary.seconds = time.perf_counter() - started
    return summary


def _finished_shard(target: Path, fp: dict[str, Any], force: bool) -> ShardInfo | None:
    """A finished, intact shard of this job at `target` (nothing to do); else None to encode it again,
    which replaces a finished shard of another job only with --force."""
    info = finished_shard(target, job_id(fp))
    if info is None and not force:
        changed = ", ".join(_shard_changes(target, fp)) or "its file no longer matches its sha256"
        raise StError(f"{target}: a finished shard of another job ({changed}); pass --force to replace it")
    return info


def _shard_changes(target: Path, fp: dict[str, Any]) -> list[str]:
    try:
        return [f"changed: {', '.join(differences(read_sidecar(target).fingerprint, fp))}"]
    except StError:
        return []


def _open_journal(target: Path, header: dict[str, Any], *, resume: bool, force: bool) -> Journal | None:
    """The run's journal; None when another live run holds it and there is nothing to resume: then two
    runs race as they always did (each in its own temp, the first to publish wins)."""
    try:
        return Journal.open(target, header, resume=resume, force=force)
    except JournalBusy:
        if resume:
            raise
        return None


def _journaling(journal: Journal | None, sink: Sink) -> Callable[[int], None] | None:
    """After each window: make its rows durable, then note them in the journal."""
    if journal is None:
        return None
    return lambda rows: journal.record(rows, sink.sync())


def _fingerprint(
    sources: Sequence[Source],
    model: Encoder,
    model_name: str,
    options: EncodeOptions,
    plan: BatchPlan,
    digests: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The job: these inputs, this model (`digests`: its folder's, if already hashed), every option that
    changes the output (after device defaults)."""
    chosen = {
        "field": options.field,
        "column": options.column,
        "precision": options.precision,
        "truncate_dim": options.truncate_dim,
        "normalize": options.normalize,
        "prompt": plan.prompt,
        "kwargs": dict(options.kwargs),
        "skip_empty": options.skip_empty,
        "errors": options.errors,
        "max_batch_tokens": plan.max_tokens,
        "batch_size": plan.max_rows,
        "pad_multiple": plan.pad_multiple,
        "window": options.window,
        "device": options.device,
        "dtype": options.dtype,
    }
    versioned = static.VERSIONED if isinstance(model, static.StaticEncoder) else VERSIONED
    names = [s.name for s in sources]
    if digests is None:
        digests = _model_digests(model, model_name)
    return fingerprint([s.path for s in sources], names, digests, chosen, versioned)


def _model_digests(model: Encoder, name: str) -> dict[str, str]:
    """sha256 of every file of the model's folder; of its weights for a Model given in Python."""
    root = hub.find_local(name) if name else None
    if root is not None:
        from st_cli.format.layout import file_digests

        return file_digests(root)
    if isinstance(model, static.StaticEncoder):
        return {"<weights>": hashlib.sha256(model.table.tobytes()).hexdigest()}
    import torch

    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode() + b"\0")
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"<weights>": digest.hexdigest()}


def _shard_info(
    part: ShardPlan,
    total: int,
    options: EncodeOptions,
    summary: EncodeSummary,
    model_name: str,
    written: Path,
    fp: dict[str, Any],
) -> ShardInfo:
    return ShardInfo(
        shard=part.shard,
        of=part.of,
        first_row=part.first_row,
        rows=part.rows,
        total_rows=total,
        window=options.window,
        dimension=summary.dimension,
        precision=summary.precision,
        job_precision=options.precision,
        model=model_name,
        sha256=file_sha256(written),
        lines=options.skip_empty,
        job=job_id(fp),
        fingerprint=fp,
    )


def encode_file(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: Encoder | str | os.PathLike[str] | None = None,
    field: str = "text",
    column: str = "text",
    precision: str = "float32",
    truncate_dim: int | None = None,
    normalize: bool = False,
    prompt_name: str | None = None,
    prompt: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    skip_empty: bool = False,
    errors: str = "strict",
    max_batch_tokens: int | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    threads: int | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
    window: int = DEFAULT_WINDOW,
    prefetch: bool | None = None,
    pad_multiple: int = PAD_MULTIPLE,
    progress: ProgressFn | None = None,
    stdin: IO[bytes] | None = None,
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    model_name: str | None = None,
    workers: int = 1,
) -> EncodeSummary:
    """Embed every record of `inputs` into `output` (.npy, .safetensors or .jsonl), one row each, in order.

    Args:
        inputs: .txt (a line each), .jsonl (`field`), .csv/.tsv (`column`) files, or "-" for stdin.
        model: a Model, a folder or Hub id; default $ST_MODEL, else all-MiniLM-L6-v2.
        progress: called after each batch with (rows done, rows total, tokens done).
        shard: (I, N): encode only the I-th (0-based) of N contiguous runs of whole windows, and write
            OUTPUT.shard.json beside it; `merge_shards` joins the N parts into a single run's output.
        resume: continue a killed run of the same job from its first unfinished window.
        model_name: with a loaded Model, the folder or Hub id it came from: recorded in the output's
            metadata and the job's fingerprint as if `model` had been that name (Ray workers load once).
        workers: run the job's shards in this many processes at once (one per GPU with device
            "cuda", else sharing the CPUs) and merge them; the model must be a folder or Hub id.
        The other keywords are the fields of `EncodeOptions`, documented there.
    """
    options = EncodeOptions(
        field=field,
        column=column,
        precision=precision,
        truncate_dim=truncate_dim,
        normalize=normalize,
        prompt_name=prompt_name,
        prompt=prompt,
        kwargs=dict(kwargs or {}),
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
        prefetch=prefetch,
        pad_multiple=pad_multiple,
    )
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if workers > 1:
        from st_cli.encode.workers import encode_with_workers

        if shard is not None:
            raise StError("--workers and --shard: give one of them (each worker already runs one shard)")
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise StError("--workers: give the model as a folder or Hub id (each worker process loads it)")
        return encode_with_workers(
            items, output, options, model=model, workers=workers, resume=resume, progress=progress
        )
    if workers < 1:
        raise StError(f"--workers must be at least 1, got {workers}")
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
    )


def prepare_job(encoder: Encoder, options: EncodeOptions) -> tuple[EncodeOptions, BatchPlan]:
    """The options with the device's defaults filled in, and the batch plan, as a run of `encoder` uses them.

    One place for both, so `job_of` and Ray's `Embedder` batch and fingerprint exactly as `encode` does.
    """
    encoder.check_kwargs(dict(options.kwargs))
    prompt = encoder.resolve_prompt(options.prompt, options.prompt_name, options.kwargs.get("task"))
    # A static folder runs in numpy on the CPU (no torch: device, dtype and threads do not apply).
    fast = isinstance(encoder, static.StaticEncoder)
    options = options.for_device("cpu" if fast else resolve_device(options.device))
    assert options.max_batch_tokens is not None  # filled in by for_device
    plan = BatchPlan(
        prompt,
        options.max_batch_tokens,
        options.batch_size,
        options.pad_multiple if options.device == "cpu" else 1,
        kwargs=dict(options.kwargs),
        like_st=encoder.batch_dependent,
    )
    return options, plan


def job_of(inputs: Sequence[str | os.PathLike[str]], model: Encoder, model_name: str = "", **options: Any) -> str:
    """The job id `encode_file(inputs, ..., model=model, model_name=model_name, **options)` records in
    its journal and `.shard.json`, without running it: whether a finished shard belongs to this job."""
    opts, plan = prepare_job(model, EncodeOptions(**options))
    with resolved_inputs(inputs, None, spool_beside=Path(".")) as sources:
        return job_id(_fingerprint(sources, model, model_name, opts, plan))


def parse_kwargs(pairs: Iterable[str]) -> dict[str, Any]:
    """`key=value` strings to a dict; a value that parses as JSON (1, true, [..]) is decoded, else kept as text."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise StError(f"--kw {pair!r}: expected key=value")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value
    return kwargs
