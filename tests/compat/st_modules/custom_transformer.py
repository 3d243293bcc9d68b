"""A Transformer subclass written against sentence-transformers whose output depends on an encode-time `task`.

modules.json names it with `"kwargs": ["task"]` (as the ST docs show), so `encode(texts, task=...)`
reaches this forward and no other module's. "clustering" squashes the token embeddings with tanh;
any other task (or none) leaves them as the transformer gives them.
"""

from typing import Optional

import torch
from sentence_transformers.sentence_transformer.modules import Transformer


class CustomTransformer(Transformer):
    def forward(self, features: dict[str, torch.Tensor], task: Optional[str] = None, **kwargs) -> dict[str, torch.Tensor]:  # noqa: UP045
        features = super().forward(features, **kwargs)
        if task == "clustering":
            features["token_embeddings"] = torch.tanh(features["token_embeddings"] * 4.0)
        return features
