"""`st train`: fine-tune the modules a recipe added."""

from pathlib import Path
from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.typer_app import ForceOpt, JsonOpt, ModelArg, QuietOpt, TrustOpt, app, user_errors


@app.command()
def train(
    model: ModelArg,
    *,
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="Training data (repeatable): text files for distill, .jsonl/.csv pairs for contrastive.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The model folder to write.", show_default=False)],
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Distillation target: a folder or Hub id (default: the model's stack without its untrained modules).",
        ),
    ] = None,
    loss: Annotated[
        str, typer.Option("--loss", help="distill (plain text) or contrastive (anchor/positive pairs).")
    ] = "distill",
    train_: Annotated[
        str,
        typer.Option("--train", help="Which modules learn: untrained (per the manifest), all, or indices like 2,3."),
    ] = "untrained",
    epochs: Annotated[int, typer.Option("--epochs", min=0, help="Passes over the data (0: only --init).")] = 1,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            min=0.0,
            help="Peak learning rate (default 1e-3 for added layers, 2e-5 with the Transformer).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Texts (or pairs) per step.")] = 64,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps in all.", show_default=False)
    ] = None,
    eval_fraction: Annotated[
        float,
        typer.Option("--eval", min=0.0, max=0.99, help="Fraction of the data held out for the per-epoch evaluation."),
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the split, the shuffling and dropout.")] = 0,
    init: Annotated[
        str,
        typer.Option(
            "--init",
            help="auto: pca where a fresh linear Dense narrows its input (distill), else none; "
            "pca: start that Dense at its inputs' principal directions; none: keep the random init.",
        ),
    ] = "auto",
    eval_data: Annotated[
        list[str] | None,
        typer.Option(
            "--eval-data",
            help="Labelled data st eval reads (repeatable): evaluated before training and after each epoch, recorded.",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[
        str,
        typer.Option("--keep", help="Which epoch is saved: last, or best (by the first --eval-data's main metric)."),
    ] = "last",
    format: Annotated[
        str,
        typer.Option(
            "--format", help="portable: loads in sentence-transformers 2.2–6.x and TEI; st6: what ST 6.2 writes."
        ),
    ] = "portable",
    field: Annotated[
        str, typer.Option("--field", help="The JSON field holding the text in .jsonl inputs (distill).")
    ] = "text",
    column: Annotated[
        str, typer.Option("--column", help="The column holding the text in .csv/.tsv inputs (distill).")
    ] = "text",
    anchor: Annotated[str, typer.Option("--anchor", help="The anchor field/column of pairs.")] = "anchor",
    positive: Annotated[str, typer.Option("--positive", help="The positive field/column of pairs.")] = "positive",
    negative: Annotated[
        str, typer.Option("--negative", help="The optional negative field/column of pairs.")
    ] = "negative",
    symmetric: Annotated[
        bool, typer.Option("--symmetric", help="Contrastive: also rank each positive's anchor first.")
    ] = False,
    device: Annotated[str, typer.Option("--device", envvar="ST_DEVICE", help="cpu, cuda, mps or auto.")] = "cpu",
    force: ForceOpt = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last epoch checkpoint of an interrupted run on OUTPUT.")
    ] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Fine-tune the modules a recipe added (random-init layers), and write a new model folder.

    distill (default): the student learns to reproduce the teacher's embeddings of
    the texts (MSE when the widths agree, the teacher's in-batch cosine
    similarities when the student is narrower). contrastive: pairs with
    in-batch negatives. Only the manifest's untrained modules learn by default;
    the frozen modules before them run once per text, not once per epoch.
    A checkpoint is kept after each epoch beside OUTPUT; --resume continues
    from it. OUTPUT's manifest records the data (sha256), loss, settings and
    the held-out metric per epoch. That metric is agreement with the teacher
    on held-out training lines, not quality: --eval-data measures quality on
    labelled data (as st eval does) before training and after every epoch.

    Examples:
      st train out/minilm-128 --data corpus.txt -o out/m128-trained
      st train out/minilm-128 --data corpus.txt -o out/m --eval-data sts.csv \\
          --epochs 3 --keep best
      st train out/minilm-linear --data corpus.txt -o out/trained \\
          --trust-remote-code
      st train out/minilm --loss contrastive --data pairs.jsonl.gz \\
          --train all -o out/tuned --symmetric
    """
    from st_cli.threads import thread_count
    from st_cli.training.options import PairColumns
    from st_cli.training.train import train as train_model

    with user_errors(), thread_count():
        with render.train_progress(render.talks(quiet) and not json_out) as progress:
            report = train_model(
                model,
                data,
                output=output,
                teacher=teacher,
                loss=loss,
                train=train_,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                max_steps=max_steps,
                eval_fraction=eval_fraction,
                seed=seed,
                init=init,
                format=format,  # type: ignore[arg-type]
                force=force,
                resume=resume,
                device=device,
                field=field,
                column=column,
                columns=PairColumns(anchor, positive, negative),
                symmetric=symmetric,
                trust_remote_code=trust_remote_code,
                progress=progress,
                eval_data=eval_data or (),
                keep=keep,
            )
    if json_out or not quiet:
        render.train_report(report, as_json=json_out)
