"""The module type table: every built-in row, one file per type, named like its torch file in
`st_cli/model/modules/`. Importing this package fills `SPECS` (in the order of the imports below,
which is the order `st inspect` and the tests see) and is how every consumer reads the table.

A new built-in type: its file here, its import line below (see `st_cli/format/spec.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from st_cli.format.spec import SPECS, Config, TypeSpec, hidden_size, known_names, spec_for_type_string

# Imported for their rows, each of which adds itself to SPECS: this order is the table's (keep it unsorted).
# isort: off
from st_cli.format.specs import (  # noqa: F401
    transformer,
    pooling,
    dense,
    normalize,
    weighted_layer_pooling,
    layer_norm,
    dropout,
    cnn,
    lstm,
    word_embeddings,
    word_weights,
    bow,
    static_embedding,
    router,
    clip_model,
    mlm_transformer,
    splade_pooling,
    sparse_static_embedding,
    sparse_auto_encoder,
)

# isort: on

__all__ = ["SPECS", "known_names", "plain_stack", "spec_for_type_string"]


def plain_stack(hf_config: Mapping[str, Any]) -> list[tuple[TypeSpec, Config | None]]:
    """What sentence-transformers builds for a folder with no modules.json: Transformer + Pooling.

    Pooling is mean, except lasttoken for a causal LM that has not been made bidirectional
    (ST 6.2's `_load_default_modules`). None: the module reads its own files from the root.
    """
    architectures = hf_config.get("architectures") or [""]
    causal = str(architectures[0]).endswith("ForCausalLM") and hf_config.get("is_causal", True) is not False
    mean_or_last = {"dimension": hidden_size(hf_config), "mode": ["lasttoken" if causal else "mean"]}
    return [(SPECS["Transformer"], None), (SPECS["Pooling"], mean_or_last | {"include_prompt": True})]
