"""Writing `st encode`'s outputs: a table of writers by suffix, precisions, int8/uint8 calibration.

Rows arrive as float32 blocks in input order and land in a file of final size under a temporary
name beside the output (.npy and .safetensors written in place, .jsonl appended, .parquet in row groups).
With --id-field each row's id goes with it: inside .jsonl and .parquet, into OUT.ids.jsonl beside
.npy and .safetensors.
int8/uint8 are calibrated on all the data, so their rows are staged as float32 first and quantized
at the end; the ranges go where the writer's `calibration` says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from st_cli import fsio
from st_cli.encode.sparse_outputs import (
    CsrWriter,
    SparseJsonlWriter,
    SparseOutput,
    is_sparse_output,
    read_sparse_rows,
    sparse_ids,
)
from st_cli.errors import ModelFolderError, StError

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
CALIBRATED = ("int8", "uint8")


# ---------------------------------------------------------------- precision


def quantize(rows: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """sentence-transformers' `quantize_embeddings`, row-wise, with ranges calibrated beforehand."""
    if precision == "float32":
        return rows.astype(np.float32, copy=False)
    if precision == "float16":
        return rows.astype(np.float16)
    if precision in CALIBRATED:
        assert ranges is not None
        starts, steps = starts_and_steps(ranges)
        q = np.clip(np.floor((rows - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    packed = np.packbits(rows > 0, axis=-1)
    return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed


def starts_and_steps(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranges = ranges.astype(np.float32, copy=False)
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    return starts, np.where(steps == 0, 1, steps).astype(np.float32)


def output_width(dim: int, precision: str) -> int:
    """Columns in the output: bit precisions pack 8 dimensions a byte."""
    return (dim + 7) // 8 if precision.endswith("binary") else dim


_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "binary": np.int8}


def output_dtype(precision: str) -> np.dtype:
    return np.dtype(_DTYPES.get(precision, np.uint8))


# ---------------------------------------------------------------- writers


# Row ids from a given row on (`--id-field`), read from the inputs again as the rows are written.
IdsFn = Callable[[int], Iterator[Any]]


class RowWriter(Protocol):
    def write(self, start: int, block: np.ndarray, ids: list[Any] | None = None) -> None: ...

    def sync(self) -> dict[str, Any]:
        """Make the rows so far durable; returns what a resumed run needs to continue the file: at least
        "crc32", the CRC-32 of the bytes "data" = [start, end) of the file holding the rows, "size", the
        least size of an intact file, and "row_bytes" (absent: a row a line), so the rows a journal names
        are the rows the checksum covers (`journal.partial_damage` checks them before a resume)."""
        ...

    def continue_at(self, state: dict[str, Any], rows: int) -> None:
        """Go on after `rows` rows, as a `sync()` of a killed run returned `state`."""
        ...

    def close(self, durable: bool = True) -> None:
        """Done writing; `durable`: the rows are on disk before this returns (the file is published next)."""
        ...


class InPlaceWriter:
    """A fixed-size file whose data region (rows × width) is filled in place, a block of rows at a time.

    Writes go through the page cache (pwrite), so written rows never count in the process's RSS;
    `sync` (after each window of a journaled run) and `close` make them durable (fdatasync). A memory
    map flushed at every write did the same at 3x the CPU time (page faults, msync).
    Rows arrive in order: `crc` is the CRC-32 of the data bytes written so far, as written, which a
    journal keeps so that a resumed run can tell rows on disk from a file cut short or zeroed.
    """

    def __init__(self, path: Path, rows: int, width: int, dtype: np.dtype, header: bytes) -> None:
        self.path, self.rows, self.width, self.dtype = path, rows, width, dtype
        self.offset = len(header)
        self.crc, self.end = 0, self.offset  # CRC-32 of bytes [offset, end): the rows written so far
        size = self.size = self.offset + rows * width * dtype.itemsize
        try:
            with open(path, "r+b") as f:  # the temp exists (created by fsio.temp_file), maybe reserved larger
                f.write(header)
                f.truncate(size)
        except OSError as e:
            raise fsio.write_error(e, path) from None
        # Every block a write will fill is on disk now: a full disk or a file-size limit is an error here,
        # never one halfway (and a reader's memory map of the finished file never meets a SIGBUS).
        fsio.allocate(path, size)

    def write(self, start: int, block: np.ndarray, ids: list[Any] | None = None) -> None:
        if len(block) == 0:
            return
        data = np.ascontiguousarray(block, self.dtype).data.cast("B")
        at = self.offset + start * self.width * self.dtype.itemsize
        self.crc, self.end = zlib.crc32(data, self.crc), at + len(data)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            while data:  # pwrite may write less than asked
                written = os.pwrite(fd, data, at)
                data, at = data[written:], at + written
        finally:
            os.close(fd)

    def sync(self) -> dict[str, Any]:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        # The rows a journal names are where they belong; these let a resumed run check they still are.
        row_bytes = self.width * self.dtype.itemsize
        return {"crc32": self.crc, "data": [self.offset, self.end], "size": self.size, "row_bytes": row_bytes}

    def continue_at(self, state: dict[str, Any], rows: int) -> None:
        self.crc, self.end = int(state["crc32"]), int(state["data"][1])

    def close(self, durable: bool = True) -> None:
        if durable:  # a published file's rows are on disk before its name is
            self.sync()


def npy_header(rows: int, width: int, dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, width)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "int8": "I8", "uint8": "U8"}


def safetensors_header(rows: int, width: int, dtype: np.dtype, metadata: dict[str, str]) -> bytes:
    size = rows * width * dtype.itemsize
    entry = {"dtype": _SAFETENSORS_DTYPES[dtype.name], "shape": [rows, width], "data_offsets": [0, size]}
    body = json.dumps({"__metadata__": metadata, "embeddings": entry}, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(body).to_bytes(8, "little") + body


class JsonlWriter:
    """One `{"index": i, "embedding": [...]}` per line (`{"id": …, "embedding": [...]}` with ids);
    windows arrive in order, so it appends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Appending to the temp (created empty): a resumed run first cuts it back with `continue_at`.
        self.file = open(path, "ab")  # noqa: SIM115 - closed in close()
        self.next = 0
        self.crc = 0  # CRC-32 of the bytes written so far (see InPlaceWriter)

    def continue_at(self, state: dict[str, Any], rows: int) -> None:
        """Resume after `rows` rows that filled the `state["bytes"]` first bytes (a killed run's journal)."""
        self.file.flush()
        os.truncate(self.path, int(state["bytes"]))
        self.next, self.crc = rows, int(state["crc32"])

    def sync(self) -> dict[str, Any]:
        """Make the rows so far durable; returns the file's size in bytes (a resumed run cuts it back there)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        size = os.fstat(self.file.fileno()).st_size
        return {"bytes": size, "crc32": self.crc, "data": [0, size], "size": size}

    def write(self, start: int, block: np.ndarray, ids: list[Any] | None = None) -> None:
        assert start == self.next, "jsonl rows must arrive in order"
        if ids is not None:
            lines = (json.dumps({"id": i, "embedding": row}) for i, row in zip(ids, block.tolist(), strict=True))
        else:
            lines = (json.dumps({"index": start + i, "embedding": row}) for i, row in enumerate(block.tolist()))
        for line in lines:  # a line at a time: a window's joined lines would be tens of MB
            data = (line + "\n").encode()  # ASCII: json.dumps escapes every other character
            self.crc = zlib.crc32(data, self.crc)
            self.file.write(data)
        self.next += len(block)

    def close(self, durable: bool = True) -> None:
        if durable:
            self.sync()
        self.file.close()


def _open_npy(path: Path, rows: int, width: int, dtype: np.dtype, metadata: dict[str, str]) -> RowWriter:
    return InPlaceWriter(path, rows, width, dtype, npy_header(rows, width, dtype))


def _open_safetensors(path: Path, rows: int, width: int, dtype: np.dtype, metadata: dict[str, str]) -> RowWriter:
    return InPlaceWriter(path, rows, width, dtype, safetensors_header(rows, width, dtype, metadata))


def _open_jsonl(path: Path, rows: int, width: int, dtype: np.dtype, metadata: dict[str, str]) -> RowWriter:
    return JsonlWriter(path)


PARQUET_EXTRA = "pip install 'st-cli[parquet]'"
_PARQUET_ROW_GROUP = 16384  # rows per row group: ~25 MB of 384-dim float32, read back a group at a time


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 - pyarrow.parquet is a submodule to load
    except ImportError:
        raise StError(f"writing .parquet needs pyarrow: {PARQUET_EXTRA}") from None
    return pyarrow


class ParquetWriter:
    """An `id` column (with ids) and an `embedding` column of fixed-size lists (float32, float16, int8 or
    uint8, the precision's dtype), written in row groups as rows arrive; `metadata` goes into the schema."""

    def __init__(self, path: Path, width: int, dtype: np.dtype, metadata: dict[str, str]) -> None:
        self.pa = _pyarrow()
        self.path, self.width, self.dtype, self.metadata = path, width, dtype, metadata
        self.blocks: list[np.ndarray] = []
        self.ids: list[Any] | None = None
        self.buffered = 0
        self.writer: Any = None
        self.id_type: Any = None

    def write(self, start: int, block: np.ndarray, ids: list[Any] | None = None) -> None:
        if len(block) == 0:
            return
        self.blocks.append(np.ascontiguousarray(block, self.dtype))
        if ids is not None:
            self.ids = (self.ids or []) + list(ids)
        self.buffered += len(block)
        if self.buffered >= _PARQUET_ROW_GROUP:
            self._flush()

    def _schema(self, with_ids: bool) -> Any:
        pa = self.pa
        fields = [pa.field("id", self.id_type or pa.string())] if with_ids else []
        fields.append(pa.field("embedding", pa.list_(pa.from_numpy_dtype(self.dtype), self.width)))
        return pa.schema(fields, metadata=self.metadata)

    def _flush(self) -> None:
        pa = self.pa
        rows = np.concatenate(self.blocks) if self.blocks else np.empty((0, self.width), self.dtype)
        columns = [pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), self.width)]
        names = ["embedding"]
        if self.ids is not None:
            try:
                ids = pa.array(self.ids, type=self.id_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                raise StError(f"--id-field: the ids mix strings and integers (or overflow int64): {e}") from None
            self.id_type = ids.type
            columns.insert(0, ids)
            names.insert(0, "id")
        if self.writer is None:
            self.writer = self.pa.parquet.ParquetWriter(self.path, self._schema(self.ids is not None))
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self._schema(self.ids is not None)))
        self.blocks, self.ids, self.buffered = [], ([] if self.ids is not None else None), 0

    def sync(self) -> dict[str, Any]:
        return {}  # a Parquet file is finished by its footer: a killed run's cannot be continued

    def continue_at(self, state: dict[str, Any], rows: int) -> None:
        raise StError(f"{self.path}: a .parquet output cannot be continued")

    def close(self, durable: bool = True) -> None:
        if self.buffered or self.writer is None:
            self._flush()
        self.writer.close()
        if durable:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)


def _open_parquet(path: Path, rows: int, width: int, dtype: np.dtype, metadata: dict[str, str]) -> RowWriter:
    return ParquetWriter(path, width, dtype, metadata)


def _read_parquet(path: Path, dtype: np.dtype, width: int, chunk: int) -> Iterator[np.ndarray]:
    _pyarrow()
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=chunk, columns=["embedding"], use_threads=False):
        values = batch.column(0).flatten().to_numpy(zero_copy_only=False)
        if values.dtype != dtype:
            raise ValueError(f"{path}: holds {values.dtype} rows, expected {dtype}")
        yield values.reshape(-1, width)


