"""`st encode` / `encode_file`: rows, order, input formats, precisions, outputs, failures, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.encode.api import encode_file
from st_cli.encode.batching import plan_batches
from st_cli.encode.options import parse_kwargs
from st_cli.errors import OutputExistsError, StError
from st_cli.model.model import Model, build, load_model
from st_cli.model.modules.base import Features, Module
from tests.texts import COMPARE_TEXTS

ATOL = 1e-5
runner = CliRunner()

WORDS = "the a man woman is eating food playing horse cat dog movie new great text vector model sentence".split()


def varied_texts(n: int, seed: int = 0) -> list[str]:
    """Texts of 0 to ~80 words, so batches and windows get many different lengths."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 80)))) for _ in range(n)]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny matmuls: OpenMP's second thread only adds waiting, worst of all on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_folder(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("encode")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n    mode: mean\n"
        'prompts: {query: "query: "}\n',
        encoding="utf-8",
    )
    _, folder = build(recipe, root / "tiny")
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_folder: Path) -> Model:
    return load_model(tiny_folder)


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def reference(model: Model, texts: list[str], **kwargs: Any) -> np.ndarray:
    """Each text alone: independent of any batching."""
    dim = model.get_sentence_embedding_dimension()
    rows = [model.encode([t], **kwargs)[0] for t in texts]
    return np.stack(rows) if rows else np.zeros((0, dim), np.float32)


# ---------------------------------------------------------------- rows and order


def test_order_and_count_across_windows_and_batches(tiny: Model, tmp_path: Path) -> None:
    texts = varied_texts(157)
    src = write_lines(tmp_path / "in.txt", texts)
    for window, budget, batch_size in [(10, 64, None), (16, 300, 3), (1000, 2048, None)]:
        out = tmp_path / f"out-{window}.npy"
        summary = encode_file(src, out, model=tiny, window=window, max_batch_tokens=budget, batch_size=batch_size)
        got = np.load(out)
        assert got.shape == (157, 32) and summary.rows == 157
        np.testing.assert_allclose(got, tiny.encode(texts), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got[:20], reference(tiny, texts[:20]), atol=ATOL, rtol=0)


def test_plan_batches_cover_every_row_once_within_budget() -> None:
    lengths = np.array([5, 60, 3, 17, 17, 64, 1, 40] * 9)
    batches = plan_batches(lengths, max_tokens=128, max_rows=5, multiple=8)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for batch in batches:
        width = -(-int(lengths[batch].max()) // 8) * 8
        assert len(batch) <= 5 and (len(batch) == 1 or len(batch) * width <= 128)


def test_empty_lines_are_embedded_by_default(tiny: Model, tmp_path: Path) -> None:
    texts = ["a man", "", "eating food", "", ""]
    out = tmp_path / "e.npy"
    encode_file(write_lines(tmp_path / "in.txt", texts), out, model=tiny)
    np.testing.assert_allclose(np.load(out), reference(tiny, texts), atol=ATOL, rtol=0)


def test_skip_empty_writes_kept_line_numbers_across_inputs(tiny: Model, tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.txt", ["a man", "", "food"])
    b = write_lines(tmp_path / "b.txt", ["", "the cat"])
    out = tmp_path / "e.npy"
    summary = encode_file([a, b], out, model=tiny, skip_empty=True)
    assert summary.rows == 3 and summary.skipped_empty == 2
    np.testing.assert_allclose(np.load(out), reference(tiny, ["a man", "food", "the cat"]), atol=ATOL, rtol=0)
    assert (tmp_path / "e.npy.lines.txt").read_text() == "1\n3\n5\n"


def test_crlf_and_last_line_without_newline(tiny: Model, tmp_path: Path) -> None:
    src = tmp_path / "crlf.txt"
    src.write_bytes(b"\xef\xbb\xbfa man\r\nthe dog\r\n\r\nlast line")
    out = tmp_path / "c.npy"
    encode_file(src, out, model=tiny)
    np.testing.assert_allclose(np.load(out), reference(tiny, ["a man", "the dog", "", "last line"]), atol=ATOL)


def test_invalid_utf8_is_an_error_naming_file_and_line(tiny: Model, tmp_path: Path) -> None:
    src = tmp_path / "bad.txt"
    src.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(StError, match=r"bad\.txt:3: invalid UTF-8 .*--errors replace"):
        encode_file(src, tmp_path / "x.npy", model=tiny)
    assert not (tmp_path / "x.npy").exists()


def test_invalid_utf8_replaced_on_request(tiny: Model, tmp_path: Path) -> None:
    src = tmp_path / "bad.txt"
    src.write_bytes(b"fine\nbad \xff byte\n")
    out = tmp_path / "x.npy"
    encode_file(src, out, model=tiny, errors="replace")
    np.testing.assert_allclose(np.load(out), reference(tiny, ["fine", "bad \ufffd byte"]), atol=ATOL)


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".jsonl"])
def test_empty_input_gives_zero_rows(tiny: Model, tmp_path: Path, suffix: str) -> None:
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    out = tmp_path / f"e{suffix}"
    summary = encode_file(src, out, model=tiny)
    assert summary.rows == 0
    assert read_back(out).shape == ((0, 32) if suffix != ".jsonl" else (0,))


