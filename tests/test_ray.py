"""Ray Data: `st encode --ray`, `encode_files_ray` and `Embedder`, on a real local Ray cluster.

One cluster for the module (starting Ray costs 3–5 s); every test runs under a hard timeout (SIGALRM,
and a faulthandler backstop that ends the process), so a hung pool fails the suite instead of hanging CI.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.cli.typer_app import _with_optional_values
from st_cli.encode.api import encode_file

runner = CliRunner()
TEST_SECONDS = 180  # generous: a loaded 2-core CI machine starts actors slowly; a hang is still caught


@contextlib.contextmanager
def deadline(seconds: int, what: str) -> Iterator[None]:
    """TimeoutError after `seconds` (SIGALRM); if even that does not return, the process ends 60 s later."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    faulthandler.dump_traceback_later(seconds + 60, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def hard_timeout() -> Iterator[None]:
    with deadline(TEST_SECONDS, "test"):
        yield


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
        (["--shards", "3"], "--shards needs --ray"),
        (["--gpus-per-worker", "1"], "--gpus-per-worker needs --ray"),
        (["--ray", "--shard", "0/2"], "--shard cannot go with --ray"),
    ],
)
def test_ray_options_without_ray_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "a.txt").write_text("hello\n", encoding="utf-8")
    result = runner.invoke(app, ["encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "e.npy"), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_a_loaded_model_cannot_go_to_ray(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from st_cli import encode_files_ray
    from st_cli.errors import StError
    from st_cli.model.model import load_model

    (tmp_path / "a.txt").write_text("hello\n", encoding="utf-8")
    with pytest.raises(StError, match="give the model as a folder or Hub id"):
        encode_files_ray(tmp_path / "a.txt", load_model(tiny_bert_dir), tmp_path / "e.npy")  # type: ignore[arg-type]


def test_stdin_cannot_go_to_ray(tmp_path: Path) -> None:
    result = runner.invoke(app, ["encode", "-", "--out", str(tmp_path / "e.npy"), "--ray"], input="a\nb\n")
    assert result.exit_code == 2
    assert "stdin cannot be sharded" in result.output


def test_more_shards_than_windows_is_refused_before_ray_starts(tmp_path: Path) -> None:
    """--shards 10**23 on 3 lines used to build a list of 10**23 parts (it never ended)."""
    (tmp_path / "a.txt").write_text("a\nb\nc\n", encoding="utf-8")
    result = runner.invoke(
        app, ["encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "e.npy"), "--ray", "--shards", str(10**23)]
    )
    assert result.exit_code == 2, result.output
    assert f"--shards {10**23}: more shards than the job has windows (1 of --window 8192 records); give at most 1" in (
        result.output
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_the_pool_s_start_is_its_first_ready_actor_even_one_ready_before_the_hand_over(tmp_path: Path) -> None:
    from st_cli.encode.ray import RayEncodeSummary

    summary = RayEncodeSummary(tmp_path / "e.npy", 3, 4, "float32", 3, 0, 2, [])
    row = {"skipped": False, "resumed": False, "seconds": 1.0, "load_seconds": 0.5, "pid": 7}
    for ready_at, skipped in ((99.0, False), (103.0, True), (101.0, False)):  # handed over at 100.0
        summary.add_shard({**row, "ready_at": ready_at, "skipped": skipped}, handed_at=100.0)
    assert summary.pool_start_seconds == 0.0  # a node's clock behind the driver's: 0, not unset
    assert (summary.skipped_shards, summary.pids, summary.shard_seconds) == (1, [7, 7], 3.0)


def test_one_worker_runs_one_shard_more_run_four_each() -> None:
    """One worker has nobody to balance with: extra shards only re-read the inputs and start cold windows."""
    from st_cli.encode.ray import default_shards

    assert default_shards(20_000, 8192, 1) == 1
    assert default_shards(20_000, 8192, 2) == 3  # never more shards than windows
    assert default_shards(1_000_000, 8192, 2) == 8
    assert default_shards(0, 8192, 3) == 1


def test_local_workers_share_the_machine_s_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--ray --workers 1` gets every core (as plain `st encode`), not one CPU and half the speed."""
    from st_cli import threads
    from st_cli.encode.ray import default_cpus_per_worker, local_workers

    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    assert default_cpus_per_worker(None, 1, 0.0) == 8
    assert default_cpus_per_worker(None, 3, 0.0) == 2
    assert default_cpus_per_worker(None, 16, 0.0) == 1
    assert default_cpus_per_worker(None, None, 0.0) == 1  # no --workers: one worker per CPU
    assert default_cpus_per_worker("auto", 1, 0.0) == 1  # a joined cluster's CPUs are not this machine's
    assert default_cpus_per_worker(None, 1, 1.0) == 1  # GPU workers
    assert local_workers(1.0) == 8 and local_workers(3.0) == 2  # the usable CPUs, not os.cpu_count()


def test_job_of_is_the_job_a_shard_records(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """Workers skip a finished part by comparing job_of with its .shard.json: both must agree."""
    from st_cli.encode.job import job_of
    from st_cli.encode.shards import read_sidecar
    from st_cli.model.model import load_model

    corpus = tmp_path / "in.txt"
    corpus.write_text("\n".join(varied_lines(20)) + "\n", encoding="utf-8")
    model = load_model(tiny_bert_dir)
    name = str(tiny_bert_dir)
    encode_file(corpus, tmp_path / "p.npy", model=model, model_name=name, shard=(0, 2), window=8, threads=1)
    recorded = read_sidecar(tmp_path / "p.npy").job
    assert job_of([corpus], model, name, window=8) == recorded
    assert job_of([corpus], model, name, window=8, normalize=True) != recorded
    assert job_of([corpus], model, name, window=4) != recorded


def test_a_loaded_model_with_its_name_writes_what_the_name_writes(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """Ray workers load the model once and pass model_name: the output (metadata too) is a single run's."""
    from st_cli.model.model import load_model

    corpus = tmp_path / "in.txt"
    corpus.write_text("\n".join(varied_lines(20)) + "\n", encoding="utf-8")
    encode_file(corpus, tmp_path / "by-name.safetensors", model=tiny_bert_dir, threads=1)
    loaded = load_model(tiny_bert_dir)
    encode_file(corpus, tmp_path / "loaded.safetensors", model=loaded, model_name=str(tiny_bert_dir), threads=1)
    assert (tmp_path / "loaded.safetensors").read_bytes() == (tmp_path / "by-name.safetensors").read_bytes()


def test_an_address_nothing_answers_on_is_one_line_not_minutes_of_retries() -> None:
    import socket

    from st_cli.encode.ray import check_reachable
    from st_cli.errors import StError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(StError, match=f"--ray 127.0.0.1:{port}: no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{port}")
    check_reachable("auto")  # left to Ray


def test_a_shards_own_error_comes_out_of_rays_wrappers_as_one_line() -> None:
    from st_cli.encode.ray import _shard_error
    from st_cli.errors import StError

    inner = StError("OUT.parts/part-00001-of-00004.npy: already exists; pass --force to replace it")
    wrapped = RuntimeError("ray.exceptions.RayTaskError(UserCodeException): traceback ...")
    wrapped.cause = RuntimeError("UserCodeException")  # type: ignore[attr-defined]
    wrapped.cause.__cause__ = inner  # type: ignore[attr-defined]
    assert _shard_error(wrapped) is inner
    assert _shard_error(RuntimeError("worker died")) is None


def test_heartbeat_yields_none_while_waiting_and_passes_errors_on() -> None:
    import time

    from st_cli.encode.ray import with_heartbeat

    def slow() -> Iterator[int]:
        yield 1
        time.sleep(0.25)
        yield 2
        raise ValueError("shard failed")

    seen: list[int | None] = []
    with pytest.raises(ValueError, match="shard failed"):
        for item in with_heartbeat(slow(), 0.05):
            seen.append(item)
    assert [x for x in seen if x is not None] == [1, 2]
    assert None in seen


# ---------------------------------------------------------------- on a local cluster


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster for the module: 4 CPUs declared (more than this machine's cores, on purpose)."""
    ray = pytest.importorskip("ray")
    with deadline(TEST_SECONDS, "ray.init"):
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
    encode_file(tmp_path / "in.txt", tmp_path / "ref.npy", model=tiny_bert_dir, normalize=True, threads=1)
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


def varied_lines(n: int) -> list[str]:
    words = "the a man woman is eating food playing horse cat dog movie new great text vector model".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=int(rng.integers(0, 30)))) for _ in range(n)]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(varied_lines(100)) + "\n", encoding="utf-8")  # blank lines included
    return path


def test_ray_equals_a_single_run_bit_for_bit_on_minilm(ray_cluster: str, minilm_dir: Path, corpus: Path) -> None:
    from st_cli import encode_files_ray

    single = corpus.with_name("single.npy")
    encode_file(corpus, single, model=minilm_dir, window=16, threads=1)
    out = corpus.with_name("ray.npy")
    calls: list[tuple[int, int, int, int]] = []
    summary = encode_files_ray(
        corpus, minilm_dir, out, address=ray_cluster, workers=2, shards=3, window=16, progress=lambda *a: calls.append(a)
    )
    assert out.read_bytes() == single.read_bytes()
    assert calls[-1] == (3, 3, 100, 100)
    assert [c[2] for c in calls] == sorted(c[2] for c in calls)  # rows done never go back
    assert (summary.rows, summary.shards, summary.skipped_shards, summary.dimension) == (100, 3, 0, 384)
    assert len(summary.pids) == 3  # one entry per shard run
    assert len(set(summary.pids)) == 2  # both actors worked, neither of them this process
    assert os.getpid() not in summary.pids
    assert not corpus.with_name("ray.npy.parts").exists()  # the parts went once OUT was published


def test_cli_ray_safetensors_equals_st_encode(ray_cluster: str, tiny_bert_dir: Path, corpus: Path) -> None:
    single, out = corpus.with_name("single.safetensors"), corpus.with_name("ray.safetensors")
    model = str(tiny_bert_dir)
    base = ["encode", str(corpus), "-m", model, "--precision", "int8", "--skip-empty", "--window", "16"]
    # One torch thread, as the Ray actor runs (--cpus-per-worker defaults to 1 on a cluster): bit-identity
    # holds at the same thread count only.
    assert runner.invoke(app, [*base, "--out", str(single), "--threads", "1"]).exit_code == 0
    result = runner.invoke(app, [*base, "--out", str(out), "--ray", ray_cluster, "--workers", "1", "--shards", "4", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["rows"] == 100 - corpus.read_text().splitlines().count("")
    assert doc["address"] == ray_cluster and doc["skipped_shards"] == 0
    assert doc["shards"] == 4  # int8 calibrated and line numbers joined across shards
    # Where the time went: the one actor's load (imports, model), its four shards' encoding, the count.
    assert 0 < doc["worker_load_seconds"] < doc["seconds"]
    assert 0 < doc["shard_seconds"] < doc["seconds"]
    assert 0 <= doc["count_seconds"] < doc["seconds"]
    # The pool's start: Ray Data starting the actor's process, then the actor loading the model.
    assert doc["worker_load_seconds"] - 0.05 < doc["pool_start_seconds"] < doc["seconds"]
    assert out.read_bytes() == single.read_bytes()
    lines = "single.safetensors.lines.txt", "ray.safetensors.lines.txt"
    assert corpus.with_name(lines[0]).read_text() == corpus.with_name(lines[1]).read_text()


def test_an_actor_killed_mid_shard_is_restarted_and_its_shard_resumes(
    ray_cluster: str, tiny_bert_dir: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from st_cli import encode_files_ray
    from st_cli.encode.ray import KILL_ENV

    single = corpus.with_name("single.npy")
    encode_file(corpus, single, model=tiny_bert_dir, window=8, threads=1)
    marker = corpus.with_name("killed")
    monkeypatch.setenv(KILL_ENV, str(marker))
    out = corpus.with_name("ray.npy")
    summary = encode_files_ray(corpus, tiny_bert_dir, out, address=ray_cluster, workers=1, shards=3, window=8)
    assert marker.exists()  # the actor did die
    assert summary.resumed_shards == 1
    assert out.read_bytes() == single.read_bytes()  # every row exactly once, in order


def test_a_rerun_skips_the_shards_that_finished(
    ray_cluster: str, tiny_bert_dir: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from st_cli import encode_files_ray
    from st_cli.encode.ray import KILL_ENV
    from st_cli.errors import StError

    single = corpus.with_name("single.npy")
    encode_file(corpus, single, model=tiny_bert_dir, window=8, threads=1)
    out = corpus.with_name("ray.npy")
    job = {"address": ray_cluster, "workers": 1, "shards": 3, "window": 8}
    monkeypatch.setenv(KILL_ENV, f"{corpus.with_name('killed')}@1")  # shard 1's actor dies
    with pytest.raises(StError, match="run the same command again"):
        encode_files_ray(corpus, tiny_bert_dir, out, restarts=0, **job)
    assert not out.exists()
    monkeypatch.delenv(KILL_ENV)
    summary = encode_files_ray(corpus, tiny_bert_dir, out, **job)
    assert summary.skipped_shards == 1  # shard 0 finished before the failure
    assert summary.resumed_shards == 1  # shard 1 continues from its journal
    assert out.read_bytes() == single.read_bytes()


def test_gpus_the_local_machine_lacks_are_refused_before_any_actor(ray_cluster: str, corpus: Path) -> None:
    result = runner.invoke(
        app, ["encode", str(corpus), "--out", str(corpus.with_name("e.npy")), "--ray", "--gpus-per-worker", "1"]
    )
    assert result.exit_code == 2
    assert "1 workers × --gpus-per-worker 1 need 1 GPUs; this machine has 0" in result.output
    assert not corpus.with_name("e.npy").exists()


def test_a_parts_folder_holding_other_files_is_refused_not_removed(tmp_path: Path) -> None:
    """OUT.parts/ is removed after the merge: a folder of the user's by that name is never taken."""
    from st_cli.encode.ray import _claim_parts_folder
    from st_cli.errors import StError

    parts = tmp_path / "emb.npy.parts"
    parts.mkdir()
    (parts / "notes.txt").write_text("mine")
    with pytest.raises(StError, match=r"holds 'notes.txt', which is not a shard"):
        _claim_parts_folder(parts)
    assert (parts / "notes.txt").read_text() == "mine"
    (parts / "notes.txt").unlink()
    (parts / "part-00000-of-00002.npy").write_bytes(b"")  # a shard of an earlier run: resumed, not refused
    _claim_parts_folder(parts)


def test_the_autoscaler_monitor_child_is_killed_and_nothing_else(tmp_path: Path) -> None:
    """A local cluster's stop waited a second for Ray's autoscaler monitor to ignore its SIGTERM."""
    import subprocess

    from st_cli.encode.ray import AUTOSCALER_MONITOR, end_autoscaler_monitor

    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    monitor = subprocess.Popen([*sleep, f"/site-packages/{AUTOSCALER_MONITOR}"])
    other = subprocess.Popen([*sleep, "/site-packages/ray/_private/log_monitor.py"])
    try:
        end_autoscaler_monitor(os.getpid() + 10**7)  # another driver's children are left alone
        assert monitor.poll() is None
        end_autoscaler_monitor(os.getpid())
        assert monitor.wait(timeout=10) == -signal.SIGKILL
        assert other.poll() is None
        end_autoscaler_monitor(os.getpid(), proc=tmp_path)  # no /proc: nothing happens
    finally:
        for child in (monitor, other):
            child.kill()
            child.wait()


def test_the_scheduling_loop_goes_round_less_often_during_the_job_then_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Data's driver loop woke ten times a second beside an actor encoding on every core."""
    import importlib

    pytest.importorskip("ray")
    from st_cli.encode import ray as st_ray

    module_name, name = st_ray.SCHEDULING_LOOP
    module = importlib.import_module(module_name)  # a Ray upgrade that moves the constant fails here
    before = getattr(module, name)
    assert isinstance(before, float) and before < st_ray.SCHEDULING_SECONDS
    with st_ray.slower_scheduling_loop(st_ray.SCHEDULING_SECONDS):
        assert getattr(module, name) == st_ray.SCHEDULING_SECONDS
    assert getattr(module, name) == before
    with st_ray.slower_scheduling_loop(before / 2):  # never faster than Ray's own
        assert getattr(module, name) == before
    monkeypatch.setattr(st_ray, "SCHEDULING_LOOP", ("ray.data._no_such_module", name))
    with st_ray.slower_scheduling_loop(st_ray.SCHEDULING_SECONDS):  # another Ray: nothing to change
        assert getattr(module, name) == before


def test_ray_data_s_service_actors_start_with_the_cluster_once(ray_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Data started them as the first shard started, and their start took its cores."""
    import ray

    from st_cli.encode import ray as st_ray

    def services() -> dict[str, str]:
        named = ray.util.list_named_actors(all_namespaces=True)
        wanted = {"datasets_stats_actor", "AutoscalingCoordinator", "ActorLocationTracker"}
        return {a["name"]: ray.get_actor(a["name"], namespace=a["namespace"])._actor_id.hex() for a in named
                if a["name"] in wanted}

    assert st_ray.start_ray_data_services() == 3  # a Ray upgrade that moves one fails here
    started = services()
    assert len(started) == 3
    assert st_ray.start_ray_data_services() == 3
    assert services() == started  # found by name, not started twice
    monkeypatch.setattr(st_ray, "RAY_DATA_SERVICES", (("ray.data._no_such_module", "get_or_create_x"),))
    assert st_ray.start_ray_data_services() == 0  # another Ray: left to Ray Data


LOCAL_CLUSTER_SCRIPT = """
import json, os
from pathlib import Path
import ray
from st_cli.encode.ray import AUTOSCALER_MONITOR, cluster
def monitors():  # the autoscaler monitors this process started
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            mine = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
            if mine and AUTOSCALER_MONITOR in (entry / "cmdline").read_bytes().decode():
                found.append(int(entry.name))
        except OSError:
            pass
    return found
with cluster(None, cpus=2) as times:
    nice = ray.get(ray.remote(lambda: os.nice(0)).remote())
    running = monitors()
    services = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True))
print(json.dumps({"services": services, "worker_nice": nice, "driver_nice": os.nice(0), "start": times.start_seconds, "stop": times.stop_seconds,
                  "monitors_running": running, "monitors_after": monitors()}))
"""


def test_a_local_cluster_runs_its_workers_at_st_s_priority() -> None:
    """Ray's default worker niceness (15) gives every core to any other process on the machine."""
    pytest.importorskip("ray")
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # Its own process: this module's cluster is already connected, and a process joins one cluster.
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_CLUSTER_SCRIPT], env=env, capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["worker_nice"] == doc["driver_nice"]
    # Ray Data's service actors are part of the start-up, before any job.
    assert doc["services"] == ["ActorLocationTracker", "AutoscalingCoordinator", "datasets_stats_actor"]
    assert doc["start"] > 0 and doc["stop"] > 0  # importing + starting Ray, and stopping it, are timed
    # The monitor st ends before ray.shutdown() is where st looks for it (a Ray upgrade that moves it fails here).
    assert len(doc["monitors_running"]) == 1
    assert doc["monitors_after"] == []