def _parquet_ids(path: Path) -> Iterator[Any]:
    _pyarrow()
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=["id"], use_threads=False):
        yield from batch.column(0).to_pylist()


def _jsonl_ids(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["id"]


def _mapped_rows(path: Path, offset: int, dtype: np.dtype, width: int, chunk: int) -> Iterator[np.ndarray]:
    rows = (path.stat().st_size - offset) // (width * dtype.itemsize) if width else 0
    data = np.memmap(path, dtype, "r", offset=offset, shape=(rows, width)) if rows else np.empty((0, width), dtype)
    for start in range(0, rows, chunk):
        yield np.array(data[start : start + chunk])
    del data


def _read_npy(path: Path, dtype: np.dtype, width: int, chunk: int) -> Iterator[np.ndarray]:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        shape, _, stored = np.lib.format.read_array_header_1_0(f)
        offset = f.tell()
    if stored != dtype or len(shape) != 2 or shape[1] != width:
        raise ValueError(f"{path}: holds {stored} {shape}, expected {dtype} rows of {width}")
    return _mapped_rows(path, offset, dtype, width, chunk)


def _read_safetensors(path: Path, dtype: np.dtype, width: int, chunk: int) -> Iterator[np.ndarray]:
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(size))["embeddings"]
    if entry["dtype"] != _SAFETENSORS_DTYPES[dtype.name] or entry["shape"][1:] != [width]:
        raise ValueError(f"{path}: holds {entry['dtype']} {entry['shape']}, expected {dtype} rows of {width}")
    return _mapped_rows(path, 8 + size, dtype, width, chunk)


