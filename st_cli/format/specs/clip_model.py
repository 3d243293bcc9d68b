"""CLIPModel: a transformers CLIP model; st encodes texts with it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from st_cli.format.spec import (
    LEGACY_PREFIX,
    SBERT_CONFIG,
    SBERT_KEYS_5X,
    SBERT_KEYS_6,
    ST_PREFIX,
    Config,
    Format,
    LoaderNote,
    ModuleView,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    tensor,
)

CLIP_PROCESSOR_CONFIG = "processor_config.json"
CLIP_PREPROCESSOR_CONFIG = "preprocessor_config.json"
CLIP_MAX_SEQ_LENGTH = 77  # every CLIP tokenizer's model_max_length
_CLIP_SBERT_6 = {
    "transformer_task": "feature-extraction",
    "modality_config": {
        "text": {"method": "get_text_features", "method_output_name": "pooler_output"},
        "image": {"method": "get_image_features", "method_output_name": "pooler_output"},
    },
    "module_output_name": "sentence_embedding",
}


def _decode_clip(raw: Config, path: Path) -> Config:
    # ST <= 4.x write no config; ST >= 5 write how to call the model, which is fixed for CLIP.
    return {k: raw[k] for k in ("max_seq_length",) if k in raw}


def _encode_clip(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    # ST >= 5 read max_seq_length from it (ST <= 4 ignore the file and cut at the tokenizer's 77).
    length = {"max_seq_length": config["max_seq_length"]} if config.get("max_seq_length") else {}
    return {SBERT_CONFIG: (dict(_CLIP_SBERT_6) if fmt == "st6" else {}) | length}


def _clip_width(ctx: WidthContext) -> Widths:
    shape = tensor(ctx.shapes, "text_projection.weight")
    return Widths(None, shape[0] if shape else None)


def _clip_notes(m: ModuleView) -> Iterable[LoaderNote]:
    yield LoaderNote("ST<=5.3", "partial", f"{m.path or '.'}: ST < 4 do not truncate CLIP texts: over 77 tokens fails")
    length = (m.raw_config or {}).get("max_seq_length", CLIP_MAX_SEQ_LENGTH)
    if length != CLIP_MAX_SEQ_LENGTH:
        yield LoaderNote(
            "ST<=5.3", "partial", f"{m.config_file}: ST <= 4 ignore max_seq_length {length} (they cut at 77)"
        )
    yield LoaderNote("ST5.4-5.x", "partial", f"{m.path or '.'}: ST 5.x log that CLIPModel is deprecated (it loads)")


SPEC = add_builtin(
    TypeSpec(
        name="CLIPModel",
        module_file="clip_model",
        legacy_type=LEGACY_PREFIX + "CLIPModel",
        st6_type=ST_PREFIX + "clip_model.CLIPModel",
        config_files=(SBERT_CONFIG,),
        decode=_decode_clip,
        encode=_encode_clip,
        # ST <= 5.3 never read a config for it; later ones build a Transformer from it.
        accepted_keys={"ST5.4-5.x": SBERT_KEYS_5X, "ST>=6": SBERT_KEYS_6},
        width=_clip_width,
        loader_notes=_clip_notes,
        fails_in={  # the table's texts include long ones
            "2": "does not truncate CLIP texts to 77 tokens (longer texts fail)",
            "3": "does not truncate CLIP texts to 77 tokens (longer texts fail)",
        },
        input_module=True,
        save_in_root=True,
        needs_weights=True,
        reads="text",
        path_keys=("model", "processor_name"),
        example=({"type": "CLIPModel", "model": "{tiny_clip}"},),
    )
)
