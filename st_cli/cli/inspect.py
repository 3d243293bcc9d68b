"""`st inspect`: the modules.json tree and findings, from JSON and safetensors headers only (no torch)."""

from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.typer_app import JsonOpt, ModelArg, app, user_errors


@app.command()
def inspect(
    model: ModelArg,
    *,
    json_out: JsonOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing: the exit code says whether the folder is readable.")
    ] = False,
    weights: Annotated[bool, typer.Option("--weights", help="List every tensor with its shape and dtype.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit) of a Hub id.")
    ] = None,
) -> None:
    """Show what a model folder holds, from its JSON files and safetensors headers alone.

    Never imports torch and never runs code from the folder. Shows the modules.json stack with
    configs, dimensions and weights, then findings (error, warning, info) and which loaders
    (sentence-transformers <=5.3, 5.4-5.x, >=6, TEI) can read the folder. Exits 0 whenever a
    summary is printed, even with error findings; an unreadable folder exits 2
    (with -q, the exit code alone says it).

    Examples:
      st inspect out/minilm
      st inspect sentence-transformers/all-MiniLM-L6-v2 --json
      st inspect out/minilm --weights
    """
    from st_cli.format.summary import summarize

    with user_errors():
        summary = summarize(model, revision=revision)
    if json_out or not quiet:
        render.model_summary(summary, as_json=json_out, tensors=weights)
