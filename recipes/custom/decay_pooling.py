"""DecayMeanPooling: a mean over the tokens in which token t weighs `decay ** t`, so the start of a text counts most.

It has no weights, so it needs no training. `dimension` is filled in by st from the module before.
"""

from typing import Any, ClassVar

import torch
from torch import Tensor

from st_cli import Module


class DecayMeanPooling(Module):
    config_keys: ClassVar[list[str]] = ["dimension", "decay"]

    def __init__(self, dimension: int, decay: float = 0.9) -> None:
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.dimension, self.decay = dimension, decay

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    def forward(self, features: dict[str, Tensor], **kwargs: Any) -> dict[str, Tensor]:
        tokens, mask = features["token_embeddings"], features["attention_mask"]
        positions = torch.arange(tokens.shape[1], device=tokens.device, dtype=tokens.dtype)
        weights = (self.decay**positions).unsqueeze(0) * mask.to(tokens.dtype)  # (batch, seq)
        total = (tokens * weights.unsqueeze(-1)).sum(dim=1)
        features["sentence_embedding"] = total / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)
        return features
