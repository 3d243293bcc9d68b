"""The `st` command line: the typer app (`commands.py`) and its rich output (`render.py`)."""

from st_cli.cli.commands import app, main

__all__ = ["app", "main"]
