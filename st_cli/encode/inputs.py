"""Reading `st encode`'s inputs: a table of readers by suffix, records numbered by file and line.

Every reader yields `(line, text)` for each record of one file, where `line` is the 1-based line the
record starts on. Inputs are read twice (a counting pass that reports bad input before the model
loads, then the encoding pass), so stdin is spooled to a file first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from st_cli import fsio
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


# (line the row starts on, its named fields): what `st train` reads pairs from.
RowsFn = Callable[[Source, str], Iterator[tuple[int, dict[str, Any]]]]


@dataclass(frozen=True)
class Reader:
    kind: str
    read: ReadFn
    what: str  # for help text: what one record is
    rows: RowsFn | None = None  # whole rows of named fields; None: a record is bare text


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


def _json_lines(source: Source, errors: str) -> Iterator[tuple[int, Any]]:
    """(line, parsed value) for each non-blank line of a JSON-lines file."""
    for number, line in _physical_lines(source, errors):
        if not line.strip():
            continue  # a blank line holds no record
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            raise StError(f"{source.name}:{number}: invalid JSON: {e.msg}") from None
        except RecursionError:
            raise StError(f"{source.name}:{number}: invalid JSON: nested too deeply") from None


def read_jsonl(source: Source, options: ReadOptions) -> Iterator[tuple[int, str]]:
    field_name = options.field
    for number, obj in _json_lines(source, options.errors):
        if not isinstance(obj, dict) or field_name not in obj:
            raise StError(f"{source.name}:{number}: no field {field_name!r} (set it with --field)")
        value = obj[field_name]
        if not isinstance(value, str):
            raise StError(f"{source.name}:{number}: field {field_name!r} is {type(value).__name__}, not a string")
        yield number, value if value.isascii() else _whole_characters(value, source.name, number, options.errors)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(value: str, name: str, line: int, errors: str) -> str:
    """JSON's \\ud800 escapes can spell half a UTF-16 pair, which no tokenizer accepts: refuse, or put U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        if errors != "replace":
            raise StError(
                f"{name}:{line}: a lone surrogate \\u{ord(value[e.start]):04x} (half a character) at character "
                f"{e.start}; pass --errors replace to substitute U+FFFD"
            ) from None
        return _SURROGATE.sub("\ufffd", value)  # json.loads already joined every valid pair
    return value


class _BadRow(Exception):
    """A malformed CSV record; the reader adds the file and the line the record starts on."""


# A quoted field, unrolled so a 200k-character field is one linear scan: "..."" ...".
_QUOTED = re.compile(r'"([^"]*(?:""[^"]*)*)"')


def _csv_fields(text: str, delimiter: str) -> list[str] | None:
    """RFC 4180 fields of one record's text (line ends inside quotes included); None: a quote is still open."""
    if '"' not in text:
        return text.split(delimiter)  # most records: nothing quoted
    fields: list[str] = []
    pos, end = 0, len(text)
    while True:
        if text.startswith('"', pos):
            match = _QUOTED.match(text, pos)
            if match is None:
                return None
            fields.append(match.group(1).replace('""', '"'))
            pos = match.end()
            if pos == end:
                return fields
            if text[pos] != delimiter:
                raise _BadRow("text after a closing quote; double a quote inside a quoted field")
            pos += 1
        else:
            cut = text.find(delimiter, pos)
            value = text[pos:] if cut < 0 else text[pos:cut]
            if '"' in value:
                raise _BadRow('a " inside an unquoted field; quote the field and double the "')
            fields.append(value)
            if cut < 0:
                return fields
            pos = cut + 1


