"""st encode / eval / verify on an exported Transformer (`--backend onnx|openvino`, model/runtime.py):
the same embeddings as torch (float32 files within 1e-5, int8 within cosine bounds), without torch
where the stack allows, onnx-only folders, the missing-extra line, shards and --resume, verify's check."""

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
from st_cli.encode.api import encode_file
from st_cli.encode.journal import KILL_ENV
from st_cli.model import runtime
from st_cli.model.model import build
from tests.conftest import DENSE_STACK
from tests.exported import INT8, export_int8, export_onnx, export_openvino

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TEXTS = [
    "hello world",
    "the cat is eating food",
    "a",
    "",
    "man playing a horse in the new movie",
    "query: search the data for a great vector model",
    "dog " * 80,  # truncated at max_seq_length
]
WINDOW = 4


def _build(root: Path, modules: str, tiny_bert_dir: Path) -> Path:
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"seed: 7\nmodules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n{modules}", encoding="utf-8"
    )
    _, folder = build(recipe, root / "model")
    return folder


@pytest.fixture(scope="module")
def exported(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny BERT → mean Pooling → Normalize, with onnx/model.onnx, its int8 file and openvino/."""
    folder = _build(
        tmp_path_factory.mktemp("backend"), "  - type: Pooling\n    mode: mean\n  - type: Normalize\n", tiny_bert_dir
    )
    export_onnx(folder)
    export_int8(folder)
    if _has("openvino"):
        export_openvino(folder)
    return folder


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "in.txt"
    path.write_text("\n".join(TEXTS * 3) + "\n", encoding="utf-8")
    return path


def _has(package: str) -> bool:
    try:
        __import__(package)
    except ImportError:
        return False
    return True


def st(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def encoded(model: Path, texts: Path, out: Path, *args: str) -> np.ndarray:
    code, stdout, stderr = st("encode", str(texts), "-m", str(model), "--out", str(out), "--force", *args)
    assert code == 0, stderr
    return np.load(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


# ---------------------------------------------------------------- the same embeddings as torch


def test_onnx_float32_equals_torch(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    torch_rows = encoded(exported, texts_file, tmp_path / "t.npy")
    onnx_rows = encoded(exported, texts_file, tmp_path / "o.npy", "--backend", "onnx", "--json")
    assert onnx_rows.shape == torch_rows.shape == (len(TEXTS) * 3, 32)
    assert np.abs(onnx_rows - torch_rows).max() <= 1e-5
    _, stdout, _ = st(
        "encode", str(texts_file), "-m", str(exported), "--out", str(tmp_path / "j.npy"), "--backend", "onnx", "--json"
    )
    doc = json.loads(stdout)
    assert doc["backend"] == "onnx" and doc["backend_file"] == "onnx/model.onnx" and doc["threads"] >= 1


def test_int8_file_within_cosine_bounds(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    torch_rows = encoded(exported, texts_file, tmp_path / "t.npy")
    int8_rows = encoded(exported, texts_file, tmp_path / "q.npy", "--backend", "onnx", "--backend-file", INT8)
    sims = cosines(int8_rows, torch_rows)
    assert sims.mean() >= 0.99 and sims.min() >= 0.95
    assert np.abs(int8_rows - torch_rows).max() > 1e-6  # it really ran the quantised graph
    # a bare file name is looked for in onnx/ too, as sentence-transformers does
    again = encoded(exported, texts_file, tmp_path / "q2.npy", "--backend", "onnx", "--backend-file", Path(INT8).name)
    assert np.array_equal(again, int8_rows)


def test_openvino_equals_torch(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    torch_rows = encoded(exported, texts_file, tmp_path / "t.npy")
    ov_rows = encoded(exported, texts_file, tmp_path / "v.npy", "--backend", "openvino")
    assert np.abs(ov_rows - torch_rows).max() <= 1e-5


def test_a_dense_tail_runs_on_torch_after_the_session(tiny_bert_dir: Path, texts_file: Path, tmp_path: Path) -> None:
    folder = _build(tmp_path, DENSE_STACK, tiny_bert_dir)
    export_onnx(folder)
    encoder = runtime.load(folder, "onnx")
    assert encoder.numpy_steps is None and encoder.torch_tail is not None
    torch_rows = encoded(folder, texts_file, tmp_path / "t.npy")
    onnx_rows = encoded(
        folder, texts_file, tmp_path / "o.npy", "--backend", "onnx", "--normalize", "--truncate-dim", "8"
    )
    torch_cut = encoded(folder, texts_file, tmp_path / "c.npy", "--normalize", "--truncate-dim", "8")
    assert torch_rows.shape[1] == 16 and np.abs(onnx_rows - torch_cut).max() <= 1e-5


# ---------------------------------------------------------------- shards, --resume, workers


def test_shards_and_resume_with_backend_onnx(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    whole = encoded(
        exported, texts_file, tmp_path / "whole.npy", "--backend", "onnx", "--window", str(WINDOW), "--threads", "1"
    )
    parts = []
    for i in range(2):
        part = tmp_path / f"p{i}.npy"
        encoded(
            exported,
            texts_file,
            part,
            "--backend",
            "onnx",
            "--window",
            str(WINDOW),
            "--shard",
            f"{i}/2",
            "--threads",
            "1",
        )
        sidecar = json.loads(part.with_name(part.name + ".shard.json").read_text())
        assert sidecar["fingerprint"]["options"]["backend"] == "onnx"
        assert "onnxruntime" in sidecar["fingerprint"]["versions"] and "torch" not in sidecar["fingerprint"]["versions"]
        parts.append(str(part))
    code, _, stderr = st("merge", *parts, "--out", str(tmp_path / "merged.npy"))
    assert code == 0, stderr
    assert np.array_equal(np.load(tmp_path / "merged.npy"), whole)

    # killed after 2 windows, then resumed: the same bytes as one run
    out = tmp_path / "killed.npy"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", KILL_ENV: "2"}
    args = ["encode", str(texts_file), "--out", str(out), "-m", str(exported), "-q", "--window", str(WINDOW)]
    args += ["--backend", "onnx", "--threads", "1"]
    proc = subprocess.run([sys.executable, "-m", "st_cli", *args], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    summary = encode_file(texts_file, out, model=exported, window=WINDOW, resume=True, backend="onnx", threads=1)
    assert summary.resumed_rows == WINDOW  # the second window was written, not journaled
    assert np.array_equal(np.load(out), whole)
    # the torch job is another job: --resume of it does not take the onnx run's rows
    assert summary.backend == "onnx"


# ---------------------------------------------------------------- without torch; onnx-only folders

BLOCK_TORCH = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"blocked for this test: {name}")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["st", *sys.argv[1:]]
try:
    runpy.run_module("st_cli", run_name="__main__")
finally:
    print("imported torch:", "torch" in sys.modules, file=sys.stderr)
"""


# As if `names` were not installed: `import name` raises ImportError, importlib.util.find_spec gives None.
WITHOUT = """
import runpy, sys
for name in {names!r}:
    sys.modules[name] = None
sys.argv = ["st", *sys.argv[1:]]
runpy.run_module("st_cli", run_name="__main__")
"""


def _without_torch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_onnx_path_encodes_without_torch(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    reference = encoded(exported, texts_file, tmp_path / "t.npy")
    run = _without_torch(
        "encode", str(texts_file), "-m", str(exported), "--out", str(tmp_path / "o.npy"), "--backend", "onnx"
    )
    assert run.returncode == 0, run.stderr
    assert "imported torch: False" in run.stderr
    assert np.abs(np.load(tmp_path / "o.npy") - reference).max() <= 1e-5


def test_an_onnx_only_folder_loads_on_its_exported_file(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    reference = encoded(exported, texts_file, tmp_path / "t.npy")
    only = shutil.copytree(exported, tmp_path / "only")
    (only / "model.safetensors").unlink()
    shutil.rmtree(only / "openvino", ignore_errors=True)
    code, stdout, stderr = st("inspect", str(only), "--json")
    assert code == 0, stderr
    assert "missing-weights" not in [f["code"] for f in json.loads(stdout)["findings"]]
    run = _without_torch("encode", str(texts_file), "-m", str(only), "--out", str(tmp_path / "o.npy"))
    assert run.returncode == 0, run.stderr
    notes = [line for line in run.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no torch weights" in notes[0] and "onnx/model.onnx" in notes[0]
    assert np.abs(np.load(tmp_path / "o.npy") - reference).max() <= 1e-5


def test_an_openvino_only_folder_loads_on_openvino(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    reference = encoded(exported, texts_file, tmp_path / "t.npy")
    only = shutil.copytree(exported, tmp_path / "only")
    (only / "model.safetensors").unlink()
    shutil.rmtree(only / "onnx")
    code, _, stderr = st("encode", str(texts_file), "-m", str(only), "--out", str(tmp_path / "v.npy"))
    assert code == 0, stderr
    assert "--backend openvino" in stderr
    assert np.abs(np.load(tmp_path / "v.npy") - reference).max() <= 1e-5


def test_a_missing_extra_is_one_line_naming_the_install(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    script = WITHOUT.format(names=["onnxruntime"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["encode", str(texts_file), "-m", str(exported), "--out", str(tmp_path / "o.npy"), "--backend", "onnx"]
    run = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --backend onnx needs onnxruntime, which is not installed: pip install 'st-cli[onnx]'"]
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "onnx", "--backend-file", "onnx/nothing.onnx"], "no onnx/onnx/nothing.onnx"),
        (["--backend", "onnx", "--backend-file", "../model.onnx"], "give a path inside the model folder"),
        (["--backend-file", INT8], "--backend-file: give --backend onnx or --backend openvino with it"),
        (["--backend", "onnx", "--dtype", "bfloat16"], "--dtype bfloat16 is for --backend torch"),
        (["--backend", "tensorrt"], "--backend: expected one of torch, onnx, openvino"),
    ],
)
def test_bad_backend_arguments_are_one_line(
    exported: Path, texts_file: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, stderr = st("encode", str(texts_file), "-m", str(exported), "--out", str(tmp_path / "o.npy"), *args)
    assert code == 2 and message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1


def test_backend_file_lists_what_the_folder_has(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    code, _, stderr = st(
        "encode",
        str(texts_file),
        "-m",
        str(exported),
        "--out",
        str(tmp_path / "o.npy"),
        "--backend",
        "onnx",
        "--backend-file",
        "model_O3.onnx",
    )
    assert code == 2 and "onnx/model.onnx, onnx/model_qint8_avx512_vnni.onnx" in stderr, stderr


# ---------------------------------------------------------------- eval and verify


def test_eval_runs_on_the_onnx_backend(exported: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    rows = ["sentence1,sentence2,score"] + [
        f"{a},{b},{s}" for a, b, s in zip(TEXTS, reversed(TEXTS), range(7), strict=True)
    ]
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, torch_out, stderr = st("eval", str(exported), "--data", str(pairs), "--json")
    assert code == 0, stderr
    code, onnx_out, stderr = st("eval", str(exported), "--data", str(pairs), "--json", "--backend", "onnx")
    assert code == 0, stderr
    ours, theirs = json.loads(onnx_out), json.loads(torch_out)
    assert ours["metrics"].keys() == theirs["metrics"].keys() and ours["n"] == 7
    for name, value in theirs["metrics"].items():
        assert ours["metrics"][name] == pytest.approx(value, abs=1e-4), name


def _exported_check(folder: Path) -> dict:
    code, stdout, _ = st("verify", str(folder), "--json")
    doc = json.loads(stdout)
    return next(c for c in doc["checks"] if c["name"] == "exported")


def test_verify_checks_every_exported_file(exported: Path) -> None:
    check = _exported_check(exported)
    assert check["status"] == "pass", check
    files = {f["file"]: f for f in check["data"]["files"]}
    assert set(files) >= {"onnx/model.onnx", INT8}
    assert files["onnx/model.onnx"]["max_abs_diff"] <= 1e-5
    assert files[INT8]["min_cosine"] >= 0.95 and files[INT8]["bound"].startswith("mean cos")
    assert "max |Δ|" in check["figure"] and "int8 min cos" in check["figure"]


def test_verify_fails_a_file_exported_from_another_model(exported: Path, tmp_path: Path) -> None:
    from tests.conftest import make_tiny_bert

    other = make_tiny_bert(tmp_path / "other", seed=1)
    wrong = shutil.copytree(exported, tmp_path / "wrong")
    export_onnx(wrong, wrong / "onnx" / "model_O1.onnx", source=other)
    check = _exported_check(wrong)
    assert check["status"] == "fail"
    assert "onnx/model_O1.onnx: max |Δ|" in check["detail"] and "needs max |Δ| ≤ 1e-05" in check["detail"]
    assert "onnx/model.onnx" not in check["detail"]  # the good files are not blamed


def test_verify_skips_without_exported_files(tiny_bert_dir: Path, tmp_path: Path) -> None:
    folder = _build(tmp_path, "  - type: Pooling\n    mode: mean\n", tiny_bert_dir)
    check = _exported_check(folder)
    assert check["status"] == "skipped" and "no exported files" in check["detail"]


def test_the_session_runs_on_the_thread_policy_and_sleeps_when_idle(exported: Path) -> None:
    encoder = runtime.load(exported, "onnx")
    with encoder.thread_count(1) as count:
        options = encoder.input_module._session.session.get_session_options()
        assert count == 1 and options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        rows = encoder.encode(TEXTS)
    assert rows.shape == (len(TEXTS), encoder.get_sentence_embedding_dimension() or 0)
    with encoder.thread_count(2):  # another count: a new session
        assert encoder.input_module._session.session.get_session_options().intra_op_num_threads == 2


def test_workers_and_ray_data_embedder_run_the_backend(exported: Path, texts_file: Path, tmp_path: Path) -> None:
    from st_cli.encode.ray import Embedder

    one = encode_file(texts_file, tmp_path / "one.npy", model=exported, backend="onnx", threads=1, window=WINDOW)
    two = encode_file(
        texts_file, tmp_path / "two.npy", model=str(exported), backend="onnx", threads=1, window=WINDOW, workers=2
    )
    assert one.backend == "onnx" and two.rows == one.rows
    assert np.array_equal(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"))
    embedder = Embedder(exported, backend="onnx", threads=1)
    rows = embedder({"text": TEXTS})["embedding"]
    assert np.abs(np.asarray(rows) - np.load(tmp_path / "one.npy")[: len(TEXTS)]).max() <= 1e-5


def test_verify_skips_the_check_when_no_runtime_is_installed(exported: Path) -> None:
    """A missing extra is the verifying machine's state, not the folder's: skipped, naming the install."""
    script = WITHOUT.format(names=["onnxruntime", "openvino"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", script, "verify", str(exported), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    check = next(c for c in json.loads(run.stdout)["checks"] if c["name"] == "exported")
    assert check["status"] == "skipped"
    assert "pip install 'st-cli[onnx]'" in check["detail"] and INT8 in check["data"]["unchecked"]


ST57_EXPORT = """
import sys, json, numpy as np
from sentence_transformers import SentenceTransformer
folder, texts_path, out = sys.argv[1:4]
model = SentenceTransformer(folder, backend="onnx", device="cpu")
model.save_pretrained(folder)
texts = json.load(open(texts_path, encoding="utf-8"))
np.save(out, model.encode(texts, batch_size=4))
"""


def test_a_folder_exported_by_sentence_transformers_reads_the_same(
    exported: Path, texts_file: Path, tmp_path: Path
) -> None:
    """sentence-transformers 5.7 + optimum export onnx/model.onnx and encode with it; st runs the same file."""
    python = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat")) / "st57onnx"
    python = python / "bin" / "python"
    if not python.is_file():
        pytest.skip("no st57onnx venv (sentence-transformers 5.7 + optimum)")
    # Asked before the run, so that a failure of the run itself (a traceback through optimum) is a failure.
    if subprocess.run([str(python), "-c", "import optimum.onnxruntime"], capture_output=True).returncode != 0:
        pytest.skip(f"{python} cannot import optimum.onnxruntime")
    folder = shutil.copytree(exported, tmp_path / "st57")
    shutil.rmtree(folder / "onnx")
    shutil.rmtree(folder / "openvino", ignore_errors=True)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(TEXTS), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(
        [str(python), "-c", ST57_EXPORT, str(folder), str(texts), str(tmp_path / "theirs.npy")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert (folder / "onnx" / "model.onnx").is_file()
    ours = runtime.load(folder, "onnx").encode(TEXTS)
    assert np.abs(ours - np.load(tmp_path / "theirs.npy")).max() <= 1e-5
