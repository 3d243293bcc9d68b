"""`st encode --ray --workers 1` against plain `st encode`, whole processes, on the same lines.

Target (issue 13): Ray costs at most its start-up, i.e. (ray run − ray start-up) / plain run ≤ ~1.
Prints, from one run (medians of interleaved rounds): both wall times, their ratio, Ray's start-up
(`ray_start_seconds` from --json), the ratio without it, and max |Δ| between the two outputs.

    python tests/bench/bench_ray.py [--lines 20000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_encode import english_lines  # noqa: E402
from tests.bench.bench_process import child_env, load_average, st_command, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print("bench_ray: ray is not installed (pip install 'st-cli[ray]'); skipped")
        return
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        src = Path(tmp) / "lines.txt"
        lines = english_lines(args.lines)  # at most the reference's ~3,250 distinct lines: cycle them
        src.write_text("\n".join((lines * -(-args.lines // len(lines)))[: args.lines]) + "\n", encoding="utf-8")
        env = child_env()
        # One worker holding the machine's CPUs (its torch threads = its CPUs), and the plain run with as
        # many threads: torch's matmuls split their sums by thread, so other counts move a few rows by ~2e-7.
        cpus = str(os.cpu_count() or 1)
        ray_options = ["--ray", "--workers", "1", "--cpus-per-worker", cpus]
        plain, ray, starts = [], [], []
        for _ in range(args.rounds):  # interleaved: the machine's load drifts alike for both
            seconds, _ = timed(st_command(src, Path(tmp) / "plain.npy") + ["--threads", cpus], env)
            plain.append(seconds)
            seconds, doc = timed(st_command(src, Path(tmp) / "ray.npy") + ray_options, env)
            ray.append(seconds)
            starts.append(float(doc["ray_start_seconds"]))
        delta = float(np.abs(np.load(Path(tmp) / "plain.npy") - np.load(Path(tmp) / "ray.npy")).max())
    p, r, s = statistics.median(plain), statistics.median(ray), statistics.median(starts)
    print(f"st encode --threads {cpus} vs st encode {' '.join(ray_options)}, {args.lines:,} lines, all-MiniLM-L6-v2, load {load_average():.1f}")
    print(f"  plain {p:.1f} s, --ray {r:.1f} s: ratio {r / p:.3f}")
    print(f"  Ray start-up {s:.1f} s; --ray without it {r - s:.1f} s: ratio {(r - s) / p:.3f} (target <= ~1.0)")
    print(f"  max |delta| between the outputs: {delta:.1e} (0 = bit for bit)")


if __name__ == "__main__":
    main()
