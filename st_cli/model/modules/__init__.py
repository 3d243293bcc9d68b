"""The built-in module types, one file each; the registry imports a file when its type is first used.

Each file's class points at its torch-free row, `st_cli/format/specs/<the same file name>`, with
`@register(SPECS["Name"])`.
"""

from st_cli.model.modules.base import InputModule, Module

__all__ = ["InputModule", "Module"]
