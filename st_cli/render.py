"""Everything the CLI prints: data on stdout, talk (progress, warnings, errors) on stderr."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def error(message: str) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message))


def warning(message: str) -> None:
    err.print(Text.assemble(("warning: ", "yellow"), message))


def info(message: str) -> None:
    err.print(Text(message))


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
