"""LSTM over the token embeddings (bidirectional by default), packed by each text's length."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError, StError
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


@register(SPECS["LSTM"])
class LSTM(Module):
    config_keys: ClassVar[list[str]] = ["embedding_dimension", "hidden_dim", "num_layers", "dropout", "bidirectional"]

    def __init__(
        self,
        embedding_dimension: int,
        hidden_dim: int,
        num_layers: int = 1,
        dropout: float = 0,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        self.embedding_dimension, self.hidden_dim, self.num_layers = embedding_dimension, hidden_dim, num_layers
        self.dropout, self.bidirectional = dropout, bidirectional
        self.encoder = torch.nn.LSTM(
            embedding_dimension,
            hidden_dim,
            num_layers=num_layers,
            dropout=dropout,
            bidirectional=bidirectional,
            batch_first=True,
        )
        self.untrained = True  # until load_weights replaces the random init

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        dimension = kwargs.get("embedding_dimension", input_dim)
        if dimension is None:
            raise ConfigValueError("embedding_dimension", "required: nothing before LSTM gives a token embedding size")
        if input_dim is not None and dimension != input_dim:
            raise ConfigValueError("embedding_dimension", f"is {dimension} but the module before gives {input_dim}")
        for key in ("hidden_dim", "num_layers"):
            if kwargs.get(key, 1) <= 0:
                raise ConfigValueError(key, f"must be a positive integer, got {kwargs[key]}")
        out = kwargs.get("hidden_dim")
        width = None if out is None else out * (2 if kwargs.get("bidirectional", True) else 1)
        return {**kwargs, "embedding_dimension": dimension}, width

    def forward(self, features: Features, **kwargs: Any) -> Features:
        lengths = features.get("sentence_lengths")
        if lengths is None:
            # sentence-transformers fails here too (KeyError): only WordEmbeddings gives per-text lengths.
            raise StError("LSTM needs sentence_lengths, which only a WordEmbeddings input module gives")
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            features["token_embeddings"], torch.clamp(lengths, min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        output, _ = self.encoder(packed)
        features["token_embeddings"] = torch.nn.utils.rnn.pad_packed_sequence(output, batch_first=True)[0]
        return features

    def load_weights(self, folder: Any) -> None:
        super().load_weights(folder)
        self.untrained = False
