"""The conventions users expect of a command line: -V, shell completion, -q and --json on every command,
readable metavars, examples that fit 80 columns, status lines on stderr only where someone watches."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from st_cli._version import __version__
from st_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]  # every command, new ones too


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str) -> None:
    result = runner.invoke(app, [flag])
    assert result.exit_code == 0 and result.stdout == f"st {__version__}\n"


SCRIPT = "import sys; sys.argv[0] = 'st'; from st_cli.cli.typer_app import main; main()"  # as `st` runs


def _st(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
    )


def _st_from_bash(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs st as a child of bash: --show-completion detects the shell from its parent process, and CI's is sh."""
    command = " ".join(shlex.quote(part) for part in [sys.executable, "-c", SCRIPT, *args])
    return subprocess.run(
        ["bash", "-c", f"{command}; exit $?"],  # `; exit` keeps bash from exec'ing python in its own place
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
    )


def test_show_completion_prints_a_script_that_completes_commands_and_options() -> None:
    shown = _st_from_bash("--show-completion")
    assert shown.returncode == 0 and "_ST_COMPLETE=complete_bash" in shown.stdout, shown.stderr
    # What the script asks st when TAB is pressed after `st enc` and after `st encode --inp`:
    commands = _st(_ST_COMPLETE="complete_bash", COMP_WORDS="st enc", COMP_CWORD="1")
    assert commands.stdout.split() == ["encode"], commands.stderr
    options = _st(_ST_COMPLETE="complete_bash", COMP_WORDS="st encode --inp", COMP_CWORD="2")
    assert options.stdout.split() == ["--input-format"], options.stderr


def test_install_completion_is_offered() -> None:
    text = _help()
    assert "--install-completion" in text and "--show-completion" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_quiet_and_json(command: str) -> None:
    text = _help(command)
    assert re.search(r"--quiet\s+-q", text) and "--json" in text


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_options_show_readable_metavars(command: str) -> None:
    text = _help(*([command] if command else []))
    options = text[text.find("Options") :]  # the arguments' type column is typer's own
    assert not re.findall(r"<[a-z\[\]]+>", options), options


@pytest.mark.parametrize("command", COMMANDS)
def test_examples_fit_80_columns(command: str) -> None:
    registered = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == command)
    doc = registered.callback.__doc__ or ""
    examples = doc[doc.find("Examples:") :].split("\n\n")[0].splitlines()[1:]
    assert examples and all(len(line.strip()) + 2 <= 80 for line in examples), examples


def test_the_status_line_is_silent_when_piped(tiny_recipe, tmp_path: Path) -> None:
    # CliRunner's stderr is not a terminal: only the one summary line, no spinner frames.
    recipe = tiny_recipe("  - type: Pooling\n")
    result = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "m")])
    assert result.exit_code == 0 and result.stderr.splitlines() == [result.stderr.strip()]
    quiet = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "m2"), "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""
    verified = runner.invoke(app, ["verify", str(tmp_path / "m"), "-q"])
    assert verified.exit_code == 0 and verified.stdout == "" and verified.stderr == ""


def test_build_and_verify_report_their_steps_to_a_status_callback(tiny_recipe, tmp_path: Path) -> None:
    from st_cli.model.model import build
    from st_cli.verify.verify import verify_model

    steps: list[str] = []
    build(tiny_recipe("  - type: Pooling\n"), tmp_path / "m", status=steps.append)
    assert steps[0].startswith("reading ") and "loading modules[0]: Transformer" in steps
    assert steps[-1].startswith(f"writing {tmp_path / 'm'}")
    checks: list[str] = []
    verify_model(tmp_path / "m", status=checks.append)
    assert checks[:2] == ["check layout", "check integrity"]
