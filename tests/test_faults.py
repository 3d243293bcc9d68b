"""Faults, in real subprocesses: kills, signals, a file-size limit, a read-only folder, racing writers.

Timing is deterministic through the test-only hook ST_TEST_PAUSE (st_cli/fsio.py): a run stops
itself (SIGSTOP) at a named point and prints "st-test: at POINT"; the test then kills it, signals
it, or lets another run finish first and sends SIGCONT.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.encode.api import encode_file
from tests.conftest import DENSE_STACK

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _with_default_signals(then: Callable[[], None] | None) -> Callable[[], None]:
    """SIGINT and SIGHUP as a terminal's child has them: a test suite started in the background
    (`&`, nohup) hands its children those signals ignored, and st rightly keeps them ignored."""

    def child() -> None:
        for signum in (signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        if then is not None:
            then()

    return child


class Run:
    """`python -m st_cli ARGS` in a subprocess whose stderr we can wait on."""

    def __init__(
        self,
        args: list[str],
        *,
        pause: str = "",
        stdin: bytes | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "ST_TEST_PAUSE": pause,
        }
        env.pop("ST_DEBUG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "st_cli", *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=_with_default_signals(preexec_fn),  # noqa: PLW1509 - only signals and setrlimit, before exec
        )
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
            self.proc.stdin = None  # written whole: communicate() in finish() has nothing to send
        self.err = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def reach(self, point: str, timeout: float = 240) -> None:
        """Wait until the run has stopped itself at `point`."""
        assert self.proc.stderr is not None
        marker = f"st-test: at {point}\n".encode()
        deadline = time.monotonic() + timeout
        while marker not in self.err:
            ready, _, _ = select.select([self.proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.proc.stderr.fileno(), 65536) if ready else b""
            if not chunk:
                self.proc.kill()
                pytest.fail(f"never reached {point}: {self.err.decode(errors='replace')}")
            self.err += chunk
        while _state(self.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)

    def finish(self, timeout: float = 240) -> tuple[int, list[str]]:
        """Exit code and stderr lines (the hook's own lines left out)."""
        _, rest = self.proc.communicate(timeout=timeout)
        lines = (self.err + rest).decode(errors="replace").splitlines()
        return self.proc.returncode, [line for line in lines if not line.startswith("st-test: ")]

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def model_folder(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n    mode: mean\n",
        encoding="utf-8",
    )
    _, folder = st_cli.build(recipe, root / "tiny")
    return folder


def lines_file(path: Path, n: int) -> Path:
    words = "the cat sat on a mat with a dog".split()
    path.write_text("".join(" ".join(words[: 1 + i % 9]) + "\n" for i in range(n)), encoding="utf-8")
    return path


def encode_args(src: str, out: Path, model: Path, *extra: str) -> list[str]:
    return ["encode", src, "--out", str(out), "-m", str(model), "-q", *extra]


# ---------------------------------------------------------------- SIGKILL


@pytest.mark.parametrize("point", ["encode:window", "encode:publish"])
def test_sigkill_of_encode_leaves_the_target_and_the_next_run_cleans_up(
    model_folder: Path, tmp_path: Path, point: str
) -> None:
    out = tmp_path / "o.npy"
    out.write_bytes(b"\x93NUMPY precious")  # a .npy file (by its magic): --force replaces only one
    stdin = b"a cat\n\nthe dog\n" * 20
    run = Run(
        encode_args("-", out, model_folder, "--force", "--precision", "int8", "--skip-empty"), pause=point, stdin=stdin
    )
    run.reach(point)
    run.proc.kill()
    run.proc.wait()
    assert out.read_bytes() == b"\x93NUMPY precious"
    litter = [name for name in names(tmp_path) if name != "o.npy"]
    # the reserved output, the int8 staging file, the stdin spool, the kept line numbers: all marked with the pid
    assert any(name.endswith(".stdin") for name in litter), litter
    assert point != "encode:window" or any(name.endswith(".f32") for name in litter), litter
    assert litter and all(f".st-tmp-{run.pid}-" in name for name in litter), litter

    src = lines_file(tmp_path / "in.txt", 5)
    encode_file(src, out, model=model_folder, force=True, precision="int8", skip_empty=True)
    assert names(tmp_path) == ["in.txt", "o.npy", "o.npy.calibration.json", "o.npy.lines.txt"]
    assert np.load(out).shape == (5, 32)


@pytest.mark.parametrize("point", ["build:modules-written", "folder:publish"])
def test_sigkill_of_build_leaves_the_target_and_the_next_run_cleans_up(
    tiny_recipe: Callable[[str], Path], tmp_path: Path, point: str
) -> None:
    recipe = tiny_recipe(DENSE_STACK)
    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (target / "modules.json").write_text("[]")  # a model folder: --force replaces only one
    run = Run(["build", str(recipe), "-o", str(target), "--force"], pause=point)
    run.reach(point)
    run.proc.kill()
    run.proc.wait()
    assert names(target) == ["keep.txt", "modules.json"]
    litter = [name for name in names(tmp_path) if name not in ("m", "recipe.yaml")]
    assert litter == [name for name in litter if name.startswith(f".m.st-tmp-{run.pid}-")] != [], litter

    st_cli.build(recipe, target, force=True)
    assert names(tmp_path) == ["m", "recipe.yaml"]
    assert (target / "modules.json").is_file()


# ---------------------------------------------------------------- SIGTERM, SIGHUP


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_sigterm_and_sighup_clean_up_like_sigint(model_folder: Path, tmp_path: Path, signum: int, code: int) -> None:
    """A run that cannot be resumed (stdin) leaves nothing when interrupted."""
    stdin = lines_file(tmp_path / "in.txt", 30).read_bytes()
    run = Run(
        encode_args("-", tmp_path / "o.safetensors", model_folder, "--precision", "uint8"),
        pause="encode:window",
        stdin=stdin,
    )
    run.reach("encode:window")
    os.kill(run.pid, signum)
    run.resume()
    rc, err = run.finish()
    assert (rc, err) == (code, [f"error: interrupted by {signal.Signals(signum).name}"])
    assert names(tmp_path) == ["in.txt"]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_keeps_its_finished_windows_for_resume(
    model_folder: Path, tmp_path: Path, signum: int, code: int
) -> None:
    """Ctrl-C (or SIGTERM) on a long encode used to throw away every finished window: they stay for --resume."""
    src = lines_file(tmp_path / "in.txt", 30)
    single = tmp_path / "single" / "o.safetensors"
    single.parent.mkdir()
    encode_file(src, single, model=model_folder, window=10, precision="uint8", threads=1)
    out = tmp_path / "o.safetensors"
    args = encode_args(str(src), out, model_folder, "--precision", "uint8", "--window", "10", "--threads", "1")
    run = Run(args, pause="encode:window")
    run.reach("encode:window")
    os.kill(run.pid, signum)
    run.resume()
    rc, err = run.finish()
    name = signal.Signals(signum).name
    assert (rc, err) == (code, [f"error: interrupted by {name}; 10 of 30 rows kept; rerun with --resume to continue"])
    assert names(tmp_path) == [".o.safetensors.st-partial", ".o.safetensors.st-partial.journal", "in.txt", "single"]
    result = runner.invoke(app, [*args, "--resume", "--json"])  # the same command with --resume
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed_rows"] == 10
    assert out.read_bytes() == single.read_bytes()
    assert names(tmp_path) == ["in.txt", "o.safetensors", "single"]


def test_ctrl_c_on_workers_keeps_their_windows_for_resume(model_folder: Path, tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: the parent and every worker. The parts stay for --resume."""
    src = lines_file(tmp_path / "in.txt", 40)
    single = tmp_path / "single" / "o.npy"
    single.parent.mkdir()
    encode_file(src, single, model=model_folder, window=10, threads=1)
    out = tmp_path / "o.npy"
    args = encode_args(str(src), out, model_folder, "--window", "10", "--threads", "1", "--workers", "2")
    # Each worker sleeps after each window (a SIGSTOP would leave the parent waiting on stopped children).
    run = Run(args, pause="encode:window=60", preexec_fn=os.setpgrp)
    assert run.proc.stderr is not None
    # Each worker has journaled its first window (the whole line: a marker cut before its newline would
    # swallow the parent's message into a "st-test:" line).
    while run.err.count(b"st-test: at encode:window\n") < 2:
        chunk = os.read(run.proc.stderr.fileno(), 65536)
        assert chunk, run.err.decode(errors="replace")
        run.err += chunk
    os.killpg(run.pid, signal.SIGINT)
    rc, err = run.finish()
    folder = ".o.npy.st-partial.workers"
    assert (rc, err) == (130, [f"error: interrupted by SIGINT; 20 of 40 rows kept in {folder}; rerun with --resume to continue"])
    assert names(tmp_path) == [folder, "in.txt", "single"]
    result = runner.invoke(app, [*args, "--resume", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed_rows"] == 20
    assert out.read_bytes() == single.read_bytes()
    assert names(tmp_path) == ["in.txt", "o.npy", "single"]


def test_sigterm_of_build_removes_its_temp_folder(tiny_recipe: Callable[[str], Path], tmp_path: Path) -> None:
    run = Run(["build", str(tiny_recipe(DENSE_STACK)), "-o", str(tmp_path / "m")], pause="build:modules-written")
    run.reach("build:modules-written")
    os.kill(run.pid, signal.SIGTERM)
    run.resume()
    assert run.finish() == (143, ["error: interrupted by SIGTERM"])
    assert names(tmp_path) == ["recipe.yaml"]


# ---------------------------------------------------------------- a full disk, a read-only folder


def test_file_size_limit_is_one_line_exit_2_before_encoding(model_folder: Path, tmp_path: Path) -> None:
    src = lines_file(tmp_path / "in.txt", 3000)  # 3000 rows x 32 float32 = 384 KB, over the 64 KB limit
    limit = 64 * 1024

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = Run(encode_args(str(src), tmp_path / "o.npy", model_folder), preexec_fn=limit_file_size)
    rc, err = run.finish()
    out = tmp_path / "o.npy"
    assert (rc, err) == (
        2,
        [f"error: {out}: cannot write the output here: file too large (a file-size limit, ulimit -f?)"],
    )
    assert names(tmp_path) == ["in.txt"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, where this machine lets the tests mount one."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers a full disk")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize(
    ("suffix", "precision"), [(".npy", "float32"), (".safetensors", "int8"), (".jsonl", "float32")]
)
def test_full_disk_is_one_line_exit_2_and_leaves_nothing(
    model_folder: Path, tmp_path: Path, small_disk: Path, suffix: str, precision: str
) -> None:
    src = lines_file(tmp_path / "in.txt", 3000)  # 3000 x 32 float32: 384 KB, more than the disk holds
    out = small_disk / f"o{suffix}"
    result = runner.invoke(app, encode_args(str(src), out, model_folder, "--precision", precision, "--skip-empty"))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {out}: cannot write the output here: no space left on the device"]
    assert names(small_disk) == []


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write in: chmod for users, `chattr +i` for root (who ignores modes)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: cannot make a read-only folder")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_output_folder_is_one_line_exit_2(
    model_folder: Path, tiny_recipe: Callable[[str], Path], tmp_path: Path, read_only_folder: Path
) -> None:
    src = lines_file(tmp_path / "in.txt", 3)
    problem = "permission denied" if os.geteuid() != 0 else "not permitted"
    result = runner.invoke(app, encode_args(str(src), read_only_folder / "o.npy", model_folder))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: {read_only_folder / 'o.npy'}: cannot write the output here: {problem}"
    ]
    result = runner.invoke(app, ["build", str(tiny_recipe(DENSE_STACK)), "-o", str(read_only_folder / "m")])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {read_only_folder / 'm'}: cannot write the output here: {problem}"]
    assert names(read_only_folder) == []


# ---------------------------------------------------------------- two writers


def test_two_encodes_on_one_output_exactly_one_wins(model_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.npy"
    late = Run(encode_args(str(lines_file(tmp_path / "five.txt", 5)), out, model_folder), pause="encode:publish")
    late.reach("encode:publish")  # it has checked that o.npy is free and written its rows
    encode_file(lines_file(tmp_path / "three.txt", 3), out, model=model_folder)
    late.resume()
    rc, err = late.finish()
    assert (rc, err) == (
        2,
        [
            f"error: {out}: appeared while this run was writing it (another run?); not replaced, pass --force to replace it"
        ],
    )
    assert np.load(out).shape == (3, 32)
    assert names(tmp_path) == ["five.txt", "o.npy", "three.txt"]


def test_force_replaces_only_what_existed_when_the_run_started(model_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.npy"
    out.write_bytes(b"\x93NUMPY old")
    late = Run(
        encode_args(str(lines_file(tmp_path / "five.txt", 5)), out, model_folder, "--force"), pause="encode:publish"
    )
    late.reach("encode:publish")
    encode_file(lines_file(tmp_path / "three.txt", 3), out, model=model_folder, force=True)  # replaces "old"
    late.resume()
    rc, err = late.finish()
    assert rc == 2, err
    assert err == [f"error: {out}: appeared while this run was writing it (another run?); not replaced"]
    assert np.load(out).shape == (3, 32)
    assert names(tmp_path) == ["five.txt", "o.npy", "three.txt"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_stdout_is_one_line_exit_2(model_folder: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "st_cli", "inspect", str(model_folder), "--json"],
            stdout=full, stderr=subprocess.PIPE, env=env, check=False, timeout=120,
        )  # fmt: skip
    assert (done.returncode, done.stderr.decode()) == (
        2,
        "error: cannot write the report to stdout: No space left on device\n",
    )


# ---------------------------------------------------------------- a disk that fills while a folder is written

NO_SPACE = "cannot write the output here: no space left on the device"


def _safetensors_disk_full(tensors: object, filename: str, metadata: object = None) -> None:
    """safetensors' save_file on a full disk: part of the file written, then its Rust I/O error."""
    from safetensors import SafetensorError

    Path(filename).write_bytes(b"\0" * 100)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _torch_save_disk_full(obj: object, f: object, *args: object, **kwargs: object) -> None:
    """torch.save into a file object on a full disk: its writer's OSError, wrapped in a RuntimeError."""
    f.write(b"PK\3\4 partial")  # type: ignore[attr-defined]
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        # the OSError stays its __context__, as in torch (no `from`)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # noqa: B904


@pytest.fixture
def trainable(tiny_recipe: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    """An untrained Dense over the tiny BERT, and 64 lines to train it on."""
    _, folder = st_cli.build(tiny_recipe(DENSE_STACK), tmp_path / "model")
    texts = tmp_path / "texts.txt"
    words = "the cat sat on a mat with a dog and a man eating food".split()
    texts.write_text("".join(" ".join(words[i % 7 : i % 7 + 3 + i % 5]) + f" {i}\n" for i in range(64)))
    return folder, texts


def test_build_on_a_full_disk_is_one_line_exit_2_and_leaves_nothing(
    tiny_recipe: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("st_cli.model.modules.base.save_file", _safetensors_disk_full)  # the Dense's weights
    out = tmp_path / "out" / "m"
    result = runner.invoke(app, ["build", str(tiny_recipe(DENSE_STACK)), "-o", str(out), "-q"])
    assert (result.exit_code, result.stderr) == (2, f"error: {out}: {NO_SPACE}\n")
    assert names(out.parent) == []


@pytest.mark.parametrize("fills", ["checkpoint", "output"])
def test_train_on_a_full_disk_is_one_line_exit_2_and_leaves_nothing(
    fills: str, trainable: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while an epoch's checkpoint is written, or the trained folder: one line naming what
    could not be written, and neither OUT, its checkpoint folder nor a temp is left on the disk."""
    import torch

    if fills == "checkpoint":
        monkeypatch.setattr(torch, "save", _torch_save_disk_full)
    else:
        monkeypatch.setattr("st_cli.model.modules.base.save_file", _safetensors_disk_full)
    model, texts = trainable
    out = tmp_path / "out" / "t"
    out.parent.mkdir()
    result = runner.invoke(app, ["train", str(model), "--data", str(texts), "-o", str(out), "--epochs", "2", "-q"])
    failed = out.parent / ".t.st-train-checkpoint" / "checkpoint.pt" if fills == "checkpoint" else out
    assert (result.exit_code, result.stderr) == (2, f"error: {failed}: {NO_SPACE}\n")
    assert names(out.parent) == []


@pytest.fixture
def tiny_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A tmpfs of request.param KiB, where this machine lets the tests mount one (the monkeypatched
    tests above cover the same paths everywhere)."""
    folder = tmp_path / "tiny-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param}k", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# 64 KiB: the first checkpoint (~10 KB) fits and the model (~150 KB) does not; 8 KiB: not even the checkpoint.
@pytest.mark.parametrize(("tiny_disk", "fails"), [(64, "t"), (8, ".t.st-train-checkpoint/checkpoint.pt")],
                         indirect=["tiny_disk"])  # fmt: skip
def test_build_and_train_on_a_real_full_disk(
    tiny_disk: Path, fails: str, tiny_recipe: Callable[..., Path], trainable: tuple[Path, Path]
) -> None:
    result = runner.invoke(app, ["build", str(tiny_recipe(DENSE_STACK)), "-o", str(tiny_disk / "m"), "-q"])
    assert (result.exit_code, result.stderr) == (2, f"error: {tiny_disk / 'm'}: {NO_SPACE}\n")
    model, texts = trainable
    result = runner.invoke(app, ["train", str(model), "--data", str(texts), "-o", str(tiny_disk / "t"), "-q"])
    assert (result.exit_code, result.stderr) == (2, f"error: {tiny_disk / fails}: {NO_SPACE}\n")
    assert names(tiny_disk) == []
