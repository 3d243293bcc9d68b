"""The built-in module types, one file each; the registry imports a file when its type is first used.

Each file's class points at its row of `st_cli.types.SPECS` with `@register(SPECS["Name"])`.
"""

from st_cli.model.modules.base import InputModule, Module

__all__ = ["InputModule", "Module"]
