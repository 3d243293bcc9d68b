"""st inspect / st_cli.summarize: JSON files and safetensors headers only, never torch, never folder code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY_VOCAB
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.errors import EXIT_BAD_INPUT, ModelFolderError
from st_cli.format import layout
from st_cli.format.summary import LOADERS, LoaderVerdict, ModelSummary, portability, summarize

runner = CliRunner()
VOCAB = len(dict.fromkeys(TINY_VOCAB))
RECIPE = """seed: 7
modules:
  - type: Transformer
    model: {bert}
  - type: Pooling
    mode: mean
  - type: Dense
    out_features: 16
    activation: tanh
  - type: Normalize
prompts: {{query: "query: ", document: "passage: "}}
default_prompt: query
"""
SHA = "c" * 40


@pytest.fixture(scope="module")
def built(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny BERT → mean Pooling → Dense 32→16 → Normalize stack, built by st in both formats."""
    root = tmp_path_factory.mktemp("inspect")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(bert=tiny_bert_dir), encoding="utf-8")
    from st_cli.model.model import build

    return {fmt: build(recipe, root / fmt, format=fmt)[1] for fmt in ("portable", "st6")}


@pytest.fixture(scope="module")
def st62_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same stack saved by sentence-transformers 6.2 itself (the new dialect)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    folder = tmp_path_factory.mktemp("st62") / "model"
    stack = [
        Transformer(str(tiny_bert_dir), max_seq_length=48),
        Pooling(32, "cls"),
        Dense(32, 8, activation_function=torch.nn.Tanh()),
        Normalize(),
    ]
    SentenceTransformer(modules=stack).save(str(folder))
    return folder


def copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "model", symlinks=True))


def codes(summary: ModelSummary, severity: str | None = None) -> set[str]:
    return {f.code for f in summary.findings if severity is None or f.severity == severity}


def statuses(summary: ModelSummary) -> dict[str, str]:
    return {name: v.status for name, v in summary.loaders.items()}


def safetensors_params(path: Path) -> tuple[int, int]:
    """(tensor count, parameter count) read the slow way, by loading the tensors."""
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    return len(tensors), sum(t.size for t in tensors.values())


# ---------------------------------------------------------------- good folders


