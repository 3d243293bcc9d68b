"""The old import path of the type spec, kept for plugins written against it: `st_cli.types.TypeSpec`.

A plugin package with a spec of its own (widths, required files) built it from `st_cli.types`; the
row's shape now lives in `st_cli.format.spec` and the built-in rows in `st_cli.format.specs`.
"""

from st_cli.format.spec import (
    FORMATS,
    GENERATIONS,
    LOADERS,
    Format,
    LoaderNote,
    TypeSpec,
    WidthContext,
    Widths,
)
from st_cli.format.specs import SPECS, spec_for_type_string

__all__ = [
    "FORMATS",
    "GENERATIONS",
    "LOADERS",
    "SPECS",
    "Format",
    "LoaderNote",
    "TypeSpec",
    "WidthContext",
    "Widths",
    "spec_for_type_string",
]
