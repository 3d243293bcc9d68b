"""Code resolution: a modules.json `type` to the class that runs it, and a module back to its `type`.

A built-in or a plugin comes from the registry; anything else is custom code in the folder (or on
the Hub), imported only with trust (`custom`). Kept apart from the registry, which only maps names
to classes, so that the registry stays a leaf that custom code's own imports can reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from st_cli.errors import ModelFolderError
from st_cli.format import layout
from st_cli.format.spec import Format
from st_cli.model import custom, registry

if TYPE_CHECKING:
    from st_cli.model.modules.base import Module


def type_string_for(module: object, fmt: Format) -> str:
    """The modules.json `type` of a module instance in the given format."""
    cls = type(module)
    if not registry.is_registered(cls):
        return custom.type_string(cls)  # `file.Class`; the model saves file.py at its root
    return registry.spec(cls.type_name).type_string(fmt)  # type: ignore[attr-defined]


def class_for_type_string(type_string: str, root: Path, *, trust_remote_code: bool = False) -> type[Module]:
    """The class for a modules.json `type`: a built-in in either dialect, a plugin, or trusted custom code."""
    found = registry.spec_for_type_string(type_string)
    if found is not None:
        return registry.get(found.name)
    if type_string.startswith("sentence_transformers."):
        raise ModelFolderError(
            f"{root / 'modules.json'}: module type {type_string!r} of this {_model_kind(root)} is not supported by st; "
            f"st would need a module type for it (st runs: {', '.join(registry.names())})"
        )
    return load_custom_class(type_string, root, trust_remote_code=trust_remote_code)


def _model_kind(root: Path) -> str:
    """config_sentence_transformers.json's model_type (a Router's sub-folder: its parent's), for messages."""
    for folder in (root, root.parent):
        try:
            raw = layout.read_json(folder / layout.MODEL_CONFIG) if (folder / layout.MODEL_CONFIG).is_file() else None
        except ModelFolderError:
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("model_type"), str):
            return str(raw["model_type"])
    return "SentenceTransformer"


def load_custom_class(type_string: str, root: Path, *, trust_remote_code: bool) -> type[Module]:
    """`file.Class` (file.py at the model root) or `org/repo--file.Class` (Hub); runs code only with trust."""
    return custom.load_folder_class(type_string, root, trust_remote_code=trust_remote_code)
