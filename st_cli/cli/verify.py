"""`st verify`: reload a saved model and run the checks; exit codes and JSON are an API."""

from pathlib import Path
from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.typer_app import JsonOpt, ModelArg, TrustOpt, app, user_errors


@app.command()
def verify(
    model: ModelArg,
    *,
    atol: Annotated[
        float, typer.Option("--atol", min=0.0, help="Tolerance (max abs difference) for embedding comparisons.")
    ] = 1e-5,
    json_out: JsonOpt = False,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Also compare with another folder or Hub id; 'sentence-transformers' loads this folder with it.",
        ),
    ] = None,
    trust_remote_code: TrustOpt = False,
    require_portable: Annotated[
        bool,
        typer.Option("--require-portable", help="Fail unless every loader (ST<=5.3, ST5.4-5.x, ST>=6, TEI) reads it."),
    ] = False,
    allow_untrained: Annotated[
        bool,
        typer.Option("--allow-untrained", help="Pass the trained check for modules left untrained on purpose."),
    ] = False,
    record: Annotated[
        bool,
        typer.Option("--record", help="Write st_manifest.json for a folder that has none, if every check passes."),
    ] = False,
    junit: Annotated[
        Path | None,
        typer.Option("--junit", metavar="FILE", help="Also write the report as JUnit XML to FILE.", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --junit FILE.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No status line and no report: the exit code alone says it.")
    ] = False,
) -> None:
    """Reload a saved model and check its files and embeddings (for CI).

    Checks: layout, integrity (sha256 against st_manifest.json),
    dimensions, reload, reference (the manifest's probe embeddings
    within --atol), batch_invariance, normalization, portability,
    trained (no module still freshly initialised; --allow-untrained
    passes it), for a SparseEncoder active_dims (no vector past its
    max_active_dims), exported (every onnx/ and openvino/ file against the
    torch model: float files within 1e-5, O3/O4 1e-3, int8 by cosine),
    and with --against, against (names the first module that diverges).
    Without st_manifest.json, integrity, reference and trained are
    skipped; --record writes one.

    Exit codes: 0 all checks passed or were skipped, 1 a check failed,
    2 bad usage, an unreadable folder or untrusted custom code,
    3 an internal error.

    Examples:
      st verify out/minilm
      st verify out/minilm --json --junit verify.xml
      st verify out/minilm --against sentence-transformers
      st verify ./downloaded-model --record
      st verify out/minilm-128 --allow-untrained
    """
    from st_cli.errors import EXIT_MISMATCH, EXIT_OK
    from st_cli.format.layout import looks_like_model
    from st_cli.fsio import claim, refuse_output_in_folders
    from st_cli.threads import thread_count
    from st_cli.verify.verify import JUNIT_REPORT, verify_model

    with user_errors(), thread_count(), render.status(render.talks(quiet)) as status:
        if junit is not None:
            refuse_output_in_folders(junit, [f for f in (model, against) if looks_like_model(f)], "--junit")
        # Refused before the checks run; --force replaces only a JUnit report (an XML file).
        junit_claim = claim(junit, force=force, kind=JUNIT_REPORT) if junit is not None else None
        report = verify_model(
            model,
            atol=atol,
            against=against,
            trust_remote_code=trust_remote_code,
            require_portable=require_portable,
            record=record,
            allow_untrained=allow_untrained,
            status=status,
        )
        if junit_claim is not None:
            report.write_junit(junit_claim)
    if json_out or not quiet:
        render.verify_report(report, as_json=json_out)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_MISMATCH)
