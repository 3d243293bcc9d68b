"""LayerNorm: layer normalisation of the sentence embedding (learned scale and shift)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


@register(SPECS["LayerNorm"])
class LayerNorm(Module):
    config_keys: ClassVar[list[str]] = ["dimension"]

    def __init__(self, dimension: int) -> None:
        super().__init__()
        self.dimension = dimension
        self.norm = torch.nn.LayerNorm(dimension)

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        dimension = kwargs.get("dimension", input_dim)
        if dimension is None:
            raise ConfigValueError("dimension", "required: nothing before LayerNorm gives an embedding size")
        if input_dim is not None and dimension != input_dim:
            raise ConfigValueError("dimension", f"is {dimension} but the module before gives {input_dim}")
        return {**kwargs, "dimension": dimension}, dimension

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    def forward(self, features: Features, **kwargs: Any) -> Features:
        features["sentence_embedding"] = self.norm(features["sentence_embedding"])
        return features
