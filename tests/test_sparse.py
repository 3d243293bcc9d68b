"""Sparse encoders (SPLADE, inference-free SPLADE, CSR): folders saved by sentence-transformers 6.2 and 5.7
encode in st as ST 6.2's SparseEncoder.encode does; sparse outputs (CSR .safetensors, .jsonl, --decode) hold
the same numbers, read back with scipy; shards merge; inspect, verify and eval see sparse models.

The round trips of st-built folders (both dialects, ST 6.2 here and in tests/test_module_types.py, ST 5.7 in
tests/test_type_table.py) come from the specs' examples; this file covers what is sparse-only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.encode.sparse_outputs import read_csr
from st_cli.errors import EXIT_BAD_INPUT, EXIT_OK
from st_cli.format.summary import summarize
from st_cli.model.model import load_model
from tests.compat.tiny_mlm import make_tiny_bert_mlm
from tests.test_eval import eval_data, reference_beir  # noqa: F401 - a fixture, shared
from tests.texts import COMPARE_TEXTS

runner = CliRunner()
VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
SAVE_SPARSE = Path(__file__).parent / "compat" / "save_sparse.py"
KINDS = ("splade", "splade_default", "splade_sum", "ifree", "csr")
ATOL = 1e-5  # the bound; on the same transformers the numbers agree to the last bit


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert_mlm(tmp_path_factory.mktemp("tiny") / "bert_mlm")


def _save_with(python: Path, mlm: Path, bert: Path, out: Path) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([str(python), str(SAVE_SPARSE), str(mlm), str(bert), str(out)],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def saved(tiny_mlm_dir: Path, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sparse folders saved by ST 6.2 (this venv) and ST 5.7 (its compat venv, when there): "6.2/splade", …"""
    root = tmp_path_factory.mktemp("sparse-saved")
    folders = {}
    pythons = {"6.2": Path(sys.executable), "5.7": VENVS / "st57" / "bin" / "python"}
    for version, python in pythons.items():
        if not python.is_file():
            continue
        out = _save_with(python, tiny_mlm_dir, tiny_bert_dir, root / version)
        folders.update({f"{version}/{kind}": out / kind for kind in KINDS})
    return folders


def reference(folder: Path, texts: list[str], task: str | None = None, **kwargs) -> np.ndarray:
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(str(folder), device="cpu")
    encode = model.encode_query if task == "query" else model.encode
    return encode(texts, convert_to_sparse_tensor=False, **kwargs).cpu().numpy()


def st_encode(tmp_path: Path, folder: Path, out_name: str, *args: str) -> tuple[int, Path, str]:
    texts = _texts_file(tmp_path)
    out = tmp_path / out_name
    result = runner.invoke(app, ["encode", str(texts), "-m", str(folder), "--out", str(out), "--quiet", *args])
    return result.exit_code, out, result.stderr


def _texts_file(folder: Path) -> Path:
    """COMPARE_TEXTS as .jsonl records (some of them hold newlines)."""
    path = folder / "texts.jsonl"
    if not path.is_file():
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in COMPARE_TEXTS), encoding="utf-8")
    return path


CASES = [(v, k, t) for v in ("6.2", "5.7") for k in KINDS for t in ((None, "query") if k == "ifree" else (None,))]


@pytest.mark.parametrize(("version", "kind", "task"), CASES, ids=[f"{v}-{k}-{t or 'default'}" for v, k, t in CASES])
def test_st_encode_npy_equals_sparse_encoder(saved, version: str, kind: str, task: str | None, tmp_path: Path) -> None:
    """The issue's check: `st encode … --out x.npy` of a folder ST saved equals ST 6.2's SparseEncoder.encode."""
    key = f"{version}/{kind}"
    if key not in saved:
        pytest.skip(f"{VENVS / 'st57'} missing: run `make compat-venvs`")
    code, out, err = st_encode(tmp_path, saved[key], "x.npy", *(["--task", task] if task else []))
    assert code == EXIT_OK, err
    expected = reference(saved[key], COMPARE_TEXTS, task)
    got = np.load(out)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    assert (got != 0).sum() < got.size or kind != "csr"  # CSR keeps k of 64


