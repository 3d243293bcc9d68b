"""The `st` command line: the typer app and its shared options (`typer_app.py`), one module per command
(or per pair of commands that share their options: encode and merge), and the rich output (`render.py`).

Each command parses its arguments, makes one library call and renders the result. Importing this
package registers the commands, in the order `st --help` lists them (so the imports are not sorted).
"""

# isort: off
from st_cli.cli import build, inspect, verify, eval, encode, train, export  # noqa: F401  (registers the commands)
from st_cli.cli import score, rerank  # noqa: F401  (the rerankers' commands, after the embedding ones)

# isort: on
from st_cli.cli.typer_app import app, main

__all__ = ["app", "main"]
