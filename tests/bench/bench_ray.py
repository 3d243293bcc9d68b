"""`st encode --ray --workers 1` against plain `st encode`, whole processes, on the same lines.

Target (issue 13): Ray costs at most its start-up, i.e. (ray run − ray start-up) / plain run ≤ 1.
Prints, from one run (medians of interleaved rounds): both wall times and their ratio; Ray's
start-up (`ray_start_seconds` from --json: importing Ray and starting the local cluster) and the
ratio without it, which the target is about; the ratio without start and stop; where the rest of
the difference goes (from both runs' --json): per row, the actor's `shard_seconds` against plain's
encoding, and fixed, the pool's start (the actor's process and model load) against plain's load,
stop, counting, merge and what is left; max |Δ| between the outputs; the floor: the same encoding
in a plain Ray actor (no Ray Data) on the same kind of local cluster, against plain's; and what Ray's
own processes burn while the actor sleeps: CPU seconds over the actor's first seconds, then CPUs
(the share of the machine the encoding loses to them).

    python tests/bench/bench_ray.py [--lines 20000] [--rounds 1] [--idle-seconds 10] [--no-floor]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_encode import english_lines  # noqa: E402
from tests.bench.bench_process import child_env, load_average, model_dir, st_command, timed  # noqa: E402


def cpu_seconds_by_process() -> dict[int, tuple[float, int]]:
    """CPU seconds (user + system) and parent of every process on the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[1]))
    return table


def tree(root: int, table: dict[int, tuple[float, int]]) -> set[int]:
    """`root` and every process below it."""
    found, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, (_, ppid) in table.items() if ppid == parent and pid not in found]
        found.update(children)
        todo += children
    return found


# Seconds from the actor's start over which Ray's start-up work may spill (before st started Ray
# Data's service actors with the cluster, they started here, beside the pool).
SETTLE_SECONDS = 8.0

# The floor: `encode_file` in a plain Ray actor, on a local cluster as st starts it, in its own
# process (a process joins one cluster). Prints the encoding's seconds as --json's `seconds`.
PLAIN_ACTOR_SCRIPT = """
import json, sys
import ray
from st_cli.encode.ray import cluster, local_cpus
src, out, model, threads = sys.argv[1:5]
@ray.remote(num_cpus=int(threads))
class PlainActor:
    def encode(self):
        from st_cli.encode.api import encode_file
        return encode_file([src], out, model=model, threads=int(threads), force=True).seconds
with cluster(None, cpus=local_cpus(1, int(threads))):
    print(json.dumps({"seconds": ray.get(PlainActor.remote().encode.remote())}))
"""


