"""Claiming an encode job's outputs before it starts and publishing them together at its end.

Shared by the run loop and `st merge`: an output is never a folder or one of the inputs, an existing
file is replaced only with --force, and the side files go first so the output marks a finished job.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from st_cli import fsio
from st_cli.encode.inputs import STDIN
from st_cli.encode.outputs import OUTPUT_SUFFIXES, writer_for
from st_cli.errors import StError


def claim_outputs(targets: Sequence[Path], inputs: Sequence[str | os.PathLike[str]], force: bool) -> list[fsio.Claim]:
    """Refuse outputs that are folders, inputs, or (without --force) existing files, and under --force
    an output file of another format (`targets[0]`: the output, then its side files); note what exists."""
    sources = [Path(item) for item in inputs if str(item) != STDIN]
    for path in targets:
        if path.is_dir():
            raise StError(f"{path}: is a folder; give a file name ending in {', '.join(OUTPUT_SUFFIXES)}")
        if any(_same_file(path, source) for source in sources):
            raise StError(f"{path}: is also an input; write the output to another file")
    if not targets[0].parent.is_dir():
        raise StError(f"{targets[0].parent}: no such folder for the output")
    return [fsio.claim(targets[0], force=force, kind=output_kind(targets[0]))] + [
        fsio.claim(path, force=force) for path in targets[1:]
    ]


def output_kind(output: Path) -> fsio.Kind:
    """What --force may replace with `output`: a file of its format."""
    spec = writer_for(output)
    return spec.kind() if spec is not None else fsio.ANY_FILE


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def publish_all(temps: dict[str, Path], claims: dict[str, fsio.Claim], order: Sequence[str]) -> None:
    """Publish side files first and the output last; if one is refused, take back the ones already published."""
    published: list[Path] = []
    try:
        for name in order:
            fsio.publish(temps[name], claims[name])
            del temps[name]  # published: no longer ours to remove
            published.append(claims[name].path)
    except BaseException:
        for path in published:
            fsio.remove(path)
        raise

# Errors while writing the output; any other OSError came from reading an input.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def os_error(error: OSError, target: Path) -> StError:
    if error.errno in _WRITE_ERRNOS:
        return fsio.write_error(error, target)
    return StError(f"{error.filename or target}: {error.strerror or error}")
