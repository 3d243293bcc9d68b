"""Speed features of `st encode`: dtype and batch defaults by device, CUDA (where present), start-up overlap."""

from __future__ import annotations

import contextlib
import threading
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


def test_bfloat16_batches_by_the_device_s_budget_unless_told():
    assert EncodeOptions(dtype="bfloat16").for_device("cpu").max_batch_tokens == 512
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
    monkeypatch.setattr(encode_module, "inference_linears", lambda model, device, dtype: contextlib.nullcontext())
    encode_file(lines, tmp_path / "autocast.npy", model=model, threads=1, dtype="bfloat16")
    np.testing.assert_array_equal(np.load(tmp_path / "once.npy"), np.load(tmp_path / "autocast.npy"))


def test_float32_linears_run_through_onednn_in_inference_and_through_aten_for_gradients(monkeypatch):
    from st_cli.encode import device

    if device._onednn_linear() is None:
        pytest.skip("this CPU or torch build has no oneDNN linear")
    layer = torch.nn.Linear(8, 4)
    net = torch.nn.Sequential(layer, torch.nn.ReLU())
    x = torch.randn(3, 5, 8)
    expected = torch.relu(torch.nn.functional.linear(x, layer.weight, layer.bias))
    with device.onednn_linears(net):
        with torch.inference_mode(), torch.profiler.profile() as profile:
            got = net(x)
        net(x).sum().backward()  # outside inference mode: aten's linear, which has a backward
    ops = {event.key for event in profile.key_averages()}
    assert "mkldnn::_linear_pointwise" in ops and "aten::linear" not in ops
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert layer.weight.grad is not None and "forward" not in layer.__dict__  # put back
    monkeypatch.setenv("ST_CPU_LINEAR", "aten")
    device._onednn_linear.cache_clear()
    try:
        assert device._onednn_linear() is None
    finally:
        monkeypatch.delenv("ST_CPU_LINEAR")
        device._onednn_linear.cache_clear()


class _Intermediate(torch.nn.Module):  # transformers' BertIntermediate: act(dense(x))
    def __init__(self, shift: float = 0.0) -> None:
        from transformers.activations import GELUActivation

        super().__init__()
        self.dense, self.intermediate_act_fn, self.shift = torch.nn.Linear(8, 16), GELUActivation(), shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x)) + self.shift


def test_a_linear_then_gelu_block_is_one_onednn_call_unless_its_forward_does_more():
    from st_cli.encode import device

    if device._onednn_linear() is None:
        pytest.skip("this CPU or torch build has no oneDNN linear")
    plain, shifted = _Intermediate(), _Intermediate(shift=1.0)
    x = torch.randn(4, 8)
    with torch.inference_mode():
        expected = plain(x), shifted(x)
        with device.onednn_linears(torch.nn.Sequential(plain, shifted)):
            assert "forward" in plain.__dict__ and "forward" not in shifted.__dict__  # its own code: kept
            got = plain(x), shifted(x)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert "forward" not in plain.__dict__


def _spy_batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(thread name, torch threads) of every batch `st encode` runs."""
    from st_cli.encode import run as encode_module

    seen: list[tuple[str, int]] = []
    real = encode_module.embed_batch

    def spy(model, batch, options):  # noqa: ANN001, ANN202
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(model, batch, options)

    monkeypatch.setattr(encode_module, "embed_batch", spy)
    return seen


def test_cpu_batches_run_on_streams_of_one_thread_with_the_same_rows(tiny_folder, lines, tmp_path, monkeypatch):
    seen = _spy_batches(monkeypatch)
    before = torch.get_num_threads()
    encode_file(lines, tmp_path / "streams.npy", model=tiny_folder, threads=2)
    assert len(seen) > 2 and {(name.startswith("st-stream"), count) for name, count in seen} == {(True, 1)}
    assert torch.get_num_threads() == before
    seen.clear()
    encode_file(lines, tmp_path / "one.npy", model=tiny_folder, threads=1)
    assert {name for name, _ in seen} == {threading.main_thread().name}
    # every batch ran on one thread both times: the rows are the same bits
    np.testing.assert_array_equal(np.load(tmp_path / "streams.npy"), np.load(tmp_path / "one.npy"))
    seen.clear()
    encode_file(lines, tmp_path / "small.npy", model=tiny_folder, threads=2, window=1)
    assert {name for name, _ in seen} == {threading.main_thread().name}  # one batch a window: all threads on it
    assert {count for _, count in seen} == {2}


def test_a_stack_with_custom_code_runs_its_batches_on_one_stream(tiny_folder, lines, tmp_path, monkeypatch):
    from st_cli.model.model import load_model

    model = load_model(str(tiny_folder))
    assert model.runs_concurrently
    pooling = model.steps[1]
    pooling.__class__ = type("MyPooling", (type(pooling),), {})  # a user's subclass: not st's own module
    assert not model.runs_concurrently
    seen = _spy_batches(monkeypatch)
    encode_file(lines, tmp_path / "custom.npy", model=model, threads=2)
    assert len(seen) > 2 and {name for name, _ in seen} == {threading.main_thread().name}
    assert {count for _, count in seen} == {2}


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
