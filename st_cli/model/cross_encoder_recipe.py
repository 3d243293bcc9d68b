"""`st build` of a CrossEncoder: a recipe with `kind: cross-encoder` over a transformers checkpoint.

    kind: cross-encoder
    model: path/or/hub-id        # a sequence-classification checkpoint, or a base model (a fresh, seeded head)
    num_labels: 1                # default: the checkpoint's own head, else 1
    activation: Sigmoid          # default: Sigmoid for one label, Identity otherwise (ST's rule)
    max_length: 256              # optional: the tokenizer's limit (ST's CrossEncoder(max_length=...))
    seed: 0                      # seeds a fresh head

The folder is what sentence-transformers >= 5.4 writes for `CrossEncoder.save` (loaded by ST 5.4-6.x):
the transformers files at the root, one Transformer module (`transformer_task: sequence-classification`),
and `model_type: CrossEncoder` with the activation in config_sentence_transformers.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from st_cli import fsio
from st_cli._version import __version__
from st_cli.errors import RecipeError, first_line
from st_cli.format import hub, layout
from st_cli.model.cross_encoder import ACTIVATIONS, CrossEncoder, load_cross_encoder

KIND = "cross-encoder"
KEYS = ("kind", "name", "model", "num_labels", "activation", "max_length", "seed")
# The dotted paths ST writes for each activation (torch.nn's classes).
ACTIVATION_PATHS = {
    "Sigmoid": "torch.nn.modules.activation.Sigmoid",
    "Identity": "torch.nn.modules.linear.Identity",
    "Tanh": "torch.nn.modules.activation.Tanh",
    "ReLU": "torch.nn.modules.activation.ReLU",
    "GELU": "torch.nn.modules.activation.GELU",
    "SiLU": "torch.nn.modules.activation.SiLU",
    "LogSigmoid": "torch.nn.modules.activation.LogSigmoid",
}
SBERT_CONFIG = {
    "transformer_task": "sequence-classification",
    "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
    "module_output_name": "scores",
}
ROOT_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"


def recipe_kind(path: str | os.PathLike[str]) -> str | None:
    """The recipe's `kind` (None for a stack recipe, or a file load_recipe reports on)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
        return None  # load_recipe reports the file, with its line
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def _settings(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in data:
        if key not in KEYS:
            raise RecipeError(path, None, str(key), f"unknown key for kind: {KIND} (keys: {', '.join(KEYS)})")
    if data.get("kind") != KIND:
        raise RecipeError(path, None, "kind", f"expected {KIND!r}, got {data.get('kind')!r}")
    if not isinstance(data.get("model"), str):
        raise RecipeError(path, None, "model", "required: a transformers checkpoint folder or Hub id")
    for key in ("num_labels", "max_length", "seed"):
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < (key != "seed")):
            raise RecipeError(path, None, key, f"expected a positive integer, got {value!r}")
    activation = data.get("activation")
    if activation is not None and activation not in ACTIVATION_PATHS:
        known = ", ".join(ACTIVATION_PATHS)
        raise RecipeError(path, None, "activation", f"expected one of {known}, got {activation!r}")
    return data


def build_cross_encoder(
    recipe: str | os.PathLike[str], output: str | os.PathLike[str], *, force: bool = False
) -> tuple[CrossEncoder, Path]:
    """Write a CrossEncoder folder from a `kind: cross-encoder` recipe; the loaded reranker and its folder."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(recipe)
    claim = fsio.claim(output, force=force, kind=layout.MODEL_FOLDER)
    data = _settings(path)
    try:
        source = hub.resolve_model(data["model"])
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - one line naming the key
        raise RecipeError(path, None, "model", f"cannot read the checkpoint: {first_line(e)}") from None
    has_head = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    labels = data.get("num_labels") or (config.num_labels if has_head else 1)
    if has_head and labels != config.num_labels:
        problem = f"{labels}, but the checkpoint's head has {config.num_labels} labels"
        raise RecipeError(path, None, "num_labels", problem)
    torch.manual_seed(data.get("seed", 0))
    try:
        network = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=labels, dtype=torch.float32, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(str(source), use_fast=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - one line naming the key
        raise RecipeError(path, None, "model", f"cannot load it for sequence classification: {first_line(e)}") from None
    if data.get("max_length"):
        tokenizer.model_max_length = data["max_length"]
    activation = data.get("activation") or ("Sigmoid" if labels == 1 else "Identity")
    with fsio.atomic_folder(claim, force=force, kind=layout.MODEL_FOLDER) as tmp:
        network.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        _write_json(tmp / layout.MODULES_JSON, [{"idx": 0, "name": "0", "path": "", "type": ROOT_TRANSFORMER}])
        _write_json(tmp / layout.SBERT_CONFIG, SBERT_CONFIG)
        versions = {"st_cli": __version__, "transformers": _version("transformers"), "pytorch": torch.__version__}
        _write_json(
            tmp / layout.MODEL_CONFIG,
            {"__version__": versions, "activation_fn": ACTIVATION_PATHS[activation], "default_prompt_name": None,
             "model_type": "CrossEncoder", "prompts": {}},
        )  # fmt: skip
        name = data.get("name") or Path(output).name
        card = f"# {name}\n\nA CrossEncoder (reranker) built by st {__version__} from `{data['model']}`:"
        card += f" {labels} label(s), activation {activation}. Score pairs with `st score`, rank with `st rerank`.\n"
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return load_cross_encoder(claim.path), claim.path


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


__all__ = ["ACTIVATIONS", "KIND", "build_cross_encoder", "recipe_kind"]