def test_portable_folder_built_by_st(built: dict[str, Path]) -> None:
    s = summarize(built["portable"])
    assert (s.dialect, s.saved_by, s.model_type) == ("legacy", f"st {st_cli.__version__}", "SentenceTransformer")
    assert (s.embedding_dimension, s.max_seq_length, s.similarity) == (16, 64, "cosine")
    assert s.prompts == {"query": "query: ", "document": "passage: "} and s.default_prompt == "query"
    assert [m.short_type for m in s.modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert [m.type for m in s.modules] == [layout.TYPE_STRINGS["portable"][m.short_type] for m in s.modules]
    assert [(m.input_dim, m.output_dim) for m in s.modules] == [(None, 32), (32, 32), (32, 16), (16, 16)]
    transformer, pooling, dense, normalize = s.modules
    assert transformer.config == {"max_seq_length": 64, "do_lower_case": False}
    t = transformer.transformer
    assert (t.architecture, t.model_type, t.layers, t.hidden_size, t.vocab_size) == ("BertModel", "bert", 2, 32, VOCAB)
    assert t.tokenizer_json and t.model_max_length == 64
    assert (transformer.weights.tensor_count, transformer.weights.parameters) == safetensors_params(
        built["portable"] / "model.safetensors"
    )
    assert pooling.config == {"dimension": 32, "mode": ["mean"], "include_prompt": True}
    assert pooling.weights is None
    assert dense.config["activation"] == "torch.nn.modules.activation.Tanh"
    w = dense.weights.to_json(tensors=True)
    assert (w["tensor_count"], w["parameters"], w["dtypes"], w["bytes"]) == (2, 32 * 16 + 16, {"F32": 2}, 528 * 4)
    assert w["files"] == ["2_Dense/model.safetensors"] and w["pickled"] == ["2_Dense/pytorch_model.bin"]
    assert {(x["name"], tuple(x["shape"])) for x in w["tensors"]} == {
        ("linear.weight", (16, 32)),
        ("linear.bias", (16,)),
    }
    assert normalize.exists and normalize.raw_config is None
    # Portable builds rename transformers 5's TokenizersBackend class, so there is no tokenizer-class warning.
    assert s.manifest and codes(s) == {"manifest", "pickled-weights", "untrained-module"} and not codes(s, "error")
    # The recipe's Dense is freshly built: the one warning, which fails verify's trained check.
    (untrained,) = [f for f in s.findings if f.severity == "warning"]
    assert (untrained.code, untrained.path, untrained.check) == ("untrained-module", "2_Dense", "trained")
    assert untrained.message.startswith("module 2 (Dense, 2_Dense) is freshly initialised")
    # ST 2.2 and TEI ignore default_prompt_name.
    assert statuses(s) == {"ST<=5.3": "partial", "ST5.4-5.x": "yes", "ST>=6": "yes", "TEI": "partial"}
    assert "default_prompt_name" in s.loaders["TEI"].reasons[0]


def test_st6_folder_built_by_st(built: dict[str, Path]) -> None:
    s = summarize(built["st6"])
    assert (s.dialect, s.embedding_dimension, s.max_seq_length) == ("new", 16, 64)
    assert [m.short_type for m in s.modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert [m.type for m in s.modules] == [layout.TYPE_STRINGS["st6"][m.short_type] for m in s.modules]
    assert s.modules[1].config == {"dimension": 32, "mode": ["mean"], "include_prompt": True}
    assert s.modules[3].raw_config == {
        "module_input_name": "sentence_embedding",
        "module_output_name": "sentence_embedding",
    }
    assert s.modules[2].weights.pickled == []
    assert statuses(s) == {"ST<=5.3": "no", "ST5.4-5.x": "no", "ST>=6": "yes", "TEI": "no"}
    assert any("normalize.Normalize exists only in ST >= 6.0" in r for r in s.loaders["ST5.4-5.x"].reasons)
    assert any("max_seq_length" in r for r in s.loaders["TEI"].reasons)
    assert not codes(s, "error") and codes(s, "warning") == {"tokenizer-class", "untrained-module"}


def test_shipped_all_minilm(minilm_dir: Path) -> None:
    s = summarize(minilm_dir)
    assert (s.dialect, s.saved_by, s.embedding_dimension, s.max_seq_length) == (
        "legacy",
        "sentence-transformers 2.0.0",
        384,
        256,
    )
    assert s.similarity is None and s.prompts == {} and not s.manifest
    transformer = s.modules[0]
    t = transformer.transformer
    assert (t.architecture, t.layers, t.hidden_size, t.vocab_size, t.tokenizer_class) == (
        "BertModel",
        6,
        384,
        30522,
        "BertTokenizer",
    )
    assert transformer.weights.tensor_count == 104 and transformer.weights.parameters == 22_713_728
    assert transformer.weights.dtypes == {"F32": 103, "I64": 1}
    assert transformer.weights.nbytes == (minilm_dir / "model.safetensors").stat().st_size - 8 - 11408
    assert not s.modules[2].exists  # all-MiniLM-L6-v2 ships no 2_Normalize folder, and loaders need none
    assert codes(s, "info") == {"missing-module-folder", "no-manifest"} and codes(s) == codes(s, "info")
    assert all(v.status == "yes" for v in s.loaders.values())


def test_real_recipe_with_dense_and_prompts(tmp_path: Path) -> None:
    from st_cli.model.model import build

    recipe = Path(__file__).parent.parent / "recipes" / "minilm-dense-prompts.yaml"
    _, folder = build(recipe, tmp_path / "m256")
    s = summarize(folder)
    assert (s.dialect, s.embedding_dimension, s.max_seq_length, s.default_prompt) == ("legacy", 256, 256, "query")
    assert [(m.short_type, m.input_dim, m.output_dim) for m in s.modules] == [
        ("Transformer", None, 384),
        ("Pooling", 384, 384),
        ("Dense", 384, 256),
        ("Normalize", 256, 256),
    ]
    weights = s.modules[0].weights  # MiniLM re-saved by transformers (pooler added, position_ids gone)
    assert (weights.tensor_count, weights.parameters) == safetensors_params(folder / "model.safetensors")
    assert s.modules[2].weights.parameters == 384 * 256 + 256
    assert statuses(s) == {"ST<=5.3": "partial", "ST5.4-5.x": "yes", "ST>=6": "yes", "TEI": "partial"}


def test_folder_saved_by_sentence_transformers_6(st62_dir: Path) -> None:
    s = summarize(st62_dir)
    assert (s.dialect, s.saved_by) == ("new", "sentence-transformers 6.2.0")
    assert s.prompts == {"query": "", "document": ""} and s.default_prompt is None
    assert s.max_seq_length == 48  # only in tokenizer_config.json's model_max_length in this dialect
    assert [(m.short_type, m.input_dim, m.output_dim) for m in s.modules] == [
        ("Transformer", None, 32),
        ("Pooling", 32, 32),
        ("Dense", 32, 8),
        ("Normalize", 8, 8),
    ]
    assert s.modules[1].config["mode"] == ["cls"] and s.embedding_dimension == 8
    assert statuses(s) == {"ST<=5.3": "no", "ST5.4-5.x": "no", "ST>=6": "yes", "TEI": "no"}
    assert not codes(s, "error") and codes(s, "warning") == {"tokenizer-class"}


def test_portability_api(built: dict[str, Path], minilm_dir: Path) -> None:
    verdicts = portability(built["st6"])
    assert list(verdicts) == list(LOADERS) and all(isinstance(v, LoaderVerdict) for v in verdicts.values())
    assert [v.ok for v in verdicts.values()] == [False, False, True, False]
    assert all(v.ok for v in portability(minilm_dir).values())


def make_hub_cache(cache: Path, repo: str, folder: Path) -> Path:
    """An HF cache entry laid out as huggingface_hub makes it: blobs, symlinked snapshot files, refs/main."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / SHA
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = repo_dir / "blobs" / layout.sha256_file(path)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for empty in (p for p in folder.rglob("*") if p.is_dir()):
        (snapshot / empty.relative_to(folder)).mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(SHA)
    return snapshot


def run_st(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "st_cli", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120
    )


def test_hub_id_from_local_cache(built: dict[str, Path], tmp_path: Path) -> None:
    snapshot = make_hub_cache(tmp_path / "hub", "stcli/tiny", built["portable"])
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    for extra in ([], ["--revision", SHA]):
        result = run_st("inspect", "stcli/tiny", "--json", *extra, env=env)
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["hub_id"] == "stcli/tiny" and doc["revision"] == (SHA if extra else None)
        assert doc["path"] == str(snapshot) and doc["embedding_dimension"] == 16
        assert doc["modules"][2]["weights"]["parameters"] == 528  # read through the blob symlinks
        assert {f["code"] for f in doc["findings"] if f["severity"] != "info"} == {"untrained-module"}
    missing = run_st("inspect", "stcli/absent", "--json", env=env)
    assert missing.returncode == EXIT_BAD_INPUT and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and "stcli/absent" in missing.stderr


# ---------------------------------------------------------------- the CLI


def test_cli_tree_and_weights(minilm_dir: Path) -> None:
    result = runner.invoke(app, ["inspect", str(minilm_dir)])
    assert result.exit_code == 0, result.output
    for text in ("dialect legacy", "sentence-transformers 2.0.0", "embedding dimension 384", "max_seq_length 256"):
        assert text in result.stdout
    assert "BertModel (bert) · 6 layers · hidden 384 · vocab 30522" in result.stdout
    assert "104 tensors · 22.7M params" in result.stdout and "TEI" in result.stdout
    assert "word_embeddings.weight" not in result.stdout and result.stderr == ""
    result = runner.invoke(app, ["inspect", str(minilm_dir), "--weights"])
    assert result.exit_code == 0, result.output
    assert "embeddings.word_embeddings.weight  F32  [30522, 384]" in result.stdout


def test_cli_json_schema(built: dict[str, Path]) -> None:
    result = runner.invoke(app, ["inspect", str(built["portable"]), "--json", "--weights"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {
        "schema", "source", "path", "hub_id", "revision", "dialect", "saved_by", "versions", "model_type", "kind",
        "embedding_dimension", "truncate_dim", "max_seq_length", "similarity", "prompts", "default_prompt",
        "manifest", "modules", "exported", "findings", "loaders", "sparse",
    }  # fmt: skip
    assert doc["schema"] == 1 and doc["embedding_dimension"] == 16 and list(doc["loaders"]) == list(LOADERS)
    dense = doc["modules"][2]
    assert set(dense) == {
        "idx", "name", "type", "short_type", "path", "exists", "config_file", "raw_config", "config",
        "input_dim", "output_dim", "weights", "transformer", "custom_code", "kwargs", "routes",
    }  # fmt: skip
    assert dense["raw_config"]["out_features"] == 16 and dense["weights"]["tensors"][0]["dtype"] == "F32"
    assert doc["loaders"]["ST>=6"] == {"status": "yes", "ok": True, "reasons": []}
    assert set(doc["findings"][0]) == {"severity", "code", "message", "path", "check"}
    plain = json.loads(runner.invoke(app, ["inspect", str(built["portable"]), "--json"]).stdout)
    assert "tensors" not in plain["modules"][2]["weights"]


def test_revision_on_a_local_folder_is_refused(built: dict[str, Path]) -> None:
    result = runner.invoke(app, ["inspect", str(built["portable"]), "--revision", "main"])
    assert result.exit_code == EXIT_BAD_INPUT and "--revision" in result.stderr


# ---------------------------------------------------------------- broken folders

Mutation = Callable[[Path], None]


def _edit_json(rel: str, change: Callable[[object], object]) -> Mutation:
    def mutate(m: Path) -> None:
        path = m / rel
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return mutate


def _set_path(index: int, value: str) -> Mutation:
    return _edit_json("modules.json", lambda e: [{**x, "path": value} if i == index else x for i, x in enumerate(e)])


def _truncate(rel: str, size: int) -> Mutation:
    def mutate(m: Path) -> None:
        with (m / rel).open("r+b") as f:
            f.truncate(size)

    return mutate


def _symlink_pooling_outside(m: Path) -> None:
    outside = m.parent / "outside"
    shutil.copytree(m / "1_Pooling", outside)
    shutil.rmtree(m / "1_Pooling")
    (m / "1_Pooling").symlink_to(outside, target_is_directory=True)


def _remove(*rels: str) -> Mutation:
    def mutate(m: Path) -> None:
        for rel in rels:
            path = m / rel
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    return mutate


def _bad_shape(m: Path) -> None:
    path = m / "2_Dense/model.safetensors"
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["linear.bias"]["shape"] = [-1]  # as long as [16], so the header keeps its length
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= length
    text = text.ljust(length)
    path.write_bytes(data[:8] + text + data[8 + length :])


def _symlink_loop(m: Path) -> None:
    (m / "1_Pooling" / "loop").symlink_to(m, target_is_directory=True)


def _write(rel: str, text: str) -> Mutation:
    return lambda m: (m / rel).write_text(text)


FINDING_CASES = [
    ("pooling config not JSON", _write("1_Pooling/config.json", "{nope"), "error", "invalid-json"),
    ("module folder missing", _remove("2_Dense"), "error", "missing-module-folder"),
    ("Normalize folder missing", _remove("3_Normalize"), "info", "missing-module-folder"),
    ("header truncated", _truncate("model.safetensors", 100), "error", "bad-weights"),
    ("header length only", _truncate("2_Dense/model.safetensors", 5), "error", "bad-weights"),
    ("tensor data truncated", _truncate("2_Dense/model.safetensors", 200), "error", "bad-weights"),
    ("path escapes through ..", _set_path(1, "../elsewhere"), "error", "path-escape"),
    ("path escapes through a symlink", _symlink_pooling_outside, "error", "path-escape"),
    ("absolute path", _set_path(2, "/tmp"), "error", "path-escape"),
    ("dense weights missing", _remove("2_Dense/model.safetensors", "2_Dense/pytorch_model.bin"), "error",
     "missing-weights"),
    ("only pickled dense weights", _remove("2_Dense/model.safetensors"), "warning", "pickled-weights"),
    ("dense config vs weights", _edit_json("2_Dense/config.json", lambda c: {**c, "out_features": 8}), "error",
     "shape-mismatch"),
    ("hidden size vs weights", _edit_json("config.json", lambda c: {**c, "hidden_size": 64}), "error",
     "shape-mismatch"),
    ("unknown pooling key", _edit_json("1_Pooling/config.json", lambda c: {**c, "stcli": 1}), "error",
     "unknown-config-key"),
    ("unknown dense key", _edit_json("2_Dense/config.json", lambda c: {**c, "stcli": 1}), "warning",
     "unknown-config-key"),
    ("bad default prompt", _edit_json(layout.MODEL_CONFIG, lambda c: {**c, "default_prompt_name": "nope"}), "error",
     "bad-model-config"),
    ("pooling config missing", _remove("1_Pooling/config.json"), "error", "missing-config"),
    ("unknown ST type", _edit_json("modules.json", lambda e: [*e, {**e[3], "idx": 4, "type":
     "sentence_transformers.models.Nope"}]), "error", "unsupported-type"),
    ("custom type naming a file outside", _edit_json("modules.json", lambda e: [*e[:3], {**e[3], "type":
     "../outside.Evil"}]), "error", "unknown-type"),
    ("no manifest", _remove(layout.MANIFEST), "info", "no-manifest"),
    ("__version__ not an object", _edit_json(layout.MODEL_CONFIG, lambda c: {**c, "__version__": "1.0"}), "error",
     "bad-model-config"),
    ("truncate_dim not a number", _edit_json(layout.MODEL_CONFIG, lambda c: {**c, "truncate_dim": "x"}), "error",
     "bad-model-config"),
    ("pooling mode of the wrong type", _edit_json("1_Pooling/config.json", lambda c: {**c, "pooling_mode": 5}),
     "error", "bad-config"),
    ("dense in_features not a number", _edit_json("2_Dense/config.json", lambda c: {**c, "in_features": "x"}),
     "error", "bad-config"),
    ("negative tensor shape", _bad_shape, "error", "bad-weights"),
    ("symlink loop in the folder", _symlink_loop, "info", "manifest"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "severity", "code"), [c[1:] for c in FINDING_CASES], ids=[c[0] for c in FINDING_CASES]
)
def test_broken_folder_gives_findings(built, tmp_path: Path, mutate: Mutation, severity: str, code: str) -> None:
    m = copy(built["portable"], tmp_path)
    mutate(m)
    s = summarize(m)
    assert (severity, code) in {(f.severity, f.code) for f in s.findings}, s.findings
    if severity == "error":
        assert all(not v.ok for v in s.loaders.values()) or code == "unknown-config-key"
    result = runner.invoke(app, ["inspect", str(m)])
    assert result.exit_code == 0 and code in result.stdout, result.output


def test_unknown_keys_decide_loaders(built, tmp_path: Path) -> None:
    m = copy(built["portable"], tmp_path)
    _edit_json("2_Dense/config.json", lambda c: {**c, "stcli": 1})(m)
    # ST 6 drops an unknown Dense key with a warning; every older version raises TypeError.
    assert statuses(summarize(m))["ST>=6"] == "partial" and statuses(summarize(m))["ST5.4-5.x"] == "no"


ERROR_CASES = [
    # Without config.json too: with it, the folder is a plain transformers model (tests/test_plain_transformers.py).
    ("no modules.json", lambda m: [_remove(name)(m) for name in ("modules.json", "config.json")], "no modules.json"),
    ("modules.json not JSON", _write("modules.json", "[{"), "modules.json: not valid JSON"),
    ("modules.json not a list", _write("modules.json", "{}"), "expected a non-empty list"),
    ("entry without type", _write("modules.json", '[{"path": ""}]'), "entry [0] needs string 'type'"),
    ("idx not a number", _edit_json("modules.json", lambda e: [{**e[0], "idx": "0x"}, *e[1:]]), "idx must be a number"),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_unreadable_folder_is_one_line_exit_2(built, tmp_path: Path, mutate: Mutation, message: str) -> None:
    m = copy(built["portable"], tmp_path)
    mutate(m)
    with pytest.raises(ModelFolderError, match=message.replace("[", r"\[")):
        summarize(m)
    result = runner.invoke(app, ["inspect", str(m), "--json"])
    assert result.exit_code == EXIT_BAD_INPUT and result.stdout == "", result.output
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0


def test_missing_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", str(tmp_path / "absent")])
    assert result.exit_code == EXIT_BAD_INPUT and "no such model folder" in result.stderr


def test_sharded_transformer_weights(built, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    m = copy(built["portable"], tmp_path)
    tensors = load_file(str(m / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, str(m / file))
    weight_map = {n: file for file, part in shards.items() for n in part}
    (m / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (m / "model.safetensors").unlink()
    w = summarize(m).modules[0].weights
    assert w.files == sorted(shards) and (w.tensor_count, w.parameters) == (
        len(tensors),
        sum(t.size for t in tensors.values()),
    )
    weight_map["embeddings.word_embeddings.weight"] = "../../outside.safetensors"
    (m / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert "path-escape" in codes(summarize(m), "error")


def test_read_safetensors_header(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": np.zeros((3, 4), np.float16), "b": np.zeros(5, np.int64)}, str(path))
    header = layout.read_safetensors_header(path)
    assert header["a"]["dtype"] == "F16" and header["a"]["shape"] == [3, 4] and header["b"]["dtype"] == "I64"
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(ModelFolderError, match="beyond the data"):
        layout.read_safetensors_header(path)
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelFolderError, match="truncated safetensors header"):
        layout.read_safetensors_header(path)
    path.write_bytes((4).to_bytes(8, "little") + b"[1] ")
    with pytest.raises(ModelFolderError, match="not a JSON object"):
        layout.read_safetensors_header(path)


# ---------------------------------------------------------------- safety: no torch, no folder code

PROBE = """
import json, sys
from st_cli.cli import app
try:
    app(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = [m for m in ("torch", "transformers", "huggingface_hub", "sentence_transformers") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def test_inspect_imports_neither_torch_nor_transformers(minilm_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "inspect", str(minilm_dir), "--json", "--weights"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    probe = json.loads(result.stderr.strip().splitlines()[-1])
    assert probe == {"code": 0, "heavy": []}, result.stderr  # a local folder does not even need huggingface_hub
    assert json.loads(result.stdout)["embedding_dimension"] == 384


EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")
class EvilPooling:
    pass
"""


def test_custom_module_code_is_never_imported(built, tmp_path: Path) -> None:
    m = copy(built["portable"], tmp_path)
    marker = tmp_path / "PWNED"
    (m / "evil.py").write_text(EVIL.format(marker=str(marker)))
    (m / "1_Pooling" / "helper.py").write_text(EVIL.format(marker=str(marker)))
    _edit_json("modules.json", lambda e: [{**x, "type": "evil.EvilPooling"} if i == 1 else x for i, x in enumerate(e)])(
        m
    )

    s = summarize(m)
    pooling = s.modules[1]
    assert pooling.short_type is None and pooling.custom_code == "evil.py" and pooling.config is not None
    assert ("warning", "custom-code", "evil.py") in {(f.severity, f.code, f.path) for f in s.findings}
    assert ("info", "python-file", "1_Pooling/helper.py") in {(f.severity, f.code, f.path) for f in s.findings}
    assert s.loaders["ST>=6"].status == "partial" and "trust_remote_code" in s.loaders["ST>=6"].reasons[0]
    assert s.loaders["TEI"].status == "no" and s.modules[1].output_dim is None  # custom code: width unknown
    assert s.embedding_dimension == 16 and "dimension-mismatch" not in codes(s)  # until Dense sets it again
    # The real CLI, run from inside the folder so `import evil` would succeed if anything tried it.
    result = run_st("inspect", str(m), "--weights", cwd=m)
    assert result.returncode == 0, result.stderr
    assert "custom-code" in result.stdout and "evil.py" in result.stdout
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "inspect", str(m), "--json"], capture_output=True, text=True, cwd=m, timeout=120
    )
    assert json.loads(result.stderr.strip().splitlines()[-1])["heavy"] == []
    assert not marker.exists()


# ---------------------------------------------------------------- the static verdicts against real loaders

VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
# Each compat venv (made by `make compat-venvs`) and the loader column of `portability` it belongs to.
VENV_LOADER = {"st22": "ST<=5.3", "st27": "ST<=5.3", "st34": "ST<=5.3", "st41": "ST<=5.3", "st57": "ST5.4-5.x"}
LOAD_ALL = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from sentence_transformers import SentenceTransformer
result = {}
for folder in sys.argv[1:]:
    try:
        SentenceTransformer(folder, device="cpu").encode(["hello world"])
        result[folder] = "ok"
    except Exception as e:
        result[folder] = f"{type(e).__name__}: {e}"[:200]
print(json.dumps(result))
"""
LEGACY_NORMALIZE_5X = "sentence_transformers.sentence_transformer.modules.normalize.Normalize"


def _generic_tokenizer(m: Path) -> None:
    """Name a tokenizer class transformers 4.x knows, so the other rules are what is tested."""
    _edit_json("tokenizer_config.json", lambda c: {**c, "tokenizer_class": "PreTrainedTokenizerFast"})(m)


def _set_type(index: int, type_string: str) -> Mutation:
    return _edit_json(
        "modules.json", lambda e: [{**x, "type": type_string} if i == index else x for i, x in enumerate(e)]
    )


def _extra_key(rel: str) -> Mutation:
    return _edit_json(rel, lambda c: {**c, "stcli_recipe": "x"})


def _dense_out_8(m: Path) -> None:
    _edit_json("2_Dense/config.json", lambda c: {**c, "out_features": 8})(m)


def _seven_key_pooling(m: Path) -> None:
    _edit_json("1_Pooling/config.json", lambda c: {**c, "pooling_mode_lasttoken": False, "include_prompt": False})(m)


def _make_plain(m: Path) -> None:
    """Keep the transformers files only: a plain folder every ST version reads as Transformer + mean Pooling."""
    for path in list(m.iterdir()):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
            path.unlink()


@pytest.fixture(scope="module")
def variants(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    recipes: dict[str, tuple[str, list[Mutation]]] = {
        "portable": ("portable", [_generic_tokenizer]),
        "tf5-tokenizer": ("portable", []),
        "st6": ("st6", [_generic_tokenizer]),
        "st6-5x-normalize": ("st6", [_generic_tokenizer, _set_type(3, LEGACY_NORMALIZE_5X)]),
        "pooling-extra-key": ("portable", [_generic_tokenizer, _extra_key("1_Pooling/config.json")]),
        "dense-extra-key": ("portable", [_generic_tokenizer, _extra_key("2_Dense/config.json")]),
        "dense-safetensors-only": ("portable", [_generic_tokenizer, _remove("2_Dense/pytorch_model.bin")]),
        "seven-key-pooling": ("portable", [_generic_tokenizer, _seven_key_pooling]),
        "dense-shape": ("portable", [_generic_tokenizer, _dense_out_8]),
        "plain-transformers": ("portable", [_generic_tokenizer, _make_plain]),
    }  # fmt: skip
    out = {}
    for name, (base, mutations) in recipes.items():
        folder = Path(shutil.copytree(built[base], root / name))
        for mutate in mutations:
            mutate(folder)
        out[name] = folder
    return out


@pytest.mark.parametrize("venv", list(VENV_LOADER))
def test_verdicts_agree_with_real_loaders(variants: dict[str, Path], venv: str) -> None:
    python = VENVS / venv / "bin" / "python"
    if not (VENVS / venv / ".ready").is_file():
        pytest.skip(f"{python} missing: run `make compat-venvs` (make test does)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [str(python), "-c", LOAD_ALL, *map(str, variants.values())],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    real = json.loads(run.stdout.strip().splitlines()[-1])
    loader = VENV_LOADER[venv]
    for name, folder in variants.items():
        verdict = portability(folder)[loader]
        loaded = real[str(folder)] == "ok"
        # "no" must mean it fails; a failure must at least be flagged (partial: part of the range fails).
        assert loaded or verdict.status != "yes", f"{name}: {venv} failed ({real[str(folder)]}) but {loader} says yes"
        assert not loaded or verdict.status != "no", f"{name}: {venv} loaded it but {loader} says no: {verdict.reasons}"


def test_load_args_are_shown_and_applied_to_the_widths(built: dict[str, Path], tmp_path: Path) -> None:
    """sentence_bert_config.json's tokenizer/config/model args: listed under the Transformer, in the JSON, as an
    info finding; config_args override config.json's values and tokenizer_args' limit is the max_seq_length."""
    folder = Path(shutil.copytree(built["portable"], tmp_path / "m"))
    path = folder / "sentence_bert_config.json"
    args = {
        "tokenizer_args": {"model_max_length": 16, "trust_remote_code": False},
        "config_kwargs": {"hidden_act": "relu", "revision": "main"},
        "model_args": {"torch_dtype": "float16"},
    }
    path.write_text(json.dumps(json.loads(path.read_text()) | args))
    result = runner.invoke(app, ["inspect", str(folder)])
    assert result.exit_code == 0, result.output
    assert 'tokenizer_args (to transformers): {"model_max_length": 16}' in result.stdout
    assert 'config_args (to transformers): {"hidden_act": "relu"}' in result.stdout
    assert "max_seq_length 16" in result.stdout
    doc = json.loads(runner.invoke(app, ["inspect", str(folder), "--json"]).stdout)
    assert doc["modules"][0]["transformer"]["load_args"] == {
        "tokenizer_args": {"model_max_length": 16},
        "config_args": {"hidden_act": "relu"},
        "model_args": {"torch_dtype": "float16"},
    }
    codes = [(f["severity"], f["code"]) for f in doc["findings"]]
    assert ("info", "load-args") in codes and ("warning", "load-args") in codes
    warning = next(f for f in doc["findings"] if f["severity"] == "warning" and f["code"] == "load-args")
    assert "torch_dtype='float16': st computes in float32" in warning["message"]
    # ST 3.4-5.3 let max_seq_length win over tokenizer_args' limit: a partial verdict says so
    path.write_text(json.dumps({"max_seq_length": 32, "tokenizer_args": {"model_max_length": 16}}))
    verdict = st_cli.summarize(folder).loaders["ST<=5.3"]
    assert any("at max_seq_length 32" in reason and "model_max_length 16" in reason for reason in verdict.reasons)
