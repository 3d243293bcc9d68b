"""SpladePooling: MLM logits (batch, tokens, vocabulary) to one sparse vector per text.

Each logit becomes log(1 + relu(x)) (log1p once more with `log1p_relu`), padding counts as 0, and the
text's tokens are pooled by max or sum (ST's SpladePooling). Both functions are monotone, so max pooling
takes the max of the raw logits first and transforms one row per text: the same numbers for a
vocabulary-wide fraction of the work.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError
from st_cli.format.specs import SPECS
from st_cli.format.specs.splade_pooling import SPLADE_ACTIVATIONS, SPLADE_POOLING
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


@register(SPECS["SpladePooling"])
class SpladePooling(Module):
    """`pooling_strategy`: max (SPLADE v2 and later) or sum; `activation_function`: relu or log1p_relu."""

    config_keys: ClassVar[list[str]] = ["pooling_strategy", "activation_function", "embedding_dimension"]

    def __init__(
        self, pooling_strategy: str = "max", activation_function: str = "relu", embedding_dimension: int | None = None
    ) -> None:
        super().__init__()
        _check(pooling_strategy, activation_function)
        self.pooling_strategy, self.activation_function = pooling_strategy, activation_function
        self.embedding_dimension = embedding_dimension

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        _check(kwargs.get("pooling_strategy", "max"), kwargs.get("activation_function", "relu"))
        declared = kwargs.get("embedding_dimension")
        if declared is not None and input_dim is not None and declared != input_dim:
            raise ConfigValueError("embedding_dimension", f"is {declared} but the module before gives {input_dim}")
        return kwargs, input_dim if declared is None else declared

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.log1p(torch.relu(x))
        return torch.log1p(x) if self.activation_function == "log1p_relu" else x

    def forward(self, features: Features, **kwargs: Any) -> Features:
        logits = features["token_embeddings"]
        mask = features["attention_mask"].unsqueeze(-1).to(logits.dtype)
        masked = logits * mask  # padding → 0, which relu keeps at 0, as in ST
        if self.pooling_strategy == "max":
            pooled = self._activate(masked.amax(dim=1))
        else:
            pooled = self._activate(masked).sum(dim=1)
        features["sentence_embedding"] = pooled
        return features

    def get_sentence_embedding_dimension(self) -> int | None:
        return self.embedding_dimension


def _check(pooling: Any, activation: Any) -> None:
    if pooling not in SPLADE_POOLING:
        raise ConfigValueError("pooling_strategy", f"expected one of {', '.join(SPLADE_POOLING)}, got {pooling!r}")
    if activation not in SPLADE_ACTIVATIONS:
        choices = ", ".join(SPLADE_ACTIVATIONS)
        raise ConfigValueError("activation_function", f"expected one of {choices}, got {activation!r}")
