"""Exported Transformers for the backend tests, made the way sentence-transformers names them:
onnx/model.onnx (torch.onnx.export: input_ids, attention_mask, token_type_ids → last_hidden_state, dynamic
batch and sequence), onnx/model_qint8_avx512_vnni.onnx (onnxruntime's dynamic quantisation), and
openvino/openvino_model.xml (openvino.convert_model). Stand-ins until `st export` writes them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
INT8 = "onnx/model_qint8_avx512_vnni.onnx"


def _bert(folder: Path):  # noqa: ANN202
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(folder)).eval()


def export_onnx(folder: Path, target: Path | None = None, *, source: Path | None = None) -> Path:
    """`source`'s (default `folder`'s) BERT as onnx/model.onnx of `folder` (or `target`)."""
    import torch

    model = _bert(source or folder)

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN202
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    target = target or folder / "onnx" / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]])
    args = (ids, (ids != 0).long(), torch.zeros_like(ids))
    axes = {name: {0: "batch", 1: "sequence"} for name in [*INPUTS, "last_hidden_state"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapped(), args, str(target), input_names=INPUTS, output_names=["last_hidden_state"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    return target


def export_int8(folder: Path) -> Path:
    """onnx/model.onnx quantised to int8 weights (dynamic), under ST's avx512_vnni name."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = folder / "onnx" / "model.onnx"
    if not source.is_file():
        export_onnx(folder)
    target = folder / INT8
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    return target


def export_openvino(folder: Path) -> Path:
    """onnx/model.onnx converted to openvino/openvino_model.xml (+ .bin)."""
    import openvino as ov

    source = folder / "onnx" / "model.onnx"
    if not source.is_file():
        export_onnx(folder)
    target = folder / "openvino" / "openvino_model.xml"
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(source)), str(target), compress_to_fp16=False)
    return target
