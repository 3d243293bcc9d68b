"""Help texts that list a table's entries list exactly that table's (READERS, WRITERS, PRECISIONS, CHECKS).

The input suffixes are read from READERS when the CLI starts; the writers and the checks live in
modules that import numpy, which `st --help` and `st inspect` must not pay for, so their lists in the
help are spelled out and held to the tables here.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.encode.inputs import READERS
from st_cli.encode.outputs import PRECISIONS, WRITERS
from st_cli.verify.checks import CHECKS

runner = CliRunner()


def _help(command: str) -> str:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "240", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("suffix", list(READERS))
def test_encode_help_lists_every_reader(suffix: str) -> None:
    assert suffix in _help("encode")


@pytest.mark.parametrize("command", ["encode", "merge"])
def test_output_help_lists_every_writer(command: str) -> None:
    text = _help(command)
    assert [s for s in WRITERS if s not in text] == []


def test_encode_help_lists_every_precision() -> None:
    text = _help("encode")
    assert [p for p in PRECISIONS if p not in text] == []


def test_verify_help_names_every_check() -> None:
    text = _help("verify")
    assert [c.name for c in CHECKS if c.name not in text] == []
