"""LSTM over the token embeddings; it packs by `sentence_lengths`, which only WordEmbeddings gives."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from st_cli.format.spec import (
    LEGACY_PREFIX,
    ST_PREFIX,
    Shapes,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    ints,
    keys_by_generation,
    pickle_notes,
    renaming_codec,
    shape_problems,
)

LSTM_CONFIG = "lstm_config.json"
_LSTM_KEYS = ("embedding_dimension", "hidden_dim", "num_layers", "dropout", "bidirectional")
_LSTM_LEGACY = {"embedding_dimension": "word_embedding_dimension"}
_LSTM_KINDS = {
    "embedding_dimension": "size", "hidden_dim": "size", "num_layers": "size", "dropout": "number",
    "bidirectional": "bool",
}  # fmt: skip
_decode_lstm, _encode_lstm = renaming_codec(
    LSTM_CONFIG, _LSTM_KEYS, ("embedding_dimension", "hidden_dim"), _LSTM_LEGACY, kinds=_LSTM_KINDS
)
_LAYER = re.compile(r"(?:^|\.)weight_ih_l(\d+)$")


def _lstm_width(ctx: WidthContext) -> Widths:
    dims = ints(ctx.config, "embedding_dimension", "hidden_dim")
    if dims is None:
        return Widths(ctx.incoming, None)
    return Widths(dims[0], dims[1] * (2 if ctx.config.get("bidirectional", True) else 1))


def _lstm_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    """Every tensor of torch's LSTM, per layer and direction; the layer count first (it can be any number)."""
    sizes = ints({"num_layers": 1, **config}, "embedding_dimension", "hidden_dim", "num_layers")
    if sizes is None:
        return []
    width, hidden, layers = sizes
    held = {int(m.group(1)) for name in shapes if (m := _LAYER.search(name))}
    if not held:
        return ["no tensor encoder.weight_ih_l0"]
    if max(held) + 1 != layers:
        return [f"num_layers is {layers}, the weights hold {max(held) + 1}"]
    directions = ("", "_reverse") if config.get("bidirectional", True) else ("",)
    expected: dict[str, tuple[int, ...]] = {}
    for layer in range(layers):
        inputs = width if layer == 0 else hidden * len(directions)
        for d in directions:
            expected[f"encoder.weight_ih_l{layer}{d}"] = (4 * hidden, inputs)
            expected[f"encoder.weight_hh_l{layer}{d}"] = (4 * hidden, hidden)
            expected[f"encoder.bias_ih_l{layer}{d}"] = (4 * hidden,)
            expected[f"encoder.bias_hh_l{layer}{d}"] = (4 * hidden,)
    extra = [f"{name} is in the weights but not in the config's LSTM" for name in sorted(set(shapes) - set(expected))]
    return shape_problems(shapes, expected) + extra[:1]


SPEC = add_builtin(
    TypeSpec(
        name="LSTM",
        module_file="lstm",
        legacy_type=LEGACY_PREFIX + "LSTM",
        st6_type=ST_PREFIX + "lstm.LSTM",
        config_files=(LSTM_CONFIG,),
        decode=_decode_lstm,
        encode=_encode_lstm,
        accepted_keys=keys_by_generation(_LSTM_KEYS, _LSTM_LEGACY),
        width=_lstm_width,
        check_weights=_lstm_weights,
        loader_notes=pickle_notes,
        needs_config=True,
        needs_weights=True,
        reads="token_embeddings",
        writes="token_embeddings",
        example=(
            # words from both halves of tests/texts.py: ST <= 5.7 fail on a batch without one known word
            {
                "type": "WordEmbeddings",
                "vocab": ["PADDING", "man", "food", "eating", "quick", "fox", "word", "paris"],
                "dimension": 8,
            },
            {"type": "LSTM", "hidden_dim": 4},
            # not max: over a text without known words, ST <= 4.1 give -1e9 where later ones give -inf
            {"type": "Pooling", "mode": "mean"},
        ),
    )
)
