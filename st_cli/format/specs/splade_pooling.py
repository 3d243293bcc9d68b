"""SpladePooling: MLM logits to one sparse vector over the vocabulary, log(1 + relu(logits)) (twice with
`log1p_relu`) pooled by max or sum over the text's tokens (ST >= 5.0)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_cli.errors import ModelFolderError
from st_cli.format.spec import (
    MODULE_CONFIG,
    SPARSE_LEGACY_PREFIX,
    SPARSE_PREFIX,
    SPARSE_SINCE,
    Config,
    Format,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
)

SPLADE_POOLING = ("max", "sum")
SPLADE_ACTIVATIONS = ("relu", "log1p_relu")
_KEYS_LEGACY = frozenset({"pooling_strategy", "activation_function", "word_embedding_dimension"})
_KEYS_NEW = _KEYS_LEGACY | {"embedding_dimension"}


def _decode_splade(raw: Config, path: Path) -> Config:
    pooling = raw.get("pooling_strategy", "max")
    activation = raw.get("activation_function", "relu")
    if pooling not in SPLADE_POOLING:
        raise ModelFolderError(f"{path}: pooling_strategy must be one of {', '.join(SPLADE_POOLING)}, got {pooling!r}")
    if activation not in SPLADE_ACTIVATIONS:
        choices = ", ".join(SPLADE_ACTIVATIONS)
        raise ModelFolderError(f"{path}: activation_function must be one of {choices}, got {activation!r}")
    dimension = raw.get("embedding_dimension", raw.get("word_embedding_dimension"))
    if dimension is not None and (not isinstance(dimension, int) or isinstance(dimension, bool) or dimension <= 0):
        raise ModelFolderError(f"{path}: embedding_dimension must be a positive integer or null, got {dimension!r}")
    return {"pooling_strategy": pooling, "activation_function": activation, "embedding_dimension": dimension}


def _encode_splade(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    # ST 5.0-5.3 spell the width word_embedding_dimension; later versions accept both.
    width_key = "embedding_dimension" if fmt == "st6" else "word_embedding_dimension"
    return {
        MODULE_CONFIG: {
            "pooling_strategy": config["pooling_strategy"],
            "activation_function": config["activation_function"],
            width_key: config.get("embedding_dimension"),
        }
    }


def _splade_width(ctx: WidthContext) -> Widths:
    declared = ctx.config.get("embedding_dimension")
    return Widths(ctx.incoming, declared if isinstance(declared, int) else ctx.incoming)


SPEC = add_builtin(
    TypeSpec(
        name="SpladePooling",
        module_file="splade_pooling",
        legacy_type=SPARSE_LEGACY_PREFIX + "SpladePooling",
        st6_type=SPARSE_PREFIX + "splade_pooling.SpladePooling",
        decode=_decode_splade,
        encode=_encode_splade,
        accepted_keys={"ST<=5.3": _KEYS_LEGACY, "ST5.4-5.x": _KEYS_NEW, "ST>=6": _KEYS_NEW},
        width=_splade_width,
        reads="token_embeddings",
        sparse=True,
        since=SPARSE_SINCE,
        example=(
            {"type": "MLMTransformer", "model": "{tiny_bert_mlm}"},
            {"type": "SpladePooling", "pooling_strategy": "sum"},
        ),
    )
)
