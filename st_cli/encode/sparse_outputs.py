"""A SparseEncoder's outputs: the rows written sparse (`.safetensors` as a CSR matrix, `.jsonl` as indices and
values, or `{token: weight}` with `--decode`), and read back dense for `st merge`.

`.npy` stays the dense writer of outputs.py (a warning past DENSE_WARNING_BYTES comes from the caller).
Rows arrive in order, a window at a time, as dense float32 blocks (what the model gives). The `.safetensors`
writer appends each block's non-zeros to its temporary file as a record (row counts, column indices, values),
so a killed run is continued like a `.jsonl` one (cut back to the journal's byte count); `close` then lays
the records out as the CSR matrix `scipy.sparse.csr_matrix((values, indices, indptr), shape=shape)` reads.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_cli import fsio

LAYOUT = "csr"  # the .safetensors metadata's "layout"
# A dense .npy of a sparse model past this size gets a warning: most of it is zeros.
DENSE_WARNING_BYTES = 1 << 30
# Dense rows `st merge` holds at a time: a block of at most this many values (a vocabulary is ~30k wide).
_MERGE_VALUES = 1 << 22


@dataclass(frozen=True)
class SparseOutput:
    """How a SparseEncoder's rows are written: `vocabulary` (token by id) names the dimensions with `decode`."""

    vocabulary: tuple[str, ...] | None = None
    decode: bool = False


def _record_header(rows: int, nnz: int) -> bytes:
    return np.array([rows, nnz], np.int64).tobytes()


