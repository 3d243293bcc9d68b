"""The single registry: module types by short name and by every modules.json type string.

Built-ins register themselves with `@register(SPECS["Pooling"])` in `st_cli/modules/<file>.py`
(their torch-free rows live in `st_cli/types.py`). A plugin registers with a plain name,
`@st_cli.register("MyPooling")`; its spec is derived (type string `module.Class`, config in
config.json, keys = the class's `config_keys`), so a folder saved with it loads back without trust
wherever the plugin is imported. Installed packages can declare plugins in the entry-point group
`st_cli.modules` (each entry point names a module to import, or a class to register under the
entry point's name); they load together with the built-ins, on the first class lookup.

Importing this module (and `st inspect`) never pays for torch: specs are looked up without
importing any class.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from st_cli.errors import ModelFolderError, StError
from st_cli.format import spec as types
from st_cli.format.spec import TypeSpec

if TYPE_CHECKING:
    from st_cli.model.modules.base import Module

M = TypeVar("M", bound=type)
ENTRY_POINT_GROUP = "st_cli.modules"  # the entry-point group plugins declare: an API, not a module path

_CLASSES: dict[str, type[Module]] = {}  # short name → class
_PLUGIN_SPECS: dict[str, TypeSpec] = {}  # short name → derived spec of a plugin
_PLUGIN_TYPES: dict[str, str] = {}  # type string → short name of a plugin
_builtins_loaded = False
_entry_points_loaded = False


class UnknownModuleType(StError):
    def __init__(self, name: str, known: list[str], suggestion: str | None) -> None:
        self.name, self.known, self.suggestion = name, known, suggestion
        hint = f" (did you mean {suggestion!r}?)" if suggestion else f"; known types: {', '.join(known)}"
        super().__init__(f"unknown module type {name!r}{hint}")


def register(spec_or_name: TypeSpec | str) -> Callable[[M], M]:
    """Class decorator: a built-in passes its row of types.SPECS; a plugin passes a short name (or its own TypeSpec)."""

    def add(cls: M) -> M:
        spec = spec_or_name if isinstance(spec_or_name, TypeSpec) else plugin_spec(spec_or_name, cls)
        name = spec.name
        if name in _CLASSES and _CLASSES[name] is not cls:
            msg = f"module type {name!r} is already registered by {_CLASSES[name].__module__}"
            raise ValueError(msg)
        builtin = types.SPECS.get(name) is spec
        if name in types.SPECS and not builtin:
            raise ValueError(f"module type {name!r} is a built-in name; choose another")
        taken = [t for t in spec.type_strings if types.spec_for_type_string(t) not in (None, spec)]
        if taken:
            raise ValueError(f"module type {name!r}: type string {taken[0]!r} belongs to a built-in")
        _CLASSES[name] = cls  # type: ignore[assignment]
        if not builtin:  # a plugin: by name (derived spec) or with its own TypeSpec
            _PLUGIN_SPECS[name] = spec
            _PLUGIN_TYPES.update(dict.fromkeys(spec.type_strings, name))
        cls.type_name = name  # type: ignore[attr-defined]
        cls.spec = spec  # type: ignore[attr-defined]
        return cls

    return add


def plugin_spec(name: str, cls: type) -> TypeSpec:
    """The spec a plugin gets: its import path as the type string, its config_keys in config.json as written."""
    type_string = f"{cls.__module__}.{cls.__qualname__}"
    keys = frozenset(getattr(cls, "config_keys", []))
    accepted = dict.fromkeys(types.GENERATIONS, keys)
    base = TypeSpec(name=name, legacy_type=type_string, st6_type=type_string, accepted_keys=accepted)
    input_module = bool(getattr(cls, "save_in_root", False))
    return replace(base, input_module=input_module, save_in_root=input_module, since="3.1", tei=False)


def unregister(name: str) -> None:
    """Remove a registration (tests use this to clean up fakes)."""
    cls = _CLASSES.pop(name, None)
    if cls is not None and "type_name" in vars(cls):
        cls.type_name, cls.spec = None, None
    spec = _PLUGIN_SPECS.pop(name, None)
    for type_string in spec.type_strings if spec else ():
        _PLUGIN_TYPES.pop(type_string, None)


def _load_builtins() -> None:
    """Import every built-in's file (registering it), then the entry-point plugins."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for spec in types.SPECS.values():
            if spec.module_file:
                importlib.import_module(f"st_cli.model.modules.{spec.module_file}")
        _load_entry_points()


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()  # a module registers its classes on import; a class is registered here
        except Exception as e:  # a broken plugin must not break st for every other model
            raise StError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) failed to load: {e}") from None
        if isinstance(loaded, type) and not is_registered(loaded):
            register(ep.name)(loaded)


