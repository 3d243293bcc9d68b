"""`st train` on the real all-MiniLM-L6-v2, measured in one run.

Prints, on held-out text st has not trained on:
- MiniLM + a fresh Dense 384→128 (identity) + Normalize, distilled from MiniLM itself: the Spearman
  correlation between the student's and the base model's cosine similarities on 2,000 held-out
  pairs, untrained → after --init pca → after each epoch, and the seconds one epoch takes
  (embedding the data once with the frozen MiniLM, plus the steps);
- recipes/custom/minilm-linear-512.yaml (a linear layer 384→512 between Transformer and Pooling)
  trained the same way;
- contrastive training of the Dense on sentence pairs (a sentence and the next one of the same
  paragraph): held-out accuracy of ranking the positive first, untrained → trained.

Text: sentences and paragraphs of the Python language reference (`pydoc_data.topics`) and of the
standard library's docstrings, shuffled; both ship with CPython and are read offline.

    python tests/bench/bench_train.py [--lines 22000] [--held-out 2000] [--epochs 3] [--pairs 4000]
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_encode import english_lines  # noqa: E402

PROSE = re.compile(r"[A-Z]")
CODE_LIKE = re.compile(r"[{}=<>\[\]]|\*\*|>>>")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")

DENSE_RECIPE = ROOT / "recipes/minilm-dense-128.yaml"


def docstring_paragraphs() -> list[list[str]]:
    """The standard library's docstrings (tests and idlelib left out), as paragraphs of sentences."""
    paragraphs = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if "test" in path.parts or "tests" in path.parts or "idlelib" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                doc = ast.get_docstring(node)
                for block in re.split(r"\n\s*\n", doc or ""):
                    sentences = [s for s in SENTENCE_END.split(" ".join(block.split())) if _prose(s)]
                    if sentences:
                        paragraphs.append(sentences)
    return paragraphs


def _prose(text: str) -> bool:
    return bool(PROSE.match(text)) and text.count(" ") >= 3 and not CODE_LIKE.search(text)


def corpus(n: int) -> list[str]:
    """n distinct lines of English: the language reference first, then docstring sentences."""
    lines = list(dict.fromkeys(english_lines(10**9) + [s for p in docstring_paragraphs() for s in p]))
    random.Random(0).shuffle(lines)
    if len(lines) < n:
        raise SystemExit(f"only {len(lines)} distinct lines available, {n} asked")
    return lines[:n]


def sentence_pairs(n: int) -> list[tuple[str, str]]:
    """(a sentence, the next one in its paragraph), n of them, no sentence twice."""
    pairs, seen = [], set()
    for paragraph in docstring_paragraphs():
        for a, b in zip(paragraph, paragraph[1:], strict=False):
            if a not in seen and b not in seen and a != b:
                pairs.append((a, b))
                seen.update((a, b))
    random.Random(1).shuffle(pairs)
    return pairs[:n]


def figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_distill(name: str, model: Path, data: Path, out: Path, args: argparse.Namespace, **options: object) -> None:
    import st_cli

    report = st_cli.train(
        str(model), [data], output=out, epochs=args.epochs, eval_fraction=args.held_out / args.lines,
        trust_remote_code=True, force=True, **options,
    )  # fmt: skip
    epochs = " → ".join(f"epoch {i} {figure(m)}" for i, m in enumerate(report.per_epoch, 1))
    init = f" → pca init {figure(report.init)}" if report.init is not None else ""
    print(f"{name}: Spearman vs the base model on {report.held_out:,} held-out pairs ({report.examples:,} training lines):")
    print(f"  untrained {figure(report.untrained)}{init} → {epochs}  (objective: {report.objective})")
    per_epoch = report.cache_seconds + report.seconds / max(1, report.epochs)
    print(f"  one epoch: {per_epoch:.0f} s ({report.cache_seconds:.0f} s embedding the data once with the frozen "
          f"prefix and the teacher, {report.seconds / max(1, report.epochs):.0f} s of steps and evaluation)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=22_000, help="training plus held-out lines")
    parser.add_argument("--held-out", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=4_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["dense", "linear", "contrastive"])
    args = parser.parse_args()

    import torch

    from st_cli.model.model import build

    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="st-bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "lines.txt"
        data.write_text("\n".join(corpus(args.lines)) + "\n", encoding="utf-8")
        if "dense" not in args.skip:
            build(DENSE_RECIPE, tmp / "dense")
            run_distill("MiniLM + Dense 384→128 + Normalize", tmp / "dense", data, tmp / "dense-out", args, init="pca")
        if "linear" not in args.skip:
            build(ROOT / "recipes/custom/minilm-linear-512.yaml", tmp / "linear")
            run_distill("recipes/custom/minilm-linear-512 (TokenLinear 384→512)", tmp / "linear", data,
                        tmp / "linear-out", args)  # fmt: skip
        if "contrastive" not in args.skip:
            run_contrastive(tmp, args)


def run_contrastive(tmp: Path, args: argparse.Namespace) -> None:
    import json

    import st_cli
    from st_cli.model.model import build

    pairs = tmp / "pairs.jsonl"
    rows = [json.dumps({"anchor": a, "positive": b}) for a, b in sentence_pairs(args.pairs)]
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    build(DENSE_RECIPE, tmp / "dense-c", force=True)
    started = time.perf_counter()
    report = st_cli.train(
        str(tmp / "dense-c"), [pairs], output=tmp / "contrastive-out", loss="contrastive", epochs=10,
        eval_fraction=0.25, force=True,
    )  # fmt: skip
    epochs = " → ".join(f"epoch {i} {figure(m)}" for i, m in enumerate(report.per_epoch, 1))
    print(f"contrastive (Dense 384→128 on MiniLM, {report.examples:,} pairs of consecutive sentences): "
          f"held-out accuracy of ranking the positive first among {report.held_out:,}:")
    print(f"  untrained {figure(report.untrained)} → {epochs}  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
