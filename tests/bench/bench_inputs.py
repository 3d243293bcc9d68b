"""Reading inputs against encoding them: what `.parquet` and `.jsonl.gz` cost next to a tiny model's encoding.

Prints, for 1,000,000 records (English prose of mixed length, with ids):
- the seconds of one full reading pass (`iter_records`, text and `--id-field` id per record) of each
  format, medians of interleaved rounds, as a share of the seconds `st encode` spends encoding the
  same records with a tiny BERT (hidden 32, 2 layers; 1 thread; measured on a sample and scaled:
  encoding is linear in the records). An encode run reads its inputs twice (a counting pass that
  overlaps the model's loading, then the encoding pass), three times with `--id-field`;
- the same share against a static model (all-MiniLM-L6-v2's table saved by model2vec, numpy, every
  CPU), far faster than any transformer: the strictest case for the readers;
- the peak RSS of a reading pass over 100,000 and over 1,000,000 records, each in its own process.

Goal: reading ≤ 10% of encoding, and the peak RSS flat in the records.

    python tests/bench/bench_inputs.py [--records 1000000] [--rounds 3] [--sample 20000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_encode import peak_rss_mib, repeated_lines  # noqa: E402

FORMATS = ("data.parquet", "data.jsonl.gz")


def write_inputs(work: Path, n: int) -> dict[str, Path]:
    """The same records (`id`, `text`) as .parquet (row groups of 100,000) and .jsonl.gz."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = repeated_lines(n)
    paths = {name: work / f"{n}-{name}" for name in FORMATS}
    pq.write_table(
        pa.table({"id": [f"doc-{i}" for i in range(n)], "text": texts}),
        paths["data.parquet"],
        row_group_size=100_000,
    )
    with gzip.open(paths["data.jsonl.gz"], "wt", encoding="utf-8", compresslevel=6) as f:
        f.writelines(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    return paths


def read_pass(path: Path) -> tuple[float, int]:
    """Seconds of one pass over every record (text and id), and the records seen."""
    from st_cli.encode.inputs import ReadOptions, Source, iter_records, reader_and_codec

    source = Source(str(path), path, *reader_and_codec(str(path)))
    started = time.perf_counter()
    count = sum(1 for _ in iter_records([source], ReadOptions(id_field="id"), skip_empty=False))
    return time.perf_counter() - started, count


def tiny_model(work: Path) -> Path:
    from st_cli.model.model import build
    from tests.conftest import make_tiny_bert

    bert = make_tiny_bert(work / "bert")
    recipe = work / "tiny.yaml"
    recipe.write_text(f"modules:\n  - type: Transformer\n    model: {bert}\n  - type: Pooling\n", encoding="utf-8")
    return build(recipe, work / "tiny")[1]


def encode_seconds_per_record(model: Path, work: Path, sample: int, threads: int | None = 1) -> float:
    """`st encode`'s encoding seconds (summary.seconds: after the model loaded) per record."""
    import torch

    from st_cli.encode.api import encode_file

    if threads:
        torch.set_num_threads(threads)
    src = work / "sample.txt"
    src.write_text("".join(t + "\n" for t in repeated_lines(sample)), encoding="utf-8")
    summary = encode_file(src, work / "sample.npy", model=model, force=True, threads=threads)
    return summary.seconds / summary.rows


def rss_child(path: str) -> None:
    seconds, count = read_pass(Path(path))
    print(f"{peak_rss_mib():.0f} {count} {seconds:.1f}")


def bench_rss(work: Path, small: dict[str, Path], large: dict[str, Path]) -> None:
    print("reading memory: one pass, each in its own process")
    for name in FORMATS:
        peaks = []
        for paths in (small, large):
            cmd = [sys.executable, __file__, "--rss-child", str(paths[name])]
            peak, count, seconds = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-3:]
            peaks.append(float(peak))
            print(f"  {name}, {int(count):,} records: peak RSS {peak} MiB ({seconds} s)")
        print(f"  {name}: peak RSS {peaks[1] / peaks[0]:.3f}x for 10x the records (goal <= 1.15)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--rss-child", metavar="INPUT")
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="st-bench-inputs-"))
    large = write_inputs(work, args.records)
    small = write_inputs(work, args.records // 10)
    from tests.bench.bench_static import make_static_model

    per_record = encode_seconds_per_record(tiny_model(work), work, args.sample)
    encoding = per_record * args.records
    print(f"encoding {args.records:,} records with a tiny BERT (1 thread): {encoding:.1f} s "
          f"({1 / per_record:,.0f} texts/s on a {args.sample:,}-record sample)")
    static_per_record = encode_seconds_per_record(make_static_model(work / "static"), work, 10 * args.sample, None)
    static = static_per_record * args.records
    print(f"encoding them with a static model (every CPU): {static:.1f} s ({1 / static_per_record:,.0f} texts/s)")
    times: dict[str, list[float]] = {name: [] for name in FORMATS}
    for _ in range(args.rounds):  # interleaved: a noisy neighbour hits both formats alike
        for name in FORMATS:
            seconds, count = read_pass(large[name])
            assert count == args.records, (name, count)
            times[name].append(seconds)
    for name in FORMATS:
        median = statistics.median(times[name])
        print(f"  reading {name}: {median:.2f} s a pass (median of {args.rounds}), "
              f"{median / encoding:.1%} of encoding with the tiny BERT (goal <= 10%), "
              f"{median / static:.0%} of a static model's")
    bench_rss(work, small, large)
    for path in work.rglob("*"):
        if path.is_file():
            path.unlink()
    print(f"  (bench_inputs took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
