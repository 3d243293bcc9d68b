"""The single registry: module type names to classes.

Built-ins register themselves with `@register("Pooling")` in `st_cli/modules/<name>.py`; the
registry imports that package lazily on the first lookup, so importing the registry (and
`st inspect`) never pays for torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from st_cli.errors import StError

if TYPE_CHECKING:
    from st_cli.modules.base import Module

M = TypeVar("M", bound=type)

_MODULES: dict[str, type[Module]] = {}
_builtins_loaded = False


class UnknownModuleType(StError):
    def __init__(self, name: str, known: list[str], suggestion: str | None) -> None:
        self.name, self.known, self.suggestion = name, known, suggestion
        hint = f" (did you mean {suggestion!r}?)" if suggestion else f"; known types: {', '.join(known)}"
        super().__init__(f"unknown module type {name!r}{hint}")


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make a module class available under a short type name."""

    def add(cls: M) -> M:
        if name in _MODULES and _MODULES[name] is not cls:
            msg = f"module type {name!r} is already registered by {_MODULES[name].__module__}"
            raise ValueError(msg)
        _MODULES[name] = cls
        cls.type_name = name  # type: ignore[attr-defined]
        return cls

    return add


def unregister(name: str) -> None:
    """Remove a registration (tests use this to clean up fakes)."""
    _MODULES.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        importlib.import_module("st_cli.modules")
        _builtins_loaded = True


def get(name: str) -> type[Module]:
    """The class registered under `name`, or an UnknownModuleType error with a suggestion."""
    _load_builtins()
    if name not in _MODULES:
        close = difflib.get_close_matches(name, list(_MODULES), n=1)
        raise UnknownModuleType(name, known=sorted(_MODULES), suggestion=close[0] if close else None)
    return _MODULES[name]


def names() -> list[str]:
    """Every registered type name, sorted."""
    _load_builtins()
    return sorted(_MODULES)


# ---------------------------------------------------------------- modules.json type strings


def is_registered(cls: type) -> bool:
    """True for a class that is itself registered (a built-in or a plugin), not a subclass of one."""
    name = getattr(cls, "type_name", None)
    return name is not None and _MODULES.get(name) is cls


def type_string_for(module: object, fmt: str) -> str:
    """The modules.json `type` of a module instance in the given format."""
    from st_cli import custom, layout

    cls = type(module)
    if not is_registered(cls):
        return custom.type_string(cls)  # `file.Class`; the model saves file.py at its root
    name = getattr(cls, "type_name", None)
    if name in layout.TYPE_STRINGS[fmt]:  # type: ignore[index]
        return layout.TYPE_STRINGS[fmt][name]  # type: ignore[index]
    return f"{cls.__module__}.{cls.__qualname__}"


def class_for_type_string(type_string: str, root: Path, *, trust_remote_code: bool = False) -> type[Module]:
    """The class for a modules.json `type`: a built-in in either dialect, or trusted custom code."""
    from st_cli import layout

    short = layout.KNOWN_TYPES.get(type_string)
    if short is not None:
        _load_builtins()
        if short not in _MODULES:
            raise StError(
                f"{root / layout.MODULES_JSON}: module type {type_string!r} ({short}) is not supported by st yet"
            )
        return _MODULES[short]
    return load_custom_class(type_string, root, trust_remote_code=trust_remote_code)


def load_custom_class(type_string: str, root: Path, *, trust_remote_code: bool) -> type[Module]:
    """`file.Class` (file.py at the model root) or `org/repo--file.Class` (Hub); runs code only with trust."""
    from st_cli import custom

    return custom.load_folder_class(type_string, root, trust_remote_code=trust_remote_code)