def test_truncated_inputs_are_counted(tiny: Model, tmp_path: Path) -> None:
    texts = ["short", "word " * 200, "the cat " * 100]
    summary = encode_file(write_lines(tmp_path / "t.txt", texts), tmp_path / "t.npy", model=tiny)
    assert summary.truncated == 2
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), reference(tiny, texts), atol=ATOL)


# ---------------------------------------------------------------- outputs and failures


def test_existing_output_needs_force(tiny: Model, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.txt", ["a", "b"])
    out = tmp_path / "o.npy"
    out.write_bytes(b"\x93NUMPY precious")  # a .npy file (by its magic): --force replaces only one
    with pytest.raises(OutputExistsError, match="o.npy: already exists; pass --force"):
        encode_file(src, out, model=tiny)
    assert out.read_bytes() == b"\x93NUMPY precious"
    encode_file(src, out, model=tiny, force=True)
    assert np.load(out).shape == (2, 32)


class _Boom(RuntimeError):
    pass


def test_exception_mid_run_leaves_no_output(tiny: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_lines(tmp_path / "in.txt", varied_texts(60))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    calls = {"n": 0}
    original = Model.forward

    def failing(self: Model, features: Features, **kwargs: Any) -> Features:
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Boom("disk on fire")
        return original(self, features, **kwargs)

    monkeypatch.setattr(Model, "forward", failing)
    for precision, suffix in [("float32", ".npy"), ("int8", ".safetensors"), ("uint8", ".jsonl")]:
        calls["n"] = 0
        with pytest.raises(_Boom):
            encode_file(
                src,
                out_dir / f"o{suffix}",
                model=tiny,
                window=8,
                max_batch_tokens=64,
                precision=precision,
                skip_empty=True,
            )
    assert list(out_dir.iterdir()) == []


def read_back(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))["embeddings"]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    return np.array([r["embedding"] for r in rows])


def independent_quantize(emb: np.ndarray, precision: str) -> np.ndarray:
    """sentence-transformers' own quantize_embeddings, calibrated on all the rows."""
    from sentence_transformers.quantization import quantize_embeddings

    if precision == "float16":
        return emb.astype(np.float16)
    return quantize_embeddings(emb, precision=precision)


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".jsonl"])
def test_each_precision_and_format_reads_back(tiny: Model, tmp_path: Path, precision: str, suffix: str) -> None:
    texts = varied_texts(120, seed=3)
    out = tmp_path / f"o{suffix}"
    # batch_size=32 and a huge budget cut batches exactly as Model.encode does, so the floats are identical
    encode_file(
        write_lines(tmp_path / "in.txt", texts),
        out,
        model=tiny,
        precision=precision,
        pad_multiple=1,
        max_batch_tokens=10**6,
        batch_size=1000,
    )
    floats = tiny.encode(texts, batch_size=1000)
    got, want = read_back(out), independent_quantize(floats, precision)
    if suffix != ".jsonl":
        assert got.dtype == want.dtype
    assert got.shape == want.shape
    if precision in ("float32", "float16"):
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=ATOL, rtol=1e-3)
    else:
        assert np.abs(got.astype(int) - want.astype(int)).max() <= (1 if precision.endswith("int8") else 0)
        assert (got.astype(int) == want.astype(int)).mean() > 0.99
    if precision in ("int8", "uint8"):
        calibration = _calibration(out)
        ranges = np.array(calibration["ranges"], dtype=np.float32)
        np.testing.assert_allclose(ranges, np.vstack([floats.min(0), floats.max(0)]), atol=ATOL)


