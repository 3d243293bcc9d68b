"""SparseAutoEncoder: CSR (Contrastive Sparse Representation) on a dense embedding, a linear encoder to
`hidden_dim` latents of which the top `k` are kept (relu), ST >= 5.0."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_cli.errors import ModelFolderError
from st_cli.format.spec import (
    MODULE_CONFIG,
    SPARSE_LEGACY_PREFIX,
    SPARSE_PREFIX,
    SPARSE_SINCE,
    Config,
    Format,
    Shapes,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    shape_problems,
    tensor,
)

SAE_KEYS = ("input_dim", "hidden_dim", "k", "k_aux", "normalize", "dead_threshold")
_DEFAULTS = {"hidden_dim": 512, "k": 8, "k_aux": 512, "normalize": False, "dead_threshold": 30}


def _decode_sae(raw: Config, path: Path) -> Config:
    config = {**_DEFAULTS, **{k: raw[k] for k in SAE_KEYS if k in raw}}
    if "input_dim" not in config:
        raise ModelFolderError(f"{path}: missing key 'input_dim'")
    for key in ("input_dim", "hidden_dim", "k", "k_aux", "dead_threshold"):
        value = config[key]
        least = 0 if key in ("k_aux", "dead_threshold") else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ModelFolderError(f"{path}: {key} must be a positive integer, got {value!r}")
    if config["k"] > config["hidden_dim"]:
        raise ModelFolderError(f"{path}: k ({config['k']}) is larger than hidden_dim ({config['hidden_dim']})")
    config["normalize"] = bool(config["normalize"])
    return config


def _encode_sae(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    return {MODULE_CONFIG: {k: config[k] for k in SAE_KEYS}}


def _sae_width(ctx: WidthContext) -> Widths:
    if "input_dim" not in ctx.config:
        return Widths(ctx.incoming, None)
    return Widths(ctx.config["input_dim"], ctx.config["hidden_dim"])


# The encoder's matrix is tied to the decoder's; safetensors keeps one of the two names (ST's files: the decoder's).
ENCODER_KEYS = ("encoder.weight", "decoder.linear.weight")


def _sae_weight_problems(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    dim, hidden = config["input_dim"], config["hidden_dim"]
    encoder = next((k for k in ENCODER_KEYS if tensor(shapes, k) is not None), ENCODER_KEYS[0])
    return shape_problems(shapes, {encoder: (hidden, dim), "pre_bias": (dim,), "latent_bias": (hidden,)})


SPEC = add_builtin(
    TypeSpec(
        name="SparseAutoEncoder",
        module_file="sparse_auto_encoder",
        legacy_type=SPARSE_LEGACY_PREFIX + "SparseAutoEncoder",
        st6_type=SPARSE_PREFIX + "sparse_auto_encoder.SparseAutoEncoder",
        decode=_decode_sae,
        encode=_encode_sae,
        accepted_keys=dict.fromkeys(("ST<=5.3", "ST5.4-5.x", "ST>=6"), frozenset(SAE_KEYS)),  # type: ignore[arg-type]
        width=_sae_width,
        check_weights=_sae_weight_problems,
        needs_config=True,
        needs_weights=True,
        sparse=True,
        since=SPARSE_SINCE,
        weight_matrix=("input_dim", "hidden_dim"),
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "Pooling"},
            {"type": "SparseAutoEncoder", "hidden_dim": 64, "k": 8, "k_aux": 16},
        ),
    )
)
