"""Reading `st encode`'s inputs: a table of readers by suffix, records numbered by file and line.

Every reader yields `(line, text)` for each record of one file, where `line` is the 1-based line the
record starts on. Inputs are read twice (a counting pass that reports bad input before the model
loads, then the encoding pass), so stdin is spooled to a file first.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from st_cli.errors import StError

STDIN = "-"
STDIN_NAME = "<stdin>"


@dataclass(frozen=True)
class Record:
    source: str  # file name as given, or "<stdin>"
    line: int  # 1-based line where the record starts, in the concatenated input
    text: str


@dataclass(frozen=True)
class ReadOptions:
    field: str = "text"  # the JSON field holding the text in .jsonl inputs
    column: str = "text"  # the column holding the text in .csv/.tsv inputs
    errors: str = "strict"  # invalid UTF-8: "strict" (an error naming file and line) or "replace"


@dataclass(frozen=True)
class Source:
    name: str  # as the user gave it (for messages)
    path: Path
    reader: Reader


ReadFn = Callable[[Source, ReadOptions], Iterator[tuple[int, str]]]


@dataclass(frozen=True)
class Reader:
    kind: str
    read: ReadFn
    what: str  # for help text: what one record is


def _decode(raw: bytes, name: str, line: int, errors: str) -> str:
    if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise StError(
            f"{name}:{line}: invalid UTF-8 at byte {e.start}; pass --errors replace to substitute U+FFFD"
        ) from None


def _physical_lines(source: Source, errors: str, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; CRLF and LF both end a line; a last line may lack one."""
    with open(source.path, "rb") as f:
        for number, raw in enumerate(f, 1):
            body = raw[:-1] if raw.endswith(b"\n") else raw
            body = body[:-1] if body.endswith(b"\r") else body
            text = _decode(body, source.name, number, errors)
            yield number, (text + "\n" if keep_ends and raw.endswith(b"\n") else text)


def read_lines(source: Source, options: ReadOptions) -> Iterator[tuple[int, str]]:
    return _physical_lines(source, options.errors)


def read_jsonl(source: Source, options: ReadOptions) -> Iterator[tuple[int, str]]:
    field_name = options.field
    for number, line in _physical_lines(source, options.errors):
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


def _read_table(source: Source, options: ReadOptions, delimiter: str) -> Iterator[tuple[int, str]]:
    numbered = _physical_lines(source, options.errors, keep_ends=True)
    current = [0]

    def lines() -> Iterator[str]:
        for number, text in numbered:
            current[0] = number
            yield text

    column = options.column
    reader = csv.reader(lines(), delimiter=delimiter)
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


def read_csv(source: Source, options: ReadOptions) -> Iterator[tuple[int, str]]:
    return _read_table(source, options, ",")


def read_tsv(source: Source, options: ReadOptions) -> Iterator[tuple[int, str]]:
    return _read_table(source, options, "\t")


TEXT = Reader("txt", read_lines, "a line")
# By suffix (lower case); stdin and anything not listed are read as text, one record per line.
READERS: dict[str, Reader] = {
    ".txt": TEXT,
    ".jsonl": Reader("jsonl", read_jsonl, "a JSON object per line (--field)"),
    ".csv": Reader("csv", read_csv, "a CSV row after the header (--column)"),
    ".tsv": Reader("tsv", read_tsv, "a tab-separated row after the header (--column)"),
}


def reader_for(name: str) -> Reader:
    """The reader for a file name by its suffix; stdin and unknown suffixes are plain text."""
    return READERS.get(Path(name).suffix.lower(), TEXT)


def _line_count(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def iter_records(sources: Sequence[Source], options: ReadOptions, *, skip_empty: bool) -> Iterator[Record]:
    """Every record of every input, in order; line numbers run on across inputs (as `cat` would)."""
    offset = 0
    for source in sources:
        for number, text in source.reader.read(source, options):
            if skip_empty and text == "":
                continue
            yield Record(source.name, offset + number, text)
        offset += _line_count(source.path)


def count_records(sources: Sequence[Source], options: ReadOptions) -> tuple[int, int]:
    """Records and empty records; reading everything once also reports bad input before the model loads."""
    total = empty = 0
    for record in iter_records(sources, options, skip_empty=False):
        total += 1
        empty += record.text == ""
    return total, empty


@contextlib.contextmanager
def resolved_inputs(inputs: Sequence[str | os.PathLike[str]], stdin: IO[bytes] | None) -> Iterator[list[Source]]:
    """Inputs as files; stdin is spooled to a temporary file so it can be read twice."""
    if not inputs:
        raise StError("no input: give one or more files, or - for stdin")
    spooled: list[Path] = []
    try:
        resolved = []
        for item in inputs:
            name = str(item)
            if name == STDIN:
                fd, spool = tempfile.mkstemp(prefix="st-stdin-")
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(stdin or sys.stdin.buffer, f)
                spooled.append(Path(spool))
                resolved.append(Source(STDIN_NAME, Path(spool), reader_for(name)))
            else:
                path = Path(name)
                if not path.is_file():
                    raise StError(f"{name}: no such file")
                resolved.append(Source(name, path, reader_for(name)))
        yield resolved
    finally:
        for tmp in spooled:
            tmp.unlink(missing_ok=True)
