"""`st export`: every variant's file under sentence-transformers' name, read by onnxruntime / OpenVINO with torch's
numbers; the refusals; the manifest; and ST 5.7 + optimum loading the exported folder (backend="onnx")."""

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

import st_cli
from st_cli.cli import app
from st_cli.export.export import NotExportableError, export_model
from st_cli.export.options import ExportOptions
from st_cli.export.variants import VARIANTS
from st_cli.format import manifest
from st_cli.format.files import sha256_file
from tests.texts import COMPARE_TEXTS

runner = CliRunner()
VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
ONNX_VARIANTS = [k for k, v in VARIANTS.items() if v.extra == "onnx"]
TEXTS = ["the man is eating food", "a woman is playing a new movie with her dog", "hello", "test data search"]
# last_hidden_state against torch's: float32 and graph rewrites keep the math; the GELU approximation (O3) changes
# it a little; O4's float16 weights and activations (11 significant bits: ~8e-4 per rounding at |x| ≈ 1.6) gave
# 2.5e-3 on the tiny model; int8 is judged by the pooled vectors' cosine instead.
ATOL = {"onnx": 1e-5, "O1": 1e-5, "O2": 1e-5, "O3": 1e-3, "O4": 5e-3}
INT8_MIN_COSINE = 0.99


def _recipe(root: Path, tiny_bert_dir: Path) -> Path:
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"seed: 3\nmodules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n    mode: mean\n"
        "  - type: Normalize\n",
        encoding="utf-8",
    )
    return recipe


