"""Transformer: a transformers model (config.json, tokenizer, weights) giving token embeddings; its own
settings are in sentence_bert_config.json (or an older name)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_cli.format.spec import (
    BASE_PREFIX,
    LEGACY_PREFIX,
    SBERT_CONFIG,
    SBERT_KEYS_5X,
    SBERT_KEYS_6,
    SBERT_KEYS_LEGACY,
    Config,
    Format,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    hidden_size,
    vocab_width,
)


def _decode_transformer(raw: Config, path: Path) -> Config:
    config: Config = {k: raw[k] for k in ("max_seq_length", "do_lower_case") if k in raw}
    if raw.get("transformer_task") == "fill-mask":  # ST >= 5.4's SPLADE: token embeddings are the MLM's logits
        config["transformer_task"] = "fill-mask"
    return config


def _encode_transformer(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    if fmt == "portable":
        return {SBERT_CONFIG: {"max_seq_length": config["max_seq_length"], "do_lower_case": False}}
    return {
        SBERT_CONFIG: {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings",
        }
    }


def _transformer_width(ctx: WidthContext) -> Widths:
    if ctx.config.get("transformer_task") == "fill-mask":
        return vocab_width(ctx)
    return Widths(None, hidden_size(ctx.hf_config))


SPEC = add_builtin(
    TypeSpec(
        name="Transformer",
        module_file="transformer",
        legacy_type=LEGACY_PREFIX + "Transformer",
        st6_type=BASE_PREFIX + "transformer.Transformer",
        # Older names for the Transformer's config, tried in this order.
        config_files=(
            SBERT_CONFIG,
            "sentence_roberta_config.json",
            "sentence_distilbert_config.json",
            "sentence_camembert_config.json",
            "sentence_albert_config.json",
            "sentence_xlm-roberta_config.json",
            "sentence_xlnet_config.json",
        ),
        decode=_decode_transformer,
        encode=_encode_transformer,
        accepted_keys={"ST<=5.3": SBERT_KEYS_LEGACY, "ST5.4-5.x": SBERT_KEYS_5X, "ST>=6": SBERT_KEYS_6},
        width=_transformer_width,
        input_module=True,
        save_in_root=True,
        hf_model=True,
        needs_weights=True,
        reads="text",
        writes="token_embeddings",
        tei=True,
        path_keys=("model",),
        example=({"type": "Transformer", "model": "{tiny_bert}"}, {"type": "Pooling", "mode": "mean"}),
    )
)
