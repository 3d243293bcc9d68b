"""Every reader × every compression, the streaming .json scanner, ids into every writer, --out -, -t.

The readers and compressions are parametrized over their tables (READERS, COMPRESSIONS), so a new
row is tested by adding it.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.encode import inputs
from st_cli.encode.api import encode_file
from st_cli.encode.inputs import (
    COMPRESSIONS,
    READERS,
    ReadOptions,
    Source,
    iter_records,
    read_rows,
    reader_and_codec,
)
from st_cli.encode.outputs import WRITERS, read_ids
from st_cli.errors import StError
from st_cli.model.model import build

runner = CliRunner()

# Ids that are not row numbers, texts with a quote, a comma, a tab-free non-ASCII character and an empty one.
RECORDS = [{"id": f"doc-{7 * i % 11}", "text": text} for i, text in enumerate(
    ["first line", 'say "hi", ok', "café ünïcode", "", "the last one"]
)]

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def _tsv() -> bytes:  # no quoting in TSV: a quote is text
    return "".join(f"{a}\t{b}\n" for a, b in [("id", "text"), *((r["id"], r["text"]) for r in RECORDS)]).encode()


def _csv(delimiter: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(["id", "text"])
    writer.writerows([r["id"], r["text"]] for r in RECORDS)
    return buffer.getvalue().encode()


def _parquet() -> bytes:
    buffer = io.BytesIO()
    table = pa.table({"id": [r["id"] for r in RECORDS], "text": [r["text"] for r in RECORDS]})
    pq.write_table(table, buffer, row_group_size=2)  # several row groups
    return buffer.getvalue()


CONTENT: dict[str, Callable[[], bytes]] = {
    ".txt": lambda: "".join(r["text"] + "\n" for r in RECORDS).encode(),
    ".jsonl": lambda: "".join(json.dumps(r) + "\n" for r in RECORDS).encode(),
    ".ndjson": lambda: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS).encode(),
    ".json": lambda: json.dumps(RECORDS, indent=2).encode(),
    ".csv": lambda: _csv(","),
    ".tsv": _tsv,
    ".parquet": _parquet,
}


def test_every_reader_and_compression_has_a_case() -> None:
    assert set(CONTENT) == set(READERS) and set(COMPRESS) == {"", *COMPRESSIONS}


def read(path: Path, **options: Any) -> list[tuple[str, Any]]:
    reader, codec = reader_and_codec(str(path), options.pop("input_format", None))
    source = Source(str(path), path, reader, codec)
    return [(r.text, r.id) for r in iter_records([source], ReadOptions(**options), skip_empty=False)]


@pytest.mark.parametrize("codec", list(COMPRESS))
@pytest.mark.parametrize("suffix", list(READERS))
def test_every_reader_under_every_compression_reads_the_same_records(
    tmp_path: Path, suffix: str, codec: str
) -> None:
    path = tmp_path / f"data{suffix}{codec}"
    path.write_bytes(COMPRESS[codec](CONTENT[suffix]()))
    if codec and not READERS[suffix].stream:
        with pytest.raises(StError, match="cannot be read compressed"):
            read(path)
        return
    if suffix == ".txt":
        assert read(path) == [(r["text"], None) for r in RECORDS]
        with pytest.raises(StError, match="--id-field id: plain text has no fields"):
            read(path, id_field="id")
        return
    assert read(path, id_field="id") == [(r["text"], r["id"]) for r in RECORDS]
    assert read(path) == [(r["text"], None) for r in RECORDS]
    # Training reads rows of named fields through the same readers.
    assert [row for _, row in read_rows(path, what="pairs")] == [{k: str(v) if suffix in (".csv", ".tsv") else v
                                                                  for k, v in r.items()} for r in RECORDS]


@pytest.mark.parametrize("codec", [c for c in COMPRESS if c])
def test_a_corrupt_or_cut_compressed_file_is_one_line_naming_it(tmp_path: Path, codec: str) -> None:
    path = tmp_path / f"data.jsonl{codec}"
    path.write_bytes(COMPRESS[codec](CONTENT[".jsonl"]())[:-8])
    with pytest.raises(StError, match=rf"data\.jsonl{codec}: not readable as \{codec} data"):
        read(path)


def test_an_unknown_suffix_names_the_known_ones_and_input_format_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "dump.log"
    path.write_bytes(gzip.compress(CONTENT[".jsonl"]()))
    with pytest.raises(StError, match=r"dump\.log: unknown input type '\.log'; known: \.txt, \.jsonl.*\.parquet"):
        read(path)
    assert read(path, input_format="jsonl.gz") == [(r["text"], None) for r in RECORDS]
    with pytest.raises(StError, match=r"--input-format avro: expected one of txt, jsonl"):
        read(path, input_format="avro")


def test_records_keep_their_line_numbers_across_compressed_inputs(tmp_path: Path) -> None:
    first = tmp_path / "a.jsonl.gz"
    first.write_bytes(gzip.compress(b'{"text": "x"}\n\n{"text": "y"}\n'))
    second = tmp_path / "b.json"
    second.write_bytes(b'[\n  "z",\n\n  {"text": "w"}\n]\n')
    sources = [Source(str(p), p, *reader_and_codec(str(p))) for p in (first, second)]
    lines = [(r.line, r.text) for r in iter_records(sources, ReadOptions(), skip_empty=False)]
    assert lines == [(1, "x"), (3, "y"), (5, "z"), (7, "w")]


# ---------------------------------------------------------------- the .json array, streamed


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_the_json_scanner_parses_across_any_chunk_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(inputs, "_JSON_CHUNK", chunk)
    path = tmp_path / "a.json"
    records = [{"text": "ab" * i, "n": 12345.678e-3, "nested": {"k": [1, [2, "]"]]}} for i in range(20)]
    path.write_text("\ufeff " + json.dumps(records, indent=1) + " \n", encoding="utf-8")
    assert [t for t, _ in read(path)] == [r["text"] for r in records]
    assert [row for _, row in read_rows(path, what="pairs")] == records


def test_a_json_file_larger_than_the_buffer_is_read_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs, "_JSON_CHUNK", 4096)
    path = tmp_path / "big.json"
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        f.write(",".join(json.dumps({"text": f"record {i}"}) for i in range(50_000)))
        f.write("]")
    scanner = inputs._JsonArray(Source("big.json", path, READERS[".json"]), "strict")
    longest = count = 0
    for _ in scanner.elements():
        count += 1
        longest = max(longest, len(scanner.buf))
    assert count == 50_000 and longest < 3 * 4096  # the buffer never holds more than a chunk or two


BAD_JSON = [
    ('{"text": "x"}', r"a\.json:1: invalid JSON: a \.json input must be one array"),
    ('[{"text": "x"},\n {"text": "y"},\n]', r"a\.json:3: invalid JSON: a comma before \]"),
    ('[{"text": "x"}\n {"text": "y"}]', r"a\.json:2: invalid JSON: expected , or \] after an element"),
    ('[{"text": "x"},\n {"text": ', r"a\.json:2: invalid JSON: Expecting value"),
    ('[{"text": "x"}', r"a\.json:1: invalid JSON: the array never closes"),
    ('[{"text": "x"}] []', r"a\.json:1: invalid JSON: text after the array's closing \]"),
    ('[{"text": "x"},\n 3]', r"a\.json:2: no field 'text'"),
    ('[{"text": "x"},\n {"text": 3}]', r"a\.json:2: field 'text' is int, not a string"),
]


@pytest.mark.parametrize(("content", "message"), BAD_JSON)
def test_bad_json_is_one_line_naming_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "a.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(StError, match=message):
        read(path)


def test_json_strings_have_no_ids_and_bad_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[\n"x",\n"y"]', encoding="utf-8")
    with pytest.raises(StError, match=r"a\.json:2: a bare string has no field 'id' \(the --id-field\)"):
        read(path, id_field="id")
    path.write_bytes(b'[\n"x",\n"\xff"]')
    with pytest.raises(StError, match=r"a\.json:3: invalid UTF-8"):
        read(path)
    assert read(path, errors="replace") == [("x", None), ("\ufffd", None)]
    path.write_bytes(b'["x"] \xc3')  # a character cut at the end of the file
    with pytest.raises(StError, match=r"a\.json:1: invalid UTF-8"):
        read(path)


def test_parquet_errors_name_the_file_the_column_and_the_row(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x", None], "n": [1, 2]}), path)
    with pytest.raises(StError, match=r"a\.parquet: no column 'text'; columns: body, n \(set it with --field\)"):
        read(path)
    with pytest.raises(StError, match=r"a\.parquet: row 2: column 'body' is null, not a string"):
        read(path, field="body")
    with pytest.raises(StError, match=r"a\.parquet: row 1: column 'n' is int, not a string"):
        read(path, field="n")
    (tmp_path / "b.parquet").write_bytes(b"not parquet")
    with pytest.raises(StError, match=r"b\.parquet: not a readable Parquet file"):
        read(tmp_path / "b.parquet")


@pytest.mark.parametrize(("module", "suffix"), [("pyarrow", ".parquet"), ("zstandard", ".jsonl.zst")])
def test_a_missing_extra_is_one_line_naming_the_pip_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, suffix: str
) -> None:
    path = tmp_path / f"a{suffix}"
    path.write_bytes(b"x")
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(StError, match=r"needs \w+: pip install 'st-cli\[parquet\]'$"):
        read(path)


# ---------------------------------------------------------------- outputs that join


@pytest.fixture(scope="module")
def tiny_folder(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("io")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n    mode: mean\n",
        encoding="utf-8",
    )
    return build(recipe, root / "tiny")[1]


HIDDEN_CHECK = [".jsonl", ".json", ".ndjson", ".jsonl.gz", ".csv.gz", ".parquet"]


def _write_input(folder: Path, name: str) -> Path:
    suffix, _, codec = name.lstrip(".").partition(".")
    path = folder / f"in{name}"
    path.write_bytes(COMPRESS[f".{codec}" if codec else ""](CONTENT[f".{suffix}"]()))
    return path


def test_the_same_records_in_every_format_give_identical_rows(tiny_folder: Path, tmp_path: Path) -> None:
    rows = {}
    for name in HIDDEN_CHECK:
        out = tmp_path / f"o{name.replace('.', '_')}.npy"
        encode_file(_write_input(tmp_path, name), out, model=tiny_folder)
        rows[name] = np.load(out)
    assert rows[".jsonl"].shape == (len(RECORDS), 32)
    assert all(np.array_equal(rows[".jsonl"], r) for r in rows.values())


@pytest.mark.parametrize("precision", ["float32", "int8", "binary"])
@pytest.mark.parametrize("suffix", list(WRITERS))
def test_ids_come_through_into_every_writer_in_input_order(
    tiny_folder: Path, tmp_path: Path, suffix: str, precision: str
) -> None:
    src = _write_input(tmp_path, ".csv.gz")
    out = tmp_path / f"o{suffix}"
    summary = encode_file(src, out, model=tiny_folder, id_field="id", precision=precision)
    assert list(read_ids(out)) == [r["id"] for r in RECORDS]
    if WRITERS[suffix].ids is None:  # .npy/.safetensors: a sidecar, named in the summary
        assert out.with_name(out.name + ".ids.jsonl") in summary.side_files
    plain = tmp_path / "plain" / f"o{suffix}"
    plain.parent.mkdir()
    encode_file(src, plain, model=tiny_folder, precision=precision)
    assert _rows(out, precision) == _rows(plain, precision)


def _rows(path: Path, precision: str) -> list[Any]:
    from st_cli.encode.outputs import read_rows as read_output

    return [block.tolist() for block in read_output(path, precision, 32)]


def test_parquet_output_is_an_id_column_and_a_fixed_size_list(tiny_folder: Path, tmp_path: Path) -> None:
    src = _write_input(tmp_path, ".parquet")
    out = tmp_path / "o.parquet"
    encode_file(src, out, model=tiny_folder, id_field="id", precision="int8")
    table = pq.read_table(out)
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.int8(), 32)
    assert json.loads(table.schema.metadata[b"calibration"])["precision"] == "int8"
    ref = tmp_path / "o.npy"
    encode_file(src, ref, model=tiny_folder, precision="int8")
    assert np.array_equal(np.stack(table.column("embedding").to_pylist()), np.load(ref))


def test_mixed_id_types_in_parquet_are_one_line(tiny_folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "a"}\n{"id": "b", "text": "b"}\n')
    with pytest.raises(StError, match="--id-field: the ids mix strings and integers"):
        encode_file(src, tmp_path / "o.parquet", model=tiny_folder, id_field="id")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_out_dash_prints_one_json_line_per_record(tiny_folder: Path, tmp_path: Path) -> None:
    src = _write_input(tmp_path, ".parquet")
    result = runner.invoke(app, ["encode", str(src), "-m", str(tiny_folder), "--out", "-", "--id-field", "id"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == [r["id"] for r in RECORDS]
    ref = tmp_path / "o.npy"
    encode_file(src, ref, model=tiny_folder)
    assert np.allclose(np.array([line["embedding"] for line in lines]), np.load(ref))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "o.npy"]


def test_text_option_embeds_texts_from_the_command_line(tiny_folder: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["encode", "-m", str(tiny_folder), "-t", "one\ntwo", "-t", "three"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "one\ntwo"}) + "\n" + json.dumps({"text": "three"}) + "\n")
    encode_file(src, tmp_path / "o.npy", model=tiny_folder)
    assert np.allclose(np.array([line["embedding"] for line in lines]), np.load(tmp_path / "o.npy"))
    both = runner.invoke(app, ["encode", str(src), "-m", str(tiny_folder), "-t", "x"])
    assert both.exit_code == 2 and "give input files or --text, not both" in both.stderr


def test_cli_unknown_suffix_exits_2_and_input_format_reads_it(tiny_folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "dump.log"
    src.write_bytes(CONTENT[".json"]())
    out = tmp_path / "o.npy"
    result = runner.invoke(app, ["encode", str(src), "-m", str(tiny_folder), "-o", str(out)])
    assert result.exit_code == 2 and "unknown input type '.log'" in result.stderr
    result = runner.invoke(app, ["encode", "-", "-m", str(tiny_folder), "-o", str(out), "--input-format", "json"],
                           input=src.read_bytes())
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (len(RECORDS), 32)


def test_a_parquet_output_without_pyarrow_is_one_line_before_anything_runs(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else find_spec(name, *a))
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    with pytest.raises(StError, match=r"writing \.parquet needs pyarrow: pip install 'st-cli\[parquet\]'$"):
        encode_file(src, tmp_path / "o.parquet", model=tiny_folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
