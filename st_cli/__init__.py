"""st: assemble, inspect, run and validate sentence-embedding models in the sentence-transformers layout.

The public API. Heavy imports (torch, transformers) happen only when a function that needs them
is first used, so `import st_cli` and `st --help` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# OpenMP reads its wait policy once, when torch loads: every import of st_cli (CLI or library)
# passes here before any module of it imports torch.
from st_cli import threads as _threads  # noqa: E402

_threads.prepare_environment()

if TYPE_CHECKING:
    from st_cli.encode import EncodeSummary, encode_file
    from st_cli.model import Model, build, build_model, load_model
    from st_cli.modules.base import InputModule, Module
    from st_cli.ray import Embedder, RayEncodeSummary, encode_files_ray
    from st_cli.recipe import Recipe, load_recipe
    from st_cli.registry import register
    from st_cli.shards import MergeSummary, merge_shards
    from st_cli.summary import ModelSummary, summarize
    from st_cli.training import TrainReport, train
    from st_cli.verify import VerifyReport, verify_model

_LAZY = {
    "Model": "st_cli.model",
    "build": "st_cli.model",
    "build_model": "st_cli.model",
    "load_model": "st_cli.model",
    "Module": "st_cli.modules.base",
    "InputModule": "st_cli.modules.base",
    "Recipe": "st_cli.recipe",
    "load_recipe": "st_cli.recipe",
    "register": "st_cli.registry",
    "ModelSummary": "st_cli.summary",
    "summarize": "st_cli.summary",
    "VerifyReport": "st_cli.verify",
    "verify_model": "st_cli.verify",
    "EncodeSummary": "st_cli.encode",
    "encode_file": "st_cli.encode",
    "encode_files_ray": "st_cli.ray",
    "Embedder": "st_cli.ray",
    "RayEncodeSummary": "st_cli.ray",
    "merge_shards": "st_cli.shards",
    "MergeSummary": "st_cli.shards",
    # training.py, not train.py: importing a submodule st_cli.train would shadow the function st_cli.train.
    "train": "st_cli.training",
    "TrainReport": "st_cli.training",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'st_cli' has no attribute {name!r}")