def _csv_rows(source: Source, errors: str) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, fields) for each CSV record; blank lines hold none."""
    lines = _physical_lines(source, errors, keep_ends=True)
    for start, line in lines:
        text = line  # the record so far, line ends included
        if not text.removesuffix("\n"):
            continue
        quotes = text.count('"')
        try:
            fields = _csv_fields(text.removesuffix("\n"), ",")
            while fields is None:
                # An open quote: the record goes on to the next line. Parse again only when the
                # quotes balance, so a long multi-line field costs one pass, not one per line.
                for _, more in lines:
                    text += more
                    quotes += more.count('"')
                    if quotes % 2 == 0:
                        break
                else:
                    raise _BadRow("unterminated quote: the record starting here never closes it")
                fields = _csv_fields(text.removesuffix("\n"), ",")
        except _BadRow as e:
            raise StError(f"{source.name}:{start}: {e}") from None
        yield start, fields


def _tsv_rows(source: Source, errors: str) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) for each TSV line: split on tabs, no quoting (a quote is text); blank lines hold none."""
    for number, line in _physical_lines(source, errors):
        if line:
            yield number, line.split("\t")


def _read_table(
    source: Source, options: ReadOptions, rows: Iterator[tuple[int, list[str]]], separator_advice: str
) -> Iterator[tuple[int, str]]:
    column = options.column
    header = next(rows, None)
    if header is None:
        return
    number, names = header
    if column not in names:
        raise StError(
            f"{source.name}:{number}: no column {column!r}; columns: {', '.join(names)} (set it with --column)"
        )
    if names.count(column) > 1:
        raise StError(f"{source.name}:{number}: {names.count(column)} columns are named {column!r}; which one?")
    index, width = names.index(column), len(names)
    for number, row in rows:
        if index >= len(row):
            raise StError(f"{source.name}:{number}: row has {len(row)} fields, no {column!r}")
        if len(row) > width and any(row[width:]):
            # Text past the header's columns would be dropped: an unquoted separator inside a field.
            raise StError(
                f"{source.name}:{number}: row has {len(row)} fields, the header {width}; "
                f"a separator inside a field? {separator_advice}"
            )
        yield number, row[index]


def _named_rows(
    source: Source, rows: Iterator[tuple[int, list[str]]], separator_advice: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """A table's rows as {column: value}, by its header; a row wider than the header is an error."""
    header = next(rows, None)
    if header is None:
        return
    _, names = header
    for number, row in rows:
        if len(row) > len(names) and any(row[len(names) :]):
            raise StError(
                f"{source.name}:{number}: row has {len(row)} fields, the header {len(names)}; "
                f"a separator inside a field? {separator_advice}"
            )
        yield number, dict(zip(names, row, strict=False))


def jsonl_rows(source: Source, errors: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, obj in _json_lines(source, errors):
        if not isinstance(obj, dict):
            raise StError(f"{source.name}:{number}: expected a JSON object")
        yield number, obj


def csv_rows(source: Source, errors: str) -> Iterator[tuple[int, dict[str, Any]]]:
    return _named_rows(source, _csv_rows(source, errors), _CSV_ADVICE)


def tsv_rows(source: Source, errors: str) -> Iterator[tuple[int, dict[str, Any]]]:
    return _named_rows(source, _tsv_rows(source, errors), _TSV_ADVICE)


_CSV_ADVICE = "quote that field (RFC 4180)"
_TSV_ADVICE = "TSV has no quoting: use .csv"


def read_csv(source: Source, options: ReadOptions) -> Iterator[tuple[int, str]]:
    return _read_table(source, options, _csv_rows(source, options.errors), _CSV_ADVICE)


def read_tsv(source: Source, options: ReadOptions) -> Iterator[tuple[int, str]]:
    return _read_table(source, options, _tsv_rows(source, options.errors), _TSV_ADVICE)


TEXT = Reader("txt", read_lines, "a line")
# By suffix (lower case); stdin and anything not listed are read as text, one record per line.
READERS: dict[str, Reader] = {
    ".txt": TEXT,
    ".jsonl": Reader("jsonl", read_jsonl, "a JSON object per line (--field)", jsonl_rows),
    ".csv": Reader("csv", read_csv, "a CSV row after the header (--column)", csv_rows),
    ".tsv": Reader("tsv", read_tsv, "a tab-separated row after the header (--column)", tsv_rows),
}
ROW_SUFFIXES = tuple(suffix for suffix, reader in READERS.items() if reader.rows is not None)


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


@dataclass
class Tally:
    """What a pass over the records saw: the counting pass and the encoding pass must agree on it."""

    records: int = 0
    empty: int = 0
    digest: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))

    def add(self, record: Record) -> None:
        self.records += 1
        self.empty += record.text == ""
        self.digest.update(b"%d\0%d\0" % (record.line, len(record.text)) + record.text.encode("utf-8", "surrogatepass"))

    def same_as(self, other: Tally) -> bool:
        return (self.records, self.empty, self.digest.digest()) == (other.records, other.empty, other.digest.digest())


