"""WeightedLayerPooling: token embeddings as a weighted mean of the Transformer's hidden states, layer by layer."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError, StError
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


def _layer_count(num_hidden_layers: int, layer_start: int) -> int:
    """Hidden states pooled: the embeddings output plus every layer, from `layer_start` on."""
    return num_hidden_layers + 1 - layer_start


@register(SPECS["WeightedLayerPooling"])
class WeightedLayerPooling(Module):
    config_keys: ClassVar[list[str]] = ["embedding_dimension", "layer_start", "num_hidden_layers"]
    needs_all_layer_embeddings: ClassVar[bool] = True

    def __init__(
        self,
        embedding_dimension: int,
        num_hidden_layers: int = 12,
        layer_start: int = 4,
        layer_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dimension = embedding_dimension
        self.num_hidden_layers, self.layer_start = num_hidden_layers, layer_start
        count = _layer_count(num_hidden_layers, layer_start)
        if count <= 0 or layer_start < 0:
            raise ValueError(f"layer_start {layer_start} must lie in 0..num_hidden_layers ({num_hidden_layers})")
        # ST starts every layer at weight 1: a plain mean until trained.
        weights = [1.0] * count if layer_weights is None else [float(w) for w in layer_weights]
        if len(weights) != count:
            raise ValueError(
                f"layer_weights has {len(weights)} values; layers {layer_start}..{num_hidden_layers} need {count}"
            )
        self.layer_weights = torch.nn.Parameter(torch.tensor(weights, dtype=torch.float))

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        dimension = kwargs.get("embedding_dimension", input_dim)
        if dimension is None:
            raise ConfigValueError("embedding_dimension", "required: nothing before it gives a token embedding size")
        if input_dim is not None and dimension != input_dim:
            raise ConfigValueError("embedding_dimension", f"is {dimension} but the module before gives {input_dim}")
        layers, start = kwargs.get("num_hidden_layers", 12), kwargs.get("layer_start", 4)
        if layers <= 0 or not 0 <= start <= layers:
            raise ConfigValueError("layer_start", f"must lie in 0..num_hidden_layers ({layers}), got {start}")
        weights = kwargs.get("layer_weights")
        if weights is not None and len(weights) != _layer_count(layers, start):
            problem = (
                f"needs {_layer_count(layers, start)} values (num_hidden_layers + 1 - layer_start), got {len(weights)}"
            )
            raise ConfigValueError("layer_weights", problem)
        return {**kwargs, "embedding_dimension": dimension}, dimension

    def forward(self, features: Features, **kwargs: Any) -> Features:
        layers = features.get("all_layer_embeddings")
        if layers is None:
            # The Transformer's config.json lacks output_hidden_states: ST >= 5.4 pass the tokens through unchanged.
            return features
        stacked = torch.stack(list(layers))[self.layer_start :]  # type: ignore[arg-type]
        if stacked.shape[0] != self.layer_weights.shape[0]:
            raise StError(
                f"WeightedLayerPooling expects {self.num_hidden_layers + 1} hidden states "
                f"(num_hidden_layers {self.num_hidden_layers}), the Transformer gives {len(layers)}"
            )
        weights = self.layer_weights.view(-1, 1, 1, 1)
        features["token_embeddings"] = (weights * stacked).sum(dim=0) / self.layer_weights.sum()
        return features
