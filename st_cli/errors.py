"""The StError family and the exit codes: the one place that decides what a user sees on failure."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_MISMATCH = 1  # verify found a check that failed
EXIT_BAD_INPUT = 2  # bad usage, bad input, unreadable folder, an output the machine cannot hold
EXIT_INTERNAL = 3  # a bug in st


class StError(Exception):
    """A problem the user can fix. Shown as one line on stderr, never with a traceback."""

    exit_code = EXIT_BAD_INPUT


class RecipeError(StError):
    """A recipe that cannot be used, located as `recipe.yaml:LINE: key.path: problem`."""

    def __init__(self, path: Path | str, line: int | None, where: str, problem: str) -> None:
        self.path, self.line, self.where, self.problem = Path(path), line, where, problem
        location = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{location}: {where}: {problem}" if where else f"{location}: {problem}")


class ModelFolderError(StError):
    """A model folder (or hub id) that cannot be read."""


class TrustError(StError):
    """Code from a model folder would have to run, and the user has not said they trust it."""


class OutputExistsError(StError):
    """An output already exists and --force was not given."""


class WriteError(StError):
    """An output that could not be written: a full disk, a quota, a file-size limit, a read-only folder.

    Exit 2 like bad input: the machine, not st, is at fault, and the user can fix it. Whatever was
    half-written has been removed by the time it is shown.
    """


class ConfigValueError(ValueError):
    """A module argument that is wrong; `key` names it so recipe errors can point at its line."""

    def __init__(self, key: str | None, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
