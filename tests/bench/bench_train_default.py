"""The training check of issue 21, measured in one run: does `st train` with no flags train well?

MiniLM + a fresh Dense 384→128 (identity) + Normalize (recipes/minilm-dense-128.yaml), default
`st train` (no --init, no --lr: what the defaults choose) on 8,000 lines, 1 epoch. Quality is
measured by `st eval` on 2,000 pairs of 2,000 *other* lines (never seen in training), scored by
MiniLM's own cosine: the Spearman correlation of the student's cosines with the teacher's
(`spearman_cosine`), untrained and trained, next to what `st train` itself reports.

Text: the Python language reference (`pydoc_data.topics`) and the standard library's docstrings,
as tests/bench/bench_train.py reads them (both ship with CPython: offline). The held-out lines are
taken from the end of the shuffled list, after the training lines.

    python tests/bench/bench_train_default.py [--lines 8000] [--held-out 2000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import DENSE_RECIPE, corpus  # noqa: E402


def teacher_scored_pairs(texts: list[str], n: int, out: Path) -> None:
    """n random pairs of `texts`, scored by the base MiniLM's cosine (the teacher), as a pairs file."""
    from st_cli.model.model import load_model

    teacher = load_model("sentence-transformers/all-MiniLM-L6-v2")
    vectors = teacher.encode(texts, normalize=True)
    rng = random.Random(2)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        for _ in range(n):
            i, j = rng.sample(range(len(texts)), 2)
            writer.writerow([texts[i], texts[j], float(vectors[i] @ vectors[j])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=8_000, help="training lines")
    parser.add_argument("--held-out", type=int, default=2_000, help="other lines, and as many pairs of them")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    import st_cli
    from st_cli.eval.evaluate import evaluate
    from st_cli.model.model import build

    lines = corpus(args.lines + args.held_out)
    train_lines, held_out = lines[: args.lines], lines[args.lines :]
    with tempfile.TemporaryDirectory(prefix="st-bench-train-default-") as tmp_name:
        tmp = Path(tmp_name)
        data, pairs = tmp / "lines.txt", tmp / "held-out-pairs.csv"
        data.write_text("\n".join(train_lines) + "\n", encoding="utf-8")
        teacher_scored_pairs(held_out, args.held_out, pairs)
        build(DENSE_RECIPE, tmp / "dense")
        (untrained,) = evaluate(tmp / "dense", [pairs])
        started = time.perf_counter()
        report = st_cli.train(str(tmp / "dense"), [data], output=tmp / "trained", epochs=args.epochs)
        seconds = time.perf_counter() - started
        (trained,) = evaluate(tmp / "trained", [pairs])
    print(f"init chosen: {report.init_method} ({report.init_reason})")
    print(
        f"st train's own teacher agreement ({report.held_out:,} held-out training lines): "
        f"untrained {report.untrained:.4f}, init {report.init or float('nan'):.4f}, final {report.final:.4f}"
    )
    print(
        f"spearman_cosine vs MiniLM on {args.held_out:,} pairs of unseen lines: "
        f"untrained {untrained.metrics['spearman_cosine']:.4f} → trained {trained.metrics['spearman_cosine']:.4f} "
        f"(goal ≥ 0.97); training took {seconds:.0f} s for {args.epochs} epoch(s) on {args.lines:,} lines"
    )


if __name__ == "__main__":
    main()
