"""`st export`: the Transformer module as ONNX / OpenVINO files under sentence-transformers' names."""

from pathlib import Path
from typing import Annotated

import typer

from st_cli.cli import render
from st_cli.cli.typer_app import ForceOpt, JsonOpt, ModelArg, QuietOpt, TrustOpt, app, user_errors


@app.command()
def export(
    model: ModelArg,
    *,
    onnx: Annotated[bool, typer.Option("--onnx", help="Write onnx/model.onnx (float32).")] = False,
    optimize: Annotated[
        list[str] | None,
        typer.Option(
            "--optimize",
            metavar="O1|O2|O3|O4",
            help="Write onnx/model_O<N>.onnx, optimised by onnxruntime (repeatable).",
        ),
    ] = None,
    quantize: Annotated[
        str | None, typer.Option("--quantize", metavar="int8", help="Write dynamically quantised int8 models.")
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch",
            metavar="avx2|avx512|avx512_vnni|arm64",
            help="CPU the int8 model is made for (repeatable; default avx512_vnni).",
        ),
    ] = None,
    openvino: Annotated[
        bool, typer.Option("--openvino", help="Write openvino/openvino_model.xml + .bin (OpenVINO IR).")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write a new folder: a copy of the model plus the exported files."),
    ] = None,
    force: ForceOpt = False,
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export the Transformer module for ONNX Runtime or OpenVINO (where torch is not).

    Writes input_ids, attention_mask (and token_type_ids where the model
    takes them) → last_hidden_state, batch and sequence dynamic, under
    the file names sentence-transformers' backend="onnx" / "openvino"
    read: onnx/model.onnx, onnx/model_O3.onnx,
    onnx/model_qint8_avx512_vnni.onnx (model_quint8_avx2.onnx for avx2),
    openvino/openvino_model.xml. Without -o the files are added to the
    folder (an existing one is replaced only with --force) and
    st_manifest.json records their sha256. Needs the onnx extra (and
    the openvino extra for --openvino); a missing one is named with
    the pip install that adds it.

    Examples:
      st export out/minilm --onnx
      st export out/minilm --onnx --optimize O3 --quantize int8
      st export out/minilm --quantize int8 --arch avx2 --arch arm64
      st export all-MiniLM-L6-v2 --onnx --openvino -o minilm-export
    """
    from st_cli.export.export import export_model
    from st_cli.export.options import ExportOptions
    from st_cli.threads import thread_count

    options = ExportOptions(
        model=model,
        onnx=onnx,
        optimize=tuple(optimize or ()),
        quantize=quantize,
        arch=tuple(arch or ()),
        openvino=openvino,
        output=output,
        force=force,
        trust_remote_code=trust_remote_code,
    )
    with user_errors(), thread_count(), render.status(render.talks(quiet)) as status:
        report = export_model(options, status=status)
    if json_out or not quiet:
        render.export_report(report, as_json=json_out)
