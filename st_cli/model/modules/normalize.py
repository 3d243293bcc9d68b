"""Normalize: L2-normalise the sentence embedding."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register

# torch's floor for the norm (1e-12) is 0 in float16, where a zero vector (a static model's empty text)
# would become 0/0 = NaN (as in ST 6.2); model2vec, which writes those folders, gives zeros. float16's
# smallest positive value keeps every nonzero norm as it is and a zero vector zero.
HALF_NORM_FLOOR = 2.0**-24


def normalize(x: torch.Tensor) -> torch.Tensor:
    """F.normalize(x, p=2, dim=-1), but a zero row stays zero in float16 too."""
    return F.normalize(x, p=2, dim=-1, eps=HALF_NORM_FLOOR if x.dtype == torch.float16 else 1e-12)


@register(SPECS["Normalize"])
class Normalize(Module):
    def forward(self, features: Features, **kwargs: Any) -> Features:
        features["sentence_embedding"] = normalize(features["sentence_embedding"])
        return features
