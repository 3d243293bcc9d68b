"""Plain files of a model folder, read and written without knowing what they mean: JSON, safetensors
headers, digests. A leaf: the type specs and the layout both read through it, and it imports neither.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from st_cli.errors import ModelFolderError

MANIFEST = "st_manifest.json"  # st's record of a folder; its own digest cannot be in it

# ---------------------------------------------------------------- JSON


def read_json(path: Path) -> Any:
    """Parse a JSON file, or raise a one-line ModelFolderError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ModelFolderError(f"{path}: not valid JSON (nested too deeply)") from None
    except OSError as e:
        raise ModelFolderError(f"{path}: cannot read ({e.strerror or e})") from None


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- walking and digests


def walk(root: Path) -> list[Path]:
    """Everything below root, sorted, without descending into symlinked folders (a link to / is not a walk of /)."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        found += [Path(folder) / name for name in dirs + files]
    return sorted(found)


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file below root (relative POSIX paths), the manifest itself excluded."""
    digests = {}
    for path in (p for p in walk(root) if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            digests[rel] = sha256_file(path)
    return digests


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- safetensors headers

SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors format's own limit
# Bytes per element of the safetensors dtypes; a tensor's data must be exactly shape × this.
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "C64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}  # fmt: skip


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file ({name: {dtype, shape, data_offsets}, "__metadata__": ...}).

    Reads only the 8-byte length and the header; never the tensors. Checks that every tensor's
    data lies inside the file, so a truncated file is reported here.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelFolderError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
            length = int.from_bytes(prefix, "little")
            if length > SAFETENSORS_MAX_HEADER or 8 + length > size:
                problem = f"truncated safetensors header ({length} bytes announced, {size} in file)"
                raise ModelFolderError(f"{path}: {problem}")
            raw = f.read(length)
    except OSError as e:
        raise ModelFolderError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelFolderError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelFolderError(f"{path}: safetensors header is not a JSON object")
    data_size = size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        shape = info.get("shape") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(x, int) for x in offsets)
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and d >= 0 for d in shape)
            or not isinstance(info.get("dtype"), str)
        ):
            raise ModelFolderError(f"{path}: tensor {name!r} has a malformed header entry")
        if not 0 <= offsets[0] <= offsets[1] <= data_size:
            raise ModelFolderError(f"{path}: tensor {name!r} ends at byte {offsets[1]}, beyond the data ({data_size})")
        width = SAFETENSORS_DTYPE_BYTES.get(info["dtype"])
        if width is not None and math.prod(shape) * width != offsets[1] - offsets[0]:
            problem = f"shape {shape} of {info['dtype']} needs {math.prod(shape) * width} bytes"
            raise ModelFolderError(f"{path}: tensor {name!r}: {problem}, the header gives {offsets[1] - offsets[0]}")
    return header