@pytest.fixture(scope="module")
def built(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT → mean Pooling → Normalize folder, st_manifest.json included."""
    root = tmp_path_factory.mktemp("export-built")
    return st_cli.build(_recipe(root, tiny_bert_dir), root / "model")[1]


@pytest.fixture(scope="module")
def exported(built: Path) -> tuple[Path, dict]:
    """Every variant at once, into a copy (-o); the report's JSON."""
    out = built.parent / "exported"
    args = ["export", str(built), "--onnx", "-o", str(out), "--quantize", "int8", "--openvino", "--json"]
    args += [a for level in ("O1", "O2", "O3", "O4") for a in ("--optimize", level)]
    args += [a for arch in ("arm64", "avx2", "avx512", "avx512_vnni") for a in ("--arch", arch)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _torch_reference(folder: Path, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The tokenizer's inputs (int64) and transformers' last_hidden_state for them."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    model = AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    return {k: v.numpy().astype(np.int64) for k, v in batch.items()}, hidden


def _run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]
    # as optimum does: token_type_ids the tokenizer does not give are zeros (the tiny tokenizer gives none)
    return session.run(None, {n: inputs.get(n, np.zeros_like(inputs["input_ids"])) for n in names})[0]


def _mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    summed = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return summed / np.linalg.norm(summed, axis=1, keepdims=True)


@pytest.mark.parametrize("key", ONNX_VARIANTS)
def test_onnx_variant_matches_torch(exported: tuple[Path, dict], key: str) -> None:
    folder, report = exported
    variant = VARIANTS[key]
    assert report["variants"][variant.name] == variant.file
    path = folder / variant.file
    assert path.is_file()
    inputs, hidden = _torch_reference(folder, TEXTS)
    got = _run_onnx(path, inputs)
    mask = inputs["attention_mask"]
    assert got.shape == hidden.shape
    if key in ATOL:  # real tokens: the positions pooling reads (padding rows are never read)
        assert np.abs((got - hidden) * mask[..., None]).max() <= ATOL[key]
    else:
        cosine = (_mean_pooled(got, mask) * _mean_pooled(hidden, mask)).sum(1)
        assert cosine.mean() >= INT8_MIN_COSINE, cosine


def test_file_names_are_sentence_transformers_names(exported: tuple[Path, dict]) -> None:
    folder, report = exported
    expected = {
        "onnx/model.onnx", "onnx/model_O1.onnx", "onnx/model_O2.onnx", "onnx/model_O3.onnx", "onnx/model_O4.onnx",
        "onnx/model_qint8_arm64.onnx", "onnx/model_quint8_avx2.onnx", "onnx/model_qint8_avx512.onnx",
        "onnx/model_qint8_avx512_vnni.onnx", "openvino/openvino_model.xml",
    }  # fmt: skip
    assert set(report["variants"].values()) == expected
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in (".onnx", ".xml", ".bin")}
    assert on_disk == expected | {"openvino/openvino_model.bin"}


def test_graph_has_named_dynamic_axes_and_bert_inputs(exported: tuple[Path, dict]) -> None:
    import onnx

    model = onnx.load(str(exported[0] / "onnx/model.onnx"))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert dims == {n: ["batch_size", "sequence_length"] for n in ("input_ids", "attention_mask", "token_type_ids")}
    out = model.graph.output[0]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch_size", "sequence_length", 32]
    assert not any(n.metadata_props for n in model.graph.node)  # no stack traces with local paths


def test_other_batch_and_length_match_torch(exported: tuple[Path, dict]) -> None:
    inputs, hidden = _torch_reference(exported[0], [t + " and more text" * 3 for t in TEXTS[:3]])
    got = _run_onnx(exported[0] / "onnx/model.onnx", inputs)
    assert np.abs((got - hidden) * inputs["attention_mask"][..., None]).max() <= 1e-5


def test_openvino_ir_matches_torch(exported: tuple[Path, dict]) -> None:
    import openvino

    inputs, hidden = _torch_reference(exported[0], TEXTS)
    # float32 as written: on a CPU with bfloat16 (AVX512-BF16, AMX) OpenVINO's default is to run in bfloat16
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    compiled = openvino.Core().compile_model(str(exported[0] / "openvino/openvino_model.xml"), "CPU", config)
    names = [i.get_any_name() for i in compiled.inputs]
    got = compiled({n: inputs.get(n, np.zeros_like(inputs["input_ids"])) for n in names})[compiled.outputs[0]]
    assert np.abs((got - hidden) * inputs["attention_mask"][..., None]).max() <= 1e-5


def test_copy_keeps_the_model_and_records_sha256(built: Path, exported: tuple[Path, dict]) -> None:
    folder, report = exported
    assert not (built / "onnx").exists()  # -o leaves the source alone
    recorded = manifest.read(folder)
    assert recorded is not None and recorded.files is not None
    for file in report["files"]:
        assert recorded.files[file["path"]] == sha256_file(folder / file["path"]) == file["sha256"]
    # the rest of the model came along: st loads the copy and gives the source's vectors
    np.testing.assert_allclose(st_cli.load_model(folder).encode(TEXTS), st_cli.load_model(built).encode(TEXTS))


def test_copy_of_a_folder_without_manifest_gets_one(tiny_bert_dir: Path, tmp_path: Path) -> None:
    assert not (tiny_bert_dir / "st_manifest.json").exists()  # a plain transformers folder
    out = tmp_path / "copy"
    report = export_model(ExportOptions(str(tiny_bert_dir), quantize="int8", arch=("avx2",), output=out))
    assert report.manifest and report.notes == ()
    recorded = manifest.read(out)
    assert recorded is not None and recorded.recorded_by == "st export" and recorded.probes is not None
    assert recorded.files == {
        p.relative_to(out).as_posix(): sha256_file(p) for p in out.rglob("*") if p.is_file() and p.name != "st_manifest.json"
    }
    assert "onnx/model_quint8_avx2.onnx" in recorded.files and not (out / "onnx/model.onnx").exists()
    # ... and the source folder is untouched
    assert not (tiny_bert_dir / "onnx").exists() and not (tiny_bert_dir / "st_manifest.json").exists()


def test_in_place_refuses_existing_then_force_replaces(built: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(built, tmp_path / "m"))
    first = runner.invoke(app, ["export", str(folder), "--onnx", "-q"])
    assert first.exit_code == 0, first.output
    digest = sha256_file(folder / "onnx/model.onnx")
    assert manifest.read(folder).files["onnx/model.onnx"] == digest  # type: ignore[union-attr]
    again = runner.invoke(app, ["export", str(folder), "--onnx"])
    assert again.exit_code == 2
    assert again.stderr.strip() == f"error: {folder}/onnx/model.onnx: already exists; pass --force to replace it"
    (folder / "onnx/model.onnx").write_bytes(b"stale")
    forced = runner.invoke(app, ["export", str(folder), "--onnx", "--force", "-q"])
    assert forced.exit_code == 0, forced.output
    assert sha256_file(folder / "onnx/model.onnx") == digest  # the export is deterministic
    assert manifest.read(folder).files["onnx/model.onnx"] == digest  # type: ignore[union-attr]
    assert not [p for p in folder.rglob("*st-tmp*")]


def test_static_embedding_model_is_not_exportable(tiny_bert_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "static.yaml"
    recipe.write_text(f"modules:\n  - type: StaticEmbedding\n    tokenizer: {tiny_bert_dir}\n    embedding_dim: 8\n")
    folder = st_cli.build(recipe, tmp_path / "static")[1]
    result = runner.invoke(app, ["export", str(folder), "--onnx"])
    assert result.exit_code == 2
    assert "module 0 is a StaticEmbedding, not a Transformer" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (folder / "onnx").exists()


def test_clip_model_is_not_exportable(tiny_clip_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "clip.yaml"
    recipe.write_text(f"modules:\n  - type: CLIPModel\n    model: {tiny_clip_dir}\n")
    folder = st_cli.build(recipe, tmp_path / "clip")[1]
    with pytest.raises(NotExportableError, match="module 0 is a CLIPModel, not a Transformer"):
        export_model(ExportOptions(str(folder), onnx=True))


@pytest.mark.parametrize(
    ("missing", "args", "line"),
    [
        ("onnxruntime", ["--onnx"], "st export needs onnxruntime (the onnx extra): pip install 'st-cli[onnx]'"),
        ("onnxscript", ["--quantize", "int8"], "st export needs onnxscript (the onnx extra): pip install 'st-cli[onnx]'"),
        ("openvino", ["--openvino"], "st export needs openvino (the openvino extra): pip install 'st-cli[openvino]'"),
    ],
)
def test_missing_extra_is_one_line(
    built: Path, monkeypatch: pytest.MonkeyPatch, missing: str, args: list[str], line: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` raises ImportError
    result = runner.invoke(app, ["export", str(built), *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {line}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to export: pass --onnx, --optimize LEVEL, --quantize int8 or --openvino"),
        (["--onnx", "--arch", "avx2"], "--arch applies to --quantize int8; add --quantize int8"),
        (["--optimize", "O5"], "--optimize O5: expected one of O1, O2, O3, O4"),
        (["--quantize", "int4"], "--quantize int4: only int8 is supported"),
        (["--quantize", "int8", "--arch", "sse"], "--arch sse: expected one of arm64, avx2, avx512, avx512_vnni"),
    ],
)
def test_bad_options_are_one_line(built: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["export", str(built), *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {message}"


def test_output_inside_the_model_is_refused(built: Path) -> None:
    result = runner.invoke(app, ["export", str(built), "--onnx", "-o", str(built / "copy")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {built / 'copy'}: is inside {built}, an input of this export; write the output elsewhere"
    )
    result = runner.invoke(app, ["export", str(built), "--onnx", "-o", str(built.parent), "--force"])
    assert result.exit_code == 2 and "an input of this export" in result.stderr
    assert not (built / "copy").exists()


def test_hub_id_needs_an_output_folder() -> None:
    result = runner.invoke(app, ["export", "sentence-transformers/all-MiniLM-L6-v2", "--onnx"])
    assert result.exit_code == 2
    assert "not a local folder; pass -o OUT" in result.stderr


def test_large_model_weights_go_to_external_data(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from st_cli.export import producers

    monkeypatch.setattr(producers, "EXTERNAL_DATA_BYTES", 0)  # as if the weights were past 2 GB
    out = tmp_path / "big"
    report = export_model(ExportOptions(str(built), onnx=True, optimize=("O2",), output=out))
    paths = {f.path for f in report.files}
    assert {"onnx/model.onnx", "onnx/model.onnx_data", "onnx/model_O2.onnx"} <= paths
    described = {f.path: f for f in st_cli.summarize(out).exported}  # inspect follows the external data
    assert described["onnx/model.onnx"].weights_files == ["onnx/model.onnx_data"]
    assert described["onnx/model.onnx"].bytes == sum((out / p).stat().st_size for p in ("onnx/model.onnx", "onnx/model.onnx_data"))
    inputs, hidden = _torch_reference(out, TEXTS)
    for name in ("onnx/model.onnx", "onnx/model_O2.onnx"):
        got = _run_onnx(out / name, inputs)
        assert np.abs((got - hidden) * inputs["attention_mask"][..., None]).max() <= 1e-5


# ---------------------------------------------------------------- ST 5.7 + optimum reads the folder


def _st57onnx() -> Path:
    python = VENVS / "st57onnx" / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python} missing: the ST 5.7 + optimum-onnx venv (make compat-venvs)")
    if subprocess.run([str(python), "-c", "import optimum.onnxruntime"], capture_output=True).returncode != 0:
        pytest.skip(f"{python} cannot import optimum.onnxruntime")
    return python


@pytest.mark.parametrize("file_name", ["onnx/model.onnx", "onnx/model_qint8_avx512_vnni.onnx"])
def test_st57_optimum_loads_the_exported_file(exported: tuple[Path, dict], tmp_path: Path, file_name: str) -> None:
    python = _st57onnx()
    folder = exported[0]
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(COMPARE_TEXTS), encoding="utf-8")
    out = tmp_path / "emb.npy"
    script = Path(__file__).parent / "compat" / "onnx_load.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [str(python), str(script), str(folder), file_name, str(texts), str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    theirs, ours = np.load(out), st_cli.load_model(folder).encode(COMPARE_TEXTS)
    if file_name == "onnx/model.onnx":
        np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    else:
        assert (theirs * ours).sum(1).mean() >= INT8_MIN_COSINE  # both unit length (Normalize)


# ---------------------------------------------------------------- st inspect reads the exported files


def test_inspect_lists_exported_files_from_the_files(exported: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    for extra in ("onnx", "onnxruntime", "openvino"):  # read without any extra: format/ has its own reader
        monkeypatch.setitem(sys.modules, extra, None)
    folder, report = exported
    summary = st_cli.summarize(folder)
    files = {f.path: f for f in summary.exported}
    assert set(files) == set(report["variants"].values())
    bert_inputs = [
        {"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]}
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    float32 = files["onnx/model.onnx"].to_json()
    assert float32["inputs"] == bert_inputs and float32["opset"] == 18 and float32["format"] == "onnx"
    assert float32["outputs"] == [{"name": "last_hidden_state", "dtype": "float32", "shape": ["batch_size", "sequence_length", 32]}]
    assert float32["bytes"] == (folder / "onnx/model.onnx").stat().st_size
    assert files["onnx/model_O4.onnx"].outputs[0].dtype == "float32"  # float16 inside, float32 at the edges
    ir = files["openvino/openvino_model.xml"]
    assert [t.name for t in ir.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [(t.name, t.dtype, t.shape) for t in ir.outputs] == [("last_hidden_state", "float32", ("?", "?", 32))]
    assert ir.weights_files == ["openvino/openvino_model.bin"]
    assert ir.bytes == sum((folder / f"openvino/openvino_model.{s}").stat().st_size for s in ("xml", "bin"))
    # OpenVINO's .bin is raw weights, not a pickle
    assert not [f for f in summary.findings if f.code == "pickled-weights"], summary.findings
    assert json.loads(json.dumps(summary.to_json()))["exported"][0]["path"] == "onnx/model.onnx"


def test_inspect_names_a_broken_exported_file(built: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(built, tmp_path / "m"))
    (folder / "onnx").mkdir()
    (folder / "onnx/model.onnx").write_bytes(b"\x3a\xff\xff\xff\x0f")  # graph field announcing 4 GB, then nothing
    (folder / "openvino").mkdir()
    (folder / "openvino/openvino_model.xml").write_text("<net><layers>", encoding="utf-8")
    summary = st_cli.summarize(folder)
    bad = sorted((f.path, f.message.split(" (")[0]) for f in summary.findings if f.code == "bad-exported-file")
    assert bad == [
        ("onnx/model.onnx", "onnx/model.onnx: not a readable ONNX model"),
        ("openvino/openvino_model.xml", "openvino/openvino_model.xml: not a readable OpenVINO IR"),
    ]
    # a warning that fails verify's layout check, while the torch model still loads (export --force mends it)
    assert all((f.severity, f.check) == ("warning", "layout") for f in summary.findings if f.code == "bad-exported-file")
    result = runner.invoke(app, ["inspect", str(folder)])
    assert result.exit_code == 0 and "bad-exported-file" in result.stdout


def test_openvino_weights_file_is_refused_up_front(built: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(built, tmp_path / "m"))
    (folder / "openvino").mkdir()
    (folder / "openvino/openvino_model.bin").write_bytes(b"someone's weights")
    result = runner.invoke(app, ["export", str(folder), "--openvino"])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {folder}/openvino/openvino_model.bin: already exists; pass --force to replace it"
    assert (folder / "openvino/openvino_model.bin").read_bytes() == b"someone's weights"
    assert not (folder / "openvino/openvino_model.xml").exists()


def test_custom_module_first_is_not_exportable(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from tests.test_st_modules import save_with_st

    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(TEXTS), encoding="utf-8")
    root = save_with_st(sys.executable, tiny_bert_dir, texts, tmp_path / "st62", "input")  # HashedWords first
    result = runner.invoke(app, ["export", str(root / "input"), "--onnx", "--trust-remote-code"])
    assert result.exit_code == 2
    assert "module 0 is custom code (HashedWords); st exports only a Transformer module" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (root / "input" / "onnx").exists()
