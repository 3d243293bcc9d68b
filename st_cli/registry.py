"""The single registry: module type names to classes.

Built-ins register themselves with `@register("Pooling")` in `st_cli/modules/<name>.py`; the
registry imports that package lazily on the first lookup, so importing the registry (and
`st inspect`) never pays for torch.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from st_cli.errors import StError, TrustError

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


def type_string_for(module: object, fmt: str) -> str:
    """The modules.json `type` of a module instance in the given format."""
    from st_cli import layout

    name = getattr(module, "type_name", None)
    if name in layout.TYPE_STRINGS[fmt]:  # type: ignore[index]
        return layout.TYPE_STRINGS[fmt][name]  # type: ignore[index]
    cls = type(module)
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
    """`file.Class` with `file.py` at the model root; runs code only with trust."""
    module_name, _, class_name = type_string.rpartition(".")
    source = root / f"{module_name}.py"
    if not trust_remote_code:
        raise TrustError(
            f"{root / 'modules.json'}: module {type_string!r} needs custom code from {source}; "
            "re-run with --trust-remote-code (trust_remote_code=True) if you trust it"
        )
    if not source.is_file():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise StError(
                f"{root}: custom module {type_string!r}: no {source.name} in the folder, and not importable"
            ) from None
    else:
        spec = importlib.util.spec_from_file_location(f"st_cli_custom.{module_name}", source)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise StError(f"{source}: no class {class_name!r}")
    return cls
