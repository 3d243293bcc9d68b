"""The docs cannot drift: the command reference equals --help, the README stays short, links stay inside the repo.

- docs/reference/commands.md is what scripts/cli_reference.py renders from the typer app now
  (regenerate it with `python scripts/cli_reference.py`);
- README.md is at most 15,000 bytes;
- no Markdown link in README.md or docs/ leaves the repository: no URL, no absolute path, no
  relative path that climbs out of the repository root (../shared/...), and every relative target exists;
- every command of the typer app has a row in README's command table.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from st_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LIMIT = 15_000

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target "title") and ![alt](target); the target may be wrapped in <>.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+[\"'(][^)]*)?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
AUTOLINK = re.compile(r"<((?:[a-zA-Z][a-zA-Z0-9+.-]*):[^>\s]*)>")
HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
PARENT_PATH = re.compile(r"(?<![\w./])(?:\.\./)+[\w.-][\w./-]*")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link outside code blocks and code spans."""
    found: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        prose = INLINE_CODE.sub("", line)
        for pattern in (INLINE_LINK, REFERENCE_DEF, AUTOLINK, HTML_LINK):
            found.extend((number, m.group(1).strip("<>")) for m in pattern.finditer(prose))
    return found


def link_problem(source: Path, target: str, root: Path = ROOT) -> str | None:
    """Why a link in `source` leaves the repository or leads nowhere; None when it is fine."""
    if SCHEME.match(target) or target.startswith("//"):
        return "points outside the repository (a URL)"
    path = target.split("#", 1)[0].split("?", 1)[0]
    if not path:
        return None  # an anchor on the same page
    if path.startswith("/"):
        return "an absolute path (not inside the repository in a clone)"
    resolved = (source.parent / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return "climbs out of the repository root"
    if not resolved.exists():
        return "does not exist"
    return None


def escaping_paths(text: str) -> list[str]:
    """Paths written as `../...` outside link targets (prose, code spans, code blocks).

    Such a mention is read from the repository root, as paths in prose are, so every one of them
    leaves the repository (`../shared/FORMAT.md` is not in a clone).
    """
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = "\n".join(line for line in text.splitlines() if not REFERENCE_DEF.match(line))
    return [m.group(0) for m in PARENT_PATH.finditer(text)]


def app_commands() -> list[str]:
    """`build`, `inspect`, …, and `group sub` for subcommands: every visible command of the typer app."""

    def walk(group: object, prefix: str) -> list[str]:
        names = []
        for name, command in getattr(group, "commands", {}).items():
            if not getattr(command, "hidden", False):
                names.append(f"{prefix}{name}")
                names.extend(walk(command, f"{prefix}{name} "))
        return names

    return walk(typer.main.get_command(app), "")


def test_command_reference_matches_help() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, (
        "docs/reference/commands.md differs from the commands' --help; "
        f"run `python scripts/cli_reference.py` and commit the result.\n{result.stderr[-6000:]}"
    )


def test_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size:,} bytes (limit {README_LIMIT:,}): move detail into docs/"


def test_links_stay_inside_the_repository() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {target}: {why}"
        for path in markdown_files()
        for line, target in links(path.read_text(encoding="utf-8"))
        if (why := link_problem(path, target)) is not None
    ]
    assert not problems, "links that leave the repository or lead nowhere:\n" + "\n".join(problems)


def test_no_mention_of_files_outside_the_repository() -> None:
    """Not even in code: `../shared/FORMAT.md` is not in a clone, so a reader cannot follow it."""
    problems = [
        f"{path.relative_to(ROOT)}: {mention}"
        for path in markdown_files()
        for mention in escaping_paths(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "paths outside the repository:\n" + "\n".join(problems)


def test_readme_command_table_lists_every_command() -> None:
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.lstrip().startswith("|")]
    first_cells = [row.strip().strip("|").split("|")[0] for row in rows]
    listed = {m.group(1).strip() for cell in first_cells if (m := re.search(r"`st ([a-z][a-z -]*?)(?: [A-Z\[<-]|`)", cell))}
    commands = app_commands()
    assert commands, "the typer app has no commands?"
    missing = [name for name in commands if name not in listed]
    assert not missing, f"README.md's command table has no row for: {', '.join('st ' + n for n in missing)}"


# The checkers themselves: each must be able to fail.


@pytest.mark.parametrize(
    ("target", "bad"),
    [
        ("../shared/FORMAT.md", True),
        ("docs/../../outside.md", True),
        ("https://example.com/page", True),
        ("mailto:someone@example.com", True),
        ("/etc/passwd", True),
        ("docs/no-such-page.md", True),
        ("tests/test_docs.py", False),
        ("README.md#anchor", False),
        ("#a-heading", False),
    ],
)
def test_link_checker(target: str, bad: bool) -> None:
    assert (link_problem(README, target) is not None) == bad


def test_link_finder_skips_code() -> None:
    text = "[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n[d]: w.md\n<https://e.example>\n"
    assert [t for _, t in links(text)] == ["x.md", "w.md", "https://e.example"]


def test_escaping_paths() -> None:
    text = "see `../shared/DESIGN.md` and ../../x.md; [a link](../README.md) is the link test's\n[r]: ../x.md\n"
    assert escaping_paths(text) == ["../shared/DESIGN.md", "../../x.md"]


def test_reference_check_fails_on_a_stale_page(tmp_path: Path) -> None:
    """--check compares against the committed page: a copy of the script pointed at a changed page fails."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (tmp_path / "docs" / "reference").mkdir(parents=True)
    (tmp_path / "docs" / "reference" / "commands.md").write_text("stale\n", encoding="utf-8")
    (scripts / "cli_reference.py").write_text((ROOT / "scripts" / "cli_reference.py").read_text(encoding="utf-8"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, str(scripts / "cli_reference.py"), "--check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "run `python scripts/cli_reference.py`" in result.stderr
