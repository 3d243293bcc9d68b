"""Transformer: a transformers model (config.json, tokenizer, weights) giving token embeddings; its own
settings are in sentence_bert_config.json (or an older name)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from st_cli.errors import ModelFolderError
from st_cli.format.spec import (
    BASE_PREFIX,
    LEGACY_PREFIX,
    SBERT_CONFIG,
    SBERT_KEYS_5X,
    SBERT_KEYS_6,
    SBERT_KEYS_LEGACY,
    Config,
    Format,
    LoaderNote,
    ModuleView,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    hidden_size,
    version_tuple,
    vocab_width,
)

# The keyword arguments sentence_bert_config.json may hand to transformers, by the name ST <= 5.3 wrote them
# (and st keeps) and the name ST >= 5.4 reads too: tokenizer (or processor), AutoConfig, AutoModel.
LOAD_ARGS = {"tokenizer_args": "processor_kwargs", "config_args": "config_kwargs", "model_args": "model_kwargs"}
# The first sentence-transformers version whose Transformer takes each key from the config file (ST 2.7 has no
# config_args, 3.4 has; ST 2.2-2.7 hand model_args to AutoConfig too). tests/test_type_table.py runs each.
LOAD_ARGS_SINCE = {
    "tokenizer_args": "2.0", "model_args": "2.0", "config_args": "3.0",
    "processor_kwargs": "5.4", "model_kwargs": "5.4", "config_kwargs": "5.4",
}  # fmt: skip
# Where-to-find-it options: ST >= 2.7 overwrite them with the caller's own (ST 6.2: its hub kwargs), so a
# folder's values never reach transformers.
_WHERE_TO_FIND = frozenset({"cache_dir", "revision", "token", "subfolder", "local_files_only"})
# Options that would make transformers import and run code from the folder: refused, never dropped quietly.
RUNS_CODE = ("trust_remote_code",)
# model_args that choose a lower precision: st computes in float32 (inspect warns; the vectors differ by rounding).
DTYPE_KEYS = ("dtype", "torch_dtype")


def load_args(raw: Config, path: Path) -> Config:
    """tokenizer_args, config_args and model_args as transformers gets them (either spelling; empty ones left out)."""
    found: Config = {}
    for key, new_name in LOAD_ARGS.items():
        merged: dict[str, Any] = {}
        for spelling in (key, new_name):
            value = raw.get(spelling)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ModelFolderError(f"{path}: key {spelling!r} must be a JSON object, got {value!r}")
            for option in RUNS_CODE:
                if value.get(option):
                    message = f"{path}: key {spelling!r}: {option}={value[option]!r} is not supported by st"
                    raise ModelFolderError(f"{message} (it would run code from the folder)")
            merged |= {k: v for k, v in value.items() if k not in _WHERE_TO_FIND and k not in RUNS_CODE}
        if merged:
            found[key] = merged
    return found


def _decode_transformer(raw: Config, path: Path) -> Config:
    config: Config = {k: raw[k] for k in ("max_seq_length", "do_lower_case") if k in raw}
    if raw.get("transformer_task") == "fill-mask":  # ST >= 5.4's SPLADE: token embeddings are the MLM's logits
        config["transformer_task"] = "fill-mask"
    return config | load_args(raw, path)


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


def _transformer_notes(m: ModuleView) -> Iterable[LoaderNote]:
    raw, config, where = m.raw_config or {}, m.config or {}, m.config_file
    # Keys from ST 5.4 on are beyond every ST <= 5.3 (accepted_keys says so); these came within that range.
    for key in sorted(k for k in LOAD_ARGS_SINCE if k in raw and (2, 0) < version_tuple(LOAD_ARGS_SINCE[k]) < (5, 4)):
        reason = f"{where}: {key} is read from ST {LOAD_ARGS_SINCE[key]} on (older versions refuse the key)"
        yield LoaderNote("ST<=5.3", "partial", reason)
    limit, configured = config.get("tokenizer_args", {}).get("model_max_length"), raw.get("max_seq_length")
    if limit is not None and configured is not None and limit != configured:
        reason = (
            f"{where}: ST 3-5.3 truncate at max_seq_length {configured}; ST >= 5.4 (and st) at tokenizer_args' "
            f"model_max_length {limit}"
        )
        yield LoaderNote("ST<=5.3", "partial", reason)


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
        loader_notes=_transformer_notes,
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
