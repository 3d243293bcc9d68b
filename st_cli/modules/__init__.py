"""The built-in module types; importing this package registers them all."""

from st_cli.modules import dense, normalize, pooling, transformer
from st_cli.modules.base import InputModule, Module

__all__ = ["InputModule", "Module", "dense", "normalize", "pooling", "transformer"]
