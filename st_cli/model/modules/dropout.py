"""Dropout on the sentence embedding: active while training, the identity when encoding (as in ST)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


@register(SPECS["Dropout"])
class Dropout(Module):
    config_keys: ClassVar[list[str]] = ["dropout"]

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = dropout
        self.dropout_layer = torch.nn.Dropout(dropout)

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        if not 0 <= kwargs.get("dropout", 0.2) < 1:
            raise ConfigValueError("dropout", f"must be a probability in [0, 1), got {kwargs['dropout']}")
        return kwargs, input_dim

    def forward(self, features: Features, **kwargs: Any) -> Features:
        features["sentence_embedding"] = self.dropout_layer(features["sentence_embedding"])
        return features
