"""Normalize: L2-normalise the sentence embedding."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F  # noqa: N812

from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


@register(SPECS["Normalize"])
class Normalize(Module):
    def forward(self, features: Features, **kwargs: Any) -> Features:
        features["sentence_embedding"] = F.normalize(features["sentence_embedding"], p=2, dim=-1)
        return features
