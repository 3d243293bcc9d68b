"""The old import path of the module classes, kept working: `st_cli.modules.<file>` is `st_cli.model.modules.<file>`.

Custom module code written against st's flat package (`from st_cli.modules.transformer import
Transformer`) is copied into the model folders it saved, so it must keep importing after the move.
Each old name is the very module object of the new one (never a second copy, which would register
every class twice); nothing is imported until a name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

OLD = "st_cli.modules."
NEW = "st_cli.model.modules."


class _SameModule(importlib.abc.Loader):
    """Loads `st_cli.modules.X` as the already importable `st_cli.model.modules.X`."""

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its new name."""


class _OldNames(importlib.abc.MetaPathFinder):
    """Finds `st_cli.modules.X` wherever `st_cli.model.modules.X` exists."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new_name = NEW + fullname[len(OLD) :]
        if not fullname.startswith(OLD) or importlib.util.find_spec(new_name) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _SameModule(new_name))


if not any(isinstance(finder, _OldNames) for finder in sys.meta_path):
    sys.meta_path.insert(0, _OldNames())


def __getattr__(name: str) -> ModuleType:
    """`st_cli.modules.transformer` as an attribute, as `import st_cli.modules` callers read it."""
    try:
        return importlib.import_module(OLD + name)
    except ModuleNotFoundError:
        raise AttributeError(f"module 'st_cli.modules' has no attribute {name!r}") from None
