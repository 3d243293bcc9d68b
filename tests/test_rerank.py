"""Rerankers: `st score` and `st rerank` on CrossEncoder folders saved by sentence-transformers 6.2 (this venv)
and 5.7 (the compat venv), against that writer's own `CrossEncoder.predict`; the refusal lines of every kind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from st_cli.cli import app
from tests.conftest import make_tiny_bert

runner = CliRunner()
COMPAT = Path(__file__).parent / "compat" / "cross_encoder.py"
VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
ATOL = 1e-5

# The last pair is longer than 12 tokens: ce1-short (max_length 12) truncates it.
PAIRS = [
    ("hello world", "the cat is eating food"),
    ("a man playing", "a horse"),
    ("query", "passage"),
    ("dog", "movie new great text vector model sentence embedding search data test the a is of and to"),
    ("search data", "a woman is playing with a dog"),
    ("", "empty query"),
]
WRITERS = {"st62": Path(sys.executable), "st57": VENVS / "st57" / "bin" / "python"}


def _save_with(writer: str, root: Path) -> Path:
    """Tiny CrossEncoders saved by `writer`'s sentence-transformers, with its predictions (tests/compat)."""
    python = WRITERS[writer]
    if not python.is_file():
        pytest.skip(f"{python} missing: run `make compat-venvs` (make test does)")
    base = make_tiny_bert(root / "base")
    if writer == "st57":  # transformers 4.57 does not know transformers 5's class name for a tokenizer.json
        config = base / "tokenizer_config.json"
        config.write_text(config.read_text().replace("TokenizersBackend", "PreTrainedTokenizerFast"))
    pairs = root / "pairs.json"
    pairs.write_text(json.dumps(PAIRS), encoding="utf-8")
    out = root / writer
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(
        [str(python), str(COMPAT), str(base), str(out), str(pairs)], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture(scope="module", params=list(WRITERS))
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_with(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def st62(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_with("st62", tmp_path_factory.mktemp("st62"))


def _pairs_file(path: Path, first: str = "query", second: str = "document") -> Path:
    path.write_text("".join(json.dumps({first: a, second: b}) + "\n" for a, b in PAIRS), encoding="utf-8")
    return path


def _predictions(saved: Path, folder: str, key: str) -> np.ndarray:
    return np.array(json.loads((saved / "predictions.json").read_text())[folder][key], dtype=np.float32)


@pytest.mark.parametrize("folder", ["ce1", "ce3", "ce1-short"])
@pytest.mark.parametrize("raw", [False, True])
def test_score_equals_the_writers_predict(saved: Path, tmp_path: Path, folder: str, raw: bool) -> None:
    out = tmp_path / "scores.npy"
    args = ["score", str(saved / folder), "--data", str(_pairs_file(tmp_path / "pairs.jsonl")), "--out", str(out)]
    result = runner.invoke(app, args + (["--raw"] if raw else []))
    assert result.exit_code == 0, result.output
    ours = np.load(out)
    theirs = _predictions(saved, folder, "raw" if raw else "scores")
    assert ours.shape == theirs.shape == ((len(PAIRS),) if folder != "ce3" else (len(PAIRS), 3))
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    assert np.ptp(theirs, axis=0).min() > 10 * ATOL  # the pairs' scores differ: a wrong input would show


def test_truncation_to_max_length_is_the_writers(st62: Path) -> None:
    full, short = _predictions(st62, "ce1", "scores"), _predictions(st62, "ce1-short", "scores")
    assert abs(full[3] - short[3]) > 10 * ATOL  # the long pair was cut, the others were not
    np.testing.assert_allclose(full[:3], short[:3], atol=ATOL)


def test_batches_do_not_change_the_scores(st62: Path) -> None:
    from st_cli.score import ScoreOptions, score_pairs

    one_by_one = score_pairs(st62 / "ce1", PAIRS, ScoreOptions(max_tokens=1))
    together = score_pairs(st62 / "ce1", PAIRS, ScoreOptions(max_tokens=4096))
    np.testing.assert_allclose(one_by_one, together, atol=1e-6, rtol=0)
    np.testing.assert_allclose(together, _predictions(st62, "ce1", "scores"), atol=ATOL, rtol=0)


def test_jsonl_output_and_other_columns(st62: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.csv"
    data.write_text("q,passage\n" + "".join(f'"{a}","{b}"\n' for a, b in PAIRS), encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    args = ["score", str(st62 / "ce3"), "--data", str(data), "--columns", "q,passage", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(2, len(PAIRS) + 2))
    np.testing.assert_allclose([r["scores"] for r in rows], _predictions(st62, "ce3", "scores"), atol=ATOL)


def test_sentence1_sentence2_columns_are_found(st62: Path, tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", "sentence1", "sentence2")
    out = tmp_path / "s.npy"
    result = runner.invoke(app, ["score", str(st62 / "ce1"), "--data", str(data), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["pairs"], document["labels"], document["activation"]) == (len(PAIRS), 1, "Sigmoid")
    np.testing.assert_allclose(np.load(out), _predictions(st62, "ce1", "scores"), atol=ATOL)


def test_rerank_equals_st_rank(st62: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    docs = [b for _, b in PAIRS]
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    query = "a man is eating food"
    args = ["rerank", str(st62 / "ce1"), "--query", query, "--docs", str(tmp_path / "docs.txt"), "--top-k", "4"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    ours = json.loads(result.stdout)["results"]
    theirs = CrossEncoder(str(st62 / "ce1")).rank(query, docs, top_k=4)
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], atol=ATOL)
    assert [r["text"] for r in ours] == [docs[r["corpus_id"]] for r in theirs]
    table = runner.invoke(app, args)
    assert table.exit_code == 0
    assert docs[theirs[0]["corpus_id"]] in table.stdout.splitlines()[1]  # the best first, under the header
    quiet = runner.invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == ""


# ---------------------------------------------------------------- refusals: one line naming the kind


def _error_line(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    return lines[0]


def test_encode_refuses_a_cross_encoder(st62: Path, tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("hello\n")
    out = tmp_path / "e.npy"
    result = runner.invoke(app, ["encode", str(tmp_path / "t.txt"), "--model", str(st62 / "ce1"), "--out", str(out)])
    assert result.exit_code == 2
    line = _error_line(result)
    assert "is a CrossEncoder (a reranker" in line and "use `st score` or `st rerank`" in line
    assert not out.exists()


def test_score_refuses_a_sentence_transformer(tiny_recipe, tmp_path: Path) -> None:
    import st_cli

    _, folder = st_cli.build(tiny_recipe("  - type: Pooling\n    mode: mean\n"), tmp_path / "m")
    out = tmp_path / "s.npy"
    result = runner.invoke(app, ["score", str(folder), "--data", str(_pairs_file(tmp_path / "p.jsonl")), "--out", str(out)])
    assert result.exit_code == 2
    line = _error_line(result)
    assert "is a SentenceTransformer (a sentence embedding model" in line and "use `st encode`" in line
    assert not out.exists()


def test_a_multi_vector_encoder_is_named(st62: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(st62 / "ce1", tmp_path / "colbert"))
    config = folder / "config_sentence_transformers.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "MultiVectorEncoder"}))
    (tmp_path / "t.txt").write_text("hello\n")
    result = runner.invoke(app, ["encode", str(tmp_path / "t.txt"), "--model", str(folder), "--out", str(tmp_path / "e.npy")])
    assert result.exit_code == 2
    line = _error_line(result)
    assert "is a MultiVectorEncoder (ColBERT-style" in line and "st does not run token-vector models yet" in line
    data = _pairs_file(tmp_path / "p.jsonl")
    rerank_data = tmp_path / "rerank.jsonl"
    rerank_data.write_text("".join(json.dumps(s) + "\n" for s in RERANK_SAMPLES), encoding="utf-8")
    for args in (
        ["score", str(folder), "--data", str(data), "--out", str(tmp_path / "s.npy")],
        ["verify", str(folder)],
        ["eval", str(folder), "--data", str(rerank_data)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, args
        assert f"{folder} is a MultiVectorEncoder (ColBERT-style" in _error_line(result), args
    assert json.loads(runner.invoke(app, ["inspect", str(folder), "--json"]).stdout)["kind"] == "MultiVectorEncoder"


def test_a_bare_sequence_classification_folder_scores(st62: Path, tmp_path: Path) -> None:
    """ST < 4 saved a CrossEncoder as a bare transformers folder: st score reads it (sigmoid for one label)."""
    folder = Path(shutil.copytree(st62 / "ce1", tmp_path / "bare"))
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (folder / name).unlink()
    from st_cli.score import score_pairs

    np.testing.assert_allclose(score_pairs(folder, PAIRS), _predictions(st62, "ce1", "scores"), atol=ATOL)


def test_rerank_refuses_several_labels(st62: Path, tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("a\nb\n")
    result = runner.invoke(app, ["rerank", str(st62 / "ce3"), "--query", "q", "--docs", str(tmp_path / "d.txt")])
    assert result.exit_code == 2
    assert "has 3 labels; use `st score`" in _error_line(result)


def test_bad_pairs_files_are_one_line(st62: Path, tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "p.jsonl", "a", "b")
    out = tmp_path / "s.npy"
    result = runner.invoke(app, ["score", str(st62 / "ce1"), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2
    assert f"{data}:1: no query/document or sentence1/sentence2 columns" in _error_line(result)
    result = runner.invoke(app, ["score", str(st62 / "ce1"), "--data", str(data), "--out", str(tmp_path / "s.txt")])
    assert result.exit_code == 2 and "--out must end in .npy or .jsonl" in _error_line(result)
    out.write_bytes(b"keep")
    ok = _pairs_file(tmp_path / "ok.jsonl")
    result = runner.invoke(app, ["score", str(st62 / "ce1"), "--data", str(ok), "--out", str(out)])
    assert result.exit_code == 2 and "already exists; pass --force" in _error_line(result)
    assert out.read_bytes() == b"keep"


def test_inspect_names_the_kind(saved: Path) -> None:
    result = runner.invoke(app, ["inspect", str(saved / "ce1"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["kind"] == "CrossEncoder"
    finding = next(f for f in document["findings"] if f["code"] == "model-kind")
    assert "a reranker" in finding["message"] and "st score" in finding["message"]
    assert not [f for f in document["findings"] if f["code"] == "model-type"]
    assert "kind CrossEncoder" in runner.invoke(app, ["inspect", str(saved / "ce1")]).stdout


def test_an_st4_style_plain_folder_is_a_cross_encoder(st62: Path, tmp_path: Path) -> None:
    """ST 4 saved a plain sequence-classification folder with the activation in config.json."""
    folder = Path(shutil.copytree(st62 / "ce1", tmp_path / "st4"))
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity", "version": "4.1.0"}
    (folder / "config.json").write_text(json.dumps(config))
    assert json.loads(runner.invoke(app, ["inspect", str(folder), "--json"]).stdout)["kind"] == "CrossEncoder"
    out = tmp_path / "s.npy"
    result = runner.invoke(app, ["score", str(folder), "--data", str(_pairs_file(tmp_path / "p.jsonl")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out), _predictions(st62, "ce1", "raw"), atol=ATOL)  # Identity: the logits


# ---------------------------------------------------------------- st eval: the reranking task

RERANK_SAMPLES = [
    {"query": "hello world", "positive": ["the cat is eating food"], "negative": ["a horse", "passage", "dog movie"]},
    {"query": "a man playing", "positive": ["a horse", "a woman is playing"], "negative": ["hello", "data test", "x"]},
    {"query": "search data", "positive": "a dog", "negative": ["cat", "text vector model", "the new movie", "food"]},
]
RERANK_DOCUMENTS = [  # a retriever's hits: base_* metrics for their given order
    {"query": "hello world", "positive": ["the cat is eating food"], "documents": ["a horse", "the cat is eating food"]},
    {"query": "dog", "positive": ["a dog"], "documents": ["movie", "a woman", "search data", "text"]},
]


@pytest.mark.parametrize("samples", [RERANK_SAMPLES, RERANK_DOCUMENTS], ids=["negatives", "documents"])
def test_eval_reranking_equals_the_evaluator(st62: Path, tmp_path: Path, samples: list[dict]) -> None:
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    data = tmp_path / "rerank.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    result = runner.invoke(app, ["eval", str(st62 / "ce1"), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["task"] == "reranking" and document["primary"] == "ndcg@10"
    theirs = CrossEncoderRerankingEvaluator(samples, write_csv=False)(CrossEncoder(str(st62 / "ce1")))
    assert set(document["metrics"]) == set(theirs)
    for name, value in theirs.items():
        assert document["metrics"][name] == pytest.approx(value, abs=1e-9), name
    assert 0 < theirs["map"] < 1  # the tiny model ranks some positive below a negative: the metrics are not trivial



def test_eval_of_a_reranker_refuses_an_exported_backend(st62: Path, tmp_path: Path) -> None:
    """A CrossEncoder runs on torch only: --backend onnx is refused, never quietly run on torch."""
    data = tmp_path / "rerank.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in RERANK_SAMPLES), encoding="utf-8")
    result = runner.invoke(app, ["eval", str(st62 / "ce1"), "--data", str(data), "--backend", "onnx"])
    assert result.exit_code == 2
    assert _error_line(result) == "error: --backend onnx: a CrossEncoder (reranker) runs on torch only"

def test_reranking_metrics_handle_ties_as_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, ndcg_score

    from st_cli.eval.metrics import reranking_metrics

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 25))
        relevant = rng.integers(0, 2, n)
        relevant[0] = 1
        scores = rng.integers(0, 4, n).astype(np.float32)  # many ties
        _, ndcg, ap = reranking_metrics(relevant.tolist(), scores)
        assert ndcg == pytest.approx(ndcg_score([relevant], [scores], k=10), abs=1e-12)
        assert ap == pytest.approx(average_precision_score(relevant, scores), abs=1e-12)


def test_eval_refuses_reranking_data_for_an_embedding_model(tiny_recipe, tmp_path: Path) -> None:
    import st_cli

    _, folder = st_cli.build(tiny_recipe("  - type: Pooling\n    mode: mean\n"), tmp_path / "m")
    data = tmp_path / "rerank.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in RERANK_SAMPLES), encoding="utf-8")
    result = runner.invoke(app, ["eval", str(folder), "--data", str(data)])
    assert result.exit_code == 2
    assert "is a SentenceTransformer (a sentence embedding model" in _error_line(result)


# ---------------------------------------------------------------- st verify: a CrossEncoder's check set


def test_verify_checks_a_cross_encoder(saved: Path) -> None:
    result = runner.invoke(app, ["verify", str(saved / "ce3"), "--against", "sentence-transformers", "--json"])
    document = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    if saved.name == "st57":  # ST 6.2 drops the type ids transformers 4 gave the writer: st keeps the writer's
        assert statuses == {"reload": "pass", "scores": "pass", "batch_invariance": "pass", "against": "fail"}
        assert result.exit_code == 1
        return
    assert result.exit_code == 0, result.output
    assert statuses == {"reload": "pass", "scores": "pass", "batch_invariance": "pass", "against": "pass"}


def test_verify_fails_a_damaged_head(st62: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(st62 / "ce1", tmp_path / "broken"))
    weights = load_file(folder / "model.safetensors")
    weights["classifier.bias"] = weights["classifier.bias"] + float("nan")
    save_file(weights, folder / "model.safetensors")
    result = runner.invoke(app, ["verify", str(folder), "--json"])
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["scores"]["status"] == "fail" and checks["batch_invariance"]["status"] == "skipped"


# ---------------------------------------------------------------- st build: kind: cross-encoder


def test_build_a_cross_encoder_from_a_base_checkpoint(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    recipe = tmp_path / "ce.yaml"
    recipe.write_text(f"kind: cross-encoder\nmodel: {tiny_bert_dir}\nmax_length: 12\nseed: 3\n", encoding="utf-8")
    result = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "ce"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) | {"output": None} == {
        "output": None, "kind": "CrossEncoder", "num_labels": 1, "activation": "Sigmoid", "max_length": 12,
    }
    theirs = CrossEncoder(str(tmp_path / "ce"))
    out = tmp_path / "s.npy"
    data = _pairs_file(tmp_path / "p.jsonl")
    assert runner.invoke(app, ["score", str(tmp_path / "ce"), "--data", str(data), "--out", str(out)]).exit_code == 0
    np.testing.assert_allclose(np.load(out), theirs.predict(PAIRS), atol=ATOL, rtol=0)
    assert theirs.max_length == 12 and type(theirs.activation_fn).__name__ == "Sigmoid"


def test_build_keeps_a_sequence_classification_head(st62: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "ce.yaml"
    recipe.write_text(f"kind: cross-encoder\nmodel: {st62 / 'ce3'}\n", encoding="utf-8")
    assert runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "ce")]).exit_code == 0
    from st_cli.score import score_pairs

    np.testing.assert_allclose(score_pairs(tmp_path / "ce", PAIRS), _predictions(st62, "ce3", "scores"), atol=ATOL)
    recipe.write_text(f"kind: cross-encoder\nmodel: {st62 / 'ce3'}\nnum_labels: 1\n", encoding="utf-8")
    result = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "ce1")])
    assert result.exit_code == 2 and "num_labels: 1, but the checkpoint's head has 3 labels" in _error_line(result)
    assert not (tmp_path / "ce1").exists()
