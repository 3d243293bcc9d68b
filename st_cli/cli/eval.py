"""`st eval`: a model's quality on labelled data (pairs, a BEIR retrieval folder, triplets), with
sentence-transformers' metric names; `--min` makes it a CI gate."""

from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.typer_app import BackendFileOpt, BackendOpt, JsonOpt, ModelArg, TrustOpt, app, user_errors


@app.command(name="eval")
def eval_(
    model: ModelArg,
    *,
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="Labelled data (repeatable): a .csv/.tsv/.jsonl of pairs or triplets, or a BEIR folder.",
            show_default=False,
        ),
    ],
    similarity: Annotated[
        list[str] | None,
        typer.Option(
            "--similarity",
            help="Also score with cosine, dot, euclidean or manhattan (the model's own is always used).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="A BEIR folder's qrels/SPLIT.tsv.")] = "test",
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help=(
                "ROLE=NAME: read a role (sentence1 sentence2 score anchor positive negative query documents) "
                "from another column."
            ),
            show_default=False,
        ),
    ] = None,
    minimum: Annotated[
        list[str] | None,
        typer.Option(
            "--min", help="NAME=VALUE (repeatable): exit 1 when that metric is below VALUE.", show_default=False
        ),
    ] = None,
    record: Annotated[
        bool,
        typer.Option("--record", help="Store the results in st_manifest.json and the model card (README.md)."),
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, mps or auto.")] = "cpu",
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="float32 (sentence-transformers' own metrics), or bfloat16/float16: faster where the CPU or "
            "GPU runs them natively, metrics off by rounding.",
        ),
    ] = "float32",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress and no table: the exit code alone says it.")
    ] = False,
    json_out: JsonOpt = False,
    trust_remote_code: TrustOpt = False,
    backend: BackendOpt = "torch",
    backend_file: BackendFileOpt = None,
) -> None:
    """Measure a model on labelled data; the task is read from the data's shape.

    Scored pairs (sentence1, sentence2, score) give pearson_* and spearman_*
    per similarity; a BEIR folder (corpus.jsonl, queries.jsonl,
    qrels/SPLIT.tsv) gives accuracy@k, precision@k, recall@k, ndcg@10,
    mrr@10 and map@100; triplets (anchor, positive, negative) give
    accuracy. Names and values are those of sentence-transformers'
    evaluators (EmbeddingSimilarityEvaluator, InformationRetrievalEvaluator,
    TripletEvaluator).

    Exit codes: 0 done (every --min met), 1 a metric below its --min,
    2 bad usage or unreadable data, 3 an internal error.

    Examples:
      st eval out/minilm --data stsb-test.csv
      st eval out/minilm --data scifact/ --split test --json
      st eval out/minilm --data sts.tsv --column score=label
      st eval out/minilm --data sts.csv --min spearman_cosine=0.8
      st eval out/minilm --data sts.csv --similarity dot --record
      st eval out/minilm --data scifact/ --dtype bfloat16
      st eval out/minilm --data sts.csv --backend onnx \\
          --backend-file onnx/model_qint8_avx512_vnni.onnx
    """
    from st_cli.errors import EXIT_MISMATCH, EXIT_OK
    from st_cli.eval.evaluate import EvalOptions, below_minimums, evaluate, parse_minimums
    from st_cli.threads import thread_count

    with user_errors(), thread_count():
        minimums = parse_minimums(minimum or [])
        if record:
            from st_cli.eval.record import check_recordable

            check_recordable(model)
        options = EvalOptions(
            similarities=tuple(similarity or ()),
            split=split,
            columns=tuple(column or ()),
            device=device,
            trust_remote_code=trust_remote_code,
            backend=backend,
            backend_file=backend_file,
            dtype=dtype,
        )
        with render.eval_progress(enabled=not quiet) as progress:
            results = evaluate(model, data, options, progress=progress)
        failures = below_minimums(results, minimums)
        recorded = None
        if record:
            from st_cli.eval.record import record as record_results

            recorded = record_results(model, results)
    if json_out or not quiet:
        render.eval_results(results, as_json=json_out)
    if recorded is not None and not quiet:
        render.info(f"recorded in {recorded} and the model card")
    for failure in failures:
        render.error(failure)
    raise typer.Exit(EXIT_MISMATCH if failures else EXIT_OK)
