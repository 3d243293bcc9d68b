"""Speed features of `st encode`: dtype and batch defaults by device, CUDA (where present), start-up overlap."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.encode.api import encode_file
from st_cli.encode.options import EncodeOptions
from st_cli.model.model import build

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def tiny_folder(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("speed")
    recipe = root / "recipe.yaml"
    recipe.write_text(f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n")
    return build(recipe, root / "tiny")[1]


@pytest.fixture
def lines(tmp_path: Path) -> Path:
    src = tmp_path / "in.txt"
    words = "the quick brown fox jumps over a lazy dog while it rains".split()
    src.write_text("".join(" ".join(words[: 1 + i % len(words)]) + "\n" for i in range(300)))
    return src


@pytest.mark.parametrize(
    ("device", "dtype", "budget", "prefetch"),
    [("cpu", "float32", 512, False), ("cuda", "float16", 16384, True), ("mps", "float32", 4096, False)],
)
def test_device_defaults(device, dtype, budget, prefetch):
    options = EncodeOptions().for_device(device)
    assert (options.dtype, options.max_batch_tokens, options.prefetch) == (dtype, budget, prefetch)
    explicit = EncodeOptions(dtype="float32", max_batch_tokens=64, prefetch=False).for_device(device)
    assert (explicit.dtype, explicit.max_batch_tokens, explicit.prefetch) == ("float32", 64, False)


def test_bfloat16_on_a_cpu_batches_more_tokens_unless_told():
    assert EncodeOptions(dtype="bfloat16").for_device("cpu").max_batch_tokens == 2048
    assert EncodeOptions(dtype="bfloat16", max_batch_tokens=300).for_device("cpu").max_batch_tokens == 300
    assert EncodeOptions(dtype="bfloat16").for_device("cuda").max_batch_tokens == 16384


def test_auto_dtype_on_cpu_is_exactly_float32(tiny_folder, lines, tmp_path):
    encode_file(lines, tmp_path / "auto.npy", model=tiny_folder, threads=1)
    encode_file(lines, tmp_path / "f32.npy", model=tiny_folder, threads=1, dtype="float32")
    np.testing.assert_array_equal(np.load(tmp_path / "auto.npy"), np.load(tmp_path / "f32.npy"))


def test_bfloat16_stays_close_to_float32(tiny_folder, lines, tmp_path):
    encode_file(lines, tmp_path / "f32.npy", model=tiny_folder, threads=1)
    encode_file(lines, tmp_path / "bf16.npy", model=tiny_folder, threads=1, dtype="bfloat16")
    a, b = np.load(tmp_path / "f32.npy"), np.load(tmp_path / "bf16.npy")
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert b.dtype == np.float32 and cos.min() > 0.99
    assert not np.array_equal(a, b)  # it did run in bfloat16


def test_bfloat16_linears_cast_once_match_autocast_and_are_put_back(tiny_folder, lines, tmp_path, monkeypatch):
    from st_cli.encode import run as encode_module
    from st_cli.model.model import load_model

    model = load_model(str(tiny_folder))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    encode_file(lines, tmp_path / "once.npy", model=model, threads=1, dtype="bfloat16")
    assert all(v.dtype == torch.float32 and torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    monkeypatch.setattr(encode_module, "reduced_linears", lambda model, dtype: contextlib.nullcontext())
    encode_file(lines, tmp_path / "autocast.npy", model=model, threads=1, dtype="bfloat16")
    np.testing.assert_array_equal(np.load(tmp_path / "once.npy"), np.load(tmp_path / "autocast.npy"))


def test_a_bad_input_is_reported_even_when_the_model_fails_to_load(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    result = CliRunner().invoke(app, ["encode", str(bad), "-m", str(tmp_path / "no-model"), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 2
    assert f"{bad}:2:" in result.stderr


def test_a_bad_input_with_a_good_model_is_still_a_located_error(tiny_folder, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "x"}\n')
    result = CliRunner().invoke(app, ["encode", str(bad), "-m", str(tiny_folder), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 2 and f"{bad}:2:" in result.stderr
    assert not (tmp_path / "o.npy").exists()


@cuda
def test_cuda_runs_float16_by_default_close_to_cpu(tiny_folder, lines, tmp_path):
    cpu = encode_file(lines, tmp_path / "cpu.npy", model=tiny_folder)
    gpu = encode_file(lines, tmp_path / "gpu.npy", model=tiny_folder, device="cuda")
    a, b = np.load(tmp_path / "cpu.npy"), np.load(tmp_path / "gpu.npy")
    assert gpu.rows == cpu.rows == 300
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999 and not np.array_equal(a, b)


@cuda
def test_cuda_float32_on_request_matches_cpu(tiny_folder, lines, tmp_path):
    encode_file(lines, tmp_path / "cpu.npy", model=tiny_folder)
    encode_file(lines, tmp_path / "gpu.npy", model=tiny_folder, device="cuda", dtype="float32", normalize=False)
    np.testing.assert_allclose(np.load(tmp_path / "gpu.npy"), np.load(tmp_path / "cpu.npy"), atol=1e-4)


@cuda
def test_cuda_cli_truncate_and_normalize_finish_on_the_device(tiny_folder, lines, tmp_path):
    out = tmp_path / "o.npy"
    args = ["encode", str(lines), "-m", str(tiny_folder), "-o", str(out), "--device", "cuda", "--normalize"]
    result = CliRunner().invoke(app, [*args, "--truncate-dim", "16", "-q"])
    assert result.exit_code == 0, result.output
    rows = np.load(out)
    assert rows.shape == (300, 16)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3)


def test_cuda_where_there_is_none_is_a_clean_error(tiny_folder, lines, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = CliRunner().invoke(
        app, ["encode", str(lines), "-m", str(tiny_folder), "-o", str(tmp_path / "o.npy"), "--device", "cuda"]
    )
    assert result.exit_code == 2 and "no CUDA device" in result.stderr
