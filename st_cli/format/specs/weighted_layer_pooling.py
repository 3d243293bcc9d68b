"""WeightedLayerPooling: a weighted mean of the Transformer's hidden states (it needs `all_layer_embeddings`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from st_cli.format.spec import (
    LEGACY_PREFIX,
    MODULE_CONFIG,
    ST_PREFIX,
    Shapes,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    keys_by_generation,
    pickle_notes,
    renaming_codec,
    shape_problems,
)

_WLP_KEYS = ("embedding_dimension", "layer_start", "num_hidden_layers")
_WLP_LEGACY = {"embedding_dimension": "word_embedding_dimension"}
_decode_wlp, _encode_wlp = renaming_codec(MODULE_CONFIG, _WLP_KEYS, ("embedding_dimension",), _WLP_LEGACY)


def _wlp_width(ctx: WidthContext) -> Widths:
    dim = ctx.config.get("embedding_dimension")
    return Widths(dim, dim) if isinstance(dim, int) else Widths(ctx.incoming, None)


def _wlp_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    layers, start = config.get("num_hidden_layers", 12), config.get("layer_start", 4)
    if not isinstance(layers, int) or not isinstance(start, int):
        return ["num_hidden_layers and layer_start must be integers"]
    return shape_problems(shapes, {"layer_weights": (layers + 1 - start,)})


SPEC = add_builtin(
    TypeSpec(
        name="WeightedLayerPooling",
        module_file="weighted_layer_pooling",
        legacy_type=LEGACY_PREFIX + "WeightedLayerPooling",
        st6_type=ST_PREFIX + "weighted_layer_pooling.WeightedLayerPooling",
        decode=_decode_wlp,
        encode=_encode_wlp,
        accepted_keys=keys_by_generation(_WLP_KEYS, _WLP_LEGACY, ["layer_weights"]),
        width=_wlp_width,
        check_weights=_wlp_weights,
        loader_notes=pickle_notes,
        needs_config=True,
        needs_weights=True,
        reads="token_embeddings",
        writes="token_embeddings",
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "WeightedLayerPooling", "num_hidden_layers": 2, "layer_start": 0, "layer_weights": [0.5, 1, 2]},
            {"type": "Pooling"},
        ),
    )
)