def get(name: str) -> type[Module]:
    """The class registered under `name`, or an UnknownModuleType error with a suggestion."""
    _load_builtins()
    if name not in _CLASSES:
        close = difflib.get_close_matches(name, list(_CLASSES), n=1)
        raise UnknownModuleType(name, known=sorted(_CLASSES), suggestion=close[0] if close else None)
    return _CLASSES[name]


def names() -> list[str]:
    """Every registered type name, sorted."""
    _load_builtins()
    return sorted(_CLASSES)


def known_names() -> list[str]:
    """The types st can run, from the specs alone (no torch import): built-ins and plugins registered so far."""
    return sorted({*types.SPECS, *_PLUGIN_SPECS})


def spec(name: str) -> TypeSpec:
    """The spec of a registered type (a built-in row or a plugin's derived spec)."""
    if name in types.SPECS:
        return types.SPECS[name]
    if name not in _PLUGIN_SPECS:
        get(name)  # loads plugins, or raises UnknownModuleType
    return _PLUGIN_SPECS[name]


def spec_for_type_string(type_string: str) -> TypeSpec | None:
    """The spec that reads a modules.json `type` (built-in in any dialect, or a plugin); no imports of torch.

    Entry-point plugins are loaded only when a type string is neither a built-in nor a known plugin.
    """
    found = types.spec_for_type_string(type_string)
    if found is None and type_string in _PLUGIN_TYPES:
        found = _PLUGIN_SPECS[_PLUGIN_TYPES[type_string]]
    if found is None and not type_string.startswith("sentence_transformers.") and not _entry_points_loaded:
        _load_entry_points()
        return spec_for_type_string(type_string)
    return found


# ---------------------------------------------------------------- modules.json type strings


def is_registered(cls: type) -> bool:
    """True for a class that is itself registered (a built-in or a plugin), not a subclass of one."""
    name = getattr(cls, "type_name", None)
    return name is not None and _CLASSES.get(name) is cls


def type_string_for(module: object, fmt: types.Format) -> str:
    """The modules.json `type` of a module instance in the given format."""
    from st_cli.model import custom

    cls = type(module)
    if not is_registered(cls):
        return custom.type_string(cls)  # `file.Class`; the model saves file.py at its root
    return spec(cls.type_name).type_string(fmt)  # type: ignore[attr-defined]


def class_for_type_string(type_string: str, root: Path, *, trust_remote_code: bool = False) -> type[Module]:
    """The class for a modules.json `type`: a built-in in either dialect, a plugin, or trusted custom code."""
    found = spec_for_type_string(type_string)
    if found is not None:
        return get(found.name)
    if type_string.startswith("sentence_transformers."):
        raise ModelFolderError(
            f"{root / 'modules.json'}: module type {type_string!r} is not supported by st "
            f"(st runs: {', '.join(names())})"
        )
    return load_custom_class(type_string, root, trust_remote_code=trust_remote_code)


def load_custom_class(type_string: str, root: Path, *, trust_remote_code: bool) -> type[Module]:
    """`file.Class` (file.py at the model root) or `org/repo--file.Class` (Hub); runs code only with trust."""
    from st_cli.model import custom

    return custom.load_folder_class(type_string, root, trust_remote_code=trust_remote_code)
