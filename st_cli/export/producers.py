"""The four ways an exported file is made: torch's exporter (float32 ONNX), onnxruntime's optimiser and quantiser,
and OpenVINO's converter. Each writes one file (plus its weights beside it where the format keeps them apart).

Why torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`): with transformers 5 the TorchScript
exporter traces the attention-mask code with the example's sizes baked in, and its graph gave vectors off by
2.46 at another batch and length (measured on a tiny BERT); the dynamo graph matches torch within 6e-7 at any
batch and length, has named dynamic axes, and no Python-side shape arithmetic. It needs onnxscript.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

OPSET = 18  # the dynamo exporter's own opset; onnxruntime >= 1.14 and OpenVINO read it
OUTPUT = "last_hidden_state"
DYNAMIC_AXES = ("batch_size", "sequence_length")  # the dimension names optimum gives, so the graphs read alike
# Past this many bytes of weights a protobuf cannot hold the model (2 GiB limit, less some room for the graph):
# the weights go to a file beside it, named as optimum names it (`model.onnx_data`), which ST fetches from the Hub.
EXTERNAL_DATA_BYTES = 1_900_000_000
EXTERNAL_DATA_SUFFIX = "_data"


class _LastHiddenState(torch.nn.Module):
    """The transformers model as a function of the named inputs → last_hidden_state (no pooler, no dict)."""

    def __init__(self, model: Any, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.inputs, tensors, strict=True)), return_dict=True).last_hidden_state


def model_inputs(model: Any) -> tuple[str, ...]:
    """input_ids, attention_mask, and token_type_ids where the model has them: its forward takes them and its
    config has more than one token type (BERT yes; RoBERTa, XLM-R, MPNet, DistilBERT no, as in optimum's ONNX
    configs). A runtime that has them from the tokenizer but finds no such input drops them (zeros, the same)."""
    accepted = inspect.signature(model.forward).parameters
    typed = int(getattr(model.config, "type_vocab_size", 0) or 0) > 1
    wanted = ("input_ids", "attention_mask", *(("token_type_ids",) if typed else ()))
    return tuple(n for n in wanted if n in accepted)


def weight_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def external_data_name(target: Path) -> str:
    return target.name + EXTERNAL_DATA_SUFFIX


def export_float(model: Any, inputs: tuple[str, ...], target: Path) -> None:
    """transformers model → float32 ONNX at `target`, batch and sequence axes dynamic."""
    import onnx_ir  # comes with onnxscript, which the dynamo exporter needs anyway

    if hasattr(model, "set_attn_implementation"):  # eager attention: the plain MatMul/Softmax graph ORT fuses
        model.set_attn_implementation("eager")
    vocab = int(getattr(model.config, "vocab_size", 100) or 100)
    generator = torch.Generator().manual_seed(0)
    examples = {
        "input_ids": torch.randint(min(5, vocab - 1), vocab, (2, 8), generator=generator),
        "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3]),
        "token_type_ids": torch.zeros(2, 8, dtype=torch.long),
    }
    args = tuple(examples[name] for name in inputs)
    # 2 × 8 example: a size of 1 would be specialised into the graph.
    batch, sequence = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
    program = torch.onnx.export(
        _LastHiddenState(model.eval(), inputs),
        args,
        dynamo=True,
        input_names=list(inputs),
        output_names=[OUTPUT],
        dynamic_shapes=({"tensors": tuple({0: batch, 1: sequence} for _ in inputs)}),
        opset_version=OPSET,
        optimize=True,
        verbose=False,
    )
    assert program is not None
    _name_axes(program.model)
    for node in program.model.graph.all_nodes():  # the exporter's stack traces: local paths, 2-3× the graph's size
        node.metadata_props.clear()
    large = weight_bytes(model) > EXTERNAL_DATA_BYTES
    onnx_ir.save(program.model, target, external_data=external_data_name(target) if large else None)


def _name_axes(model: Any) -> None:
    """The exporter names the dynamic dimensions s0, s1; give them optimum's names (inputs and output alike)."""
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.shape is None:
            continue
        dims = list(value.shape)
        for i, name in enumerate(DYNAMIC_AXES):
            if i < len(dims) and not isinstance(dims[i], int):
                value.shape[i] = name


def optimize(source: Path, target: Path, *, level: str, num_heads: int, hidden_size: int) -> None:
    """onnxruntime.transformers' optimiser at one of optimum's levels (O1 basic ORT graph optimisations; O2
    also transformers fusions; O3 also the GELU approximation; O4 also float16 weights, inputs and outputs kept
    float32), as ST's `export_optimized_onnx_model` asks optimum for them."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_gelu_approximation = level in ("O3", "O4")
    large = _uses_external_data(source)
    optimizer = optimize_model(
        str(source),
        model_type="bert",  # encoders' fusion patterns; optimum maps every encoder it optimises to "bert" too
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=1 if level == "O1" else 2,
        optimization_options=options,
        use_gpu=level == "O4",
        only_onnxruntime=level == "O1",
    )
    if level == "O4":
        optimizer.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True)
    model = optimizer.model
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=external_data_name(target),
    )


# int8 per CPU: weights' type as optimum's AutoQuantizationConfig.<arch>(is_static=False) sets it (avx2 has no
# VNNI-style u8×s8 instruction, so its weights are unsigned: ST names its file model_quint8_avx2.onnx).
WEIGHT_TYPES = {"arm64": "QInt8", "avx2": "QUInt8", "avx512": "QInt8", "avx512_vnni": "QInt8"}


def weight_type_name(arch: str) -> str:
    return WEIGHT_TYPES[arch].lower()


def quantize(source: Path, target: Path, *, arch: str) -> None:
    """Dynamic int8 quantisation (weights per channel, symmetric; activations uint8 at run time), as optimum's
    ORTQuantizer does it for AutoQuantizationConfig.<arch>(is_static=False)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    quantize_dynamic(
        model_input=str(source),
        model_output=str(target),
        op_types_to_quantize=list(IntegerOpsRegistry),
        per_channel=True,
        reduce_range=False,
        weight_type=getattr(QuantType, WEIGHT_TYPES[arch]),
        use_external_data_format=_uses_external_data(source),
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "EnableSubgraph": False},
    )


def convert_openvino(source: Path, target: Path) -> None:
    """OpenVINO IR (`.xml` graph + `.bin` weights) converted from the float32 ONNX model, weights kept float32
    (save_model would halve them to float16 by default)."""
    import openvino

    model = openvino.convert_model(str(source))
    openvino.save_model(model, str(target), compress_to_fp16=False)


def _uses_external_data(path: Path) -> bool:
    return (path.parent / external_data_name(path)).is_file()
