"""Dropout on the sentence embedding: nothing at inference, but loaders read its config.json."""

from __future__ import annotations

from st_cli.format.spec import (
    GENERATIONS,
    LEGACY_PREFIX,
    MODULE_CONFIG,
    ST_PREFIX,
    TypeSpec,
    add_builtin,
    pass_through,
    renaming_codec,
)

_decode_dropout, _encode_dropout = renaming_codec(MODULE_CONFIG, ("dropout",), ())

SPEC = add_builtin(
    TypeSpec(
        name="Dropout",
        module_file="dropout",
        legacy_type=LEGACY_PREFIX + "Dropout",
        st6_type=ST_PREFIX + "dropout.Dropout",
        decode=_decode_dropout,
        encode=_encode_dropout,
        accepted_keys=dict.fromkeys(GENERATIONS, frozenset({"dropout"})),
        width=pass_through,
        needs_config=True,
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "Pooling"},
            {"type": "Dropout", "dropout": 0.3},
        ),
    )
)
