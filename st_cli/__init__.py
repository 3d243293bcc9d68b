"""st: assemble, inspect, run and validate sentence-embedding models in the sentence-transformers layout.

The public API. Heavy imports (torch, transformers) happen only when a function that needs them
is first used, so `import st_cli` and `st --help` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# OpenMP reads its wait policy once, when torch loads: every import of st_cli (CLI or library)
# passes here before any module of it imports torch.
from st_cli import threads as _threads  # noqa: E402
from st_cli._version import __version__

_threads.prepare_environment()

if TYPE_CHECKING:
    from st_cli.encode.api import EncodeSummary, encode_file
    from st_cli.encode.ray import Embedder, RayEncodeSummary, encode_files_ray
    from st_cli.encode.shards import MergeSummary, merge_shards
    from st_cli.export.export import export_model
    from st_cli.export.options import ExportOptions, ExportReport
    from st_cli.format.summary import ModelSummary, summarize
    from st_cli.model.model import Model, build, build_model, load_model
    from st_cli.model.modules.base import InputModule, Module
    from st_cli.model.recipe import Recipe, load_recipe
    from st_cli.model.registry import register
    from st_cli.training.options import TrainReport
    from st_cli.training.train import train
    from st_cli.verify.verify import VerifyReport, verify_model

_LAZY = {
    "Model": "st_cli.model.model",
    "build": "st_cli.model.model",
    "build_model": "st_cli.model.model",
    "load_model": "st_cli.model.model",
    "Module": "st_cli.model.modules.base",
    "InputModule": "st_cli.model.modules.base",
    "Recipe": "st_cli.model.recipe",
    "load_recipe": "st_cli.model.recipe",
    "register": "st_cli.model.registry",
    "ModelSummary": "st_cli.format.summary",
    "summarize": "st_cli.format.summary",
    "VerifyReport": "st_cli.verify.verify",
    "verify_model": "st_cli.verify.verify",
    "EncodeSummary": "st_cli.encode.api",
    "encode_file": "st_cli.encode.api",
    "encode_files_ray": "st_cli.encode.ray",
    "Embedder": "st_cli.encode.ray",
    "RayEncodeSummary": "st_cli.encode.ray",
    "merge_shards": "st_cli.encode.shards",
    "MergeSummary": "st_cli.encode.shards",
    "export_model": "st_cli.export.export",
    "ExportOptions": "st_cli.export.options",
    "ExportReport": "st_cli.export.options",
    # training.py, not train.py: importing a submodule st_cli.train would shadow the function st_cli.train.
    "train": "st_cli.training.train",
    "TrainReport": "st_cli.training.options",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'st_cli' has no attribute {name!r}")
