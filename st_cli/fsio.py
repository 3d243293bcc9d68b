"""Safe publishing (docs/explanation/design.md): every output is written beside its target under a temporary
name that carries the owner's pid, and renamed into place by a rename that never replaces what
appeared after the run started.

- `claim(target, force=, kind=)` at the start of a run: refuses an existing target unless --force,
  and under --force anything not of the output's `kind` (a model folder, a file of one format: a
  `Kind`); notes what exists (so --force replaces only that), and removes temps left by runs that are gone.
- `temp_file` / `temp_folder`: `.NAME.st-tmp-PID-RANDOM[.TAG]` beside the target (same filesystem).
- `publish(tmp, claim)`: `renameat2(RENAME_NOREPLACE)`, or `RENAME_EXCHANGE` under --force (the
  thing swapped out must be the one noted at the start, else it is swapped back and refused);
  where the filesystem lacks renameat2, link+unlink for files, check-then-rename for folders.
- `write_text_atomic`, `atomic_folder`, `allocate`: the common cases built on those.

Torch-free: imported by `inspect` and `--help`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from st_cli.errors import OutputExistsError, StError, WriteError

TEMP_MARK = "st-tmp"
_TEMP_RE = re.compile(rf"\.{TEMP_MARK}-(\d+)-[0-9a-f]+(\.[\w.-]+)?$")
# Also a resumable run's `.NAME.st-partial[.journal]` (journal.py), which carries no pid: never stale.
_TEMP_NAME_RE = re.compile(rf"^\.(.+)\.(?:{TEMP_MARK}-\d+-[0-9a-f]+|st-partial)(\.[\w.-]+)?$")

# Test-only hook: ST_TEST_PAUSE="point[=seconds],..." makes a run print "st-test: at POINT" on stderr
# at each named point, then sleep that long, or without seconds stop itself (SIGSTOP) until the test
# sends SIGCONT, so fault tests can kill or race it at a known step. Never set it in real use.
PAUSE_ENV = "ST_TEST_PAUSE"


def pause_point(point: str) -> None:
    """Test-only: pause at `point` when $ST_TEST_PAUSE names it (see PAUSE_ENV)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name.strip() == point:
            print(f"st-test: at {point}", file=sys.stderr, flush=True)  # noqa: T201 - test hook
            if seconds:
                time.sleep(float(seconds))
            else:
                os.kill(os.getpid(), signal.SIGSTOP)


# ---------------------------------------------------------------- identity and claims


@dataclass(frozen=True)
class FileId:
    """What a path held when the run started: enough to tell it from anything put there later."""

    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileId | None:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return cls(st.st_dev, st.st_ino)


@dataclass(frozen=True)
class Claim:
    """A target this run will publish to, and what it held when the run started."""

    path: Path
    force: bool
    existed: FileId | None


@dataclass(frozen=True)
class Kind:
    """What --force may replace at a target: a folder or a file (`folder`), that `looks_right` accepts.

    `what` names it in the refusal: "--force replaces only a model folder".
    """

    what: str
    folder: bool
    looks_right: Callable[[Path], bool] = lambda _: True

    def refusal(self, path: Path) -> str | None:
        """Why `path` (which exists) must not be replaced by this kind of output; None: it may be."""
        is_folder = path.is_dir()
        if is_folder != self.folder or not self.looks_right(path):
            found = "a folder" if is_folder else "a file" if path.is_file() else "not a regular file"
            return f"{path}: is {found}, not {self.what}; --force replaces only {self.what}"
        return None


ANY_FILE = Kind("a file", folder=False)
ANY_FOLDER = Kind("a folder", folder=True)


def claim(target: str | os.PathLike[str], *, force: bool = False, kind: Kind = ANY_FILE) -> Claim:
    """Start a run on `target`: refuse what exists unless `force`, and under `force` anything not of
    `kind` (never a folder by a file or the reverse); clear temps of runs that are gone."""
    path = Path(target)
    existed = FileId.of(path)
    if existed is not None and not force:
        raise OutputExistsError(f"{path}: already exists; pass --force to replace it")
    if existed is not None and (refusal := kind.refusal(path)) is not None:
        raise OutputExistsError(refusal)
    remove_stale_temps(path)
    return Claim(path, force, existed)