def tallied(records: Iterator[Record], tally: Tally) -> Iterator[Record]:
    """`records`, adding each to `tally` as it passes."""
    for record in records:
        tally.add(record)
        yield record


def count_records(sources: Sequence[Source], options: ReadOptions) -> Tally:
    """Read everything once: counts the records (and empties) and reports bad input before the model loads."""
    tally = Tally()
    for record in iter_records(sources, options, skip_empty=False):
        tally.add(record)
    return tally


def _check_readable(path: Path, name: str) -> None:
    """Inputs are read twice (count, then encode), so each must be a regular file."""
    if path.is_file():
        return
    if path.is_dir():
        raise StError(f"{name}: is a folder, not a text file")
    if path.exists():
        raise StError(f"{name}: not a regular file (it would be read twice); pipe it to stdin and give -")
    raise StError(f"{name}: no such file")


@contextlib.contextmanager
def resolved_inputs(
    inputs: Sequence[str | os.PathLike[str]], stdin: IO[bytes] | None, *, spool_beside: Path
) -> Iterator[list[Source]]:
    """Inputs as files; stdin is spooled to a temp file beside the output (`spool_beside`) so it
    can be read twice, and removed at the end (a killed run's spool goes with its other temps)."""
    if not inputs:
        raise StError("no input: give one or more files, or - for stdin")
    if sum(str(item) == STDIN for item in inputs) > 1:
        raise StError("- (stdin) is given twice: it can be read only once")
    spooled: list[Path] = []
    try:
        resolved = []
        for item in inputs:
            name = str(item)
            if name == STDIN:
                spool = fsio.temp_file(spool_beside, "stdin")
                spooled.append(spool)
                try:
                    with open(spool, "wb") as f:
                        shutil.copyfileobj(stdin or sys.stdin.buffer, f)
                except OSError as e:
                    raise fsio.write_error(e, spool_beside) from None
                resolved.append(Source(STDIN_NAME, spool, reader_for(name)))
            else:
                path = Path(name)
                _check_readable(path, name)
                resolved.append(Source(name, path, reader_for(name)))
        yield resolved
    finally:
        for tmp in spooled:
            fsio.remove(tmp)


def read_texts(inputs: Sequence[str | os.PathLike[str]], options: ReadOptions = ReadOptions()) -> list[str]:
    """Every record of these files as `st encode` reads them (training data: files only, no stdin)."""
    for item in inputs:
        if str(item) == STDIN:
            raise StError("training data must be files (their sha256 goes into the manifest), not - for stdin")
    with resolved_inputs(inputs, None, spool_beside=Path(".")) as sources:
        return [record.text for record in iter_records(sources, options, skip_empty=False)]


def read_rows(item: str | os.PathLike[str], *, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, named fields) of each row of a .jsonl/.csv/.tsv file, read as `st encode` reads it (strict).

    `what` names the data in the refusal of another suffix ("contrastive data").
    """
    path = Path(item)
    reader = reader_for(str(item))
    if reader.rows is None:
        raise StError(f"{item}: {what} must be {', '.join(ROW_SUFFIXES)} (rows of named fields)")
    if not path.is_file():
        raise StError(f"{item}: no such file")
    return reader.rows(Source(str(item), path, reader), "strict")
