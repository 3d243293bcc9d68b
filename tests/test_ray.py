"""Ray Data: `st encode --ray`, `encode_files_ray` and `Embedder`, on a real local Ray cluster.

One cluster for the module (`ray.init` costs 5–7 s); every test runs under a hard timeout (SIGALRM,
and a faulthandler backstop that ends the process), so a hung pool fails the suite instead of hanging CI.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from st_cli.cli import _with_optional_values, app
from st_cli.encode import encode_file

runner = CliRunner()
TEST_SECONDS = 120


@pytest.fixture(autouse=True)
def hard_timeout() -> Iterator[None]:
    """Fail a test that runs past TEST_SECONDS; end the whole process if even that does not return."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"test ran past {TEST_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_SECONDS)
    faulthandler.dump_traceback_later(TEST_SECONDS + 60, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- without a cluster


def test_bare_ray_flag_means_a_local_cluster() -> None:
    assert _with_optional_values(["encode", "a.txt", "--ray"]) == ["encode", "a.txt", "--ray=local"]
    assert _with_optional_values(["encode", "--ray", "a.txt", "-o", "x.npy"]) == [
        "encode", "--ray=local", "a.txt", "-o", "x.npy",
    ]
    assert _with_optional_values(["encode", "--ray", "auto", "a.txt"]) == ["encode", "--ray", "auto", "a.txt"]
    assert _with_optional_values(["--ray", "10.0.0.1:6379"]) == ["--ray", "10.0.0.1:6379"]
    assert _with_optional_values(["--", "--ray"]) == ["--", "--ray"]


def test_without_ray_installed_one_line_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.txt").write_text("hello\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    result = runner.invoke(app, ["encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "e.npy"), "--ray"])
    assert result.exit_code == 2
    assert "pip install 'st-cli[ray]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "e.npy").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2"], "--workers needs --ray"),
        (["--shards", "3"], "--shards needs --ray"),
        (["--gpus-per-worker", "1"], "--gpus-per-worker needs --ray"),
    ],
)
def test_ray_options_without_ray_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "a.txt").write_text("hello\n", encoding="utf-8")
    result = runner.invoke(app, ["encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "e.npy"), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_stdin_cannot_go_to_ray(tmp_path: Path) -> None:
    result = runner.invoke(app, ["encode", "-", "--out", str(tmp_path / "e.npy"), "--ray"], input="a\nb\n")
    assert result.exit_code == 2
    assert "stdin cannot be sharded" in result.output


# ---------------------------------------------------------------- on a local cluster


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster for the module: 4 CPUs declared (more than this machine's cores, on purpose)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_embedder_in_a_user_pipeline_matches_st_encode(ray_cluster: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    import ray

    from st_cli import Embedder

    texts = [" ".join(["word"] * (i % 13)) + f" text {i}" for i in range(50)] + [""]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    encode_file(tmp_path / "in.txt", tmp_path / "ref.npy", model=tiny_bert_dir, normalize=True)
    expected = np.load(tmp_path / "ref.npy")

    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model": str(tiny_bert_dir), "normalize": True},
        batch_size=7,  # not st's windows: equal only up to float rounding
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    )
    rows = sorted(ds.take_all(), key=lambda row: row["id"])
    got = np.stack([row["embedding"] for row in rows])
    assert [row["text"] for row in rows] == texts
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
