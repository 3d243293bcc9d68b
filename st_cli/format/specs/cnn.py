"""CNN over the token embeddings: one Conv1d per kernel size, outputs concatenated."""

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

CNN_CONFIG = "cnn_config.json"
DEFAULT_KERNEL_SIZES = (1, 3, 5)  # ST's, when the config names none
_CNN_KEYS = ("in_embedding_dimension", "out_channels", "kernel_sizes", "stride_sizes")
_CNN_LEGACY = {"in_embedding_dimension": "in_word_embedding_dimension"}


def _cnn_default_strides(config: Mapping[str, Any]) -> set[str]:
    """ST <= 5.3 never wrote stride_sizes (their constructors take it); leave it out when it is all ones."""
    strides = config.get("stride_sizes")
    return {"stride_sizes"} if strides is None or all(s == 1 for s in strides) else set()


_CNN_KINDS = {
    "in_embedding_dimension": "size", "out_channels": "size", "kernel_sizes": "sizes", "stride_sizes": "sizes",
}  # fmt: skip
_decode_cnn, _encode_cnn = renaming_codec(
    CNN_CONFIG, _CNN_KEYS, ("in_embedding_dimension",), _CNN_LEGACY, _cnn_default_strides, _CNN_KINDS
)
_CONV = re.compile(r"(?:^|\.)convs\.(\d+)\.weight$")


def _cnn_width(ctx: WidthContext) -> Widths:
    dims, kernels = ints(ctx.config, "in_embedding_dimension", "out_channels"), ctx.config.get("kernel_sizes")
    if dims is None or not isinstance(kernels, list):
        return Widths(ctx.incoming, None)
    return Widths(dims[0], dims[1] * len(kernels))


def _cnn_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    dims = ints({"out_channels": 256, **config}, "in_embedding_dimension", "out_channels")
    kernels = config.get("kernel_sizes", list(DEFAULT_KERNEL_SIZES))
    if dims is None or not isinstance(kernels, list):
        return []
    n_in, n_out = dims
    # The convolution count first: a config can list any number of kernels.
    held = {int(m.group(1)) for name in shapes if (m := _CONV.search(name))}
    if len(kernels) != (max(held) + 1 if held else 0):
        return [f"kernel_sizes lists {len(kernels)} convolutions, the weights hold {max(held) + 1 if held else 0}"]
    expected = {f"convs.{i}.weight": (n_out, n_in, k) for i, k in enumerate(kernels)}
    return shape_problems(shapes, expected | {f"convs.{i}.bias": (n_out,) for i in range(len(kernels))})


SPEC = add_builtin(
    TypeSpec(
        name="CNN",
        module_file="cnn",
        legacy_type=LEGACY_PREFIX + "CNN",
        st6_type=ST_PREFIX + "cnn.CNN",
        config_files=(CNN_CONFIG,),
        decode=_decode_cnn,
        encode=_encode_cnn,
        accepted_keys=keys_by_generation(_CNN_KEYS, _CNN_LEGACY),
        width=_cnn_width,
        check_weights=_cnn_weights,
        loader_notes=pickle_notes,
        needs_config=True,
        needs_weights=True,
        reads="token_embeddings",
        writes="token_embeddings",
        batch_dependent="its convolutions read the padding tokens, so a text's vector depends on its batch (in ST too)",
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "CNN", "out_channels": 6, "kernel_sizes": [1, 3, 5]},
            {"type": "Pooling", "mode": ["mean", "max"]},
        ),
    )
)
