"""`st encode`: files of text → embeddings, one row per record, in input order, in bounded memory.

The engine (DESIGN.md §5): records are read in windows; inside a window they are sorted by token
length (longest first) and cut into batches by a padded-token budget; each batch runs under
`torch.inference_mode()`; rows land in an output of final size (a memory map for .npy and
.safetensors) written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from st_cli import hub, layout
from st_cli.errors import StError

if TYPE_CHECKING:
    import torch

    from st_cli.model import Model

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
DEVICES = ("cpu", "cuda", "mps", "auto")
DTYPES = ("float32", "float16", "bfloat16")
OUTPUT_SUFFIXES = (".npy", ".safetensors", ".jsonl")
TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv")
STDIN = "-"

# Measured on 2 cores with all-MiniLM-L6-v2, 2,000 lines, one run: 1024 padded tokens per batch
# 1.81x sentence-transformers, 2048 1.53x, 4096 1.34x (activations leave the L2 cache). 512 costs
# ~7% more CPU than 1024 but keeps the FFN activations (512 x 1536 floats) under MMAP_THRESHOLD:
# at 1024 every one of them is a fresh mmap, +14% CPU in page faults.
DEFAULT_MAX_BATCH_TOKENS = 512
DEFAULT_WINDOW = 8192
# Pad batches to a multiple of this (1: no rounding). Rounding to 8 means fewer tensor shapes but
# runs ~8% more tokens; with the rows of a batch set by its width alone and the mmap threshold
# pinned, RSS stayed flat without it (MiniLM: 612 MB at 2,000 lines, 619 MB at 6,000), so it is off.
PAD_MULTIPLE = 1

# Allocations from this size up are served by mmap and unmapped on free (glibc's M_MMAP_THRESHOLD).
# Left dynamic, glibc raises the threshold to the largest block freed so far, after which activations
# of ever-changing sizes fragment the heap and RSS grows with the input (DESIGN.md §5).
MMAP_THRESHOLD = 4 << 20

ProgressFn = Callable[[int, int, int], None]  # (rows done, rows total, tokens done)


@dataclass(frozen=True)
class Record:
    source: str  # file name as given, or "<stdin>"
    line: int  # 1-based line where the record starts, in the concatenated input
    text: str


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
    side_files: list[Path] = field(default_factory=list)

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
            "texts_per_second": round(self.texts_per_second, 1),
            "side_files": [str(p) for p in self.side_files],
        }


# ---------------------------------------------------------------- reading inputs


@dataclass(frozen=True)
class _Input:
    name: str  # as the user gave it (for messages)
    path: Path
    kind: str  # txt | jsonl | csv | tsv


def _input_kind(name: str) -> str:
    """By extension; stdin and anything unknown are read as text, one record per line."""
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".csv", ".tsv"):
        return suffix[1:]
    return "txt"


def _decode(raw: bytes, name: str, line: int, errors: str) -> str:
    if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise StError(
            f"{name}:{line}: invalid UTF-8 at byte {e.start}; pass --errors replace to substitute U+FFFD"
        ) from None


def _physical_lines(source: _Input, errors: str, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; CRLF and LF both end a line; a last line may lack one."""
    with open(source.path, "rb") as f:
        for number, raw in enumerate(f, 1):
            body = raw[:-1] if raw.endswith(b"\n") else raw
            body = body[:-1] if body.endswith(b"\r") else body
            text = _decode(body, source.name, number, errors)
            yield number, (text + "\n" if keep_ends and raw.endswith(b"\n") else text)


def _read_jsonl(source: _Input, field_name: str, errors: str) -> Iterator[tuple[int, str]]:
    for number, line in _physical_lines(source, errors):
        if not line.strip():
            continue  # a blank line holds no record
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise StError(f"{source.name}:{number}: invalid JSON: {e.msg}") from None
        if not isinstance(obj, dict) or field_name not in obj:
            raise StError(f"{source.name}:{number}: no field {field_name!r} (set it with --field)")
        value = obj[field_name]
        if not isinstance(value, str):
            raise StError(f"{source.name}:{number}: field {field_name!r} is {type(value).__name__}, not a string")
        yield number, value


