"""Dense: a linear layer and activation on the sentence embedding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from st_cli.errors import ModelFolderError
from st_cli.format.spec import (
    BASE_PREFIX,
    EMBEDDING_IO,
    LEGACY_PREFIX,
    MODULE_CONFIG,
    Config,
    Format,
    LoaderNote,
    ModuleView,
    Shapes,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    check_kind,
    tensor,
)

_DENSE_KEYS_LEGACY = frozenset(
    {"in_features", "out_features", "bias", "activation_function", "init_weight", "init_bias"}
)
_DENSE_KEYS_5X = _DENSE_KEYS_LEGACY | {"module_input_name", "module_output_name"}
_DENSE_KEYS_6 = _DENSE_KEYS_5X | {"use_residual"}
TEI_ACTIVATIONS = {"torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity"}


def _decode_dense(raw: Config, path: Path) -> Config:
    if raw.get("use_residual"):
        raise ModelFolderError(f"{path}: use_residual is not supported by st")
    for key in ("module_input_name", "module_output_name"):
        if raw.get(key, "sentence_embedding") != "sentence_embedding":
            raise ModelFolderError(f"{path}: {key}={raw[key]!r} is not supported by st")
    missing = [k for k in ("in_features", "out_features") if k not in raw]
    if missing:
        raise ModelFolderError(f"{path}: missing key {missing[0]!r}")
    return {
        "in_features": check_kind(raw["in_features"], "size", "in_features", path),
        "out_features": check_kind(raw["out_features"], "size", "out_features", path),
        "bias": check_kind(raw.get("bias", True), "bool", "bias", path),
        "activation": raw.get("activation_function", "torch.nn.modules.activation.Tanh"),
    }


def _encode_dense(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    dense = {
        "in_features": config["in_features"],
        "out_features": config["out_features"],
        "bias": config["bias"],
        "activation_function": config["activation"],
    }
    return {MODULE_CONFIG: dense | (EMBEDDING_IO if fmt == "st6" else {})}


def _dense_width(ctx: WidthContext) -> Widths:
    if "in_features" not in ctx.config:
        return Widths(ctx.incoming, None)
    return Widths(ctx.config["in_features"], ctx.config["out_features"])


def _dense_weight_problems(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    weight, bias = tensor(shapes, "linear.weight"), tensor(shapes, "linear.bias")
    expected = (config["out_features"], config["in_features"])
    problems = []
    if weight is None:
        problems.append("no tensor linear.weight")
    elif weight != expected:
        problems.append(f"linear.weight has shape {list(weight)}, the config says {list(expected)}")
    if config.get("bias") and bias != (config["out_features"],):
        found = f"shape {list(bias)}" if bias is not None else "no tensor"
        problems.append(f"linear.bias: {found}, the config asks for a bias")
    elif not config.get("bias") and bias is not None:
        problems.append("linear.bias present but the config says bias: false")
    return problems


def _dense_notes(m: ModuleView) -> Iterable[LoaderNote]:
    if m.weights and not m.weights.pickled:
        yield LoaderNote(
            "ST<=5.3", "partial", f"{m.path}: ST <= 3.0 need {m.path}/pytorch_model.bin (3.1+ read model.safetensors)"
        )
    raw, where = m.raw_config or {}, m.config_file
    missing = [k for k in ("in_features", "out_features", "bias") if k not in raw]
    if missing:
        yield LoaderNote("TEI", "no", f"{where}: TEI needs {', '.join(missing)}")
    activation = raw.get("activation_function")
    if activation is not None and (not isinstance(activation, str) or activation not in TEI_ACTIVATIONS):
        yield LoaderNote("TEI", "no", f"{where}: TEI supports only Tanh and Identity activations, not {activation}")
    if m.weights is not None and m.weights.files and m.weights.tensor("linear.weight") is None:
        yield LoaderNote("TEI", "no", f"{m.path}: TEI needs the tensor linear.weight")


SPEC = add_builtin(
    TypeSpec(
        name="Dense",
        module_file="dense",
        legacy_type=LEGACY_PREFIX + "Dense",
        st6_type=BASE_PREFIX + "dense.Dense",
        decode=_decode_dense,
        encode=_encode_dense,
        accepted_keys={"ST<=5.3": _DENSE_KEYS_LEGACY, "ST5.4-5.x": _DENSE_KEYS_5X, "ST>=6": _DENSE_KEYS_6},
        lenient_in=frozenset({"ST>=6"}),
        width=_dense_width,
        check_weights=_dense_weight_problems,
        loader_notes=_dense_notes,
        needs_config=True,
        needs_weights=True,
        tei=True,
        tei_needs_modules_json=True,
        weight_matrix=("in_features", "out_features"),
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "Pooling"},
            {"type": "Dense", "out_features": 8, "activation": "tanh"},
        ),
    )
)
