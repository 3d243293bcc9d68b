"""Exported model files in a folder (`onnx/*.onnx`, `openvino/*.xml`): inputs, outputs, opset and size, read from
the files themselves for `st inspect`.

Torch-free and extra-free: ONNX files are protobuf, and the few fields inspect needs (ir_version, producer,
opset_import, the graph's inputs and outputs, which initializers live in external files) are read here by a
small wire-format reader over a memory map, rather than through the `onnx` package: `st inspect` then says the
same with or without the onnx extra installed, and never reads the weights (a raw_data field is skipped by its
length, so a 1 GB model costs the few kB of its graph). OpenVINO IR is XML (`.xml` graph, `.bin` weights).
"""

from __future__ import annotations

import mmap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from st_cli.errors import ModelFolderError

# Where sentence-transformers' backends look (sentence_transformers/backend/load.py globs `*.onnx` and
# `openvino*.xml` in these sub-folders).
PATTERNS = (("onnx", "*.onnx", "onnx"), ("openvino", "*.xml", "openvino"))

# TensorProto.DataType → numpy-style names
_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}  # fmt: skip
# an IR port's `precision` (FP32, I64, ...), lower-cased
_OPENVINO_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64", "i64": "int64",
                    "i32": "int32", "i8": "int8", "u8": "uint8", "boolean": "bool", "bool": "bool"}  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, element type, dimensions (an int, or the name of a dynamic one)."""

    name: str
    dtype: str | None
    shape: tuple[int | str, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape) if self.shape is not None else None}


@dataclass
class ExportedFile:
    """One exported model file. `bytes` counts its weights files too (`weights_files`)."""

    path: str
    format: str  # "onnx" | "openvino"
    bytes: int
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    opset: int | None = None  # ONNX: the default domain's; OpenVINO: the highest opsetN its layers use
    ir_version: int | None = None
    producer: str | None = None
    weights_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "bytes": self.bytes,
            "opset": self.opset,
            "ir_version": self.ir_version,
            "producer": self.producer,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "weights_files": self.weights_files,
        }


def find(root: Path) -> list[Path]:
    """The exported model files of a folder, in sentence-transformers' places."""
    found: list[Path] = []
    for sub, pattern, _ in PATTERNS:
        folder = root / sub
        if folder.is_dir():
            found += sorted(p for p in folder.glob(pattern) if p.is_file())
    return found


def read(path: Path, rel: str) -> ExportedFile:
    """Describe one exported file; ModelFolderError (one line, naming it) when it is not what its suffix says."""
    try:
        if path.suffix == ".onnx":
            return _read_onnx(path, rel)
        return _read_openvino(path, rel)
    except OSError as e:
        raise ModelFolderError(f"{rel}: cannot read ({e.strerror or e})") from None


# ---------------------------------------------------------------- ONNX: protobuf wire format