def _read_table(source: _Input, column: str, errors: str) -> Iterator[tuple[int, str]]:
    numbered = _physical_lines(source, errors, keep_ends=True)
    current = [0]

    def lines() -> Iterator[str]:
        for number, text in numbered:
            current[0] = number
            yield text

    reader = csv.reader(lines(), delimiter="\t" if source.kind == "tsv" else ",")
    header = next(reader, None)
    if header is None:
        return
    if column not in header:
        raise StError(f"{source.name}:1: no column {column!r}; columns: {', '.join(header)} (set it with --column)")
    index = header.index(column)
    start = current[0] + 1
    for row in reader:
        if row:
            if index >= len(row):
                raise StError(f"{source.name}:{start}: row has {len(row)} fields, no {column!r}")
            yield start, row[index]
        start = current[0] + 1


def _read_source(source: _Input, *, field_name: str, column: str, errors: str) -> Iterator[tuple[int, str]]:
    if source.kind == "jsonl":
        return _read_jsonl(source, field_name, errors)
    if source.kind in ("csv", "tsv"):
        return _read_table(source, column, errors)
    return _physical_lines(source, errors)


def _line_count(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def iter_records(
    sources: Sequence[_Input], *, field_name: str, column: str, errors: str, skip_empty: bool
) -> Iterator[Record]:
    """Every record of every input, in order; line numbers run on across inputs (as `cat` would)."""
    offset = 0
    for source in sources:
        for number, text in _read_source(source, field_name=field_name, column=column, errors=errors):
            if skip_empty and text == "":
                continue
            yield Record(source.name, offset + number, text)
        offset += _line_count(source.path)


@contextlib.contextmanager
def _resolved_inputs(inputs: Sequence[str | os.PathLike[str]], stdin: IO[bytes] | None) -> Iterator[list[_Input]]:
    """Inputs as files; stdin is spooled to a temporary file so it can be read twice."""
    if not inputs:
        raise StError("no input: give one or more files, or - for stdin")
    spooled: list[Path] = []
    try:
        resolved = []
        for item in inputs:
            name = str(item)
            kind = _input_kind(name)
            if name == STDIN:
                fd, spool = tempfile.mkstemp(prefix="st-stdin-")
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(stdin or sys.stdin.buffer, f)
                spooled.append(Path(spool))
                resolved.append(_Input("<stdin>", Path(spool), kind))
            else:
                path = Path(name)
                if not path.is_file():
                    raise StError(f"{name}: no such file")
                resolved.append(_Input(name, path, kind))
        yield resolved
    finally:
        for tmp in spooled:
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- precision


def _quantize(rows: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """sentence-transformers' `quantize_embeddings`, row-wise, with ranges calibrated beforehand."""
    if precision == "float32":
        return rows.astype(np.float32, copy=False)
    if precision == "float16":
        return rows.astype(np.float16)
    if precision in ("int8", "uint8"):
        assert ranges is not None
        starts, steps = _starts_and_steps(ranges)
        q = np.clip(np.floor((rows - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    packed = np.packbits(rows > 0, axis=-1)
    return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed


def _starts_and_steps(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranges = ranges.astype(np.float32, copy=False)
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    return starts, np.where(steps == 0, 1, steps).astype(np.float32)


def _output_width(dim: int, precision: str) -> int:
    return (dim + 7) // 8 if precision.endswith("binary") else dim


def _output_dtype(precision: str) -> np.dtype:
    return np.dtype(
        {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "binary": np.int8}.get(
            precision, np.uint8
        )
    )


# ---------------------------------------------------------------- writers


class _MappedWriter:
    """A fixed-size file whose data region (rows × width) is filled through short-lived memory maps.

    Each write maps only the rows it fills and unmaps them at once, so written pages do not stay
    counted in the process's RSS.
    """

    def __init__(self, path: Path, rows: int, width: int, dtype: np.dtype, header: bytes) -> None:
        self.path, self.rows, self.width, self.dtype = path, rows, width, dtype
        self.offset = len(header)
        with open(path, "wb") as f:
            f.write(header)
            f.truncate(self.offset + rows * width * dtype.itemsize)

    def write(self, start: int, block: np.ndarray) -> None:
        if len(block) == 0:
            return
        row_bytes = self.width * self.dtype.itemsize
        mm = np.memmap(self.path, self.dtype, "r+", offset=self.offset + start * row_bytes, shape=block.shape)
        mm[:] = block
        mm.flush()
        del mm

    def close(self) -> None:
        pass


def _npy_header(rows: int, width: int, dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, width)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "int8": "I8", "uint8": "U8"}


def _safetensors_header(rows: int, width: int, dtype: np.dtype, metadata: dict[str, str]) -> bytes:
    size = rows * width * dtype.itemsize
    entry = {"dtype": _SAFETENSORS_DTYPES[dtype.name], "shape": [rows, width], "data_offsets": [0, size]}
    body = json.dumps({"__metadata__": metadata, "embeddings": entry}, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(body).to_bytes(8, "little") + body


class _JsonlWriter:
    """One `{"index": i, "embedding": [...]}` per line; windows arrive in order, so it appends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.next = 0

    def write(self, start: int, block: np.ndarray) -> None:
        assert start == self.next, "jsonl rows must arrive in order"
        lines = (json.dumps({"index": start + i, "embedding": row}) for i, row in enumerate(block.tolist()))
        self.file.writelines(line + "\n" for line in lines)
        self.next += len(block)

    def close(self) -> None:
        self.file.close()


def _open_writer(
    output: Path, tmp: Path, rows: int, width: int, precision: str, metadata: dict[str, str]
) -> _MappedWriter | _JsonlWriter:
    dtype = _output_dtype(precision)
    suffix = output.suffix.lower()
    if suffix == ".jsonl":
        return _JsonlWriter(tmp)
    header = (
        _safetensors_header(rows, width, dtype, metadata)
        if suffix == ".safetensors"
        else _npy_header(rows, width, dtype)
    )
    return _MappedWriter(tmp, rows, width, dtype, header)


class _Sink:
    """Receives float32 rows in input order and produces the output at its precision.

    int8/uint8 are calibrated on all the data, so their rows go to a float32 staging file first
    and are quantized in chunks at the end.
    """

    def __init__(self, output: Path, rows: int, dim: int, precision: str, metadata: dict[str, str]) -> None:
        self.output, self.rows, self.dim, self.precision, self.metadata = output, rows, dim, precision, metadata
        self.tmp = layout.temp_file_beside(output)
        self.ranges: np.ndarray | None = None
        self.calibrate = precision in ("int8", "uint8")
        self.staging: Path | None = None
        self.writer: _MappedWriter | _JsonlWriter
        if self.calibrate:
            self.staging = layout.temp_file_beside(output, "f32")
            self.low = np.full(dim, np.inf, np.float32)
            self.high = np.full(dim, -np.inf, np.float32)
            self.writer = _MappedWriter(self.staging, rows, dim, np.dtype(np.float32), b"")
        else:
            self.writer = _open_writer(output, self.tmp, rows, _output_width(dim, precision), precision, metadata)

    def write(self, start: int, block: np.ndarray) -> None:
        if self.calibrate:
            if len(block):
                np.minimum(self.low, block.min(axis=0), out=self.low)
                np.maximum(self.high, block.max(axis=0), out=self.high)
            self.writer.write(start, block)
        else:
            self.writer.write(start, _quantize(block, self.precision))

    def finish(self, chunk: int = 8192) -> Path:
        """Quantize the staged rows if needed; returns the finished temporary file."""
        self.writer.close()
        if self.calibrate and self.staging is not None:
            if self.rows:
                self.ranges = np.vstack([self.low, self.high])
            else:
                self.ranges = np.zeros((2, self.dim), np.float32)
            self.metadata["calibration"] = json.dumps(self.calibration())
            final = _open_writer(self.output, self.tmp, self.rows, self.dim, self.precision, self.metadata)
            for start in range(0, self.rows, chunk):
                n = min(chunk, self.rows - start)
                staged = np.memmap(self.staging, np.float32, "r", offset=start * self.dim * 4, shape=(n, self.dim))
                final.write(start, _quantize(np.asarray(staged), self.precision, self.ranges))
                del staged
            final.close()
            self.staging.unlink()
        return self.tmp

    def calibration(self) -> dict[str, Any]:
        """The ranges int8/uint8 used: value ≈ start + (q [+128 for int8] + 0.5) × step."""
        assert self.ranges is not None
        starts, steps = _starts_and_steps(self.ranges)
        return {
            "precision": self.precision,
            "ranges": self.ranges.tolist(),
            "starts": starts.tolist(),
            "steps": steps.tolist(),
        }

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        for path in (self.tmp, self.staging):
            if path is not None:
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the engine


@dataclass(frozen=True)
class _Batch:
    indices: np.ndarray  # positions inside the window
    features: dict[str, Any]
    tokens: int
    padded_tokens: int


@dataclass(frozen=True)
class _Window:
    start: int  # first output row
    size: int
    batches: list[_Batch]
    truncated: int


def token_lengths(model: Model, texts: list[str], prompt: str = "") -> tuple[np.ndarray, int]:
    """Tokens per text after truncation, and how many texts were truncated.

    Uses the input module's fast tokenizer when it has one; otherwise characters stand in.
    """
    full = [prompt + t for t in texts] if prompt else texts
    tokenizer = getattr(model.input_module, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        return np.fromiter(map(len, full), np.int64, len(full)), 0
    ids = tokenizer(
        full,
        add_special_tokens=True,
        truncation=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )["input_ids"]
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    limit = model.get_max_seq_length()
    if not limit:
        return lengths, 0
    return np.minimum(lengths, limit), int((lengths > limit).sum())


def plan_batches(
    lengths: np.ndarray, max_tokens: int, max_rows: int | None = None, multiple: int = 1
) -> list[np.ndarray]:
    """Longest first; each batch holds as many rows as fit `max_tokens` padded tokens (at least one).

    The row count depends only on the batch's padded width, so the tensor shapes repeat.
    """
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        width = _round_up(int(lengths[order[start]]), multiple)
        rows = max(1, max_tokens // max(width, 1))
        if max_rows:
            rows = min(rows, max_rows)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple > 1 else n


def _pad_features(features: dict[str, Any], multiple: int) -> dict[str, Any]:
    """Right-pad every (rows, seq) tensor to a multiple of `multiple` (zeros: masked out)."""
    import torch

    mask = features.get("attention_mask")
    if multiple <= 1 or not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return features
    seq = mask.shape[1]
    extra = _round_up(seq, multiple) - seq
    if extra == 0:
        return features
    padded = dict(features)
    for key, value in features.items():
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == mask.shape:
            padded[key] = torch.nn.functional.pad(value, (0, extra), value=0)
    return padded


@dataclass(frozen=True)
class _Plan:
    prompt: str
    max_tokens: int
    max_rows: int | None
    pad_multiple: int


def _prepare_window(model: Model, start: int, records: list[Record], plan: _Plan) -> _Window:
    texts = [r.text for r in records]
    lengths, truncated = token_lengths(model, texts, plan.prompt)
    batches = []
    for indices in plan_batches(lengths, plan.max_tokens, plan.max_rows, plan.pad_multiple):
        features = _pad_features(model.tokenize([texts[i] for i in indices], plan.prompt), plan.pad_multiple)
        mask = features.get("attention_mask")
        padded = int(mask.numel()) if mask is not None else int(lengths[indices].max()) * len(indices)
        batches.append(_Batch(indices, features, int(lengths[indices].sum()), padded))
    return _Window(start, len(records), batches, truncated)


def _windows(records: Iterable[Record], size: int) -> Iterator[tuple[int, list[Record]]]:
    chunk: list[Record] = []
    start = 0
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield start, chunk
            start += size
            chunk = []
    if chunk:
        yield start, chunk


def _prefetched(items: Iterator[_Window], depth: int = 1) -> Iterator[_Window]:
    """Run `items` in a background thread, `depth` windows ahead (tokenizers release the GIL)."""
    import queue

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)

    thread = threading.Thread(target=work, name="st-tokenize", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            while True:
                q.get_nowait()


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


def _to_device(features: dict[str, Any], device: str) -> dict[str, Any]:
    if device == "cpu":
        return features
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _embed_batch(model: Model, batch: _Batch, device: str, dtype: str, kwargs: dict[str, Any]) -> torch.Tensor:
    import torch

    # Modules add their outputs to the dict they get: give them a copy, or every batch's token
    # embeddings would stay referenced by the window until it ends (hundreds of MB).
    features = _to_device(dict(batch.features), device)
    with torch.inference_mode(), _autocast(device, dtype):
        out = model.forward(features, **kwargs)["sentence_embedding"]
    return out.float()


# ---------------------------------------------------------------- the public function


def _load(model: Model | str | os.PathLike[str] | None, trust_remote_code: bool) -> tuple[Model, str]:
    from st_cli.model import Model, load_model

    if isinstance(model, Model):
        return model, ""
    name = str(model) if model is not None else (os.environ.get("ST_MODEL") or hub.DEFAULT_MODEL)
    return load_model(name, trust_remote_code=trust_remote_code), name


def side_paths(output: Path, *, skip_empty: bool, precision: str) -> dict[str, Path]:
    """The files written beside the output: kept line numbers, int8/uint8 calibration."""
    paths = {}
    if skip_empty:
        paths["lines"] = output.with_name(output.name + ".lines.txt")
    if precision in ("int8", "uint8") and output.suffix.lower() != ".safetensors":
        paths["calibration"] = output.with_name(output.name + ".calibration.json")
    return paths


def _check_options(output: Path, precision: str, dtype: str, errors: str, max_batch_tokens: int, window: int) -> None:
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise StError(f"{output}: unknown output type {output.suffix!r}; use {', '.join(OUTPUT_SUFFIXES)}")
    if precision not in PRECISIONS:
        raise StError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if dtype not in DTYPES:
        raise StError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if errors not in ("strict", "replace"):
        raise StError(f"--errors: expected strict or replace, got {errors!r}")
    if max_batch_tokens < 1 or window < 1:
        raise StError("--max-batch-tokens and the window size must be positive")


def _check_free(paths: Iterable[Path], force: bool) -> None:
    for path in paths:
        layout.check_output_free(path, force=force)
        if path.is_dir():
            raise StError(f"{path}: is a folder; give a file name ending in {', '.join(OUTPUT_SUFFIXES)}")


def _embedding_dim(model: Model, truncate_dim: int | None) -> int:
    dim = model.get_sentence_embedding_dimension()
    if dim is None:  # a custom last module that does not say: ask it
        dim = int(model.embed([""]).shape[-1])
    limit = truncate_dim or model.truncate_dim
    if truncate_dim is not None and truncate_dim <= 0:
        raise StError(f"--truncate-dim must be positive, got {truncate_dim}")
    if truncate_dim is not None and truncate_dim > dim:
        raise StError(f"--truncate-dim {truncate_dim} is wider than the model's {dim}-d embeddings")
    return min(dim, limit) if limit else dim


def _count(sources: Sequence[_Input], read: dict[str, Any]) -> tuple[int, int]:
    """Records and empty records; reading everything once also reports bad input before the model loads."""
    total = empty = 0
    for record in iter_records(sources, skip_empty=False, **read):
        total += 1
        empty += record.text == ""
    return total, empty


def _noting_lines(records: Iterator[Record], out: IO[str]) -> Iterator[Record]:
    for record in records:
        out.write(f"{record.line}\n")
        yield record


@dataclass
class _Options:
    prompt: str
    device: str
    dtype: str
    normalize: bool
    truncate_dim: int | None
    kwargs: dict[str, Any]


def _encode_stream(
    model: Model,
    windows: Iterable[_Window],
    sink: _Sink,
    options: _Options,
    summary: EncodeSummary,
    progress: ProgressFn | None,
) -> int:
    """Run every batch; rows go to the sink one window at a time, in input order."""
    done = 0
    for win in windows:
        block = np.empty((win.size, summary.dimension), np.float32)
        for batch in win.batches:
            emb = _embed_batch(model, batch, options.device, options.dtype, options.kwargs)
            block[batch.indices] = model.finish(emb, normalize=options.normalize, truncate_dim=options.truncate_dim)
            done += len(batch.indices)
            summary.tokens += batch.tokens
            summary.padded_tokens += batch.padded_tokens
            if progress is not None:
                progress(done, summary.rows, summary.tokens)
        summary.truncated += win.truncated
        sink.write(win.start, block)
    return done


def encode_file(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: Model | str | os.PathLike[str] | None = None,
    field: str = "text",
    column: str = "text",
    precision: str = "float32",
    truncate_dim: int | None = None,
    normalize: bool = False,
    prompt_name: str | None = None,
    prompt: str | None = None,
    kwargs: dict[str, Any] | None = None,
    skip_empty: bool = False,
    errors: str = "strict",
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    batch_size: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
    window: int = DEFAULT_WINDOW,
    prefetch: bool = False,
    pad_multiple: int = PAD_MULTIPLE,
    progress: ProgressFn | None = None,
    stdin: IO[bytes] | None = None,
) -> EncodeSummary:
    """Embed every record of `inputs` into `output` (.npy, .safetensors or .jsonl), one row each, in order.

    Args:
        inputs: .txt (a line each), .jsonl (`field`), .csv/.tsv (`column`) files, or "-" for stdin.
        model: a Model, a folder or Hub id; default $ST_MODEL, else all-MiniLM-L6-v2.
        kwargs: encode-time keyword arguments for the modules that declare them in modules.json.
        skip_empty: drop empty records and write the kept line numbers to OUTPUT.lines.txt.
        errors: "strict" (invalid UTF-8 is an error naming file and line) or "replace".
        max_batch_tokens: padded tokens per batch; `batch_size` also caps the rows.
        window: records sorted together; memory grows with it, not with the input.
        prefetch: tokenize the next window in a background thread while the model runs.
        progress: called after each batch with (rows done, rows total, tokens done).
    """
    started = time.perf_counter()
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    target = Path(output)
    kwargs = dict(kwargs or {})
    _check_options(target, precision, dtype, errors, max_batch_tokens, window)
    side = side_paths(target, skip_empty=skip_empty, precision=precision)
    _check_free([target, *side.values()], force)
    if not target.parent.is_dir():
        raise StError(f"{target.parent}: no such folder for the output")
    read = {"field_name": field, "column": column, "errors": errors}
    with _resolved_inputs(items, stdin) as sources:
        total, empty = _count(sources, read)
        encoder, model_name = _load(model, trust_remote_code)
        encoder.check_kwargs(kwargs)
        options = _Options(
            encoder.resolve_prompt(prompt, prompt_name), resolve_device(device), dtype, normalize, truncate_dim, kwargs
        )
        encoder.to(options.device)
        if options.device == "cpu":
            pin_mmap_threshold(MMAP_THRESHOLD)
        rows = total - empty if skip_empty else total
        summary = EncodeSummary(target, rows, _embedding_dim(encoder, truncate_dim), precision)
        summary.skipped_empty = empty if skip_empty else 0
        plan = _Plan(options.prompt, max_batch_tokens, batch_size, pad_multiple if options.device == "cpu" else 1)
        summary.load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        metadata = {"format": "st_cli.encode", "model": model_name, "precision": precision, "rows": str(rows)}
        sink = _Sink(target, rows, summary.dimension, precision, metadata)
        lines_tmp = layout.temp_file_beside(side["lines"]) if "lines" in side else None
        try:
            with _torch_threads(threads), contextlib.ExitStack() as stack:
                records = iter_records(sources, skip_empty=skip_empty, **read)
                if lines_tmp is not None:
                    records = _noting_lines(records, stack.enter_context(open(lines_tmp, "w", encoding="utf-8")))
                windows: Iterator[_Window] = (
                    _prepare_window(encoder, start, chunk, plan) for start, chunk in _windows(records, window)
                )
                done = _encode_stream(
                    encoder, _prefetched(windows) if prefetch else windows, sink, options, summary, progress
                )
            if done != rows:
                raise StError(f"the inputs changed while being read: {rows} records counted, then {done} read")
            finished = sink.finish()
            if "calibration" in side:
                calibration_tmp = layout.temp_file_beside(side["calibration"])
                calibration_tmp.write_text(json.dumps(sink.calibration(), indent=2) + "\n", encoding="utf-8")
                layout.publish(calibration_tmp, side["calibration"])
            if lines_tmp is not None:
                layout.publish(lines_tmp, side["lines"])
            layout.publish(finished, target)
        except BaseException:
            sink.discard()
            if lines_tmp is not None:
                lines_tmp.unlink(missing_ok=True)
            raise
    summary.side_files = list(side.values())
    summary.seconds = time.perf_counter() - started
    return summary


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
