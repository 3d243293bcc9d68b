"""SparseStaticEmbedding: a fast tokenizer and one weight per token id (an IDF, say); a text's vector holds
the weight of every token it contains, at that token's id. The query route of an inference-free SPLADE
model (a Router whose document route is MLMTransformer + SpladePooling), ST >= 5.0."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_cli.format.spec import (
    MODULE_CONFIG,
    SPARSE_LEGACY_PREFIX,
    SPARSE_PREFIX,
    SPARSE_SINCE,
    Config,
    Format,
    Shapes,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    tensor,
)

WEIGHT_KEY = "weight"
_KEYS = frozenset({"frozen"})


def _decode_static(raw: Config, path: Path) -> Config:
    return {"frozen": bool(raw.get("frozen", False))}


def _encode_static(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    return {MODULE_CONFIG: {"frozen": bool(config.get("frozen", False))}}


def _static_width(ctx: WidthContext) -> Widths:
    shape = tensor(ctx.shapes, WEIGHT_KEY)
    return Widths(None, shape[0] if shape is not None and len(shape) == 1 else None)


def _weight_problems(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    shape = tensor(shapes, WEIGHT_KEY)
    if shape is None:
        return [f"no tensor {WEIGHT_KEY}"]
    return [] if len(shape) == 1 else [f"{WEIGHT_KEY} has shape {list(shape)}, expected one weight per token"]


SPEC = add_builtin(
    TypeSpec(
        name="SparseStaticEmbedding",
        module_file="sparse_static_embedding",
        legacy_type=SPARSE_LEGACY_PREFIX + "SparseStaticEmbedding",
        st6_type=SPARSE_PREFIX + "sparse_static_embedding.SparseStaticEmbedding",
        decode=_decode_static,
        encode=_encode_static,
        accepted_keys={"ST<=5.3": _KEYS, "ST5.4-5.x": _KEYS, "ST>=6": _KEYS},
        width=_static_width,
        check_weights=_weight_problems,
        input_module=True,
        needs_weights=True,
        required_files=("tokenizer.json",),
        reads="text",
        sparse=True,
        since=SPARSE_SINCE,
        path_keys=("tokenizer",),
        example=(
            {
                "type": "Router",
                "routes": {
                    "query": [{"type": "SparseStaticEmbedding", "tokenizer": "{tiny_bert_mlm}"}],
                    "document": [
                        {"type": "MLMTransformer", "model": "{tiny_bert_mlm}"},
                        {"type": "SpladePooling"},
                    ],
                },
                "default_route": "document",
            },
        ),
    )
)
