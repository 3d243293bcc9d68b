"""Reading `st encode`'s inputs: a table of readers by suffix, records numbered by file and line.

Every reader yields `(line, text, id)` for each record of one file, where `line` is the 1-based line the
record starts on (a .parquet file's row number) and `id` the record's `--id-field` (None without one).
Compression is a layer under any stream reader, picked by the outer suffix (`.jsonl.gz`). Every reader
streams: memory does not grow with the file. Inputs are read twice (a counting pass that reports bad
input before the model loads, then the encoding pass), so stdin is spooled to a file first.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import sys
import zlib
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
    id: Any = None  # the record's --id-field value (None without --id-field)


@dataclass(frozen=True)
class ReadOptions:
    field: str = "text"  # the field holding the text in .jsonl/.json/.parquet inputs
    column: str = "text"  # the column holding the text in .csv/.tsv inputs
    errors: str = "strict"  # invalid UTF-8: "strict" (an error naming file and line) or "replace"
    id_field: str | None = None  # the field (column) holding each record's id, carried into the output


@dataclass(frozen=True)
class Source:
    name: str  # as the user gave it (for messages)
    path: Path
    reader: Reader
    compression: str | None = None  # a COMPRESSIONS suffix, "" for none; None: by `name`'s outer suffix

    @property
    def codec(self) -> str:
        if self.compression is not None:
            return self.compression
        suffix = Path(self.name).suffix.lower()
        return suffix if suffix in COMPRESSIONS else ""


# (line, text, id) for each record of one file.
ReadFn = Callable[[Source, ReadOptions], Iterator[tuple[int, str, Any]]]


# (line the row starts on, its named fields): what `st train` reads pairs from.
RowsFn = Callable[[Source, str], Iterator[tuple[int, dict[str, Any]]]]


# ---------------------------------------------------------------- compression: a layer under any stream


class _ZstdStream(io.RawIOBase):
    """A .zst file's frames, decompressed; a file cut inside a frame is an EOFError, never a shorter text
    (zstandard's own stream reader ends quietly there)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self.raw, self.zstd = raw, zstandard
        self.frame = zstandard.ZstdDecompressor().decompressobj()
        self.started = False  # the current frame has had input
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            data = self.raw.read(1 << 16)
            if not data:
                if self.started and not self.frame.eof:
                    raise EOFError("the file ends inside a zstd frame (cut short?)")
                return 0
            while data:
                if self.frame.eof:  # a new frame follows the finished one
                    self.frame = self.zstd.ZstdDecompressor().decompressobj()
                self.started = True
                self.pending += self.frame.decompress(data)
                data = self.frame.unused_data if self.frame.eof else b""
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _zstd(raw: IO[bytes]) -> IO[bytes]:
    try:
        import zstandard  # noqa: F401 - the optional extra: present or one line naming it
    except ImportError:
        raise StError(f"reading .zst needs zstandard: {PARQUET_EXTRA}") from None
    return io.BufferedReader(_ZstdStream(raw), 1 << 16)


PARQUET_EXTRA = "pip install 'st-cli[parquet]'"

# Outer suffix → a function wrapping the raw file in a decompressing stream (read line by line).
COMPRESSIONS: dict[str, Callable[[IO[bytes]], Any]] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": lambda raw: bz2.BZ2File(raw, "rb"),
    ".xz": lambda raw: lzma.LZMAFile(raw, "rb"),
    ".zst": _zstd,
}

# What a corrupt or truncated compressed stream raises (zstandard adds its ZstdError).
_CODEC_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, lzma.LZMAError)


def _codec_errors() -> tuple[type[BaseException], ...]:
    try:
        import zstandard
    except ImportError:
        return _CODEC_ERRORS
    return (*_CODEC_ERRORS, zstandard.ZstdError)


@contextlib.contextmanager
def open_stream(source: Source) -> Iterator[IO[bytes]]:
    """The source's bytes, decompressed; a corrupt or truncated compressed file is one line naming it."""
    codec = source.codec
    with open(source.path, "rb") as raw:
        if not codec:
            yield raw
            return
        try:
            with COMPRESSIONS[codec](raw) as stream:
                yield stream
        except _codec_errors() as e:
            raise StError(f"{source.name}: not readable as {codec} data: {e}") from None


