"""The table of exported variants: name → file name (sentence-transformers' convention) + how it is made.

File names are those ST 6.2's backend writes (sentence_transformers/backend/{optimize,quantize,utils}.py:
`model_{suffix}.onnx` with suffix O1..O4 or `{weights dtype}_{arch}`, `openvino_model.xml`), so
`SentenceTransformer(path, backend="onnx", model_kwargs={"file_name": "onnx/model_O3.onnx"})` finds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from st_cli.errors import StError
from st_cli.export import producers
from st_cli.export.options import DEFAULT_ARCH, OPTIMIZE_LEVELS, QUANTIZE_ARCHES, ExportOptions

ONNX_EXTRA = "pip install 'st-cli[onnx]'"
OPENVINO_EXTRA = "pip install 'st-cli[openvino]'"
# The modules each extra brings, imported up front so a missing one is one line before the model loads.
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "onnx": (("onnx", "onnxruntime", "onnxscript"), ONNX_EXTRA),
    "openvino": (("openvino",), OPENVINO_EXTRA),
}
FLOAT_FILE = "onnx/model.onnx"


@dataclass(frozen=True)
class Shape:
    """What a producer needs to know of the model besides the float32 ONNX file."""

    num_heads: int
    hidden_size: int


# make(source float32 ONNX, target, shape): writes target (and its weights file beside it, where it has one).
Make = Callable[[Path, Path, Shape], None]


@dataclass(frozen=True)
class Variant:
    name: str  # what --json calls it: "onnx", "O3", "qint8_avx512_vnni", "openvino"
    file: str  # relative to the model folder
    extra: str  # the EXTRAS row it needs
    make: Make | None  # None: the float32 export itself (made from torch, not from the ONNX file)

    @property
    def targets(self) -> tuple[str, ...]:
        """Its file and the weights file it always has beside it (an IR's `.bin`): both refused up front."""
        weights = (self.file[: -len(".xml")] + ".bin",) if self.file.endswith(".xml") else ()
        return (self.file, *weights)


def _optimized(level: str) -> Variant:
    def make(source: Path, target: Path, shape: Shape) -> None:
        producers.optimize(source, target, level=level, num_heads=shape.num_heads, hidden_size=shape.hidden_size)

    return Variant(level, f"onnx/model_{level}.onnx", "onnx", make)


def _quantized(arch: str) -> Variant:
    def make(source: Path, target: Path, shape: Shape) -> None:
        producers.quantize(source, target, arch=arch)

    name = f"{producers.weight_type_name(arch)}_{arch}"
    return Variant(name, f"onnx/model_{name}.onnx", "onnx", make)


VARIANTS: dict[str, Variant] = {
    "onnx": Variant("onnx", FLOAT_FILE, "onnx", None),
    **{level: _optimized(level) for level in OPTIMIZE_LEVELS},
    **{f"int8:{arch}": _quantized(arch) for arch in QUANTIZE_ARCHES},
    "openvino": Variant(
        "openvino", "openvino/openvino_model.xml", "openvino", lambda s, t, _: producers.convert_openvino(s, t)
    ),
}


def chosen(options: ExportOptions) -> list[Variant]:
    """The table rows the options ask for, in table order; a StError for a combination that means nothing."""
    if options.arch and options.quantize is None:
        raise StError("--arch applies to --quantize int8; add --quantize int8")
    if options.quantize not in (None, "int8"):
        raise StError(f"--quantize {options.quantize}: only int8 is supported")
    for level in options.optimize:
        if level not in OPTIMIZE_LEVELS:
            raise StError(f"--optimize {level}: expected one of {', '.join(OPTIMIZE_LEVELS)}")
    for arch in options.arch:
        if arch not in QUANTIZE_ARCHES:
            raise StError(f"--arch {arch}: expected one of {', '.join(QUANTIZE_ARCHES)}")
    keys = ["onnx"] if options.onnx else []
    keys += list(options.optimize)
    if options.quantize:
        keys += [f"int8:{arch}" for arch in options.arch or (DEFAULT_ARCH,)]
    keys += ["openvino"] if options.openvino else []
    if not keys:
        raise StError("nothing to export: pass --onnx, --optimize LEVEL, --quantize int8 or --openvino")
    return [VARIANTS[k] for k in VARIANTS if k in keys]


def require_extras(variants: list[Variant]) -> None:
    """Import each extra the variants need (and the float32 export needs onnx always): one line if one is missing."""
    import importlib

    for extra in dict.fromkeys(["onnx", *(v.extra for v in variants)]):
        modules, install = EXTRAS[extra]
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError:
                raise StError(f"st export needs {module} (the {extra} extra): {install}") from None
