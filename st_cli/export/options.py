"""ExportOptions (what to export, where) and ExportReport (what was written): the job's one options object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPTIMIZE_LEVELS = ("O1", "O2", "O3", "O4")
QUANTIZE_ARCHES = ("arm64", "avx2", "avx512", "avx512_vnni")
DEFAULT_ARCH = "avx512_vnni"


@dataclass(frozen=True)
class ExportOptions:
    """What `st export` writes.

    Args:
        model: a model folder or Hub id.
        onnx: write the float32 ONNX model (`onnx/model.onnx`).
        optimize: onnxruntime optimisation levels to write (`onnx/model_O3.onnx`, ...).
        quantize: "int8" to write dynamically quantised models, one per `arch`.
        arch: CPU instruction sets the int8 models are made for (each has its own file name in ST's convention).
        openvino: write OpenVINO IR (`openvino/openvino_model.xml` + `.bin`).
        output: a new folder (a copy of the model plus the exported files); None adds them to the model folder.
        force: replace exported files (or the output folder) that already exist.
    """

    model: str
    onnx: bool = False
    optimize: tuple[str, ...] = ()
    quantize: str | None = None
    arch: tuple[str, ...] = ()
    openvino: bool = False
    output: Path | None = None
    force: bool = False
    trust_remote_code: bool = False


@dataclass(frozen=True)
class ExportedFile:
    """One file written: its path relative to the folder, size and sha256."""

    path: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class ExportReport:
    """`st export --json`: the folder written to, each variant's main file, every file with its digest."""

    folder: str
    variants: dict[str, str]  # variant name → its main file (what ST's model_kwargs={"file_name": ...} takes)
    files: tuple[ExportedFile, ...]
    inputs: tuple[str, ...]
    opset: int
    manifest: bool  # whether st_manifest.json now records the new files' sha256
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "variants": dict(self.variants),
            "files": [f.to_json() for f in self.files],
            "inputs": list(self.inputs),
            "output": "last_hidden_state",
            "opset": self.opset,
            "manifest": self.manifest,
            "seconds": round(self.seconds, 2),
            "notes": list(self.notes),
        }