class _Corrupt(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> list[tuple[int, int | memoryview]]:
    """(field number, value) of one message: an int for varints and fixed-width fields, a view for the rest."""
    out: list[tuple[int, int | memoryview]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Corrupt(f"field {number} runs past the end")
            out.append((number, buf[pos : pos + length]))
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Corrupt("truncated fixed-width field")
            out.append((number, int.from_bytes(buf[pos : pos + width], "little")))
            pos += width
        else:
            raise _Corrupt(f"wire type {wire}")
    return out


def _text(value: int | memoryview) -> str:
    return bytes(value).decode("utf-8", "replace") if isinstance(value, memoryview) else str(value)


def _messages(fields: list[tuple[int, int | memoryview]], number: int) -> list[memoryview]:
    return [v for n, v in fields if n == number and isinstance(v, memoryview)]


def _value_info(buf: memoryview) -> TensorSpec:
    fields = _fields(buf)
    name = next((_text(v) for n, v in fields if n == 1), "")
    dtype: str | None = None
    shape: tuple[int | str, ...] | None = None
    for type_proto in _messages(fields, 2):
        for tensor in _messages(_fields(type_proto), 1):  # TypeProto.tensor_type
            tensor_fields = _fields(tensor)
            elem = next((v for n, v in tensor_fields if n == 1 and isinstance(v, int)), None)
            dtype = _ONNX_DTYPES.get(elem, str(elem)) if elem is not None else None
            for shape_proto in _messages(tensor_fields, 2):
                dims: list[int | str] = []
                for dim in _messages(_fields(shape_proto), 1):
                    dim_fields = _fields(dim)
                    value = next((v for n, v in dim_fields if n == 1 and isinstance(v, int)), None)
                    param = next((_text(v) for n, v in dim_fields if n == 2), None)
                    dims.append(value if value is not None else param or "?")
                shape = tuple(dims)
    return TensorSpec(name, dtype, shape)


def _external_locations(graph_fields: list[tuple[int, int | memoryview]]) -> tuple[set[str], set[str]]:
    """(initializer names, files their data lives in) of the graph's initializers."""
    names: set[str] = set()
    locations: set[str] = set()
    for tensor in _messages(graph_fields, 5):
        fields = _fields(tensor)
        names.update(_text(v) for n, v in fields if n == 8)
        for entry in _messages(fields, 13):  # external_data: StringStringEntryProto
            pairs = dict((n, _text(v)) for n, v in _fields(entry))
            if pairs.get(1) == "location" and 2 in pairs:
                locations.add(pairs[2])
    return names, locations


def _read_onnx(path: Path, rel: str) -> ExportedFile:
    size = path.stat().st_size
    result = ExportedFile(rel, "onnx", size)
    if size == 0:
        raise ModelFolderError(f"{rel}: empty file, not an ONNX model")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        buf = memoryview(mapped)
        try:
            _describe_onnx(buf, path, result)
        except _Corrupt as e:
            raise ModelFolderError(f"{rel}: not a readable ONNX model ({e})") from None
        finally:
            buf.release()
    return result


def _describe_onnx(buf: memoryview, path: Path, result: ExportedFile) -> None:
    fields = _fields(buf)
    graphs = _messages(fields, 7)
    if not graphs:
        raise _Corrupt("no graph")
    result.ir_version = next((v for n, v in fields if n == 1 and isinstance(v, int)), None)
    producer = " ".join(_text(v) for n, v in fields if n in (2, 3)).strip()
    result.producer = producer or None
    for opset in _messages(fields, 8):
        opset_fields = _fields(opset)
        domain = next((_text(v) for n, v in opset_fields if n == 1), "")
        version = next((v for n, v in opset_fields if n == 2 and isinstance(v, int)), None)
        if domain in ("", "ai.onnx"):
            result.opset = version
    graph = _fields(graphs[0])
    initializers, locations = _external_locations(graph)
    result.inputs = [t for t in map(_value_info, _messages(graph, 11)) if t.name not in initializers]
    result.outputs = [_value_info(v) for v in _messages(graph, 12)]
    for location in sorted(locations):
        weights = path.parent / location
        result.weights_files.append(f"{Path(result.path).parent.as_posix()}/{location}")
        if weights.is_file():
            result.bytes += weights.stat().st_size


# ---------------------------------------------------------------- OpenVINO IR: XML + .bin


def _read_openvino(path: Path, rel: str) -> ExportedFile:
    result = ExportedFile(rel, "openvino", path.stat().st_size)
    try:
        net = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ModelFolderError(f"{rel}: not a readable OpenVINO IR ({e})") from None
    if net.tag != "net":
        raise ModelFolderError(f"{rel}: not an OpenVINO IR (root element <{net.tag}>, expected <net>)")
    version = net.get("version")
    result.ir_version = int(version) if version and version.isdigit() else None
    layers = {layer.get("id"): layer for layer in net.iter("layer")}
    opsets = [int(v[5:]) for v in (x.get("version") or "" for x in layers.values()) if v[5:].isdigit()]
    result.opset = max(opsets) if opsets else None
    ports = {(lid, port.get("id")): port for lid, layer in layers.items() for port in layer.iterfind("output/port")}
    edges = list(net.iter("edge"))
    sources = {(e.get("to-layer"), e.get("to-port")): (e.get("from-layer"), e.get("from-port")) for e in edges}
    for lid, layer in layers.items():
        if layer.get("type") == "Parameter":
            port = next(layer.iterfind("output/port"), None)
            result.inputs.append(_ir_tensor(port, layer.get("name") or ""))
        elif layer.get("type") == "Result":
            inport = next(layer.iterfind("input/port"), None)
            source = sources.get((lid, inport.get("id") if inport is not None else None))
            result.outputs.append(_ir_tensor(ports.get(source) if source else None, layer.get("name") or ""))
    weights = path.with_suffix(".bin")
    if weights.is_file():
        result.weights_files.append(Path(rel).with_suffix(".bin").as_posix())
        result.bytes += weights.stat().st_size
    return result


def _ir_tensor(port: ET.Element | None, fallback: str) -> TensorSpec:
    if port is None:
        return TensorSpec(fallback, None, None)
    names = (port.get("names") or "").split(",")
    dims = tuple(int(d.text) if d.text and d.text.lstrip("-").isdigit() and int(d.text) >= 0 else "?"
                 for d in port.iterfind("dim"))  # fmt: skip
    precision = (port.get("precision") or "").lower()
    return TensorSpec(names[0].strip() or fallback, _OPENVINO_DTYPES.get(precision, precision or None), dims)


def is_openvino_weights(path: Path) -> bool:
    """An OpenVINO IR's `.bin` (raw weights beside its `.xml`), which is not a pickle."""
    return path.suffix == ".bin" and path.with_suffix(".xml").is_file()
