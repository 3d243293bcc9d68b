"""TokenLinear: a linear layer on every token embedding, for a stack like Transformer → TokenLinear → Pooling.

`in_features` is left out of the recipe: st fills it from the module before (384 for MiniLM), and
`out_features` becomes the width Pooling sees. The weights start random, so `st build` warns that
the model needs fine-tuning before its embeddings mean anything.
"""

from typing import Any, ClassVar

import torch
from torch import Tensor

from st_cli import Module


class TokenLinear(Module):
    config_keys: ClassVar[list[str]] = ["in_features", "out_features", "bias"]

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.linear = torch.nn.Linear(in_features, out_features, bias=bias)

    def forward(self, features: dict[str, Tensor], **kwargs: Any) -> dict[str, Tensor]:
        features["token_embeddings"] = self.linear(features["token_embeddings"])
        return features