@pytest.mark.parametrize("kind", ["splade", "ifree", "csr"])
def test_st_loads_st_saved_folders_and_saves_them_back(saved, kind: str, tmp_path: Path) -> None:
    """ST saves → st loads, in Python; st saves (both dialects) → ST 6.2 loads, with the same vectors."""
    from sentence_transformers import SparseEncoder

    model = load_model(saved[f"6.2/{kind}"])
    assert model.model_type == "SparseEncoder" and model.similarity_fn_name == "dot"
    ours = model.encode(COMPARE_TEXTS)
    np.testing.assert_allclose(ours, reference(saved[f"6.2/{kind}"], COMPARE_TEXTS), atol=ATOL, rtol=0)
    for fmt in ("portable", "st6"):
        folder = model.save(tmp_path / fmt, format=fmt)
        config = json.loads((folder / "config_sentence_transformers.json").read_text())
        assert config["model_type"] == "SparseEncoder"
        # sparse_encoder.models.X is the ST 5.0-5.3 spelling: a portable folder is all legacy
        assert summarize(folder).dialect == ("legacy" if fmt == "portable" else "new")
        theirs = SparseEncoder(str(folder), device="cpu").encode(COMPARE_TEXTS, convert_to_sparse_tensor=False)
        np.testing.assert_allclose(theirs.numpy(), ours, atol=ATOL, rtol=0)


def test_max_active_dims_as_sentence_transformers(saved, tmp_path: Path) -> None:
    folder = saved["6.2/splade"]
    code, out, err = st_encode(tmp_path, folder, "x.npy", "--max-active-dims", "5")
    assert code == EXIT_OK, err
    got = np.load(out)
    np.testing.assert_allclose(got, reference(folder, COMPARE_TEXTS, max_active_dims=5), atol=ATOL, rtol=0)
    assert ((got != 0).sum(axis=1) <= 5).all()
    # A CSR model keeps its k (config_sentence_transformers.json's max_active_dims) unless told otherwise.
    csr = saved["6.2/csr"]
    np.testing.assert_allclose(
        load_model(csr).encode(COMPARE_TEXTS, max_active_dims=3),
        reference(csr, COMPARE_TEXTS, max_active_dims=3), atol=ATOL, rtol=0,
    )  # fmt: skip


def test_sparse_outputs_read_back_with_scipy(saved, tmp_path: Path) -> None:
    import scipy.sparse

    folder = saved["6.2/splade"]
    dense = reference(folder, COMPARE_TEXTS)
    code, out, err = st_encode(tmp_path, folder, "x.safetensors")
    assert code == EXIT_OK, err
    values, indices, indptr, shape = read_csr(out)
    matrix = scipy.sparse.csr_matrix((values, indices, indptr), shape=shape)
    np.testing.assert_allclose(matrix.toarray(), dense, atol=ATOL, rtol=0)
    assert matrix.nnz == int((dense != 0).sum())
    # The same file through safetensors itself: three tensors, the shape in the metadata.
    from safetensors import safe_open

    with safe_open(str(out), "np") as f:
        assert sorted(f.keys()) == ["indices", "indptr", "values"]
        assert json.loads(f.metadata()["shape"]) == list(dense.shape) and f.metadata()["layout"] == "csr"
    code, out, err = st_encode(tmp_path, folder, "x.jsonl")
    assert code == EXIT_OK, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(COMPARE_TEXTS) and set(rows[0]) == {"indices", "values"}
    from_jsonl = np.zeros_like(dense)
    for i, row in enumerate(rows):
        from_jsonl[i, row["indices"]] = row["values"]
    np.testing.assert_allclose(from_jsonl, dense, atol=ATOL, rtol=0)


