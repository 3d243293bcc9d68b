"""Resumable encode runs: a journal beside the partial output, fsynced after every finished window.

A run on files (not stdin) writes its rows into `.NAME.st-partial` (the output's temp, or the
int8/uint8 float32 staging file) and keeps `.NAME.st-partial.journal` beside it: a header line with
the job (fingerprint hash, shard, rows, window) and, rewritten after each window's rows are durable,
a line with the rows done, the torch threads they ran on, and what the sink needs to go on (int8
ranges, the jsonl byte size) and to check the rows are still there (the CRC-32 of their bytes as
written, the file's preallocated size). A run killed outright (SIGKILL, power loss) or interrupted
(Ctrl-C, SIGTERM, SIGHUP) after its first window leaves both; `--resume` checks them and continues
from the first missing window. These names carry no pid, so `fsio.remove_stale_temps` leaves them
alone; the journal is flock()ed while a run owns it, so two runs never share one. A run that fails
(bad input, a full disk) removes both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from st_cli import fsio
from st_cli.encode.shards import differences
from st_cli.errors import StError

PARTIAL_TAG = "st-partial"
# Test-only hook: ST_TEST_KILL_AFTER_WINDOWS=k makes a run SIGKILL itself once the rows of its k-th
# window are written but before the journal records them (the worst moment). Never set it in real use.
KILL_ENV = "ST_TEST_KILL_AFTER_WINDOWS"


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{PARTIAL_TAG}")


def journal_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{PARTIAL_TAG}.journal")


class JournalBusy(StError):
    """Another live run holds the journal: this run can neither resume it nor keep one of its own."""


@dataclass
class Journal:
    """An open, locked journal. `done` rows are already in `data`; `state` is the sink's then."""

    target: Path
    fd: int
    data: Path
    done: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    windows: int = 0
    header_bytes: int = 0  # the entry goes after the header line, replacing the previous one
    threads: int | None = None  # torch threads the resumed rows ran on: the rest run on as many
    note: str | None = None  # what --resume did instead of resuming (nothing to resume, started over)

    @classmethod
    def open(cls, target: Path, header: dict[str, Any], *, resume: bool, force: bool) -> Journal:
        """Lock the journal of `target`; continue its run (resume), or start a fresh one.

        `header` names the job ("job", "fingerprint", shard, rows, window...). A resumable run of the
        same job is continued with `resume`, replaced with `force`, and otherwise refused with advice;
        with `resume`, a run of another job is refused; anything else left there is removed.
        """
        path = journal_path(target)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise fsio.write_error(e, target) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalBusy(
                f"{target}: another st run is writing it now (its journal {path.name} is locked)"
            ) from None
        journal = cls(target, fd, partial_path(target))
        try:
            journal._start(header, resume=resume, force=force)
        except BaseException:
            os.close(fd)  # unlock only: a refused run leaves the partial run it found as it was
            raise
        return journal

    def _start(self, header: dict[str, Any], *, resume: bool, force: bool) -> None:
        """With `resume`, --force only lets a run of another job or a damaged one be replaced: a run of the
        same job is continued, so `--resume` added to a killed `--force` command continues it."""
        raw = _read_all(self.fd)
        old, entries = parse(raw)
        if old is None or not entries or not self.data.is_file() or not _plausible(old, entries[-1]):
            if resume:
                self.note = f"--resume: nothing to resume for {self.target}; encoding from the start"
            return self._fresh(header)
        last = entries[-1]
        if not _same_job(old, header):
            if resume:
                why = f"the partial run was for another job (changed: {', '.join(_changed(old, header)) or 'the job'})"
                self._refuse_or_restart(why, force)
            return self._fresh(header)
        if not resume:
            if not force:
                raise StError(
                    f"{self.target}: an interrupted run of this same job left {last['rows']:,} of {old['rows']:,} "
                    "rows; continue it with --resume, or pass --force to start over"
                )
            return self._fresh(header)
        damage = partial_damage(self.data, int(last["rows"]), last.get("state", {}))
        if damage is not None:
            self._refuse_or_restart(f"{self.data.name}: {damage}", force)
            return self._fresh(header)
        self.done, self.state, self.windows = int(last["rows"]), last.get("state", {}), last.get("windows", 0)
        threads = last.get("threads")
        self.threads = threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None
        self.header_bytes = raw.index(b"\n") + 1
        return None

    def _refuse_or_restart(self, why: str, force: bool) -> None:
        if not force:
            raise StError(f"{self.target}: cannot resume: {why}; pass --force to start over")
        self.note = f"--resume --force: {self.target}: {why}; starting over"

    def _fresh(self, header: dict[str, Any]) -> None:
        fsio.remove(self.data)
        try:
            os.close(os.open(self.data, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            line = _line(header)
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, line, 0)
            os.fsync(self.fd)
            self.header_bytes = len(line)
        except OSError as e:
            raise fsio.write_error(e, self.target) from None

    def record(self, rows: int, state: dict[str, Any], threads: int | None = None) -> None:
        """The rows before `rows` are durable in `data`: note it (fsynced) so a resumed run skips them."""
        self.windows += 1
        _test_kill(self.windows)
        # One entry, overwritten in place: int8 ranges are KBs a window, so appending would grow the
        # journal with the corpus. A kill between the write and the truncate leaves the old entry's
        # tail after a newline: not JSON, ignored.
        line = _line({"rows": rows, "windows": self.windows, "threads": threads, "state": state})
        os.pwrite(self.fd, line, self.header_bytes)
        os.ftruncate(self.fd, self.header_bytes + len(line))
        os.fsync(self.fd)
        self.done = rows

    def close(self) -> None:
        """Remove the partial data (if not published) and the journal, then unlock."""
        fsio.remove(self.data)
        fsio.remove(journal_path(self.target))
        self.keep()

    def keep(self) -> None:
        """Unlock, leaving the partial data and the journal for --resume (an interrupted run)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def partial_damage(data: Path, rows: int, state: dict[str, Any]) -> str | None:
    """Why the `rows` rows a journal entry names are not all in `data`, or None when they are: the file is
    at least its preallocated size, the checksummed bytes hold exactly `rows` rows, and they have the
    CRC-32 they were written with. A file cut short (which a resumed writer would extend with zeros) and a
    journal ahead of its rows (zeros where rows should be) are both caught, before anything is written."""
    try:
        crc, size = int(state["crc32"]), int(state["size"])
        start, end = (int(v) for v in state["data"])
        row_bytes = int(state["row_bytes"]) if "row_bytes" in state else None
    except (KeyError, TypeError, ValueError):
        return "the journal holds no checksum of its rows"
    if row_bytes is not None and end - start != rows * row_bytes:
        return f"the journal names {rows:,} rows, its checksum covers {(end - start) // max(row_bytes, 1):,}"
    try:
        actual = data.stat().st_size
        if actual < size:
            return f"cut short ({actual:,} bytes, {size:,} expected): its rows are not all there"
        found, lines, left = 0, 0, end - start
        with open(data, "rb") as f:
            f.seek(start)
            while left > 0 and (block := f.read(min(left, 1 << 22))):
                found, lines, left = zlib.crc32(block, found), lines + block.count(b"\n"), left - len(block)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if row_bytes is None and state.get("rows_by_line", True) and lines != rows:  # a row a line (.jsonl)
        return f"the journal names {rows:,} rows, its checksum covers {lines:,}"
    if left or found != crc:
        return "its rows do not match the checksum the journal recorded as they were written"
    return None


def rows_done(target: Path) -> int:
    """Rows a run writing `target` has made durable so far, read without the lock (for progress)."""
    try:
        raw = journal_path(target).read_bytes()
    except OSError:
        return 0
    _, entries = parse(raw)
    return int(entries[-1]["rows"]) if entries else 0


def _line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, separators=(",", ":")) + "\n").encode()


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(header, window entries); a torn last line (a kill mid-write) is not an entry."""
    header, entries = None, []
    for line in raw.split(b"\n"):
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        if not isinstance(value, dict):
            break
        if header is None:
            header = value
        elif isinstance(value.get("rows"), int):
            entries.append(value)
    return header, entries


_IDENTITY = ("job", "shard", "of", "rows", "window", "suffix", "model")


def _plausible(header: dict[str, Any], entry: dict[str, Any]) -> bool:
    """A torn overwrite can still parse: resume only from a whole number of windows within the job."""
    values = entry.get("rows"), header.get("rows"), header.get("window")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return False
    rows, total, window = (int(v) for v in values)  # type: ignore[arg-type]
    return window > 0 and 0 <= rows <= total and (rows % window == 0 or rows == total)


def _same_job(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(key) == new.get(key) for key in _IDENTITY)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changed = differences(old.get("fingerprint") or {}, new.get("fingerprint") or {})
    return list(dict.fromkeys(changed + [key for key in _IDENTITY[1:] if old.get(key) != new.get(key)]))


def _test_kill(windows: int) -> None:
    wanted = os.environ.get(KILL_ENV)
    if wanted and int(wanted) == windows:
        os.kill(os.getpid(), signal.SIGKILL)
