"""Pooling: token embeddings to one sentence embedding (cls, mean, max, ... or several concatenated)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from st_cli.errors import ConfigValueError
from st_cli.format.specs import SPECS
from st_cli.format.specs.pooling import POOLING_MODES
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register

_ALIASES = {"mean_sqrt_len": "mean_sqrt_len_tokens"}


def checked_modes(mode: str | list[str] | tuple[str, ...]) -> list[str]:
    """Mode names in the order given (ST >= 5.4 concatenate a list pooling_mode in its order)."""
    modes = [mode] if isinstance(mode, str) else list(mode)
    if not modes:
        raise ConfigValueError("mode", "needs at least one pooling mode")
    names = []
    for m in modes:
        name = _ALIASES.get(m, m)
        if name not in POOLING_MODES:
            raise ConfigValueError("mode", f"unknown pooling mode {m!r}; choose from {', '.join(POOLING_MODES)}")
        names.append(name)
    return list(dict.fromkeys(names))


def canonical_modes(mode: str | list[str] | tuple[str, ...]) -> list[str]:
    """Mode names in the order the legacy booleans concatenate them (what --format portable can write)."""
    names = checked_modes(mode)
    return [m for m in POOLING_MODES if m in names]


@register(SPECS["Pooling"])
class Pooling(Module):
    config_keys: ClassVar[list[str]] = ["dimension", "mode", "include_prompt"]

    def __init__(self, dimension: int, mode: str | list[str] = "mean", include_prompt: bool = True) -> None:
        super().__init__()
        self.dimension = dimension
        self.mode = checked_modes(mode)  # a recipe's plan() has put them in the legacy order
        self.include_prompt = include_prompt

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        dimension = kwargs.get("dimension", input_dim)
        if input_dim is not None and dimension != input_dim:
            raise ConfigValueError("dimension", f"is {dimension} but the module before gives {input_dim}")
        if dimension is None:
            raise ConfigValueError("dimension", "required: nothing before Pooling gives a token embedding size")
        modes = canonical_modes(kwargs.get("mode", "mean"))
        return {**kwargs, "dimension": dimension, "mode": modes}, dimension * len(modes)

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension * len(self.mode)

    def forward(self, features: Features, **kwargs: Any) -> Features:
        tokens = features["token_embeddings"]
        mask = features.get("attention_mask")
        if mask is None:
            mask = torch.ones(tokens.shape[:-1], dtype=torch.int64, device=tokens.device)
        prompt_length = features.get("prompt_length")
        if not self.include_prompt and prompt_length:
            mask = mask.clone()
            mask[:, : int(prompt_length)] = 0
        # A WordWeights module before this one leaves the sum of its token weights: ST divides by it instead.
        weights_sum = features.get("token_weights_sum")
        total = weights_sum.unsqueeze(-1) if weights_sum is not None else None
        features["sentence_embedding"] = torch.cat([_POOLERS[m](tokens, mask, total) for m in self.mode], dim=-1)
        return features


def _first(tokens: Tensor, mask: Tensor, weights_sum: Tensor | None = None) -> Tensor:
    index = mask.to(torch.int).argmax(dim=1)
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), index]


def _max(tokens: Tensor, mask: Tensor, weights_sum: Tensor | None = None) -> Tensor:
    return tokens.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values


def _masked_sum_and_count(tokens: Tensor, mask: Tensor, weights_sum: Tensor | None) -> tuple[Tensor, Tensor]:
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    count = weights.sum(dim=1) if weights_sum is None else weights_sum
    return (tokens * weights).sum(dim=1), torch.clamp(count, min=1e-9)


def _mean(tokens: Tensor, mask: Tensor, weights_sum: Tensor | None = None) -> Tensor:
    total, count = _masked_sum_and_count(tokens, mask, weights_sum)
    return total / count


def _mean_sqrt_len(tokens: Tensor, mask: Tensor, weights_sum: Tensor | None = None) -> Tensor:
    total, count = _masked_sum_and_count(tokens, mask, weights_sum)
    return total / torch.sqrt(count)


def _weighted_mean(tokens: Tensor, mask: Tensor, weights_sum: Tensor | None = None) -> Tensor:
    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=tokens.dtype).view(1, -1, 1)
    weights = mask.unsqueeze(-1).to(tokens.dtype) * positions
    count = weights.sum(dim=1) if weights_sum is None else weights_sum
    return (tokens * weights).sum(dim=1) / torch.clamp(count, min=1e-9)


def _last(tokens: Tensor, mask: Tensor, weights_sum: Tensor | None = None) -> Tensor:
    seq_len = tokens.shape[1]
    found, from_end = mask.flip(1).max(dim=1)
    index = torch.where(found == 0, seq_len - 1, seq_len - 1 - from_end)
    masked = tokens * mask.unsqueeze(-1).to(tokens.dtype)
    return masked[torch.arange(tokens.shape[0], device=tokens.device), index]


_POOLERS = {
    "cls": _first,
    "max": _max,
    "mean": _mean,
    "mean_sqrt_len_tokens": _mean_sqrt_len,
    "weightedmean": _weighted_mean,
    "lasttoken": _last,
}
