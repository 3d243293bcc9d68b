"""fsio: claims, no-replace publishing (renameat2 and the fallbacks), stale temps, allocation errors."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from st_cli import fsio
from st_cli.errors import OutputExistsError, StError


@pytest.fixture(params=["renameat2", "fallback"])
def rename_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every publishing test runs with renameat2 and as on a system or filesystem without it."""
    if request.param == "renameat2" and fsio._renameat2 is None:
        pytest.skip("no renameat2 in this libc")
    if request.param == "fallback":
        monkeypatch.setattr(fsio, "_renameat2", None)
    yield request.param


def finished_temp(target: Path, text: str) -> Path:
    tmp = fsio.temp_file(target)
    tmp.write_text(text)
    return tmp


def test_claim_refuses_an_existing_target_without_force(tmp_path: Path) -> None:
    target = tmp_path / "out.npy"
    target.write_text("mine")
    with pytest.raises(OutputExistsError, match=r"out\.npy: already exists; pass --force to replace it"):
        fsio.claim(target)


def test_publish_refuses_a_file_that_appeared_after_the_claim(tmp_path: Path, rename_kind: str) -> None:
    target = tmp_path / "out.npy"
    claim = fsio.claim(target)
    tmp = finished_temp(target, "ours")
    target.write_text("theirs")
    with pytest.raises(OutputExistsError, match="appeared while this run was writing it"):
        fsio.publish(tmp, claim)
    assert target.read_text() == "theirs"


def test_force_replaces_what_existed_but_not_what_replaced_it(tmp_path: Path, rename_kind: str) -> None:
    target = tmp_path / "out.npy"
    target.write_text("old")
    first = fsio.claim(target, force=True)
    second = fsio.claim(target, force=True)
    fsio.publish(finished_temp(target, "first"), first)
    assert target.read_text() == "first"
    late = finished_temp(target, "second")
    with pytest.raises(
        OutputExistsError, match=r"appeared while this run was writing it \(another run\?\); not replaced$"
    ):
        fsio.publish(late, second)
    assert target.read_text() == "first"
    fsio.remove(late)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


def test_folders_publish_no_replace_and_force(tmp_path: Path, rename_kind: str) -> None:
    target = tmp_path / "model"
    with fsio.atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with fsio.atomic_folder(target, force=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    claim = fsio.claim(tmp_path / "other")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "theirs").write_text("x")
    with pytest.raises(OutputExistsError), fsio.atomic_folder(claim) as tmp:
        (tmp / "ours").write_text("y")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "other"]


def test_published_files_get_plain_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = fsio.write_text_atomic(tmp_path / "report.xml", "<x/>")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.read_text() == "<x/>"


def test_stale_temps_of_dead_processes_are_removed_and_others_kept(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    target = tmp_path / "emb.npy"
    dead = [
        tmp_path / f".emb.npy.st-tmp-{proc.pid}-00aa",
        tmp_path / f".emb.npy.st-tmp-{proc.pid}-00ab.stdin",
        tmp_path / f".emb.npy.calibration.json.st-tmp-{proc.pid}-00ac",
    ]
    for path in dead:
        path.write_text("x")
    (tmp_path / f".emb.npy.st-tmp-{proc.pid}-00ad").mkdir()  # a killed folder build
    kept = [
        tmp_path / f".emb.npy.st-tmp-{os.getpid()}-00ae",  # ours, alive
        tmp_path / f".other.npy.st-tmp-{proc.pid}-00af",  # another target's
        tmp_path / ".emb.npy.backup",  # not a temp
    ]
    for path in kept:
        path.write_text("x")
    fsio.claim(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_a_temp_name_is_reported_as_its_output(tmp_path: Path) -> None:
    tmp = fsio.temp_path(tmp_path / "emb.npy", "f32")
    error = fsio.write_error(OSError(errno.ENOSPC, "No space left on device"), tmp)
    assert str(error) == f"{tmp_path / 'emb.npy'}: cannot write the output here: no space left on the device"


@pytest.mark.parametrize(
    ("code", "problem"),
    [(errno.ENOSPC, "no space left on the device"), (errno.EFBIG, "file too large"), (errno.EDQUOT, "quota")],
)
def test_allocation_failures_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, problem: str
) -> None:
    def refuse(fd: int, offset: int, size: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    tmp = fsio.temp_file(tmp_path / "o.npy")
    with pytest.raises(StError, match=rf"o\.npy: cannot write the output here: .*{problem}"):
        fsio.allocate(tmp, 1 << 20)


def test_allocation_writes_zeros_where_fallocate_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    path = fsio.temp_file(tmp_path / "o.npy")
    path.write_bytes(b"HEAD")
    fsio.allocate(path, 3 << 20, offset=4)
    assert path.stat().st_size == 4 + (3 << 20)
    assert path.stat().st_blocks * 512 >= 3 << 20  # real blocks, not a sparse hole
    assert path.read_bytes()[:4] == b"HEAD"


def test_signals_raise_then_restore_and_ignored_signals_stay_ignored() -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with fsio.signals_raise():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            with pytest.raises(fsio.Terminated) as caught:
                signal.raise_signal(signal.SIGTERM)
            assert caught.value.exit_code == 143
        assert signal.getsignal(signal.SIGTERM) == before
    finally:
        signal.signal(signal.SIGHUP, hup)
