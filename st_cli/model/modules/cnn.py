"""CNN: one 1-d convolution per kernel size over the token embeddings, their outputs concatenated."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError
from st_cli.format.specs import SPECS
from st_cli.format.specs.cnn import DEFAULT_KERNEL_SIZES
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


@register(SPECS["CNN"])
class CNN(Module):
    config_keys: ClassVar[list[str]] = ["in_embedding_dimension", "out_channels", "kernel_sizes", "stride_sizes"]

    def __init__(
        self,
        in_embedding_dimension: int,
        out_channels: int = 256,
        kernel_sizes: list[int] | None = None,
        stride_sizes: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.in_embedding_dimension, self.out_channels = in_embedding_dimension, out_channels
        self.kernel_sizes = list(kernel_sizes if kernel_sizes is not None else DEFAULT_KERNEL_SIZES)
        self.stride_sizes = list(stride_sizes if stride_sizes is not None else [1] * len(self.kernel_sizes))
        # ST pads (k - 1) // 2 on each side, so odd kernels keep the sequence length.
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv1d(in_embedding_dimension, out_channels, kernel_size=k, stride=s, padding=(k - 1) // 2)
            for k, s in zip(self.kernel_sizes, self.stride_sizes, strict=False)
        )
        self.untrained = True  # until load_weights replaces the random init

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        dimension = kwargs.get("in_embedding_dimension", input_dim)
        if dimension is None:
            raise ConfigValueError(
                "in_embedding_dimension", "required: nothing before CNN gives a token embedding size"
            )
        if input_dim is not None and dimension != input_dim:
            raise ConfigValueError("in_embedding_dimension", f"is {dimension} but the module before gives {input_dim}")
        kernels = kwargs.get("kernel_sizes", list(DEFAULT_KERNEL_SIZES))
        if not kernels or any(k <= 0 or k % 2 == 0 for k in kernels):
            # An even kernel shortens the sequence by one: the outputs no longer concatenate or fit the mask.
            raise ConfigValueError("kernel_sizes", f"must be odd positive sizes (e.g. [1, 3, 5]), got {kernels}")
        strides = kwargs.get("stride_sizes")
        if strides is not None and (len(strides) != len(kernels) or any(s != 1 for s in strides)):
            raise ConfigValueError(
                "stride_sizes", "only strides of 1 (one per kernel) keep the tokens aligned with the mask"
            )
        if kwargs.get("out_channels", 256) <= 0:
            raise ConfigValueError("out_channels", f"must be a positive integer, got {kwargs['out_channels']}")
        return {**kwargs, "in_embedding_dimension": dimension}, kwargs.get("out_channels", 256) * len(kernels)

    def forward(self, features: Features, **kwargs: Any) -> Features:
        channels_first = features["token_embeddings"].transpose(1, -1)
        out = torch.cat([conv(channels_first) for conv in self.convs], dim=1)
        features["token_embeddings"] = out.transpose(1, -1)
        return features

    def load_weights(self, folder: Any) -> None:
        super().load_weights(folder)
        self.untrained = False
