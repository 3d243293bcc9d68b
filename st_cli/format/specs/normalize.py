"""Normalize: the sentence embedding scaled to unit length; no weights, and no config before ST 5.4."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from st_cli.format.spec import (
    BASE_PREFIX,
    EMBEDDING_IO,
    LEGACY_PREFIX,
    MODULE_CONFIG,
    ST_PREFIX,
    Config,
    Format,
    TypeSpec,
    add_builtin,
    pass_through,
)


def _encode_normalize(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    return {MODULE_CONFIG: dict(EMBEDDING_IO) if fmt == "st6" else None}


SPEC = add_builtin(
    TypeSpec(
        name="Normalize",
        module_file="normalize",
        legacy_type=LEGACY_PREFIX + "Normalize",
        st6_type=BASE_PREFIX + "normalize.Normalize",
        st6_type_since="6.0",
        read_types=(ST_PREFIX + "normalize.Normalize",),
        decode=lambda raw, path: {},
        encode=_encode_normalize,
        width=pass_through,
        needs_folder=False,  # ST never reads it (all-MiniLM-L6-v2 has none)
        normalizes=True,
        tei=True,
        example=({"type": "Transformer", "model": "{tiny_bert}"}, {"type": "Pooling"}, {"type": "Normalize"}),
    )
)
