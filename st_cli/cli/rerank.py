"""`st rerank`: one query's documents ordered by a CrossEncoder (a reranker), best first."""

from pathlib import Path
from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.score import BatchTokensOpt, DeviceOpt, RawOpt
from st_cli.cli.typer_app import JsonOpt, ModelArg, QuietOpt, app, user_errors


@app.command()
def rerank(
    model: ModelArg,
    *,
    query: Annotated[str, typer.Option("--query", help="The query the documents are scored against.")],
    docs: Annotated[
        Path, typer.Option("--docs", help="Documents: .txt (a line each), .jsonl/.csv/.tsv (--field), .parquet.")
    ],
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Show the best K (default: all).", show_default=False)
    ] = None,
    field: Annotated[
        str, typer.Option("--field", help="The text field (column) of .jsonl/.csv/.tsv documents.")
    ] = "text",
    raw: RawOpt = False,
    max_batch_tokens: BatchTokensOpt = 512,
    device: DeviceOpt = "cpu",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Order documents by a CrossEncoder's score for one query, best first.

    The ranking and scores are CrossEncoder.rank's (ties keep the
    documents' order). The model must give one score per pair.

    Exit codes: 0 done, 2 bad usage, unreadable documents or a model
    that is not a one-label CrossEncoder, 3 an internal error.

    Examples:
      st rerank ./reranker --query "cats purr" --docs passages.txt --top-k 5
      st rerank ./reranker --query "cats purr" --docs hits.jsonl --json
    """
    from st_cli.score import ScoreOptions
    from st_cli.score import rerank as rank_documents
    from st_cli.threads import thread_count

    with user_errors(), thread_count(), render.status(render.talks(quiet)) as status:
        if status is not None:
            status(f"scoring {docs}")
        options = ScoreOptions(raw=raw, max_tokens=max_batch_tokens, device=device)
        ranking = rank_documents(model, query, docs, top_k=top_k, options=options, field=field)
    if json_out:
        render.print_json(ranking.to_json())
        return
    if quiet:
        return
    from rich.table import Table

    table = Table("rank", "doc", "score", "text", box=None, header_style="bold")
    for rank, doc in enumerate(ranking.results, 1):
        table.add_row(str(rank), str(doc.corpus_id), f"{doc.score:.6f}", render.one_line(doc.text))
    render.out.print(table)
