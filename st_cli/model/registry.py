"""The registry of torch classes: module types by short name (name ↔ class).

What a type *is* (its type strings, config codec, widths) is its torch-free spec in `st_cli.format`:
a built-in's row in `st_cli/format/specs/<file>.py`, a plugin's spec in the format's plugin table.
Built-ins register their classes with `@register(SPECS["Pooling"])` in `st_cli/model/modules/<file>.py`,
imported lazily on the first class lookup. A plugin registers with a plain name,
`@st_cli.register("MyPooling")`; its spec is derived (type string `module.Class`, config in
config.json, keys = the class's `config_keys`) and added to the format's table, so a folder saved
with it loads back without trust wherever the plugin is imported. Installed packages declare
plugins in the entry-point group `st_cli.modules` (`st_cli.format.spec.load_entry_points`); they
load together with the built-ins, on the first class lookup.

A leaf of `st_cli.model`: it imports no other module of it (resolving a modules.json type to a class,
custom code included, is `st_cli.model.resolve`'s). Importing it (and `st inspect`) never pays for
torch: specs are looked up without importing any class.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from st_cli.errors import StError
from st_cli.format.spec import (
    TypeSpec,
    add_plugin,
    entry_point_classes,
    load_entry_points,
    plugin,
    plugin_spec,
    remove_plugin,
)
from st_cli.format.specs import SPECS

# Lookups by spec alone (no class, no torch) are the format's; re-exported, as callers have always found them here.
from st_cli.format.specs import known_names as known_names
from st_cli.format.specs import spec_for_type_string as spec_for_type_string

if TYPE_CHECKING:
    from st_cli.model.modules.base import Module

M = TypeVar("M", bound=type)

_CLASSES: dict[str, type[Module]] = {}  # short name → class
_builtins_loaded = False


class UnknownModuleType(StError):
    def __init__(self, name: str, known: list[str], suggestion: str | None) -> None:
        self.name, self.known, self.suggestion = name, known, suggestion
        hint = f" (did you mean {suggestion!r}?)" if suggestion else f"; known types: {', '.join(known)}"
        super().__init__(f"unknown module type {name!r}{hint}")


def register(spec_or_name: TypeSpec | str) -> Callable[[M], M]:
    """Class decorator: a built-in passes its row of SPECS; a plugin passes a short name (or its own TypeSpec)."""

    def add(cls: M) -> M:
        spec = spec_or_name if isinstance(spec_or_name, TypeSpec) else plugin_spec(spec_or_name, cls)
        name = spec.name
        if name in _CLASSES and _CLASSES[name] is not cls:
            msg = f"module type {name!r} is already registered by {_CLASSES[name].__module__}"
            raise ValueError(msg)
        if SPECS.get(name) is not spec:  # a plugin: by name (derived spec) or with its own TypeSpec
            add_plugin(spec)  # refuses a built-in's name or type string
        _CLASSES[name] = cls  # type: ignore[assignment]
        cls.type_name = name  # type: ignore[attr-defined]
        cls.spec = spec  # type: ignore[attr-defined]
        return cls

    return add


def unregister(name: str) -> None:
    """Remove a registration (tests use this to clean up fakes)."""
    cls = _CLASSES.pop(name, None)
    if cls is not None and "type_name" in vars(cls):
        cls.type_name, cls.spec = None, None
    remove_plugin(name)


def _load_builtins() -> None:
    """Import every built-in's file (registering it), then the entry-point plugins; register what they named."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for builtin in SPECS.values():
            if builtin.module_file:
                importlib.import_module(f"st_cli.model.modules.{builtin.module_file}")
        load_entry_points()
    _register_entry_point_classes()


def _register_entry_point_classes() -> None:
    """Classes entry points named (loaded by the format's spec lookups too) become registered here."""
    for name, cls in entry_point_classes().items():
        if _CLASSES.get(name) is not cls:
            register(plugin(name) or name)(cls)


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


def spec(name: str) -> TypeSpec:
    """The spec of a registered type (a built-in row or a plugin's spec)."""
    if name in SPECS:
        return SPECS[name]
    found = plugin(name)
    if found is None:
        get(name)  # loads plugins, or raises UnknownModuleType
        found = plugin(name)
    assert found is not None, f"{name} is registered without a spec"
    return found


def is_registered(cls: type) -> bool:
    """True for a class that is itself registered (a built-in or a plugin), not a subclass of one."""
    name = getattr(cls, "type_name", None)
    return name is not None and _CLASSES.get(name) is cls
