"""The thread policy (st_cli/threads.py): environment before torch, CPU counts, free CPUs, dtypes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from st_cli import threads
from st_cli.cli import app
from st_cli.threads import CpuSample

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from st_cli.model.model import build

    root = tmp_path_factory.mktemp("threads")
    recipe = root / "recipe.yaml"
    recipe.write_text(f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n")
    return build(recipe, root / "tiny")[1]


def test_prepare_environment_sets_passive_wait_and_keeps_the_users_choice():
    env: dict[str, str] = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.prepare_environment(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"
    assert env["KMP_BLOCKTIME"] == "0"
    fresh: dict[str, str] = {}
    threads.prepare_environment(fresh)
    assert fresh["OMP_WAIT_POLICY"] == "PASSIVE"


def test_an_empty_wait_variable_asks_for_the_runtimes_own_default():
    env: dict[str, str] = {"OMP_WAIT_POLICY": "", "KMP_BLOCKTIME": ""}
    threads.prepare_environment(env)
    assert env == {}  # removed, not left empty: libgomp warns about an empty value


@pytest.mark.parametrize("user_value", [None, "ACTIVE"])
def test_importing_st_cli_sets_the_wait_policy_before_torch_loads(user_value):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    code = "import os, st_cli.model, torch; print(os.environ['OMP_WAIT_POLICY'])"
    result = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == (user_value or "PASSIVE")


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_quota_v2_and_v1(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads.cgroup_cpu_quota(tmp_path) == quota


def test_usable_cpus_is_capped_by_the_quota_rounded_up(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert threads.usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def sample(at: float, busy: int, total: int, own: int = 0) -> CpuSample:
    return CpuSample(at, busy, total, own)


@pytest.mark.parametrize(
    ("others_busy_jiffies", "own_jiffies", "expected"),
    [
        (0, 0, 2),  # quiet: both CPUs
        (100, 0, 1),  # one CPU taken by a neighbour (a burner)
        (200, 0, 1),  # both taken: never fewer than one thread
        (40, 0, 2),  # a neighbour using 40% of a CPU leaves it free enough
        (60, 0, 1),  # 60% does not
        (0, 150, 2),  # our own work (loading the model) is not a neighbour's
    ],
)
def test_free_cpus_counts_what_other_processes_left(others_busy_jiffies, own_jiffies, expected):
    before = sample(0.0, 1000, 10_000, 500)
    # 100 jiffies per CPU passed on 2 CPUs
    after = sample(1.0, 1000 + others_busy_jiffies + own_jiffies, 10_200, 500 + own_jiffies)
    assert threads.free_cpus(before, after, usable=2, cpus_sampled=2) == expected


def test_sample_cpus_reads_proc(tmp_path):
    stat = tmp_path / "stat"
    cpus = sorted(os.sched_getaffinity(0))
    stat.write_text(
        "cpu  9 9 9 9 9 9 9 9 0 0\n" + "".join(f"cpu{i} 10 0 5 80 5 0 0 0 0 0\n" for i in cpus) + "intr 1 2 3\n"
    )
    self_stat = tmp_path / "self"
    self_stat.write_text("123 (py thon) R " + " ".join(["0"] * 10) + " 7 3 0 0\n")
    got = threads.sample_cpus(stat, self_stat)
    assert got is not None
    assert (got.busy, got.total, got.own) == (15 * len(cpus), 100 * len(cpus), 10)
    assert threads.sample_cpus(tmp_path / "missing", self_stat) is None


def test_thread_count_sets_and_restores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with threads.thread_count(3) as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with threads.thread_count() as n:
        assert 1 <= n <= len(os.sched_getaffinity(0))
        assert torch.get_num_threads() == n


def test_an_explicit_omp_num_threads_is_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    with threads.thread_count() as n:
        assert n == before == torch.get_num_threads()


@pytest.mark.parametrize(
    ("flags", "dtype", "expected"),
    [
        ("fpu sse avx2 avx512f", "bfloat16", False),
        ("fpu avx512f avx512_bf16", "bfloat16", True),
        ("fpu amx_bf16 amx_tile", "bfloat16", True),
        ("fpu avx2", "float32", True),
        ("fpu avx512_bf16", "float16", False),
    ],
)
def test_cpu_runs_natively_reads_the_flags(tmp_path, flags, dtype, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert threads.cpu_runs_natively(dtype, cpuinfo) is expected
    assert threads.cpu_runs_natively("bfloat16", tmp_path / "missing") is None


def test_encode_warns_once_when_the_cpu_lacks_bf16(tiny_model_dir, tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2\n")
    monkeypatch.setattr(threads, "CPUINFO", cpuinfo)
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    result = CliRunner().invoke(
        app, ["encode", str(src), "-m", str(tiny_model_dir), "-o", str(tmp_path / "o.npy"), "--dtype", "bfloat16", "-q"]
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "bfloat16" in line]
    assert len(warnings) == 1 and "no native bfloat16" in warnings[0]
    assert np.load(tmp_path / "o.npy").shape[0] == 2


def test_encode_json_reports_the_threads_it_ran_with(tiny_model_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    runs = {}
    for name, extra in (("pinned", ["--threads", "1"]), ("default", [])):
        result = CliRunner().invoke(
            app, ["encode", str(src), "-m", str(tiny_model_dir), "-o", str(tmp_path / f"{name}.npy"), "--json", *extra]
        )
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)["threads"]
    assert runs["pinned"] == 1
    assert 1 <= runs["default"] <= len(os.sched_getaffinity(0))
    np.testing.assert_allclose(np.load(tmp_path / "pinned.npy"), np.load(tmp_path / "default.npy"), atol=1e-6)


def test_a_job_opens_its_own_sampling_window_instead_of_waiting(monkeypatch):
    stale = threads.CpuSample(time.monotonic() - 10 * threads.MAX_SAMPLE_AGE, 0, 0, 0)
    monkeypatch.setattr(threads, "_last_sample", stale)
    threads.open_sample_window()
    opened = threads._last_sample
    assert opened is not None and opened is not stale and time.monotonic() - opened.at < 1.0
    threads.open_sample_window()  # a recent window is kept: the work since it began is what it measures
    assert threads._last_sample is opened
