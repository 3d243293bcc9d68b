"""The `st` command line: the typer app (`app.py`) and its rich output (`render.py`)."""

from st_cli.cli.app import app, main

__all__ = ["app", "main"]