def _calibration(out: Path) -> dict[str, Any]:
    if out.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(out), "np") as f:
            return json.loads(f.metadata()["calibration"])
    return json.loads((out.parent / (out.name + ".calibration.json")).read_text())


def test_truncate_dim_normalize_and_prompt(tiny: Model, tmp_path: Path) -> None:
    texts = varied_texts(20, seed=5)
    out = tmp_path / "o.npy"
    src = write_lines(tmp_path / "in.txt", texts)
    with pytest.raises(StError, match=r"--truncate-dim 33: wider than the model's 32 dimensions"):
        encode_file(src, out, model=tiny, truncate_dim=33)
    assert not out.exists()
    encode_file(src, out, model=tiny, truncate_dim=8, normalize=True, prompt_name="query")
    want = tiny.encode(texts, truncate_dim=8, normalize=True, prompt_name="query")
    np.testing.assert_allclose(np.load(out), want, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(np.load(out), axis=1), 1, atol=1e-5)
    encode_file(src, out, model=tiny, prompt="passage: ", force=True)
    np.testing.assert_allclose(np.load(out), tiny.encode(texts, prompt="passage: "), atol=ATOL, rtol=0)
    with pytest.raises(StError, match="unknown prompt name 'nope'"):
        encode_file(src, tmp_path / "p.npy", model=tiny, prompt_name="nope")


# ---------------------------------------------------------------- inputs


def test_jsonl_csv_tsv_inputs_concatenated(tiny: Model, tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"body": "a man", "id": 1}\n\n{"body": "multi\\nline"}\n', encoding="utf-8")
    csv_file = tmp_path / "b.csv"
    csv_file.write_text('id,text\n1,"the cat, quoted"\n2,"two\nlines"\n3,\n', encoding="utf-8")
    tsv = tmp_path / "c.tsv"
    tsv.write_text("text\tid\nthe dog\t1\n", encoding="utf-8")
    out = tmp_path / "o.npy"
    with pytest.raises(StError, match=r"a\.jsonl:1: no field 'text'"):
        encode_file([jsonl], out, model=tiny)
    encode_file([jsonl, csv_file, tsv], out, model=tiny, field="body", skip_empty=True)
    texts = ["a man", "multi\nline", "the cat, quoted", "two\nlines", "the dog"]
    np.testing.assert_allclose(np.load(out), reference(tiny, texts), atol=ATOL, rtol=0)
    # line numbers run on across inputs: a.jsonl has 3 lines, b.csv 5
    assert (tmp_path / "o.npy.lines.txt").read_text().split() == ["1", "3", "5", "6", "10"]


def test_csv_missing_column_and_bad_json_are_one_line_errors(tiny: Model, tmp_path: Path) -> None:
    csv_file = tmp_path / "b.csv"
    csv_file.write_text("id,body\n1,x\n", encoding="utf-8")
    with pytest.raises(StError, match=r"b\.csv:1: no column 'text'; columns: id, body"):
        encode_file(csv_file, tmp_path / "o.npy", model=tiny)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(StError, match=r"bad\.jsonl:2: invalid JSON"):
        encode_file(bad, tmp_path / "o.npy", model=tiny)


