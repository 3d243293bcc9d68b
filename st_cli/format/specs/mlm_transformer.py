"""MLMTransformer: a transformers masked-language model (BertForMaskedLM, …) whose token embeddings are its
vocabulary logits, the first module of a SPLADE model (ST >= 5.0). ST >= 5.4 also save the same thing as a
Transformer with `transformer_task: fill-mask` (the Transformer spec reads that); st writes MLMTransformer,
which every ST from 5.0 reads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_cli.format.spec import (
    SBERT_CONFIG,
    SBERT_KEYS_5X,
    SBERT_KEYS_6,
    SBERT_KEYS_LEGACY,
    SPARSE_LEGACY_PREFIX,
    SPARSE_PREFIX,
    SPARSE_SINCE,
    Config,
    Format,
    TypeSpec,
    add_builtin,
    vocab_width,
)
from st_cli.format.specs.transformer import load_args

# What ST >= 5.4 write for a fill-mask transformer: its logits are the token embeddings.
FILL_MASK_SBERT = {
    "transformer_task": "fill-mask",
    "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
    "module_output_name": "token_embeddings",
}


def _decode_mlm(raw: Config, path: Path) -> Config:
    return {k: raw[k] for k in ("max_seq_length", "do_lower_case") if k in raw} | load_args(raw, path)


def _encode_mlm(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    if fmt == "portable":  # ST 5.0-5.3's MLMTransformer reads these keys only; the task is implied by the type
        return {SBERT_CONFIG: {"max_seq_length": config["max_seq_length"], "do_lower_case": False}}
    return {SBERT_CONFIG: {**FILL_MASK_SBERT, "max_seq_length": config["max_seq_length"]}}


SPEC = add_builtin(
    TypeSpec(
        name="MLMTransformer",
        module_file="mlm_transformer",
        legacy_type=SPARSE_LEGACY_PREFIX + "MLMTransformer",
        st6_type=SPARSE_PREFIX + "mlm_transformer.MLMTransformer",
        config_files=(SBERT_CONFIG,),
        decode=_decode_mlm,
        encode=_encode_mlm,
        accepted_keys={"ST<=5.3": SBERT_KEYS_LEGACY, "ST5.4-5.x": SBERT_KEYS_5X, "ST>=6": SBERT_KEYS_6},
        width=vocab_width,
        input_module=True,
        save_in_root=True,
        hf_model=True,
        needs_weights=True,
        reads="text",
        writes="token_embeddings",
        since=SPARSE_SINCE,
        path_keys=("model",),
        example=({"type": "MLMTransformer", "model": "{tiny_bert_mlm}"}, {"type": "SpladePooling"}),
    )
)
