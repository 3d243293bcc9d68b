"""LayerNorm on the sentence embedding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from st_cli.format.spec import (
    GENERATIONS,
    LEGACY_PREFIX,
    MODULE_CONFIG,
    ST_PREFIX,
    Shapes,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    ints,
    pickle_notes,
    renaming_codec,
    shape_problems,
)

_decode_layer_norm, _encode_layer_norm = renaming_codec(MODULE_CONFIG, ("dimension",), ("dimension",))


def _layer_norm_width(ctx: WidthContext) -> Widths:
    dim = ctx.config.get("dimension")
    return Widths(dim, dim) if isinstance(dim, int) else Widths(ctx.incoming, None)


def _layer_norm_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    dim = ints(config, "dimension")
    return shape_problems(shapes, {"norm.weight": (dim[0],), "norm.bias": (dim[0],)}) if dim else []


SPEC = add_builtin(
    TypeSpec(
        name="LayerNorm",
        module_file="layer_norm",
        legacy_type=LEGACY_PREFIX + "LayerNorm",
        st6_type=ST_PREFIX + "layer_norm.LayerNorm",
        decode=_decode_layer_norm,
        encode=_encode_layer_norm,
        accepted_keys=dict.fromkeys(GENERATIONS, frozenset({"dimension"})),
        width=_layer_norm_width,
        check_weights=_layer_norm_weights,
        loader_notes=pickle_notes,
        needs_config=True,
        needs_weights=True,
        example=({"type": "Transformer", "model": "{tiny_bert}"}, {"type": "Pooling"}, {"type": "LayerNorm"}),
    )
)
