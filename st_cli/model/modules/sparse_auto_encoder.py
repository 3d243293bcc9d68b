"""SparseAutoEncoder (CSR): a dense sentence embedding to `hidden_dim` latents of which the `k` largest are
kept (relu), as sentence-transformers' SparseAutoEncoder encodes at inference. `max_active_dims` at encode
time replaces `k`, as in sentence-transformers.

The encoder's matrix is tied to a decoder's (used in training only): both names are in the state, and
safetensors' save_model/load_model store and read it once, under the name ST's files use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from st_cli.errors import ConfigValueError, ModelFolderError, first_line
from st_cli.format import layout
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


class _Tied(torch.nn.Module):
    """The decoder: the encoder's own Linear, so its weight is the same tensor under a second name."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.linear = linear


@register(SPECS["SparseAutoEncoder"])
class SparseAutoEncoder(Module):
    config_keys: ClassVar[list[str]] = ["input_dim", "hidden_dim", "k", "k_aux", "normalize", "dead_threshold"]
    forward_kwargs: ClassVar[set[str]] = {"max_active_dims"}

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 512,
        k: int = 8,
        k_aux: int = 512,
        normalize: bool = False,
        dead_threshold: int = 30,
    ) -> None:
        super().__init__()
        self.input_dim, self.hidden_dim, self.k, self.k_aux = input_dim, hidden_dim, k, k_aux
        self.normalize, self.dead_threshold = normalize, dead_threshold
        self.pre_bias = torch.nn.Parameter(torch.zeros(input_dim))
        self.encoder = torch.nn.Linear(input_dim, hidden_dim, bias=False)
        self.latent_bias = torch.nn.Parameter(torch.zeros(hidden_dim))
        self.decoder = _Tied(self.encoder)
        self.stats_last_nonzero: torch.Tensor
        self.register_buffer("stats_last_nonzero", torch.zeros(hidden_dim, dtype=torch.long))
        self.untrained = True

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        dim = kwargs.get("input_dim", input_dim)
        if input_dim is not None and dim != input_dim:
            raise ConfigValueError("input_dim", f"is {dim} but the module before gives {input_dim}")
        if dim is None:
            raise ConfigValueError("input_dim", "required: nothing before SparseAutoEncoder gives an embedding size")
        hidden, k = kwargs.get("hidden_dim", 512), kwargs.get("k", 8)
        for key, value in (("hidden_dim", hidden), ("k", k)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigValueError(key, f"must be a positive integer, got {value!r}")
        if k > hidden:
            raise ConfigValueError("k", f"is {k}, more than hidden_dim ({hidden})")
        return {**kwargs, "input_dim": dim}, hidden

    def check_call(self, kwargs: dict[str, Any]) -> None:
        k = kwargs.get("max_active_dims")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k <= 0):
            raise ConfigValueError("max_active_dims", f"must be a positive integer, got {k!r}")

    def forward(self, features: Features, max_active_dims: int | None = None, **kwargs: Any) -> Features:
        k = min(max_active_dims if max_active_dims is not None else self.k, self.hidden_dim)
        x = features["sentence_embedding"]
        if self.normalize:  # ST's LN: standardized with the unbiased std
            x = x - x.mean(dim=-1, keepdim=True)
            x = x / (x.std(dim=-1, keepdim=True) + 1e-5)
        latents = torch.nn.functional.linear(x - self.pre_bias, self.encoder.weight, self.latent_bias)
        top = torch.topk(latents, k=k, dim=-1)
        kept = torch.zeros_like(latents).scatter_(-1, top.indices, top.values)
        features["sentence_embedding"] = torch.relu(kept)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.hidden_dim

    def default_max_active_dims(self) -> int:
        """A SparseEncoder with this module keeps k dimensions unless told otherwise (ST's SparseEncoder)."""
        return self.k

    def output_vocabulary(self) -> None:
        return None  # latent dimensions stand for no token

    # ------------------------------------------------------------ persistence

    def save_weights(self, folder: Path, *, pickled_too: bool = False) -> None:
        save_model(self, str(folder / layout.SAFETENSORS_WEIGHTS))  # the tied matrix once, as ST writes it

    def load_weights(self, folder: Path) -> None:
        path = folder / layout.SAFETENSORS_WEIGHTS
        if not path.is_file():
            raise ModelFolderError(f"{folder}: no {layout.SAFETENSORS_WEIGHTS}")
        try:
            load_model(self, str(path), strict=True)
        except (SafetensorError, OSError) as e:
            raise ModelFolderError(f"{path}: unreadable safetensors file ({first_line(e)})") from None
        except RuntimeError as e:
            raise ModelFolderError(f"{path}: weights do not fit the config: {first_line(e)}") from None
        self.untrained = False