def test_decode_names_tokens_largest_first(saved, tiny_mlm_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SparseEncoder

    folder = saved["6.2/ifree"]
    code, out, err = st_encode(tmp_path, folder, "q.jsonl", "--decode", "--task", "query")
    assert code == EXIT_OK, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    model = SparseEncoder(str(folder), device="cpu")
    expected = model.decode(model.encode_query(COMPARE_TEXTS))
    for row, pairs in zip(rows, expected, strict=True):
        assert list(row.values()) == sorted(row.values(), reverse=True)
        assert row == pytest.approx(dict(pairs), abs=ATOL)


def test_shards_merge_to_a_single_run(saved, tmp_path: Path) -> None:
    """Sparse parts stay sparse and merge into what one run writes (--window 8: several windows per shard)."""
    folder = saved["6.2/splade"]
    code, whole, err = st_encode(tmp_path, folder, "whole.safetensors", "--window", "8")
    assert code == EXIT_OK, err
    parts = []
    for i in range(3):
        code, part, err = st_encode(tmp_path, folder, f"part{i}.safetensors", "--window", "8", "--shard", f"{i}/3")
        assert code == EXIT_OK, err
        parts.append(str(part))
    for name in ("merged.safetensors", "merged.npy", "merged.jsonl"):
        result = runner.invoke(app, ["merge", *parts, "--out", str(tmp_path / name), "--quiet"])
        assert result.exit_code == EXIT_OK, result.stderr
    expected = read_csr(whole)
    for got, want in zip(read_csr(tmp_path / "merged.safetensors"), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    dense = np.load(tmp_path / "merged.npy")
    import scipy.sparse

    values, indices, indptr, shape = expected
    np.testing.assert_array_equal(dense, scipy.sparse.csr_matrix((values, indices, indptr), shape=shape).toarray())
    rows = [json.loads(line) for line in (tmp_path / "merged.jsonl").read_text().splitlines()]
    assert [r["indices"] for r in rows] == [list(indices[indptr[i] : indptr[i + 1]]) for i in range(shape[0])]


def test_resume_continues_a_sparse_output(saved, tmp_path: Path) -> None:
    """A run killed after its first window is continued by --resume into the file one run writes."""
    from st_cli.encode.journal import KILL_ENV

    folder = saved["6.2/splade"]
    texts = _texts_file(tmp_path)
    whole, part = tmp_path / "whole.safetensors", tmp_path / "resumed.safetensors"
    base = [sys.executable, "-m", "st_cli", "encode", str(texts), "-m", str(folder), "--window", "8", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "HF_HUB_OFFLINE": "1"}
    assert subprocess.run([*base, "--out", str(whole)], env=env, capture_output=True, timeout=300).returncode == 0
    killed = subprocess.run([*base, "--out", str(part)], env={**env, KILL_ENV: "1"}, capture_output=True, timeout=300)
    assert killed.returncode != 0 and not part.exists()
    resumed = subprocess.run([*base, "--out", str(part), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert part.read_bytes() == whole.read_bytes()


def test_inspect_reads_router_routes_and_reports_sparse(saved, tmp_path: Path) -> None:
    import shutil

    result = runner.invoke(app, ["inspect", str(saved["6.2/ifree"]), "--json"])
    assert result.exit_code == EXIT_OK, result.output
    doc = json.loads(result.stdout)
    assert doc["model_type"] == "SparseEncoder" and not [f for f in doc["findings"] if f["severity"] == "error"]
    assert doc["sparse"] == {"dimensions": "vocabulary", "size": 89, "pooling": "max", "activation": "relu",
                             "max_active_dims": None}  # fmt: skip
    routes = doc["modules"][0]["routes"]
    assert [m["short_type"] for m in routes["query"]] == ["SparseStaticEmbedding"]
    assert [m["short_type"] for m in routes["document"]] == ["MLMTransformer", "SpladePooling"]
    assert routes["document"][1]["output_dim"] == 89
    # A problem inside a route is a finding (it was invisible before).
    broken = Path(shutil.copytree(saved["6.2/ifree"], tmp_path / "broken"))
    (broken / "query_0_SparseStaticEmbedding" / "model.safetensors").unlink()
    (broken / "document_1_SpladePooling" / "config.json").write_text('{"pooling_strategy": "mean"}')
    doc = json.loads(runner.invoke(app, ["inspect", str(broken), "--json"]).stdout)
    codes = {(f["code"], f["path"]) for f in doc["findings"] if f["severity"] == "error"}
    assert ("missing-weights", "query_0_SparseStaticEmbedding") in codes
    assert ("bad-config", "document_1_SpladePooling/config.json") in codes
    csr = json.loads(runner.invoke(app, ["inspect", str(saved["6.2/csr"]), "--json"]).stdout)
    assert csr["sparse"]["dimensions"] == "latent" and csr["sparse"]["max_active_dims"] == 8


def test_verify_checks_active_dims(saved, tmp_path: Path) -> None:
    model = load_model(saved["6.2/csr"])
    folder = model.save(tmp_path / "csr")  # with a manifest: reference runs too
    result = runner.invoke(app, ["verify", str(folder), "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["active_dims"]["status"] == "pass" and checks["active_dims"]["data"]["max_active"] == 8
    assert checks["reference"]["status"] == "pass" and checks["reload"]["status"] == "pass"
    splade = runner.invoke(app, ["verify", str(saved["6.2/splade"]), "--json"])
    assert {c["name"]: c for c in json.loads(splade.stdout)["checks"]}["active_dims"]["status"] == "pass"


def test_verify_active_dims_fails_past_the_limit(saved, monkeypatch) -> None:
    """Vectors with more non-zeros than max_active_dims fail the check (here: a stack that ignores the limit)."""
    from st_cli.model.model import Model
    from st_cli.model.modules.sparse_auto_encoder import SparseAutoEncoder

    keep_16 = SparseAutoEncoder.forward
    monkeypatch.setattr(SparseAutoEncoder, "forward", lambda self, features, **kw: keep_16(self, features, max_active_dims=16))
    monkeypatch.setattr(Model, "finish", lambda self, embeddings, **kwargs: embeddings.float().cpu().numpy())
    result = runner.invoke(app, ["verify", str(saved["6.2/csr"]), "--json"])
    check = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["active_dims"]
    assert result.exit_code == 1 and check["status"] == "fail" and "max_active_dims is 8" in check["detail"]


def test_eval_scores_sparse_retrieval_by_dot_product(saved, eval_data) -> None:  # noqa: F811
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator

    folder = saved["6.2/splade"]
    queries, corpus, relevant = reference_beir(eval_data["beir"])
    expected = SparseInformationRetrievalEvaluator(queries, corpus, relevant)(SparseEncoder(str(folder), device="cpu"))
    result = runner.invoke(app, ["eval", str(folder), "--data", str(eval_data["beir"]), "--json"])
    assert result.exit_code == EXIT_OK, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert "dot_ndcg@10" in metrics and not any(name.startswith("cosine_") for name in metrics)
    shared = {k: v for k, v in expected.items() if k in metrics}
    assert "dot_ndcg@10" in shared and "dot_mrr@10" in shared
    assert {k: metrics[k] for k in shared} == pytest.approx(shared, abs=1e-6)


@pytest.mark.parametrize(
    ("kind", "args", "says"),
    [
        ("csr", ["--decode"], "--decode: this SparseEncoder's dimensions are latents"),
        ("splade", ["--precision", "int8"], "--precision int8: this model is a SparseEncoder"),
        ("splade", ["--truncate-dim", "8"], "--truncate-dim: this model is a SparseEncoder"),
        ("dense", ["--max-active-dims", "4"], "--max-active-dims: this model is a SentenceTransformer"),
    ],
)
def test_refusals_name_the_model_kind(saved, tiny_bert_dir: Path, kind: str, args: list[str], says: str, tmp_path: Path) -> None:
    folder = tiny_bert_dir if kind == "dense" else saved[f"6.2/{kind}"]
    out = "x.jsonl" if "--decode" in args else "x.npy"
    code, path, err = st_encode(tmp_path, folder, out, *args)
    assert code == EXIT_BAD_INPUT and says in err and len(err.strip().splitlines()) == 1, err
    assert not path.exists()


def test_an_unknown_type_inside_a_route_is_refused_naming_the_model_kind(saved, tmp_path: Path) -> None:
    """A sparse module type st lacks, inside a Router: an inspect error finding and a one-line exit 2."""
    import shutil

    folder = Path(shutil.copytree(saved["6.2/ifree"], tmp_path / "future"))
    config = folder / "router_config.json"
    config.write_text(config.read_text().replace("sparse_static_embedding.SparseStaticEmbedding", "future.Future"))
    doc = json.loads(runner.invoke(app, ["inspect", str(folder), "--json"]).stdout)
    messages = [f["message"] for f in doc["findings"] if f["code"] == "unsupported-type"]
    assert len(messages) == 1 and "cannot run in this SparseEncoder; st would need a module type" in messages[0]
    code, out, err = st_encode(tmp_path, folder, "x.npy")
    assert code == EXIT_BAD_INPUT and len(err.strip().splitlines()) == 1 and not out.exists()
    assert "future.Future" in err and "SparseEncoder" in err


def test_an_mlm_transformer_s_load_args_are_shown_and_code_refused(saved, tmp_path: Path) -> None:
    """MLMTransformer reads sentence_bert_config.json's load args as Transformer does: inspect shows them,
    and one that would run code from the folder is a finding (encode refuses it), not silence."""
    import shutil

    folder = Path(shutil.copytree(saved["6.2/splade"], tmp_path / "m"))
    entry = json.loads((folder / "modules.json").read_text())[0]
    config_path = folder / entry["path"] / "sentence_bert_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(config | {"config_args": {"hidden_act": "relu"}}))
    doc = json.loads(runner.invoke(app, ["inspect", str(folder), "--json"]).stdout)
    assert doc["modules"][0]["short_type"] == "MLMTransformer"
    assert doc["modules"][0]["transformer"]["load_args"] == {"config_args": {"hidden_act": "relu"}}
    config_path.write_text(json.dumps(config | {"model_args": {"trust_remote_code": True}}))
    result = runner.invoke(app, ["inspect", str(folder), "--json"])
    found = [f for f in json.loads(result.stdout)["findings"] if "trust_remote_code" in f["message"]]
    assert [f["code"] for f in found] == ["st-unsupported"], found  # as for a Transformer: st refuses to load it