def test_stdin_and_default_model_from_env(tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ST_MODEL", str(tiny_folder))
    out = tmp_path / "o.jsonl"
    encode_file(["-"], out, stdin=io.BytesIO(b"a man\nthe cat\n"))
    want = load_model(tiny_folder).encode(["a man", "the cat"])
    np.testing.assert_allclose(read_back(out), want, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- module kwargs


class AddShift(Module):
    """Adds `shift` to the embedding when it is given one."""

    forward_kwargs: ClassVar[set[str]] = set()

    def forward(self, features: Features, shift: float = 0.0, **kwargs: Any) -> Features:
        features["sentence_embedding"] = features["sentence_embedding"] + shift
        return features


def test_kwargs_reach_only_the_module_that_declares_them(tiny: Model, tmp_path: Path) -> None:
    stack = Model(
        [*tiny.stack, AddShift(), AddShift()],
        module_kwargs=[(), (), ("shift",), ()],  # only the first AddShift declares it in modules.json
    )
    src = write_lines(tmp_path / "in.txt", ["a man", "the dog"])
    base, shifted = tmp_path / "base.npy", tmp_path / "shifted.npy"
    encode_file(src, base, model=stack)
    encode_file(src, shifted, model=stack, kwargs=parse_kwargs(["shift=0.5"]))
    np.testing.assert_allclose(np.load(shifted), np.load(base) + 0.5, atol=1e-6)
    with pytest.raises(StError, match="keyword argument 'colour' is not declared by any module"):
        encode_file(src, tmp_path / "x.npy", model=stack, kwargs={"colour": "red"})
    with pytest.raises(StError, match="expected key=value"):
        parse_kwargs(["shift"])
    assert parse_kwargs(["a=1", "b=query", "c=true"]) == {"a": 1, "b": "query", "c": True}


# ---------------------------------------------------------------- the real model


def test_matches_sentence_transformers_on_minilm(minilm_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in COMPARE_TEXTS), encoding="utf-8")
    out = tmp_path / "o.npy"
    summary = encode_file(src, out, model=minilm_dir, prompt="query: ", normalize=True, window=16)
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(
        COMPARE_TEXTS, batch_size=32, prompt="query: ", normalize_embeddings=True
    )
    np.testing.assert_allclose(np.load(out), want, atol=ATOL, rtol=0)
    assert summary.truncated == 2  # the two texts repeated past 256 tokens


# ---------------------------------------------------------------- CLI


def test_cli_encode_main_path(tiny_folder: Path, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.txt", ["a man", "", "the cat"])
    out = tmp_path / "o.npy"
    result = runner.invoke(app, ["encode", str(src), "-m", str(tiny_folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "encoded 3 rows × 32 (float32)" in result.stderr
    assert np.load(out).shape == (3, 32)
    again = runner.invoke(app, ["encode", str(src), "-m", str(tiny_folder), "--out", str(out)])
    assert again.exit_code == 2 and "already exists; pass --force" in again.stderr
    as_json = runner.invoke(
        app, ["encode", "-", "-m", str(tiny_folder), "-o", str(out), "--force", "--json"], input="x\ny\n"
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["rows"] == 2


def test_cli_undeclared_kwarg_is_one_line_exit_2(tiny_folder: Path, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.txt", ["a man"])
    args = ["encode", str(src), "-m", str(tiny_folder), "-o", str(tmp_path / "o.npy"), "--kw", "colour=red"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "error: keyword argument 'colour' is not declared by any module (declared: none)"
    ]
    assert not (tmp_path / "o.npy").exists()


def test_threads_option_is_restored(tiny: Model, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    encode_file(write_lines(tmp_path / "in.txt", ["a"]), tmp_path / "o.npy", model=tiny, threads=1)
    assert torch.get_num_threads() == before


def test_bfloat16_autocast_is_close(tiny: Model, tmp_path: Path) -> None:
    texts = varied_texts(30, seed=9)
    out = tmp_path / "o.npy"
    encode_file(write_lines(tmp_path / "in.txt", texts), out, model=tiny, dtype="bfloat16")
    got, want = np.load(out), tiny.encode(texts)
    assert got.dtype == np.float32
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > 0.99


def test_bad_options_are_one_line_errors(tiny: Model, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.txt", ["a"])
    for kwargs, message in [
        ({"output": tmp_path / "o.txt"}, "unknown output type '.txt'"),
        ({"precision": "int4"}, "--precision: expected one of"),
        ({"dtype": "float64"}, "--dtype: expected one of"),
        ({"device": "tpu"}, "--device: expected one of"),
        ({"inputs": [tmp_path / "missing.txt"]}, "missing.txt: no such file"),
    ]:
        args = {"inputs": [src], "output": tmp_path / "o.npy", **kwargs}
        with pytest.raises(StError, match=message):
            encode_file(args.pop("inputs"), args.pop("output"), model=tiny, **args)


# ---------------------------------------------------------------- strict readers (one row per case)


def read_all(path: Path, **options: str) -> list[tuple[int, str]]:
    from st_cli.encode.inputs import ReadOptions, Source, iter_records, reader_for

    source = Source(path.name, path, reader_for(path.name))
    return [(r.line, r.text) for r in iter_records([source], ReadOptions(**options), skip_empty=False)]


READ_CASES = [
    # (file name, content, expected (line, text) records)
    ("a.csv", 'text\n"one\ntwo",\n3\n', [(2, "one\ntwo"), (4, "3")]),
    ("a.csv", 'id,text\n1,"say ""hi"", ok"\n2,plain\n', [(2, 'say "hi", ok'), (3, "plain")]),
    ("a.csv", 'text\r\n"crlf\r\ninside"\r\nnext\r\n', [(2, "crlf\ninside"), (4, "next")]),
    ("a.csv", 'text\n""\n\nlast', [(2, ""), (4, "last")]),
    ("a.csv", 'text,id\n"a\n\nb",1\n"",2\n', [(2, "a\n\nb"), (5, "")]),
    ("a.tsv", 'text\tid\nshe said "hi\t1\nnext "line\t2\n', [(2, 'she said "hi'), (3, 'next "line')]),
    ("a.tsv", 'text\n"quoted"\n', [(2, '"quoted"')]),
    ("a.txt", 'plain "text\nmore\n', [(1, 'plain "text'), (2, "more")]),
    ("a.csv", "text,id\na,1,,\n", [(2, "a")]),  # empty fields past the header: nothing lost
]


@pytest.mark.parametrize(("name", "content", "expected"), READ_CASES)
def test_readers_table(tmp_path: Path, name: str, content: str, expected: list[tuple[int, str]]) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode())
    assert read_all(path) == expected


BAD_READ_CASES = [
    # (file name, content, message): the line named is where the bad record starts
    ("a.csv", 'text\nok\n"never closed\nx\ny\n', r"a\.csv:3: unterminated quote"),
    ("a.csv", 'text\n"a"b\n', r"a\.csv:2: text after a closing quote"),
    ("a.csv", 'text\nsay "hi"\n', r'a\.csv:2: a " inside an unquoted field'),
    ("a.csv", "id,text\n1,a\n2\n", r"a\.csv:3: row has 1 fields, no 'text'"),
    ("a.tsv", "id\ttext\n1\n", r"a\.tsv:2: row has 1 fields, no 'text'"),
    ("a.csv", "id\n1\n", r"a\.csv:1: no column 'text'"),
    ("a.jsonl", '{"text": 1}\n', r"a\.jsonl:1: field 'text' is int, not a string"),
    ("a.jsonl", '{"text": "a"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", r"a\.jsonl:2: invalid JSON: nested too deeply"),
    ("a.jsonl", '{"text": "ok \\ud800 x"}\n', r"a\.jsonl:1: a lone surrogate \\ud800 \(half a character\) at character 3"),
    ("a.csv", "id,text\n1,hello, world\n", r"a\.csv:2: row has 3 fields, the header 2; a separator inside a field\? quote"),
    ("a.tsv", "id\ttext\n1\thello\tworld\n", r"a\.tsv:2: row has 3 fields, the header 2; .* use \.csv"),
    ("a.csv", "text,id,text\na,1,b\n", r"a\.csv:1: 2 columns are named 'text'; which one\?"),
]


def test_a_lone_surrogate_is_replaced_on_request(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok \\ud800 x"}\n{"text": "\\ud83d\\ude00"}\n', encoding="utf-8")
    assert read_all(path, errors="replace") == [(1, "ok \ufffd x"), (2, "\U0001f600")]


@pytest.mark.parametrize(("name", "content", "message"), BAD_READ_CASES)
def test_bad_inputs_table(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode())
    with pytest.raises(StError, match=message):
        read_all(path)


def test_a_200k_character_csv_field_is_one_record(tmp_path: Path) -> None:
    big = "word " * 40_000
    path = tmp_path / "big.csv"
    path.write_text(f'text\n"{big}"\n{big}\n"a\n{big}"\n', encoding="utf-8")
    assert read_all(path) == [(2, big), (3, big), (4, f"a\n{big}")]


def test_unterminated_csv_quote_fails_before_the_model_loads(tiny_folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('text\nfine\n"oops, the rest\nwould be\nswallowed\n', encoding="utf-8")
    result = runner.invoke(app, ["encode", str(src), "--out", str(tmp_path / "o.npy"), "-m", str(tiny_folder)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {src}:3: unterminated quote: the record starting here never closes it"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_inputs_that_change_between_passes_are_an_error(
    tiny: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import st_cli.encode.run as encode_module
    from st_cli.encode import inputs

    src = write_lines(tmp_path / "in.txt", ["a", "b", "c"])
    original = inputs.count_records

    def count_then_edit(*args: Any, **kwargs: Any) -> inputs.Tally:
        tally = original(*args, **kwargs)
        write_lines(src, ["a", "B", "c"])  # same count, different text
        return tally

    monkeypatch.setattr(encode_module, "count_records", count_then_edit)
    with pytest.raises(StError, match="the inputs changed while being read: the records differ"):
        encode_file(src, tmp_path / "o.npy", model=tiny)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


# ---------------------------------------------------------------- safe publishing


def test_output_that_is_also_an_input_is_refused_even_with_force(tiny_folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "x.jsonl"
    src.write_text('{"text": "keep me"}\n', encoding="utf-8")
    result = runner.invoke(app, ["encode", str(src), "--out", str(src), "--force", "-m", str(tiny_folder)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {src}: is also an input; write the output to another file"
    assert src.read_text(encoding="utf-8") == '{"text": "keep me"}\n'


def test_stdin_spool_lives_beside_the_output(tiny: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import st_cli.encode.run as encode_module

    seen: list[Path] = []
    original = encode_module.count_records

    def spy(sources: Any, options: Any) -> Any:
        seen.extend(s.path for s in sources)
        return original(sources, options)

    monkeypatch.setattr(encode_module, "count_records", spy)
    out = tmp_path / "out" / "q.npy"
    out.parent.mkdir()
    encode_file("-", out, model=tiny, stdin=io.BytesIO(b"a\nb\n"))
    assert [p.parent for p in seen] == [out.parent]
    assert seen[0].name.startswith(".q.npy.st-tmp-") and seen[0].name.endswith(".stdin")
    assert sorted(p.name for p in out.parent.iterdir()) == ["q.npy"]


def test_next_run_removes_temps_of_dead_runs_only(tiny: Model, tmp_path: Path) -> None:
    gone_pid = _dead_pid()
    src = write_lines(tmp_path / "in.txt", ["a"])
    litter = [
        tmp_path / f".o.npy.st-tmp-{gone_pid}-0badf00d",
        tmp_path / f".o.npy.st-tmp-{gone_pid}-0badf00e.f32",
        tmp_path / f".o.npy.lines.txt.st-tmp-{gone_pid}-0badf00f",
    ]
    for path in litter:
        path.write_bytes(b"x")
    alive = tmp_path / ".o.npy.st-tmp-1-0badf010"  # pid 1 is alive: its temps stay
    alive.write_bytes(b"x")
    unrelated = tmp_path / ".o.npy.notes"
    unrelated.write_bytes(b"x")
    encode_file(src, tmp_path / "o.npy", model=tiny)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.txt", "o.npy", alive.name, unrelated.name])


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])  # an exited (and reaped) child: its pid is not alive
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- the CLI: bad input, one line, nothing left

# (input files {name: content}, extra arguments (OUT is {out}, an input {in}), expected stderr line)
CLI_BAD = [
    ({"a.csv": 'text\n"open\n'}, [], r"error: .*a\.csv:2: unterminated quote"),
    ({"a.tsv": "body\nx\n"}, [], r"error: .*a\.tsv:1: no column 'text'; columns: body \(set it with --column\)"),
    ({"a.jsonl": '{"text": "x"}\n{oops\n'}, [], r"error: .*a\.jsonl:2: invalid JSON"),
    ({"a.txt": b"ok\n\xff\n"}, [], r"error: .*a\.txt:2: invalid UTF-8 at byte 0; pass --errors replace"),
    ({"a.jsonl": '{"text": "x"}\n'}, ["--out", "{in}", "--force"], r"error: .*a\.jsonl: is also an input"),
    ({"a.txt": "x\n"}, ["--out", "{dir}/nowhere/o.npy"], r"error: .*nowhere: no such folder for the output"),
    ({"a.txt": "x\n"}, ["--out", "{dir}"], r"error: .*: is a folder; give a file name ending in \.npy"),
    ({"a.txt": "x\n"}, ["--out", "{dir}/o.avro"], r"error: .*o\.avro: unknown output type '\.avro'"),
    ({"a.log": "x\n"}, [], r"error: .*a\.log: unknown input type '\.log'; known: \.txt, .*--input-format"),
    ({"a.jsonl.gz": b"not gzip"}, [], r"error: .*a\.jsonl\.gz: not readable as \.gz data"),
    ({"a.json": '[{"text": "x"},]'}, [], r"error: .*a\.json:1: invalid JSON: a comma before \]"),
    ({"a.txt": "x\n"}, ["--truncate-dim", "999"], r"error: --truncate-dim 999: wider than the model's 32 dimensions"),
    ({"a.txt": "x\n"}, ["--precision", "int4"], r"error: --precision: expected one of float32, .*, got 'int4'"),
    ({"a.txt": "x\n"}, ["--kw", "colour=red"], r"error: .*colour"),
    ({}, ["{dir}/missing.txt"], r"error: .*missing\.txt: no such file"),
    ({}, ["{dir}"], r"error: .*: is a folder, not a text file"),
    ({}, ["/dev/null"], r"error: /dev/null: not a regular file \(it would be read twice\)"),
]


@pytest.mark.parametrize(("files", "extra", "message"), CLI_BAD)
def test_cli_bad_input_is_one_line_exit_2_and_leaves_nothing(
    tiny_folder: Path, tmp_path: Path, files: dict[str, str | bytes], extra: list[str], message: str
) -> None:
    import re

    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    inputs = [str(tmp_path / name) for name in files]
    fill = {"out": str(tmp_path / "o.npy"), "in": inputs[0] if inputs else "", "dir": str(tmp_path)}
    args = [arg.format(**fill) for arg in extra]
    if "--out" not in args:
        args += ["--out", fill["out"]]
    result = runner.invoke(app, ["encode", *inputs, "-m", str(tiny_folder), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.match(message, lines[0]), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


@pytest.mark.parametrize("appears", ["o.npy", "o.npy.lines.txt", "o.npy.calibration.json"])
def test_a_file_that_appears_during_the_run_is_kept_and_nothing_of_ours_is_left(
    tiny: Model, tmp_path: Path, appears: str
) -> None:
    src = write_lines(tmp_path / "in.txt", ["a", "", "b"])

    def someone_else_writes(done: int, total: int, tokens: int) -> None:
        (tmp_path / appears).write_text("theirs")

    with pytest.raises(OutputExistsError, match=f"{appears}: appeared while this run was writing it"):
        encode_file(
            src, tmp_path / "o.npy", model=tiny, skip_empty=True, precision="int8", progress=someone_else_writes
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", appears]
    assert (tmp_path / appears).read_text() == "theirs"
