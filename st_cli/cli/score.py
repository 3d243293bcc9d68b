"""`st score`: a file of text pairs through a CrossEncoder (a reranker), one score per pair."""

from pathlib import Path
from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.typer_app import ForceOpt, JsonOpt, ModelArg, QuietOpt, app, user_errors

RawOpt = Annotated[bool, typer.Option("--raw", help="The logits, without the activation the folder saved.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or mps.")]
BatchTokensOpt = Annotated[
    int, typer.Option("--max-batch-tokens", min=1, help="Padded tokens per batch (pairs are sorted by length).")
]


def parse_columns(columns: str | None) -> tuple[str, str] | None:
    """'q,passage' → ('q', 'passage')."""
    from st_cli.errors import StError

    if columns is None:
        return None
    names = [c.strip() for c in columns.split(",")]
    if len(names) != 2 or not all(names):
        raise StError(f"--columns: expected FIRST,SECOND (two column names), got {columns!r}")
    return names[0], names[1]


@app.command()
def score(
    model: ModelArg,
    *,
    data: Annotated[
        Path,
        typer.Option("--data", help="Pairs: .jsonl/.csv/.tsv/.parquet (query/document or sentence1/sentence2)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Scores: .npy (as predict returns them) or .jsonl.")],
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns", metavar="FIRST,SECOND", help="Read the pair from these two columns.", show_default=False
        ),
    ] = None,
    raw: RawOpt = False,
    max_batch_tokens: BatchTokensOpt = 512,
    device: DeviceOpt = "cpu",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score text pairs with a CrossEncoder (a reranker folder saved by sentence-transformers).

    The scores are CrossEncoder.predict's: the activation the folder
    saved (sigmoid for one label, none for several, unless it names
    another) or, with --raw, the logits. One label gives one score per
    pair; N labels give N.

    Exit codes: 0 done, 2 bad usage, unreadable data or a model that is
    not a CrossEncoder, 3 an internal error.

    Examples:
      st score ./reranker --data pairs.jsonl --out scores.npy
      st score ./reranker --data qa.csv --columns q,answer --out s.jsonl
      st score ./nli-model --data pairs.tsv --out logits.npy --raw
    """
    from st_cli.score import ScoreOptions, score_file
    from st_cli.threads import thread_count

    with user_errors(), thread_count(), render.status(render.talks(quiet)) as status:
        options = ScoreOptions(
            raw=raw, columns=parse_columns(columns), max_tokens=max_batch_tokens, device=device, force=force
        )
        if status is not None:
            status(f"scoring {data}")
        summary = score_file(model, data, out, options)
    if json_out:
        render.print_json(summary.to_json())
    elif not quiet:
        render.info(
            f"scored {summary.pairs:,} pairs ({summary.labels} label{'s' if summary.labels > 1 else ''}, "
            f"activation {summary.activation}) → {summary.output}; {summary.seconds:.1f} s; "
            f"{summary.truncated:,} truncated"
        )
