"""How many torch threads st runs, and how idle OpenMP threads wait: one policy for every command.

OpenMP reads its environment once, when torch loads, so the policy has two halves:
`prepare_environment()` runs before the first `import torch` (st_cli/__init__.py calls it, so
both the CLI and the library get it), and `thread_count()` sets the count once torch is loaded.

Why (docs/explanation/design.md): torch's default is one OpenMP thread per CPU, and idle OpenMP threads
spin-wait. When another process holds a core, every parallel region waits for the thread that
shares a core with it while the others spin: with one core of two taken, st ran 15.8 texts/s
instead of 72. Passive waiting plus a thread count from the CPUs actually free (affinity, cgroup
quota, minus what other processes used since st started) keeps a busy machine at the cost of the
cores it lost. The figures: docs/explanation/threads-and-devices.md, `make bench` (tests/bench/bench_process.py).

This module must not import torch at module level (it runs before torch loads).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# How idle OpenMP threads wait, for the runtimes torch ships with (libgomp on Linux, Intel's
# libiomp with MKL builds): sleep at once instead of spinning for ~0.3 s of CPU time.
WAIT_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
# Variables by which a user already chose the thread count: st then leaves the count alone.
COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Shortest window over which other processes' CPU use is measured (jiffies are 10 ms), and the
# oldest sample still taken as the start of one (a library caller may come back hours later).
MIN_SAMPLE_SECONDS = 0.1
MAX_SAMPLE_AGE = 3.0
# A CPU counts as free when other processes left at least this much of it idle.
FREE_SHARE = 0.5

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_STAT = Path("/proc/stat")
PROC_SELF_STAT = Path("/proc/self/stat")


@dataclass(frozen=True)
class CpuSample:
    """Busy and total jiffies of the CPUs st may use, and st's own CPU jiffies, at one moment."""

    at: float
    busy: int
    total: int
    own: int


def prepare_environment(environ: dict[str, str] | None = None) -> None:
    """Set OpenMP's wait policy before torch loads; a variable the user set is kept as they set it,
    and one set empty (`OMP_WAIT_POLICY=`) is removed: the runtime's own default, without the warning
    libgomp prints for an empty value."""
    global _last_sample
    env = os.environ if environ is None else environ
    if "torch" in sys.modules and environ is None:
        return  # too late: the OpenMP runtime has read its environment already
    for name, value in WAIT_ENVIRONMENT.items():
        if env.get(name) == "":
            del env[name]
        else:
            env.setdefault(name, value)
    if _last_sample is None:
        _last_sample = sample_cpus()


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity mask, capped by a container's CPU quota."""
    cpus = len(_affinity())
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs a cgroup quota allows (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), or None if unlimited."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    return None


def sample_cpus(stat: Path = PROC_STAT, self_stat: Path = PROC_SELF_STAT) -> CpuSample | None:
    """Jiffies of the CPUs in our affinity mask, and our own; None where /proc is not there."""
    try:
        lines = stat.read_text().splitlines()
        own_fields = self_stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    mine = {f"cpu{i}" for i in _affinity()}
    busy = total = 0
    for line in lines:
        name, *values = line.split()
        if name not in mine:
            continue
        jiffies = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(jiffies)
        busy += sum(jiffies) - jiffies[3] - jiffies[4]
    own = int(own_fields[11]) + int(own_fields[12])  # utime, stime (fields 14 and 15 of stat)
    return CpuSample(time.monotonic(), busy, total, own)


def free_cpus(before: CpuSample, after: CpuSample, usable: int, cpus_sampled: int) -> int:
    """CPUs other processes left at least FREE_SHARE idle between two samples (never fewer than 1).

    Our own CPU time is taken out, so a sample that spans st's own work (loading the model,
    encoding) still sees only the neighbours.
    """
    if after.total <= before.total:
        return usable
    per_cpu = (after.total - before.total) / cpus_sampled
    others_busy = max(0, (after.busy - before.busy) - (after.own - before.own)) / per_cpu  # in CPUs
    free = min(usable, cpus_sampled - others_busy)
    return max(1, math.floor(free + FREE_SHARE))


def default_threads() -> int:
    """The thread count st picks when the user did not: the usable CPUs other processes left free.

    Measured from the previous sample (taken when st_cli was imported, when the job began, or at the
    previous call) to now, waiting for MIN_SAMPLE_SECONDS at most: a CLI run pays nothing, the model
    load is the window.
    """
    global _last_sample
    usable = usable_cpus()
    before = _recent_sample() or sample_cpus()
    if before is None:
        return usable
    wait = MIN_SAMPLE_SECONDS - (time.monotonic() - before.at)
    if wait > 0:
        time.sleep(wait)
    after = sample_cpus()
    if after is None:
        return usable
    _last_sample = after
    return free_cpus(before, after, usable, len(_affinity()))


def open_sample_window() -> None:
    """Start measuring the neighbours' CPU use now, unless a recent sample already started it.

    A job calls this first, so its own checks, counting and loading are the window default_threads()
    reads: a library caller encoding file after file with one loaded model then waits only for what
    of MIN_SAMPLE_SECONDS that work did not already take.
    """
    global _last_sample
    _last_sample = _recent_sample() or sample_cpus()


def _recent_sample() -> CpuSample | None:
    """The last sample, unless it is too old to start a window (a library caller may come back hours later)."""
    if _last_sample is None or time.monotonic() - _last_sample.at > MAX_SAMPLE_AGE:
        return None
    return _last_sample


def user_chose_count(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in COUNT_VARIABLES)


def policy_count(threads: int | None = None) -> int:
    """`threads`, else the count st's policy picks (the user's OMP_NUM_THREADS where set), without torch:
    what an ONNX Runtime or OpenVINO session is opened with (model/runtime.py)."""
    if threads:
        return threads
    if user_chose_count():
        for name in COUNT_VARIABLES:
            value = os.environ.get(name, "")
            if value.strip().isdigit() and int(value) > 0:
                return int(value)
    return default_threads()


@contextlib.contextmanager
def thread_count(threads: int | None = None) -> Iterator[int]:
    """Run torch with `threads` threads (default: st's policy, or the user's OMP_NUM_THREADS), then restore.

    Yields the count in force. `encode`, `verify`, `build` and `train` all run inside it.
    """
    import torch

    before = torch.get_num_threads()
    if threads is None:
        threads = before if user_chose_count() else default_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def _affinity() -> set[int]:
    getter = getattr(os, "sched_getaffinity", None)
    return set(getter(0)) if getter else set(range(os.cpu_count() or 1))


_last_sample: CpuSample | None = None


# /proc/cpuinfo flags of instructions that run each reduced dtype natively (x86 and Arm spellings).
# Without them torch emulates the dtype in float32 conversions: slower than float32 itself.
NATIVE_DTYPE_FLAGS = {
    "bfloat16": ("avx512_bf16", "amx_bf16", "bf16"),
    "float16": ("avx512_fp16", "amx_fp16", "fphp", "asimdhp"),
}
CPUINFO = Path("/proc/cpuinfo")


def cpu_runs_natively(dtype: str, cpuinfo: Path | None = None) -> bool | None:
    """Whether the CPU has instructions for `dtype` (float32: always); None where it cannot tell."""
    flags = NATIVE_DTYPE_FLAGS.get(dtype)
    if flags is None:
        return True
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.lower().startswith(("flags", "features"))]
    present = {word for line in lines for word in line.split()}
    return any(flag in present for flag in flags)
