"""StaticEmbedding: folders written by sentence-transformers (3.4 … 6.2) and by model2vec load in st and
give their writer's embeddings; st's portable folders load in every version that has the type; `st encode`
runs a static folder in numpy, without importing torch, with the torch path's results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import st_cli
from st_cli.format import layout
from st_cli.model import static
from tests.texts import COMPARE_TEXTS

VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
STATIC_VERSIONS = ["st34", "st41", "st57"]  # ST 2.2 and 2.7 have no StaticEmbedding (it came in 3.2)
HERE = Path(__file__).parent
ATOL = 1e-6


def _python(version: str) -> Path:
    python = VENVS / version / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python} missing: run `make compat-venvs` (make test does)")
    return python


def _run_in(version: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [str(_python(version)), "-c", script, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.json"
    path.write_text(json.dumps(COMPARE_TEXTS), encoding="utf-8")
    return path


def model2vec_folder(folder: Path, tokenizer_json: Path, dtype: str, normalize: bool, seed: int = 0) -> Path:
    """A static model saved by model2vec itself (modules.json with path ".", its own config.json)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    vectors = np.random.default_rng(seed).standard_normal((tokenizer.get_vocab_size(), 12)).astype(dtype)
    StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=normalize).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module", params=[("float32", False), ("float16", True)], ids=["m2v-f32", "m2v-f16-norm"])