class Idler:
    """A Ray Data actor that sleeps, and meanwhile measures the CPU the rest of the Ray job used: the
    driver and everything it started (GCS, raylet, dashboard, Ray Data's own actors), itself excepted:
    CPU seconds over the first SETTLE_SECONDS, then CPUs over the next `seconds`."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seconds, driver = float(batch["seconds"][0]), int(batch["driver"][0])
        start = cpu_seconds_by_process()
        time.sleep(SETTLE_SECONDS)
        before, started = cpu_seconds_by_process(), time.perf_counter()
        time.sleep(seconds)
        after, wall = cpu_seconds_by_process(), time.perf_counter() - started
        others = tree(driver, after) - {os.getpid()}

        def used(since: dict[int, tuple[float, int]], until: dict[int, tuple[float, int]]) -> float:
            return sum(until[pid][0] - since.get(pid, (0.0, 0))[0] for pid in others if pid in until)

        return {"settling": np.array([used(start, before)]), "cpus": np.array([used(before, after) / wall])}


def ray_idle_cpus(seconds: float) -> tuple[float, float]:
    """Ray's own processes while the pool's one actor sleeps (a local cluster as st starts it): CPU
    seconds over the actor's first SETTLE_SECONDS (processes that have not started yet count from 0),
    and CPUs used after that."""
    import warnings

    import ray

    from st_cli.encode.ray import SCHEDULING_SECONDS, cluster, slower_scheduling_loop

    with cluster(None, cpus=4):
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"seconds": seconds, "driver": os.getpid()}])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = ds.map_batches(Idler, batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=2)
        with slower_scheduling_loop(SCHEDULING_SECONDS):  # as st's own job runs it
            row = next(iter(ds.iter_rows()))
        return float(row["settling"]), float(row["cpus"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="0: skip the idle measurement")
    parser.add_argument("--no-floor", action="store_true", help="skip the plain Ray actor")
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
        # `--ray --workers 1` as typed: its one actor gets the machine's CPUs (and as many torch threads),
        # so the plain run gets as many: torch's matmuls split their sums by thread, and other counts
        # move a few rows by ~2e-7.
        cpus = str(len(os.sched_getaffinity(0)))
        ray_options = ["--ray", "--workers", "1"]
        plain, ray, plain_docs, ray_docs, floor = [], [], [], [], []
        for _ in range(args.rounds):  # interleaved: the machine's load drifts alike for both
            seconds, doc = timed(st_command(src, Path(tmp) / "plain.npy") + ["--threads", cpus], env)
            plain.append(seconds)
            plain_docs.append(doc)
            seconds, doc = timed(st_command(src, Path(tmp) / "ray.npy") + ray_options, env)
            ray.append(seconds)
            ray_docs.append(doc)
            if not args.no_floor:
                actor_out = str(Path(tmp) / "actor.npy")
                floor.append(timed([sys.executable, "-c", PLAIN_ACTOR_SCRIPT, str(src), actor_out, model_dir(), cpus], env)[1]["seconds"])
        delta = float(np.abs(np.load(Path(tmp) / "plain.npy") - np.load(Path(tmp) / "ray.npy")).max())
    def median(docs: list[dict], key: str) -> float:
        return statistics.median(float(doc[key]) for doc in docs)

    p, r = statistics.median(plain), statistics.median(ray)
    s, stop, merge = (median(ray_docs, key) for key in ("ray_start_seconds", "ray_stop_seconds", "merge_seconds"))
    load, encode = median(plain_docs, "load_seconds"), median(plain_docs, "seconds")
    actor_load, shard = median(ray_docs, "worker_load_seconds"), median(ray_docs, "shard_seconds")
    count, pool = median(ray_docs, "count_seconds"), median(ray_docs, "pool_start_seconds")
    print(
        f"st encode --threads {cpus} vs st encode {' '.join(ray_options)}, {args.lines:,} lines, all-MiniLM-L6-v2, "
        f"{args.rounds} round(s), load {load_average():.1f}"
    )
    print(f"  plain {p:.1f} s, --ray {r:.1f} s: ratio {r / p:.3f}")
    print(
        f"  Ray start-up {s:.1f} s (import, local cluster, Ray Data's service actors); --ray without it {r - s:.1f} s: "
        f"ratio {(r - s) / p:.3f} (target <= 1.0: {'met' if r - s <= p else 'NOT met'})"
    )
    print(f"  without start and stop ({stop:.1f} s): ratio {(r - s - stop) / p:.3f}")
    rest = (r - s - stop - count - pool - shard - merge) - (p - load - encode)
    print(
        f"  per row: the actor encoded in {shard:.1f} s, plain in {encode:.1f} s: ratio {shard / encode:.3f} "
        "(Ray's own processes share the cores)"
    )
    print(
        f"  fixed, beyond Ray's start-up: the pool's start {pool:.1f} s (the actor's process, and its load "
        f"{actor_load:.1f} s; plain's load {load:.1f} s), stop {stop:.2f} s, counting {count:.2f} s, merge "
        f"{merge:.2f} s, left {rest:.1f} s (the driver's and plain's own process start and exit, scheduling)"
    )
    if floor:
        print(
            f"  floor: a plain Ray actor (no Ray Data) encoded in {statistics.median(floor):.1f} s: ratio "
            f"{statistics.median(floor) / encode:.3f} (Ray's core processes alone)"
        )
    print(f"  max |delta| between the outputs: {delta:.1e} (0 = bit for bit)")
    if args.idle_seconds > 0:
        settling, busy = ray_idle_cpus(args.idle_seconds)
        print(
            f"  Ray's own processes while its actor sleeps: {settling:.1f} CPU s over its first {SETTLE_SECONDS:g} s "
            f"(start-up work spilling over), then {busy:.3f} CPUs over {args.idle_seconds:g} s "
            f"({busy / int(cpus):.1%} of the machine)"
        )


if __name__ == "__main__":
    main()