class _Appending:
    """A writer that appends rows in order: a resumed run cuts its file back to the journal's byte count.
    `crc` is the CRC-32 of the bytes written so far, which the journal keeps so that a resumed run can
    tell its rows from a file cut short or zeroed (outputs.RowWriter.sync, journal.partial_damage)."""

    path: Path
    file: Any
    next: int
    crc: int = 0
    rows_by_line = True  # .jsonl: a row a line, which the journal's check counts too

    def continue_at(self, state: dict[str, Any], rows: int) -> None:
        self.file.flush()
        os.truncate(self.path, int(state["bytes"]))
        self.next, self.crc = rows, int(state["crc32"])

    def _append(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.file.write(data)

    def sync(self) -> dict[str, Any]:
        self.file.flush()
        os.fsync(self.file.fileno())
        size = os.fstat(self.file.fileno()).st_size
        state: dict[str, Any] = {"bytes": size, "crc32": self.crc, "data": [0, size], "size": size}
        return state if self.rows_by_line else {**state, "rows_by_line": False}


class CsrWriter(_Appending):
    """Appends each block's non-zeros as a record; `close` writes the CSR .safetensors in its place."""

    rows_by_line = False  # binary records: the checksum alone vouches for them

    def __init__(self, path: Path, rows: int, width: int, metadata: dict[str, str]) -> None:
        self.path, self.rows, self.width, self.metadata = path, rows, width, metadata
        self.file = open(path, "ab")  # noqa: SIM115 - closed in close()
        self.next = 0

    def write(self, start: int, block: np.ndarray, ids: list[Any] | None = None) -> None:
        assert start == self.next, "sparse rows must arrive in order"
        if len(block) == 0:
            return
        rows, cols = np.nonzero(block)
        counts = np.bincount(rows, minlength=len(block)).astype(np.int32)
        values = np.ascontiguousarray(block[rows, cols], np.float32)
        self._append(_record_header(len(block), len(values)))
        self._append(counts.tobytes() + cols.astype(np.int32).tobytes() + values.tobytes())
        self.next += len(block)

    def close(self, durable: bool = True) -> None:
        self.file.flush()
        self.file.close()
        if not durable:
            return
        final = fsio.temp_file(self.path, "csr")
        try:
            _write_csr(self.path, final, self.next, self.width, self.metadata)
            os.replace(final, self.path)
        except BaseException:
            fsio.remove(final)
            raise


def _records(path: Path) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(row counts, column indices, values) of each appended block, in order."""
    with open(path, "rb") as f:
        while head := f.read(16):
            rows, nnz = (int(n) for n in np.frombuffer(head, np.int64))
            counts = np.frombuffer(f.read(4 * rows), np.int32)
            indices = np.frombuffer(f.read(4 * nnz), np.int32)
            values = np.frombuffer(f.read(4 * nnz), np.float32)
            yield counts, indices, values


def _write_csr(stream: Path, target: Path, rows: int, width: int, metadata: dict[str, str]) -> None:
    counts = [c for c, _, _ in _records(stream)]
    indptr = np.zeros(rows + 1, np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=indptr[1:])
    nnz = int(indptr[-1])
    tensors = {"indptr": ("I64", [rows + 1], 8 * (rows + 1)), "indices": ("I32", [nnz], 4 * nnz),
               "values": ("F32", [nnz], 4 * nnz)}  # fmt: skip
    header: dict[str, Any] = {"__metadata__": {**metadata, "layout": LAYOUT, "shape": json.dumps([rows, width])}}
    offset = 0
    for name, (dtype, shape, size) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    with open(target, "wb") as out:
        out.write(len(body).to_bytes(8, "little") + body)
        out.write(indptr.tobytes())
        for _, indices, _ in _records(stream):
            out.write(indices.tobytes())
        for _, _, values in _records(stream):
            out.write(values.tobytes())
        out.flush()
        os.fdatasync(out.fileno())


class SparseJsonlWriter(_Appending):
    """`{"id"?, "indices": [...], "values": [...]}` per row, or with `decode` `{token: weight, ...}` (the
    row's non-zeros, largest first; `{"id": …, "tokens": {...}}` with ids). Appends, like JsonlWriter."""

    def __init__(self, path: Path, output: SparseOutput) -> None:
        self.path, self.output = path, output
        self.file = open(path, "ab")  # noqa: SIM115 - closed in close()
        self.next = 0

    def write(self, start: int, block: np.ndarray, ids: list[Any] | None = None) -> None:
        assert start == self.next, "jsonl rows must arrive in order"
        vocab = self.output.vocabulary
        for i, row in enumerate(block):
            indices = np.flatnonzero(row)
            values = row[indices]
            record: dict[str, Any]
            if self.output.decode and vocab is not None:
                order = np.argsort(-values, kind="stable")
                tokens = {vocab[indices[j]]: float(values[j]) for j in order}
                record = tokens if ids is None else {"id": ids[i], "tokens": tokens}
            else:
                record = {} if ids is None else {"id": ids[i]}
                record |= {"indices": indices.tolist(), "values": values.tolist()}
            self._append((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self.next += len(block)

    def close(self, durable: bool = True) -> None:
        if durable:
            self.sync()
        self.file.close()


# ---------------------------------------------------------------- reading back (st merge, tests)


def is_sparse_output(path: Path) -> bool:
    """A file st encode wrote from a SparseEncoder (CSR .safetensors, or sparse .jsonl rows)."""
    try:
        if path.suffix.lower() == ".safetensors":
            return read_csr_header(path)[0].get("layout") == LAYOUT
        if path.suffix.lower() == ".jsonl":
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            return bool(first) and "embedding" not in json.loads(first)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return False


def read_csr_header(path: Path) -> tuple[dict[str, str], dict[str, Any], int]:
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return header.get("__metadata__") or {}, header, 8 + size


def read_csr(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(values, indices, indptr, shape): what `scipy.sparse.csr_matrix((values, indices, indptr), shape=shape)`
    takes."""
    metadata, header, start = read_csr_header(path)
    arrays = {}
    for name, dtype in (("indptr", np.int64), ("indices", np.int32), ("values", np.float32)):
        begin, end = header[name]["data_offsets"]
        count = (end - begin) // np.dtype(dtype).itemsize
        arrays[name] = np.fromfile(path, dtype, count=count, offset=start + begin)
    rows, width = json.loads(metadata["shape"])
    return arrays["values"], arrays["indices"], arrays["indptr"], (int(rows), int(width))


def read_sparse_rows(path: Path, dtype: np.dtype, width: int, chunk: int) -> Iterator[np.ndarray]:
    """A sparse output's rows as dense float32 blocks (few enough rows that a block stays small)."""
    step = max(1, min(chunk, _MERGE_VALUES // max(width, 1)))
    if path.suffix.lower() == ".safetensors":
        values, indices, indptr, (rows, stored_width) = read_csr(path)
        if stored_width != width:
            raise ValueError(f"{path}: holds rows of {stored_width}, expected {width}")
        for begin in range(0, rows, step):
            end = min(begin + step, rows)
            block = np.zeros((end - begin, width), np.float32)
            lo, hi = indptr[begin], indptr[end]
            row_of = np.repeat(np.arange(end - begin), np.diff(indptr[begin : end + 1]))
            block[row_of, indices[lo:hi]] = values[lo:hi]
            yield block
        return
    with open(path, encoding="utf-8") as f:
        pending: list[np.ndarray] = []
        for line in f:
            record = json.loads(line)
            if "indices" not in record:
                problem = "--decode rows name tokens, not dimensions; encode the shards without --decode"
                raise ValueError(f"{path}: {problem}")
            row = np.zeros(width, np.float32)
            row[np.asarray(record["indices"], np.int64)] = record["values"]
            pending.append(row)
            if len(pending) == step:
                yield np.stack(pending)
                pending = []
        if pending:
            yield np.stack(pending)


def sparse_ids(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["id"]