def m2v_dir(request: pytest.FixtureRequest, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dtype, normalize = request.param
    return model2vec_folder(tmp_path_factory.mktemp("m2v") / "m", tiny_bert_dir / "tokenizer.json", dtype, normalize)


def _st_reference(folder: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(COMPARE_TEXTS).astype(np.float32)


def _model2vec_reference(folder: Path, texts: list[str]) -> np.ndarray:
    from model2vec import StaticModel

    return np.asarray(StaticModel.from_pretrained(str(folder)).encode(texts), dtype=np.float32)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0, equal_nan=True)


# ---------------------------------------------------------------- model2vec folders


def test_model2vec_folder_matches_sentence_transformers(m2v_dir: Path) -> None:
    assert json.loads((m2v_dir / "modules.json").read_text())[0]["path"] == "."
    assert not (m2v_dir / layout.MODEL_CONFIG).exists()  # model2vec writes no config_sentence_transformers.json
    model = st_cli.load_model(m2v_dir)
    reference = _st_reference(m2v_dir)
    ours = model.encode(COMPARE_TEXTS)
    assert np.isfinite(ours).all()
    empty = np.isnan(reference).any(axis=1)
    if empty.any():
        # float16 + Normalize: ST 6.2 normalises the zero vector of a text without tokens ("", " ") to NaN (a
        # float16 norm floor of 0); st gives model2vec's own zeros there, and ST's numbers everywhere else
        assert np.isnan(reference[empty]).all() and COMPARE_TEXTS[0] == "" and empty[0]
        assert not ours[empty].any()
        reference[empty] = _model2vec_reference(m2v_dir, [t for t, e in zip(COMPARE_TEXTS, empty, strict=True) if e])
    _close(ours, reference)
    # the numpy path gives the torch path's numbers
    fast = static.static_encoder(m2v_dir)
    assert fast is not None
    _close(fast.encode(COMPARE_TEXTS), ours)


@pytest.mark.parametrize("workers", [1, 3])
def test_worker_pool_gives_one_call_s_rows_in_order(
    m2v_dir: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Batches of any size (empty ones too) cut into chunks on a pool of threads: the rows of one embed()
    call, bit for bit and in input order; batches are read only a little ahead; tokenizers' own thread pool
    is off while ours runs, and the environment is as it was afterwards."""
    monkeypatch.setattr(static, "CHUNK", 5)
    monkeypatch.delenv(static.TOKENIZERS_PARALLELISM, raising=False)
    fast = static.static_encoder(m2v_dir)
    assert fast is not None
    texts = COMPARE_TEXTS * 2
    whole = fast.embed(texts)
    cuts = [0, 0, 1, 13, 13, 20, 33, len(texts)]  # batches of 0, 1, 12, 0, 7, 13 and 31 texts
    batches = [(i, texts[a:b]) for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))]
    read: list[int] = []
    switch: list[str | None] = []
    keys, parts = [], []
    for key, chunks in fast.embed_chunks(((read.append(k), (k, t))[1] for k, t in batches), workers=workers):
        assert len(read) - key <= 1 + workers  # batches read ahead of the one handed out: bounded
        keys.append(key)
        parts.append(np.concatenate(chunks))
        switch.append(os.environ.get(static.TOKENIZERS_PARALLELISM))
    assert keys == list(range(len(batches)))
    assert [len(p) for p in parts] == [b - a for a, b in zip(cuts, cuts[1:], strict=False)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert switch == ["false"] * len(batches)
    assert static.TOKENIZERS_PARALLELISM not in os.environ
    stopped = fast.embed_chunks(batches, workers=workers)
    next(stopped)
    stopped.close()  # a consumer that stops early (an error while writing): the setting is back at once
    assert static.TOKENIZERS_PARALLELISM not in os.environ
    monkeypatch.setenv(static.TOKENIZERS_PARALLELISM, "true")  # the user's choice is kept
    assert all(os.environ[static.TOKENIZERS_PARALLELISM] == "true" for _ in fast.embed_chunks(batches[2:4]))


def test_model2vec_folder_float16_weights_keep_their_dtype(tmp_path: Path, tiny_bert_dir: Path) -> None:
    folder = model2vec_folder(tmp_path / "m", tiny_bert_dir / "tokenizer.json", "float16", normalize=False)
    model = st_cli.load_model(folder)
    assert model.steps[0].embedding.weight.dtype.is_floating_point and model.steps[0].embedding.weight.dtype.itemsize == 2
    summary = st_cli.summarize(folder)
    assert not summary.errors, summary.errors
    assert summary.modules[0].short_type == "StaticEmbedding" and summary.embedding_dimension == 12


def test_model2vec_mapping_and_weights_fold_like_sentence_transformers(tmp_path: Path, tiny_bert_dir: Path) -> None:
    """A vocabulary-quantized model2vec folder: `embeddings[mapping] * weights` per token id (ST 6.2's rule)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_bert_dir / "tokenizer.json"))
    n = tokenizer.get_vocab_size()
    rng = np.random.default_rng(5)
    clusters = rng.standard_normal((7, 6)).astype(np.float32)
    mapping, weights = rng.integers(0, 7, n), rng.uniform(0.5, 2, n).astype(np.float32)
    StaticModel(vectors=clusters, tokenizer=tokenizer, weights=weights, token_mapping=mapping).save_pretrained(
        str(tmp_path / "q")
    )
    _close(st_cli.load_model(tmp_path / "q").encode(COMPARE_TEXTS), _st_reference(tmp_path / "q"))


def test_real_tokenizer_matches_model2vec_encode(minilm_dir: Path, tmp_path: Path) -> None:
    """all-MiniLM-L6-v2's tokenizer and word-embedding table as a model2vec model: st equals model2vec's own
    StaticModel.encode on texts without unknown tokens (model2vec drops [UNK]; ST and st keep it)."""
    from model2vec import StaticModel
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    table = load_file(str(minilm_dir / "model.safetensors"))["embeddings.word_embeddings.weight"]
    StaticModel(vectors=table, tokenizer=tokenizer, normalize=True).save_pretrained(str(tmp_path / "m"))
    m2v = StaticModel.from_pretrained(str(tmp_path / "m"))
    unk = tokenizer.token_to_id("[UNK]")
    texts = [t for t in COMPARE_TEXTS if t.strip() and unk not in tokenizer.encode(t, add_special_tokens=False).ids]
    texts = [t for t in texts if len(tokenizer.encode(t, add_special_tokens=False).ids) <= 512]
    assert len(texts) >= 20
    ours = st_cli.load_model(tmp_path / "m").encode(texts)
    _close(ours, m2v.encode(texts))
    _close(ours, _st_reference_texts(tmp_path / "m", texts))
    _close(static.static_encoder(tmp_path / "m").encode(texts), ours)  # type: ignore[union-attr]


def _st_reference_texts(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts)


# ---------------------------------------------------------------- folders saved by sentence-transformers

SAVE_STATIC = """
import sys, numpy as np
from tokenizers import Tokenizer
try:
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
except ImportError:
    from sentence_transformers.models import StaticEmbedding
from sentence_transformers import SentenceTransformer
tok = Tokenizer.from_file(sys.argv[2])
weights = np.random.default_rng(1).standard_normal((tok.get_vocab_size(), 10)).astype(np.float32)
model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights)], device="cpu")
model.save(sys.argv[1])
import json
texts = json.load(open(sys.argv[3], encoding="utf-8"))
np.save(sys.argv[4], model.encode(texts))
"""


@pytest.mark.parametrize("version", STATIC_VERSIONS)
def test_folder_saved_by_each_version_loads(version: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    folder, out = tmp_path / "saved", tmp_path / "theirs.npy"
    _run_in(version, SAVE_STATIC, str(folder), str(tiny_bert_dir / "tokenizer.json"), str(_texts_file(tmp_path)), str(out))
    _close(st_cli.load_model(folder).encode(COMPARE_TEXTS), np.load(out))
    assert not st_cli.summarize(folder).errors


def test_folder_saved_by_st62_loads(tiny_bert_dir: Path, tmp_path: Path) -> None:
    folder, out = tmp_path / "saved", tmp_path / "theirs.npy"
    script = SAVE_STATIC
    run = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tiny_bert_dir / "tokenizer.json"), str(_texts_file(tmp_path)), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((folder / "modules.json").read_text())[0]["path"] == ""  # ST >= 5.4: in the root
    _close(st_cli.load_model(folder).encode(COMPARE_TEXTS), np.load(out))


# ---------------------------------------------------------------- st's own folders

STATIC_RECIPE = "seed: 11\nprompts: {{query: 'query: '}}\nmodules:\n  - type: StaticEmbedding\n    tokenizer: {tok}\n    embedding_dim: 24\n{extra}"


@pytest.fixture(scope="module")
def built_static(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("static-built")
    recipe = root / "static.yaml"
    recipe.write_text(STATIC_RECIPE.format(tok=tiny_bert_dir, extra="  - type: Normalize\n"), encoding="utf-8")
    return {fmt: st_cli.build(recipe, root / fmt, format=fmt)[1] for fmt in layout.FORMATS}


def test_portable_and_st6_layouts(built_static: dict[str, Path]) -> None:
    portable = layout.read_modules_json(built_static["portable"])
    assert (portable[0].path, portable[0].type) == ("0_StaticEmbedding", "sentence_transformers.models.StaticEmbedding")
    assert (built_static["portable"] / "0_StaticEmbedding" / "tokenizer.json").is_file()
    st6 = layout.read_modules_json(built_static["st6"])
    assert st6[0].path == "" and st6[0].type.endswith("static_embedding.StaticEmbedding")
    assert (built_static["st6"] / "tokenizer.json").is_file() and (built_static["st6"] / "model.safetensors").is_file()
    summary = st_cli.summarize(built_static["portable"])
    assert not summary.errors and summary.embedding_dimension == 24
    assert summary.modules[0].output_dim == 24 and summary.modules[0].weights is not None
    # loader verdicts come from the spec: no StaticEmbedding before ST 3.2, none in TEI
    assert summary.loaders["ST<=5.3"].status == "partial" and summary.loaders["TEI"].status == "no"


@pytest.mark.parametrize("fmt", layout.FORMATS)
def test_st62_reads_st_folders(built_static: dict[str, Path], fmt: str) -> None:
    model = st_cli.load_model(built_static[fmt])
    _close(model.encode(COMPARE_TEXTS), _st_reference(built_static[fmt]))
    _close(model.encode(COMPARE_TEXTS, prompt_name="query"), _st_reference_prompt(built_static[fmt]))


def _st_reference_prompt(folder: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(COMPARE_TEXTS, prompt_name="query")


@pytest.mark.parametrize("version", STATIC_VERSIONS)
def test_portable_folder_loads_in_each_version(built_static: dict[str, Path], version: str, tmp_path: Path) -> None:
    out = tmp_path / "theirs.npy"
    crossload = HERE / "compat" / "crossload.py"
    _run_in(version, open(crossload, encoding="utf-8").read(), str(built_static["portable"]), str(_texts_file(tmp_path)), str(out))
    _close(np.load(out), st_cli.load_model(built_static["portable"]).encode(COMPARE_TEXTS))


def test_recipe_seed_decides_the_table(tiny_bert_dir: Path, tmp_path: Path) -> None:
    def build(seed: int, name: str) -> np.ndarray:
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(STATIC_RECIPE.format(tok=tiny_bert_dir, extra="").replace("seed: 11", f"seed: {seed}"))
        model, _ = st_cli.build(recipe, tmp_path / name)
        return model.encode(["hello world"])

    assert np.array_equal(build(1, "a"), build(1, "b")) and not np.array_equal(build(1, "c"), build(2, "d"))


def test_recipe_base_static_folder(m2v_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: {m2v_dir}\nkeep: 1\nmodules:\n  - type: Normalize\n", encoding="utf-8")
    model, folder = st_cli.build(recipe, tmp_path / "out")
    base = st_cli.load_model(m2v_dir).encode(COMPARE_TEXTS[2:])
    expected = base / np.linalg.norm(base, axis=1, keepdims=True)
    np.testing.assert_allclose(st_cli.load_model(folder).encode(COMPARE_TEXTS[2:]), expected, atol=1e-3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    embedding_dim: 0\n", "embedding_dim: must be an integer between 1 and"),
        ("    embedding_dim: 8\n    tokenizer: /nonexistent/tok\n", "tokenizer:"),
    ],
)
def test_bad_static_recipes(tmp_path: Path, tiny_bert_dir: Path, extra: str, message: str) -> None:
    from typer.testing import CliRunner

    from st_cli.cli import app

    body = "modules:\n  - type: StaticEmbedding\n"
    if "tokenizer" not in extra:
        body += f"    tokenizer: {tiny_bert_dir}\n"
    (tmp_path / "r.yaml").write_text(body + extra, encoding="utf-8")
    result = CliRunner().invoke(app, ["build", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- st encode: the numpy path

ENCODE_WITHOUT_TORCH = """
import sys, st_cli
summary = st_cli.encode_file(sys.argv[1], sys.argv[2], model=sys.argv[3], normalize=sys.argv[4] == "1")
print(summary.rows, "torch" in sys.modules)
"""


@pytest.mark.parametrize("normalize", ["0", "1"])
def test_st_encode_runs_static_folders_without_torch(m2v_dir: Path, tmp_path: Path, normalize: str) -> None:
    texts = tmp_path / "in.txt"
    lines = [t.replace("\n", " ") for t in COMPARE_TEXTS]
    texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    run = subprocess.run(
        [sys.executable, "-c", ENCODE_WITHOUT_TORCH, str(texts), str(out), str(m2v_dir), normalize],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == [str(len(lines)), "False"]
    expected = st_cli.load_model(m2v_dir).encode(lines, normalize=normalize == "1")
    _close(np.load(out), expected)


def test_pickled_weights_and_verify(tiny_bert_dir: Path, tmp_path: Path, built_static: dict[str, Path]) -> None:
    """A folder saved with safe_serialization=False (pytorch_model.bin) loads through the torch path
    (weights only); st verify passes on st's own static folders."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding
    from tokenizers import Tokenizer
    from typer.testing import CliRunner

    from st_cli.cli import app

    tokenizer = Tokenizer.from_file(str(tiny_bert_dir / "tokenizer.json"))
    reference = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=6)], device="cpu")
    reference.save(str(tmp_path / "bin"), safe_serialization=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file() and static.static_encoder(tmp_path / "bin") is None
    _close(st_cli.load_model(tmp_path / "bin").encode(COMPARE_TEXTS), reference.encode(COMPARE_TEXTS))
    for folder in built_static.values():
        result = CliRunner().invoke(app, ["verify", str(folder), "--allow-untrained"])
        assert result.exit_code == 0, result.output


def test_static_shards_merge_to_a_plain_run_and_name_numpy_and_tokenizers(m2v_dir: Path, tmp_path: Path) -> None:
    """A static folder's shards (3 threads, several windows in flight) merge to a plain run's bytes; the job
    names the versions that compute the numbers (numpy, tokenizers), not torch's."""
    from st_cli.encode.api import encode_file
    from st_cli.encode.job import job_of
    from st_cli.encode.shards import merge_shards, read_sidecar

    src = tmp_path / "in.txt"
    src.write_text("\n".join(t.replace("\n", " ") for t in COMPARE_TEXTS * 3) + "\n", encoding="utf-8")
    single, merged = tmp_path / "single.npy", tmp_path / "merged.npy"
    encode_file([src], single, model=str(m2v_dir), window=16, threads=1)
    parts = [tmp_path / f"part{i}.npy" for i in range(3)]
    for i, part in enumerate(parts):
        encode_file([src], part, model=str(m2v_dir), window=16, shard=(i, 3), threads=3)
    recorded = read_sidecar(parts[0])
    assert set(recorded.fingerprint["versions"]) == {"st_cli", "numpy", "tokenizers"}
    # the folder hashed while it loaded is the job Ray's workers compute from the loaded encoder
    assert job_of([src], static.static_encoder(m2v_dir), str(m2v_dir), window=16) == recorded.job  # type: ignore[arg-type]
    merge_shards(parts, merged)
    assert merged.read_bytes() == single.read_bytes()


# ---------------------------------------------------------------- NaN and inf: never written, named by verify


def test_float16_text_without_tokens_is_zeros_and_verify_passes(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """model2vec's float16 + normalize folder: the empty text is model2vec's zeros on both paths (ST 6.2 gives
    NaN), so encode writes it and verify's reload check passes (NaN used to read as two loads disagreeing)."""
    from typer.testing import CliRunner

    from st_cli.cli import app

    folder = model2vec_folder(tmp_path / "m", tiny_bert_dir / "tokenizer.json", "float16", normalize=True)
    texts = tmp_path / "in.txt"
    texts.write_text("\nman\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(app, ["encode", str(texts), "-m", str(folder), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    written = np.load(out)
    np.testing.assert_array_equal(written[0], _model2vec_reference(folder, [""])[0])
    assert not written[0].any() and np.isfinite(written).all()
    assert not st_cli.load_model(folder).encode([""]).any()
    result = CliRunner().invoke(app, ["verify", str(folder), "--json"])
    reload = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "reload")
    assert reload["status"] == "pass", reload


def _poisoned_folder(tiny_bert_dir: Path, folder: Path, value: float) -> Path:
    """A model2vec float32 folder whose row for "man" holds `value` (NaN or inf)."""
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer

    model2vec_folder(folder, tiny_bert_dir / "tokenizer.json", "float32", normalize=False)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["embeddings"][Tokenizer.from_file(str(tiny_bert_dir / "tokenizer.json")).token_to_id("man"), 3] = value
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize(("value", "word"), [(float("nan"), "NaN"), (float("inf"), "inf")], ids=["nan", "inf"])
def test_non_finite_embeddings_are_refused_and_named(
    tiny_bert_dir: Path, tmp_path: Path, value: float, word: str
) -> None:
    from typer.testing import CliRunner

    from st_cli.cli import app

    folder = _poisoned_folder(tiny_bert_dir, tmp_path / "m", value)
    texts = tmp_path / "in.txt"
    texts.write_text("food\nthe man\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    for extra in ([], ["--precision", "int8"]):
        result = CliRunner().invoke(app, ["encode", str(texts), "-m", str(folder), "-o", str(out), "-q", *extra])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert lines == [f"error: the model gives {word} in the embedding of row 1; st writes no NaN or inf"]
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    result = CliRunner().invoke(app, ["verify", str(folder), "--json"])
    assert result.exit_code == 1
    reload = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "reload")
    assert reload["status"] == "fail" and f"probe 0 'A man is eating food.' gives {word}" in reload["detail"], reload
    assert "two loads" not in reload["detail"]


def test_verify_against_names_the_nan_of_sentence_transformers(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """ST 6.2 embeds a float16 model2vec folder's empty text as NaN: `--against` says so, naming the probe."""
    from typer.testing import CliRunner

    from st_cli.cli import app

    folder = model2vec_folder(tmp_path / "m", tiny_bert_dir / "tokenizer.json", "float16", normalize=True)
    result = CliRunner().invoke(app, ["verify", str(folder), "--against", "sentence-transformers", "--json"])
    against = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "against")
    assert against["status"] == "fail" and "probe 1 '' gives NaN in its embedding" in against["detail"], against
    assert not against["detail"].startswith("st:")