# ---------------------------------------------------------------- readers


def _line_count(source: Source) -> int:
    """Physical lines of the (decompressed) file: where the next input's line numbers start."""
    count, last = 0, b"\n"
    with open_stream(source) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


@dataclass(frozen=True)
class Reader:
    kind: str
    read: ReadFn
    what: str  # for help text: what one record is
    rows: RowsFn | None = None  # whole rows of named fields; None: a record is bare text
    lines: Callable[[Source], int] = _line_count  # what the next input's numbering starts after
    stream: bool = True  # read as a byte stream, so it may be compressed (.parquet: a seekable file)


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
    with open_stream(source) as f:
        for number, raw in enumerate(f, 1):
            body = raw[:-1] if raw.endswith(b"\n") else raw
            body = body[:-1] if body.endswith(b"\r") else body
            text = _decode(body, source.name, number, errors)
            yield number, (text + "\n" if keep_ends and raw.endswith(b"\n") else text)


def _no_ids(source: Source, options: ReadOptions) -> None:
    if options.id_field is not None:
        raise StError(
            f"{source.name}: --id-field {options.id_field}: plain text has no fields; "
            "give .jsonl, .json, .csv, .tsv or .parquet"
        )


def read_lines(source: Source, options: ReadOptions) -> Iterator[tuple[int, str, Any]]:
    _no_ids(source, options)
    return ((number, text, None) for number, text in _physical_lines(source, options.errors))