def _read_jsonl(path: Path, dtype: np.dtype, width: int, chunk: int) -> Iterator[np.ndarray]:
    with open(path, encoding="utf-8") as f:
        rows: list[list[float]] = []
        for line in f:
            rows.append(json.loads(line)["embedding"])
            if len(rows) == chunk:
                yield np.array(rows, dtype).reshape(-1, width)
                rows = []
        if rows:
            yield np.array(rows, dtype).reshape(-1, width)


OpenFn = Callable[[Path, int, int, np.dtype, dict[str, str]], RowWriter]
ReadFn = Callable[[Path, np.dtype, int, int], Iterator[np.ndarray]]


@dataclass(frozen=True)
class WriterSpec:
    suffix: str
    open: OpenFn  # (temporary path, rows, width, dtype, metadata) → writer
    read: ReadFn  # (path, dtype, width, rows per block) → blocks of rows, as written (st merge)
    precisions: tuple[str, ...]  # which --precision values it stores
    calibration: Literal["side-file", "metadata"]  # where int8/uint8 ranges go
    ids: Callable[[Path], Iterator[Any]] | None = None  # its rows' ids (--id-field); None: in OUT.ids.jsonl
    resumable: bool = True  # a killed run's partial file can be continued (--resume)
    magic: tuple[bytes, ...] = ()  # what such a file starts with: --force replaces nothing else
    requires: str = ""  # an optional package it needs (checked before anything is read)

    def check_installed(self) -> None:
        import importlib.util

        if self.requires and importlib.util.find_spec(self.requires) is None:
            raise StError(f"writing {self.suffix} needs {self.requires}: {PARQUET_EXTRA}")

    def kind(self) -> fsio.Kind:
        return fsio.Kind(f"a {self.suffix} file", folder=False, looks_right=self._looks_right)

    def _looks_right(self, path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError:
            return False
        return not head or not self.magic or any(m in head[:16] for m in self.magic)


WRITERS: dict[str, WriterSpec] = {
    ".npy": WriterSpec(".npy", _open_npy, _read_npy, PRECISIONS, calibration="side-file", magic=(b"\x93NUMPY",)),
    ".safetensors": WriterSpec(
        ".safetensors", _open_safetensors, _read_safetensors, PRECISIONS, calibration="metadata", magic=(b'{"',)
    ),
    # jsonl rows are JSON numbers of the quantized values; ranges go beside it like .npy's.
    ".jsonl": WriterSpec(
        ".jsonl", _open_jsonl, _read_jsonl, PRECISIONS, calibration="side-file", ids=_jsonl_ids, magic=(b'{"',)
    ),
    # An `id` column and a fixed-size list column; ranges go into the schema's metadata.
    ".parquet": WriterSpec(
        ".parquet", _open_parquet, _read_parquet, PRECISIONS, calibration="metadata", ids=_parquet_ids,
        resumable=False, magic=(b"PAR1",), requires="pyarrow",
    ),
}
OUTPUT_SUFFIXES = tuple(WRITERS)


def writer_for(output: Path) -> WriterSpec | None:
    return WRITERS.get(output.suffix.lower())


def sparse_writer_for(output: Path, sparse: SparseOutput) -> WriterSpec | None:
    """A SparseEncoder's writer for this suffix: .safetensors as CSR, .jsonl as sparse rows; None: the dense one
    (.npy, .parquet)."""
    suffix = output.suffix.lower()
    if suffix == ".safetensors":
        csr: OpenFn = lambda path, rows, width, dtype, metadata: CsrWriter(path, rows, width, metadata)  # noqa: E731
        return dataclasses.replace(WRITERS[suffix], open=csr, read=read_sparse_rows, precisions=("float32",))
    if suffix == ".jsonl":
        rows: OpenFn = lambda path, n, width, dtype, metadata: SparseJsonlWriter(path, sparse)  # noqa: E731
        return dataclasses.replace(WRITERS[suffix], open=rows, read=read_sparse_rows, ids=sparse_ids,
                                   precisions=("float32",))  # fmt: skip
    return None


def read_rows(path: Path, precision: str, dim: int, chunk: int = 8192) -> Iterator[np.ndarray]:
    """The rows of an output file as st wrote it, in blocks of `chunk` (a one-line error if it is not one)."""
    spec = writer_for(path)
    if spec is None:
        raise StError(f"{path}: unknown output type {path.suffix!r}")
    if is_sparse_output(path):  # a SparseEncoder's rows: CSR or sparse .jsonl, read back dense
        spec = dataclasses.replace(spec, read=read_sparse_rows)
    try:
        yield from spec.read(path, output_dtype(precision), output_width(dim, precision), chunk)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise StError(f"{path}: unreadable as {precision} rows of {dim}: {e}") from None


def ids_path(output: Path) -> Path:
    return output.with_name(output.name + ".ids.jsonl")


def read_ids(path: Path) -> Iterator[Any]:
    """The ids of an output's rows, in order: from inside it, or from its OUT.ids.jsonl."""
    spec = writer_for(path)
    try:
        if spec is not None and spec.ids is not None:
            yield from spec.ids(path)
        else:
            yield from _jsonl_ids(ids_path(path))
    except FileNotFoundError as e:
        raise StError(f"{e.filename}: missing; the ids of {path.name}'s rows are there") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StError(f"{path}: its ids are unreadable: {e}") from None


def write_ids(target: Path, ids: Iterator[Any]) -> None:
    """OUT.ids.jsonl: `{"id": …}` per row, in row order (beside .npy and .safetensors)."""
    with open(target, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": value}) + "\n" for value in ids)


def side_paths(output: Path, *, skip_empty: bool, precision: str, ids: bool = False) -> dict[str, Path]:
    """The files written beside the output: kept line numbers, int8/uint8 calibration, row ids."""
    paths = {}
    if skip_empty:
        paths["lines"] = output.with_name(output.name + ".lines.txt")
    spec = writer_for(output)
    if ids and spec is not None and spec.ids is None:
        paths["ids"] = ids_path(output)
    if precision in CALIBRATED and spec is not None and spec.calibration == "side-file":
        paths["calibration"] = output.with_name(output.name + ".calibration.json")
    return paths


def refuse_non_finite(block: np.ndarray, start: int) -> None:
    """No embedding st writes holds NaN or inf: the model gave one for this row (rows count from 0, as ids do)."""
    if len(block) and not np.isfinite(block).all():
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        what = "NaN" if np.isnan(block[bad[0]]).any() else "inf"
        more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
        message = f"the model gives {what} in the embedding of row {start + int(bad[0])}{more}; st writes no NaN or inf"
        raise ModelFolderError(message)


class Sink:
    """Receives float32 rows in input order and produces the output at its precision.

    Everything it will write is allocated when it is made, before any encoding: the output's temp
    file at its final size, and for int8/uint8 (calibrated on all the data, so their rows go to a
    float32 staging file and are quantized in chunks at the end) the staging file too.
    """

    def __init__(
        self,
        output: Path,
        rows: int,
        dim: int,
        precision: str,
        metadata: dict[str, str],
        *,
        partial: Path | None = None,
        resume: tuple[int, dict[str, Any]] | None = None,
        ids: IdsFn | None = None,
        sparse: SparseOutput | None = None,
    ) -> None:
        """`sparse`: a SparseEncoder's rows, written sparse where the suffix has a sparse form.
        `partial`: an existing empty file (or, with `resume`, a killed run's) to hold the rows as they
        arrive: the output's temp, or the int8/uint8 staging file. `resume`: (rows done, `state()` then).
        `ids`: the rows' ids from a row on, for a writer that keeps them inside the file (.jsonl, .parquet)."""
        self.output, self.rows, self.dim, self.precision, self.metadata = output, rows, dim, precision, metadata
        spec = (sparse_writer_for(output, sparse) if sparse is not None else None) or writer_for(output)
        assert spec is not None, output
        self.spec = spec
        self.ids = ids if spec.ids is not None else None
        self.pending_ids: Iterator[Any] | None = None
        if resume is not None and resume[0] and not spec.resumable and precision not in CALIBRATED:
            raise StError(f"{output}: a {spec.suffix} output cannot be continued; run again without --resume")
        self.ranges: np.ndarray | None = None
        self.calibrate = precision in CALIBRATED
        self.staging: Path | None = None
        self.writer: RowWriter | None = None
        self.partial = partial
        self.tmp = partial if partial is not None and not self.calibrate else fsio.temp_file(output)
        try:
            if self.calibrate:
                self.staging = partial or fsio.temp_file(output, "f32")
                self.low = np.full(dim, np.inf, np.float32)
                self.high = np.full(dim, -np.inf, np.float32)
                # The final file is written at the end; reserve it now (its header grows by the ranges).
                fsio.allocate(self.tmp, self._final_bytes() + _CALIBRATION_HEADER_BYTES * (dim + 8))
                self.writer = InPlaceWriter(self.staging, rows, dim, np.dtype(np.float32), b"")
            else:
                self.writer = self._open_final()
            if resume is not None:
                self._continue(*resume)
        except BaseException:
            self.discard()
            raise

    def _continue(self, rows: int, state: dict[str, Any]) -> None:
        if self.calibrate and rows:
            self.low = np.asarray(state["low"], np.float32)
            self.high = np.asarray(state["high"], np.float32)
        if rows:
            assert self.writer is not None
            self.writer.continue_at(state, rows)

    def sync(self) -> dict[str, Any]:
        """Make the rows written so far durable; returns what a resumed run needs (see `resume`)."""
        assert self.writer is not None
        state = self.writer.sync()  # the output's rows, or the staged float32 ones
        if self.calibrate:
            state["low"], state["high"] = self.low.tolist(), self.high.tolist()
        return state

    def _final_bytes(self) -> int:
        return 4096 + self.rows * output_width(self.dim, self.precision) * output_dtype(self.precision).itemsize

    def _open_final(self) -> RowWriter:
        dtype = output_dtype(self.precision)
        return self.spec.open(self.tmp, self.rows, output_width(self.dim, self.precision), dtype, self.metadata)

    def _ids_for(self, start: int, count: int) -> list[Any] | None:
        """The ids of rows start..start+count, read on from where the last block ended."""
        if self.ids is None:
            return None
        if self.pending_ids is None:
            self.pending_ids = self.ids(start)
        ids = list(itertools.islice(self.pending_ids, count))
        if len(ids) != count:
            raise StError(f"{self.output}: {len(ids)} ids for {count} rows: the inputs changed while being read")
        return ids

    def write(self, start: int, block: np.ndarray) -> None:
        assert self.writer is not None
        refuse_non_finite(block, start)
        if self.calibrate:
            if len(block):
                np.minimum(self.low, block.min(axis=0), out=self.low)
                np.maximum(self.high, block.max(axis=0), out=self.high)
            self.writer.write(start, block)
        else:
            self.writer.write(start, quantize(block, self.precision), self._ids_for(start, len(block)))

    def write_stored(self, start: int, block: np.ndarray) -> None:
        """Rows already at this sink's precision (a shard's, in `st merge`)."""
        assert self.writer is not None and not self.calibrate
        if block.dtype.kind == "f":
            refuse_non_finite(block, start)
        self.writer.write(start, block, self._ids_for(start, len(block)))

    def finish(self, chunk: int = 8192) -> Path:
        """Quantize the staged rows if needed; returns the finished temporary file."""
        assert self.writer is not None
        # Staged float32 rows are read back through the page cache and removed: never worth a sync.
        self.writer.close(durable=not self.calibrate)
        if self.calibrate and self.staging is not None:
            if self.rows:
                self.ranges = np.vstack([self.low, self.high])
            else:
                self.ranges = np.zeros((2, self.dim), np.float32)
            self.metadata["calibration"] = json.dumps(self.calibration())
            os.truncate(self.tmp, 0)  # the space reserved up front: the writer sizes (or appends to) the file
            final = self._open_final()
            self.pending_ids = None  # the staged rows were written without theirs: read them from the start
            for start in range(0, self.rows, chunk):
                n = min(chunk, self.rows - start)
                staged = np.memmap(self.staging, np.float32, "r", offset=start * self.dim * 4, shape=(n, self.dim))
                final.write(start, quantize(np.asarray(staged), self.precision, self.ranges), self._ids_for(start, n))
                del staged
            final.close()
            fsio.remove(self.staging)
        return self.tmp

    def calibration(self) -> dict[str, Any]:
        """The ranges int8/uint8 used: value ≈ start + (q [+128 for int8] + 0.5) × step."""
        assert self.ranges is not None
        starts, steps = starts_and_steps(self.ranges)
        return {
            "precision": self.precision,
            "ranges": self.ranges.tolist(),
            "starts": starts.tolist(),
            "steps": steps.tolist(),
        }

    def discard(self, keep_partial: bool = False) -> None:
        """Close and remove what is not published; with `keep_partial`, leave `partial` (an interrupted run's rows)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close(durable=False)
        for path in (self.tmp, self.staging):
            if path is not None and not (keep_partial and path == self.partial):
                fsio.remove(path)


# Bytes per dimension the calibration adds to a .safetensors header (4 floats as JSON, escaped), generously.
_CALIBRATION_HEADER_BYTES = 160
