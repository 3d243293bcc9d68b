"""Dense: a linear layer plus an activation on the sentence embedding."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register

IDENTITY = "torch.nn.modules.linear.Identity"
# Classes in torch's activation module that need constructor arguments or carry weights, that change the
# width (GLU halves it), or that refuse a (batch, dim) input (Softmax2d).
_NOT_ACTIVATIONS = {"MultiheadAttention", "PReLU", "Threshold", "GLU", "Softmax2d"}


def activation_names() -> dict[str, str]:
    """Short names (`tanh`, `gelu`, `identity`, ...) to the class paths ST stores."""
    names = {"identity": IDENTITY}
    for name in dir(torch.nn.modules.activation):
        cls = getattr(torch.nn.modules.activation, name)
        defined_here = isinstance(cls, type) and cls.__module__ == "torch.nn.modules.activation"
        if defined_here and issubclass(cls, torch.nn.Module) and name not in _NOT_ACTIVATIONS:
            names[name.lower()] = f"{cls.__module__}.{name}"
    return names


def activation_path(name: str) -> str:
    """Accept `tanh` or `torch.nn.modules.activation.Tanh`; refuse anything outside torch."""
    known = activation_names()
    if name.lower() in known:
        return known[name.lower()]
    if name in known.values():
        return name
    raise ConfigValueError("activation", f"unknown activation {name!r}; e.g. tanh, identity, relu, gelu, sigmoid")


def _activation_module(path: str) -> torch.nn.Module:
    module_name, _, cls_name = path.rpartition(".")
    module = torch.nn.modules.linear if module_name == "torch.nn.modules.linear" else torch.nn.modules.activation
    return getattr(module, cls_name)()


@register(SPECS["Dense"])
class Dense(Module):
    config_keys: ClassVar[list[str]] = ["in_features", "out_features", "bias", "activation"]

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "tanh") -> None:
        super().__init__()
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.activation = activation_path(activation)
        self.linear = torch.nn.Linear(in_features, out_features, bias=bias)
        self.activation_function = _activation_module(self.activation)
        self.untrained = True  # until load_weights replaces the random init

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        in_features = kwargs.get("in_features", input_dim)
        if input_dim is not None and in_features != input_dim:
            raise ConfigValueError("in_features", f"is {in_features} but the module before gives {input_dim}")
        if in_features is None:
            raise ConfigValueError("in_features", "required: nothing before Dense gives an embedding size")
        if "out_features" not in kwargs:
            raise ConfigValueError("out_features", "required: the output size")
        if kwargs["out_features"] <= 0:
            raise ConfigValueError("out_features", f"must be a positive integer, got {kwargs['out_features']}")
        activation_path(kwargs.get("activation", "tanh"))
        return {**kwargs, "in_features": in_features}, kwargs["out_features"]

    def get_sentence_embedding_dimension(self) -> int:
        return self.out_features

    def forward(self, features: Features, **kwargs: Any) -> Features:
        features["sentence_embedding"] = self.activation_function(self.linear(features["sentence_embedding"]))
        return features

    def load_weights(self, folder: Any) -> None:
        super().load_weights(folder)
        self.untrained = False