def _record_id(obj: dict[str, Any], id_field: str | None, name: str, line: int) -> Any:
    """The record's id: a string or an integer (what a pipeline joins on); None without --id-field."""
    if id_field is None:
        return None
    if id_field not in obj:
        raise StError(f"{name}:{line}: no field {id_field!r} (the --id-field)")
    value = obj[id_field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise StError(f"{name}:{line}: --id-field {id_field!r} is {type(value).__name__}, not a string or integer")
    return value


def _object_text(obj: Any, source: Source, number: int, options: ReadOptions) -> tuple[int, str, Any]:
    """A JSON record's (line, text, id): an object's --field, or (in a .json array) a bare string."""
    field_name = options.field
    if isinstance(obj, str) and source.reader.kind == "json":
        if options.id_field is not None:
            raise StError(f"{source.name}:{number}: a bare string has no field {options.id_field!r} (the --id-field)")
        value = obj
    elif not isinstance(obj, dict) or field_name not in obj:
        raise StError(f"{source.name}:{number}: no field {field_name!r} (set it with --field)")
    else:
        value = obj[field_name]
    if not isinstance(value, str):
        raise StError(f"{source.name}:{number}: field {field_name!r} is {type(value).__name__}, not a string")
    text = value if value.isascii() else _whole_characters(value, source.name, number, options.errors)
    return number, text, _record_id(obj, options.id_field, source.name, number)


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


def read_jsonl(source: Source, options: ReadOptions) -> Iterator[tuple[int, str, Any]]:
    for number, obj in _json_lines(source, options.errors):
        yield _object_text(obj, source, number, options)


_JSON_CHUNK = 1 << 20  # characters read at a time by the .json array scanner
_BLANK = " \t\r\n"


class _JsonArray:
    """A streaming scanner of one JSON array: its elements one at a time, in bounded memory.

    `json.JSONDecoder.raw_decode` parses each element from a buffer that holds the element and what
    follows it; the buffer grows only while an element is incomplete and is cut after every element,
    so a file larger than memory reads in the size of its largest element. Line numbers are counted
    on the text passed over.
    """

    def __init__(self, source: Source, errors: str) -> None:
        self.source, self.errors = source, errors
        self.decoder = json.JSONDecoder()
        # Bytes are decoded here, not by a TextIOWrapper, so invalid UTF-8 can be placed on its line.
        self.utf8 = codecs.getincrementaldecoder("utf-8-sig")(errors)
        self.buf, self.pos, self.line, self.eof = "", 0, 1, False

    def _more(self, stream: IO[bytes]) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        data = stream.read(_JSON_CHUNK)
        try:
            chunk = self.utf8.decode(data, final=not data)
        except UnicodeDecodeError as e:
            line = self.line + self.buf.count("\n", self.pos) + data.count(b"\n", 0, e.start)
            raise StError(
                f"{self.source.name}:{line}: invalid UTF-8; pass --errors replace to substitute U+FFFD"
            ) from None
        if not data:
            self.eof = True  # the decoder's last word (a U+FFFD for a cut character) still counts
            if not chunk:
                return False
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def _skip_blank(self, stream: IO[bytes]) -> str:
        """Pass over whitespace (counting lines); the next character, "" at the end of the file."""
        while True:
            start = self.pos
            while self.pos < len(self.buf) and self.buf[self.pos] in _BLANK:
                self.pos += 1
            self.line += self.buf.count("\n", start, self.pos)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more(stream):
                return ""

    def _fail(self, problem: str) -> StError:
        return StError(f"{self.source.name}:{self.line}: invalid JSON: {problem}")

    def _element(self, stream: IO[bytes]) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if self._more(stream):
                    continue  # the element goes on in the next chunk
                raise self._fail(e.msg) from None
            except RecursionError:
                raise self._fail("nested too deeply") from None
            if end == len(self.buf) and self._more(stream):
                continue  # a number (or literal) cut at the chunk's end may go on: parse it whole
            self.line += self.buf.count("\n", self.pos, end)
            self.pos = end
            return value

    def elements(self) -> Iterator[tuple[int, Any]]:
        with open_stream(self.source) as stream:
            if self._skip_blank(stream) != "[":
                raise self._fail("a .json input must be one array of objects or strings ([...]); for one "
                                 "object per line use .jsonl")
            self.pos += 1
            if self._skip_blank(stream) == "]":
                self.pos += 1
            else:
                while True:
                    if self._skip_blank(stream) == "":
                        raise self._fail("the array never closes")
                    start = self.line
                    yield start, self._element(stream)
                    after = self._skip_blank(stream)
                    self.pos += 1
                    if after == "":
                        raise self._fail("the array never closes")
                    if after == "]":
                        break
                    if after != ",":
                        raise self._fail(f"expected , or ] after an element, found {after!r}")
                    if self._skip_blank(stream) == "]":
                        raise self._fail("a comma before ]")
            if self._skip_blank(stream) != "":
                raise self._fail("text after the array's closing ]")


def read_json(source: Source, options: ReadOptions) -> Iterator[tuple[int, str, Any]]:
    for number, obj in _JsonArray(source, options.errors).elements():
        yield _object_text(obj, source, number, options)


def json_rows(source: Source, errors: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, obj in _JsonArray(source, errors).elements():
        if not isinstance(obj, dict):
            raise StError(f"{source.name}:{number}: expected a JSON object")
        yield number, obj


# ---------------------------------------------------------------- .parquet (pyarrow, by row group)


def _parquet_file(source: Source) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise StError(f"reading .parquet needs pyarrow: {PARQUET_EXTRA}") from None
    try:
        return pq.ParquetFile(source.path)
    except Exception as e:  # pyarrow's ArrowInvalid and friends: a file that is not Parquet
        raise StError(f"{source.name}: not a readable Parquet file: {e}") from None


def _parquet_columns(source: Source, names: list[str]) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    """(first row number, {column: values}) for each batch of rows, one row group at a time."""
    parquet = _parquet_file(source)
    have = parquet.schema_arrow.names
    for name in names:
        if name not in have:
            raise StError(f"{source.name}: no column {name!r}; columns: {', '.join(have)} (set it with --field)")
    row = 1
    # One thread: pyarrow's threads read row groups ahead, and memory then grows with the file (1.2x for
    # 10x the rows in bench_inputs, flat without them, and no slower).
    for batch in parquet.iter_batches(batch_size=8192, columns=names or None, use_threads=False):
        yield row, {name: batch.column(name).to_pylist() for name in batch.schema.names}
        row += batch.num_rows


def read_parquet(source: Source, options: ReadOptions) -> Iterator[tuple[int, str, Any]]:
    id_field = options.id_field
    names = [options.field] + ([id_field] if id_field is not None and id_field != options.field else [])
    for first, columns in _parquet_columns(source, names):
        texts = columns[options.field]
        ids = columns[id_field] if id_field is not None else None
        for i, text in enumerate(texts):
            number = first + i
            if not isinstance(text, str):
                kind = "null" if text is None else type(text).__name__
                raise StError(f"{source.name}: row {number}: column {options.field!r} is {kind}, not a string")
            if ids is not None and id_field is not None:
                yield number, text, _record_id({id_field: ids[i]}, id_field, source.name, number)
            else:
                yield number, text, None


def parquet_rows(source: Source, errors: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for first, columns in _parquet_columns(source, []):
        names = list(columns)
        for i, values in enumerate(zip(*columns.values(), strict=True)):
            yield first + i, dict(zip(names, values, strict=True))


def _parquet_rows_count(source: Source) -> int:
    return int(_parquet_file(source).metadata.num_rows)


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


def _column_index(source: Source, number: int, names: list[str], column: str, option: str) -> int:
    if column not in names:
        raise StError(
            f"{source.name}:{number}: no column {column!r}; columns: {', '.join(names)} (set it with {option})"
        )
    if names.count(column) > 1:
        raise StError(f"{source.name}:{number}: {names.count(column)} columns are named {column!r}; which one?")
    return names.index(column)


def _read_table(
    source: Source, options: ReadOptions, rows: Iterator[tuple[int, list[str]]], separator_advice: str
) -> Iterator[tuple[int, str, Any]]:
    column = options.column
    header = next(rows, None)
    if header is None:
        return
    number, names = header
    index, width = _column_index(source, number, names, column, "--column"), len(names)
    id_at = None if options.id_field is None else _column_index(source, number, names, options.id_field, "--id-field")
    for number, row in rows:
        if index >= len(row):
            raise StError(f"{source.name}:{number}: row has {len(row)} fields, no {column!r}")
        if len(row) > width and any(row[width:]):
            # Text past the header's columns would be dropped: an unquoted separator inside a field.
            raise StError(
                f"{source.name}:{number}: row has {len(row)} fields, the header {width}; "
                f"a separator inside a field? {separator_advice}"
            )
        if id_at is not None and id_at >= len(row):
            raise StError(f"{source.name}:{number}: row has {len(row)} fields, no {options.id_field!r}")
        yield number, row[index], None if id_at is None else row[id_at]


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


def read_csv(source: Source, options: ReadOptions) -> Iterator[tuple[int, str, Any]]:
    return _read_table(source, options, _csv_rows(source, options.errors), _CSV_ADVICE)


def read_tsv(source: Source, options: ReadOptions) -> Iterator[tuple[int, str, Any]]:
    return _read_table(source, options, _tsv_rows(source, options.errors), _TSV_ADVICE)


TEXT = Reader("txt", read_lines, "a line")
JSONL = Reader("jsonl", read_jsonl, "a JSON object per line (--field)", jsonl_rows)
# By suffix (lower case), under any of COMPRESSIONS (a.jsonl.gz); --input-format names one by its kind.
READERS: dict[str, Reader] = {
    ".txt": TEXT,
    ".jsonl": JSONL,
    ".ndjson": Reader("ndjson", read_jsonl, "a JSON object per line (--field)", jsonl_rows),
    ".json": Reader("json", read_json, "an element of one JSON array: an object (--field) or a string", json_rows),
    ".csv": Reader("csv", read_csv, "a CSV row after the header (--column)", csv_rows),
    ".tsv": Reader("tsv", read_tsv, "a tab-separated row after the header (--column)", tsv_rows),
    ".parquet": Reader(
        "parquet", read_parquet, "a Parquet row (--field names the column)", parquet_rows,
        lines=_parquet_rows_count, stream=False,
    ),
}
ROW_SUFFIXES = tuple(suffix for suffix, reader in READERS.items() if reader.rows is not None)
INPUT_FORMATS = tuple(reader.kind for reader in READERS.values())


def _known() -> str:
    return f"{', '.join(READERS)} (optionally {', '.join(COMPRESSIONS)})"


def reader_and_codec(name: str, input_format: str | None = None) -> tuple[Reader, str]:
    """The reader and compression of an input: by `input_format` (`jsonl`, `csv.gz`) if given, else by the
    file name's suffixes (`a.jsonl.gz`); stdin without --input-format is plain text. An unknown suffix
    is an error naming the known ones, never text read by guess."""
    if input_format is not None:
        kind, _, codec = input_format.lower().lstrip(".").partition(".")
        codec = f".{codec}" if codec else ""
        reader = next((r for r in READERS.values() if r.kind == kind), None)
        if reader is None or (codec and codec not in COMPRESSIONS):
            raise StError(
                f"--input-format {input_format}: expected one of {', '.join(INPUT_FORMATS)}, "
                f"optionally with {', '.join(c.lstrip('.') for c in COMPRESSIONS)} (jsonl.gz)"
            )
    elif name == STDIN:
        reader, codec = TEXT, ""
    else:
        path = Path(name)
        codec = path.suffix.lower() if path.suffix.lower() in COMPRESSIONS else ""
        inner = Path(path.stem).suffix.lower() if codec else path.suffix.lower()
        found = READERS.get(inner)
        if found is None:
            what = f"{inner}{codec}" if inner else (codec or "no suffix")
            raise StError(f"{name}: unknown input type {what!r}; known: {_known()}, or name one with --input-format")
        reader = found
    if codec and not reader.stream:
        raise StError(f"{name}: a .{reader.kind} file cannot be read compressed (it compresses its own columns)")
    return reader, codec


def reader_for(name: str) -> Reader:
    """The reader for a file name by its suffixes (see `reader_and_codec`)."""
    return reader_and_codec(name)[0]


def iter_records(sources: Sequence[Source], options: ReadOptions, *, skip_empty: bool) -> Iterator[Record]:
    """Every record of every input, in order; line numbers run on across inputs (as `cat` would)."""
    offset = 0
    for i, source in enumerate(sources):
        for number, text, record_id in source.reader.read(source, options):
            if skip_empty and text == "":
                continue
            yield Record(source.name, offset + number, text, record_id)
        if i < len(sources) - 1:  # counting lines reads a compressed input again: only where a next one follows
            offset += source.reader.lines(source)


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
    inputs: Sequence[str | os.PathLike[str]],
    stdin: IO[bytes] | None,
    *,
    spool_beside: Path,
    input_format: str | None = None,
) -> Iterator[list[Source]]:
    """Inputs as files; stdin is spooled to a temp file beside the output (`spool_beside`) so it
    can be read twice, and removed at the end (a killed run's spool goes with its other temps).
    `input_format` (--input-format) names the reader of every input, stdin too."""
    if not inputs:
        raise StError("no input: give one or more files, or - for stdin")
    if sum(str(item) == STDIN for item in inputs) > 1:
        raise StError("- (stdin) is given twice: it can be read only once")
    for item in inputs:  # a missing file or an unknown type: said before stdin is read
        if str(item) != STDIN:
            _check_readable(Path(item), str(item))
    readers = [reader_and_codec(str(item), input_format) for item in inputs]
    spooled: list[Path] = []
    try:
        resolved = []
        for item, (reader, codec) in zip(inputs, readers, strict=True):
            name = str(item)
            if name == STDIN:
                spool = fsio.temp_file(spool_beside, "stdin")
                spooled.append(spool)
                try:
                    with open(spool, "wb") as f:
                        shutil.copyfileobj(stdin or sys.stdin.buffer, f)
                except OSError as e:
                    raise fsio.write_error(e, spool_beside) from None
                resolved.append(Source(STDIN_NAME, spool, reader, codec))
            else:
                resolved.append(Source(name, Path(name), reader, codec))
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
    """(line, named fields) of each row of a .jsonl/.json/.csv/.tsv/.parquet file (compressed too),
    read as `st encode` reads it (strict).

    `what` names the data in the refusal of another suffix ("contrastive data").
    """
    path = Path(item)
    try:
        reader, codec = reader_and_codec(str(item))
    except StError:
        reader, codec = TEXT, ""
    if reader.rows is None:
        raise StError(f"{item}: {what} must be {', '.join(ROW_SUFFIXES)} (rows of named fields)")
    if not path.is_file():
        raise StError(f"{item}: no such file")
    return reader.rows(Source(str(item), path, reader, codec), "strict")