def within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether `path` is `folder` or lies inside it, symlinks resolved (an output must not swallow an input)."""
    try:
        inner, outer = Path(path).resolve(), Path(folder).resolve()
    except (OSError, RuntimeError):  # a symlink loop: not an input we could have read
        return False
    return inner == outer or outer in inner.parents


def refuse_inputs_inside(target: Path, inputs: Iterator[Path] | list[Path], what: str) -> None:
    """Refuse an output that is one of its own inputs, holds one (replacing it would delete the input),
    or lies inside an input folder (writing it would change a model the run reads): --force or not."""
    for source in inputs:
        if not os.path.lexists(source):
            continue
        if within(source, target):
            if within(target, source):
                raise StError(f"{target}: is also an input of this {what}; write the output elsewhere")
            raise StError(f"{target}: holds {source}, an input of this {what}; write the output elsewhere")
        if os.path.isdir(source) and within(target, source):
            raise StError(f"{target}: is inside {source}, an input of this {what}; write the output elsewhere")


def refuse_output_in_folders(target: Path, folders: list[str | None], option: str) -> None:
    """Refuse an output file inside a folder being read (verify's model): writing it would change that folder."""
    for folder in folders:
        if folder and within(target, folder):
            raise StError(f"{target}: {option} is inside {folder}, a folder this run reads; write it elsewhere")


# ---------------------------------------------------------------- temporary names


def temp_path(target: Path, tag: str = "") -> Path:
    """A fresh temp name beside `target`: `.NAME.st-tmp-PID-RANDOM[.TAG]` (nothing is created)."""
    name = f".{target.name}.{TEMP_MARK}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(name + (f".{tag}" if tag else ""))


def temp_file(target: Path, tag: str = "") -> Path:
    """Create an empty private temp file beside `target`; one-line errors if the folder refuses."""
    while True:
        path = temp_path(target, tag)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        except OSError as e:
            raise write_error(e, target) from None
        return path


def temp_folder(target: Path) -> Path:
    """Create an empty private temp folder beside `target`."""
    while True:
        path = temp_path(target)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as e:
            raise write_error(e, target) from None
        return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_temps(target: Path) -> list[Path]:
    """Temps beside `target` (or its side files, `NAME.*`) whose owning process is gone."""
    folder = target.parent if str(target.parent) else Path(".")
    prefixes = (f".{target.name}.{TEMP_MARK}-", f".{target.name}.")
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not entry.name.startswith(prefixes):
                continue
            match = _TEMP_RE.search(entry.name)
            if match and not _pid_alive(int(match.group(1))):
                found.append(Path(entry.path))
    return found


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove what runs that were killed left beside `target`; returns what was removed."""
    removed = stale_temps(target)
    for path in removed:
        remove(path)
    return removed


def remove(path: Path) -> None:
    """Remove a file or folder, quietly (cleanup must never hide the error that caused it)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- renames

_AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_renameat2 = None
with contextlib.suppress(OSError, AttributeError):
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2; False where the system or filesystem lacks it (the caller falls back)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _appeared(target: Path, *, force: bool = False) -> OutputExistsError:
    advice = "" if force else ", pass --force to replace it"
    return OutputExistsError(f"{target}: appeared while this run was writing it (another run?); not replaced{advice}")


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, failing with OutputExistsError if `dst` exists, atomically where possible."""
    try:
        if _rename2(src, dst, RENAME_NOREPLACE):
            return
        if not src.is_dir():
            try:
                os.link(src, dst)  # fails if dst exists, atomically
            except OSError as e:
                if e.errno == errno.EEXIST:
                    raise
                if os.path.lexists(dst):  # no hard links here: check, then rename
                    raise FileExistsError(errno.EEXIST, "exists", str(dst)) from None
                os.rename(src, dst)
            else:
                os.unlink(src)
            return
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        os.rename(src, dst)
    except FileExistsError:
        raise _appeared(dst) from None
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise _appeared(dst) from None
        raise write_error(e, dst) from None


def _replace_claimed(src: Path, dst: Path, existed: FileId) -> None:
    """Put `src` at `dst` only if `dst` still holds what it held at the start (--force)."""
    try:
        if _rename2(src, dst, RENAME_EXCHANGE):
            # src now names what was at dst: the original, or something that appeared since.
            if FileId.of(src) != existed:
                _rename2(src, dst, RENAME_EXCHANGE)  # swap back: theirs stays, ours is removed by the caller
                raise _appeared(dst, force=True)
            remove(src)
            return
        if FileId.of(dst) != existed:
            raise _appeared(dst, force=True)
        if src.is_dir():
            old = temp_path(dst, "old")
            os.rename(dst, old)
            os.rename(src, dst)
            remove(old)
        else:
            os.replace(src, dst)
    except OSError as e:
        raise write_error(e, dst) from None


def publish(tmp: Path, target: Claim) -> None:
    """Rename a finished temp into place: never over something that appeared after the claim."""
    _apply_umask(tmp)
    if target.force and target.existed is not None and os.path.lexists(target.path):
        _replace_claimed(tmp, target.path, target.existed)
    else:
        rename_noreplace(tmp, target.path)


def publish_file(tmp: Path, target: Path | Claim, *, force: bool = False) -> None:
    """`publish` for a caller without a claim: claims `target` now (force: replace what is there now)."""
    publish(tmp, target if isinstance(target, Claim) else claim(target, force=force))


# ---------------------------------------------------------------- common cases


def write_text_atomic(path: str | os.PathLike[str] | Claim, text: str, *, force: bool = False) -> Path:
    """Write `text` to a temp beside `path`, then publish it: readers never see half a file."""
    target = path if isinstance(path, Claim) else claim(path, force=force)
    tmp = temp_file(target.path)
    try:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as e:
            raise write_error(e, target.path) from None
        publish(tmp, target)
    except BaseException:
        remove(tmp)
        raise
    return target.path


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike[str] | Claim, *, force: bool = False, kind: Kind | None = None
) -> Iterator[Path]:
    """Yield a fresh temp folder beside `target`; on success it is published as `target`.

    On any exception (a signal included) the temp folder is removed and `target` is left as it was.
    `kind`: what --force may replace (default: any folder, never a file).
    """
    claimed = target if isinstance(target, Claim) else claim(target, force=force, kind=kind or ANY_FOLDER)
    try:
        claimed.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StError(f"{claimed.path}: cannot create the output folder ({e.strerror or e}: {e.filename})") from None
    tmp = temp_folder(claimed.path)
    try:
        with writing(claimed.path):
            yield tmp
            pause_point("folder:publish")
            publish(tmp, claimed)
    except BaseException:
        remove(tmp)
        raise


def allocate(path: Path, size: int, *, offset: int = 0) -> None:
    """Reserve `size` bytes of `path` from `offset` on disk now (not a sparse hole), so a full disk
    or a file-size limit is an error here, not a SIGBUS when a memory map writes the page later."""
    if size <= 0:
        return
    try:
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), offset, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                _write_zeros(f.fileno(), offset, size)  # a filesystem without fallocate
    except OSError as e:
        raise write_error(e, path) from None


def _write_zeros(fd: int, offset: int, size: int, chunk: int = 1 << 20) -> None:
    zeros = bytes(min(chunk, size))
    end = offset + size
    while offset < end:
        offset += os.pwrite(fd, zeros[: min(chunk, end - offset)], offset)


_WRITE_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit, ulimit -f?)",
    errno.EROFS: "read-only filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted",
}


def write_error(error: OSError, target: Path) -> WriteError:
    """An OSError while writing `target` (or a temp of it) as a one-line error naming the output."""
    problem = _WRITE_PROBLEMS.get(error.errno or 0) or error.strerror or str(error)
    return WriteError(f"{target_of(target)}: cannot write the output here: {problem}")


# Rust libraries (safetensors, tokenizers) report an I/O error in their message only: "... (os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def write_problem(error: BaseException) -> OSError | None:
    """The OSError behind a failed write, if it is one of _WRITE_PROBLEMS (a full disk, a quota, ...).

    Writers hide it in different places: an OSError itself (Python's own writes); the context of a
    RuntimeError (torch.save into a file object); the message of a SafetensorError or a tokenizers
    Exception ("I/O error: No space left on device (os error 28)"). An StError is already one line.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and not isinstance(current, StError):
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _WRITE_PROBLEMS:
            return current
        match = _RUST_OS_ERROR.search(str(current))
        if match and int(match.group(1)) in _WRITE_PROBLEMS:
            code = int(match.group(1))
            return OSError(code, os.strerror(code))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """Inside: a write that fails for want of space, quota or permission, whichever library wrote,
    is a one-line WriteError naming `target`, not an internal error with the library's message."""
    try:
        yield
    except Exception as e:
        found = write_problem(e)
        if found is None:
            raise
        raise write_error(found, target) from None


def target_of(path: Path) -> Path:
    """The output a temp name stands for (`.NAME.st-tmp-PID-RANDOM[.TAG]` → NAME); other paths as they are."""
    match = _TEMP_NAME_RE.match(path.name)
    return path.with_name(match.group(1)) if match else path


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _apply_umask(root: Path) -> None:
    """Temps are private while written; give the result the permissions a plain write would."""
    umask = _current_umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


# ---------------------------------------------------------------- signals


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread like KeyboardInterrupt so cleanup runs."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # Once is enough: a second SIGTERM must not cut the cleanup short (kill -9 still works).
    for again in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(again, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While inside: SIGTERM/SIGHUP raise `Terminated`; SIGXFSZ is ignored so a size limit is EFBIG.

    A signal the parent set to be ignored stays ignored (`nohup st encode ...` survives SIGHUP).
    """
    wanted: dict[signal.Signals, Callable[[int, FrameType | None], None] | signal.Handlers] = {
        signal.SIGTERM: _raise_terminated,
        signal.SIGHUP: _raise_terminated,
        signal.SIGXFSZ: signal.SIG_IGN,
    }
    previous: dict[signal.Signals, Any] = {}
    try:
        for signum, handler in wanted.items():
            if signal.getsignal(signum) == signal.SIG_IGN:
                continue  # ignored by whoever started us (nohup): keep it so
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
