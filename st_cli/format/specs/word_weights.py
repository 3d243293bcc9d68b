"""WordWeights: a weight per word, applied to the token embeddings (every version rebuilds it from config.json)."""

from __future__ import annotations

from pathlib import Path

from st_cli.format.spec import (
    EXAMPLE_VOCAB,
    EXAMPLE_WORD_WEIGHTS,
    GENERATIONS,
    LEGACY_PREFIX,
    ST_PREFIX,
    WORD_WEIGHTS_KEYS,
    Config,
    TypeSpec,
    add_builtin,
    pass_through,
    word_weights_fields,
)


def _decode_word_weights(raw: Config, path: Path) -> Config:
    return word_weights_fields(raw, path, weights_required=True)


SPEC = add_builtin(
    TypeSpec(
        name="WordWeights",
        module_file="word_weights",
        legacy_type=LEGACY_PREFIX + "WordWeights",
        st6_type=ST_PREFIX + "word_weights.WordWeights",
        decode=_decode_word_weights,
        accepted_keys=dict.fromkeys(GENERATIONS, WORD_WEIGHTS_KEYS),
        width=pass_through,
        needs_config=True,  # every version rebuilds the weights from config.json; ST >= 5 also write (unread) weights
        reads="token_embeddings",
        writes="token_embeddings",
        example=(
            {"type": "WordEmbeddings", "vocab": EXAMPLE_VOCAB, "dimension": 8},
            {"type": "WordWeights", "vocab": EXAMPLE_VOCAB, **EXAMPLE_WORD_WEIGHTS},
            {"type": "Pooling"},
        ),
    )
)
