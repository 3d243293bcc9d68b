"""`st_manifest.json`: what st records about a folder it wrote (docs/explanation/design.md), as a frozen dataclass.

Built at save (`st build`), read and checked by `st verify`, written by `st verify --record` and later by
`st train` (its `training` field). Loaders of every sentence-transformers version ignore the file.
Torch-free: `st inspect` reads it too. The JSON keys are an API (docs/reference/json.md): only ever added.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from st_cli import fsio
from st_cli._version import __version__
from st_cli.errors import ModelFolderError
from st_cli.format import layout

FILE_NAME = layout.MANIFEST


class ManifestError(ModelFolderError):
    """An st_manifest.json that does not have the shape st writes; names the key at fault."""


@dataclass(frozen=True)
class Probes:
    """The fixed probe texts and the embeddings the folder gave for them when it was written."""

    texts: tuple[str, ...]
    embeddings: tuple[tuple[float, ...], ...]
    prompt_name: str | None = None
    atol: float | None = None

    @property
    def dimension(self) -> int | None:
        return len(self.embeddings[0]) if self.embeddings else None

    def to_json(self) -> dict[str, Any]:
        return {
            "texts": list(self.texts),
            "prompt_name": self.prompt_name,
            "atol": self.atol,
            "embeddings": [list(row) for row in self.embeddings],
        }


@dataclass(frozen=True)
class Manifest:
    """st_manifest.json. `files` and `probes` are None when the file lacks them (verify reports which)."""

    st_cli: str
    format: str | None
    versions: Mapping[str, str]
    files: Mapping[str, str] | None
    probes: Probes | None
    recipe: Mapping[str, Any] | None = None
    untrained_modules: tuple[int, ...] = ()
    dialect: str | None = None
    recorded_by: str | None = None
    training: Mapping[str, Any] | None = None  # set by `st train`: what the modules were fine-tuned on
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys a newer st wrote, kept as they are

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "st_cli": self.st_cli,
            "format": self.format,
            "versions": dict(self.versions),
            "recipe": dict(self.recipe) if self.recipe is not None else None,
            "untrained_modules": list(self.untrained_modules),
            "files": dict(self.files) if self.files is not None else None,
            "probes": self.probes.to_json() if self.probes is not None else None,
        }
        for key in ("dialect", "recorded_by", "training"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out | dict(self.extra)

    @classmethod
    def from_json(cls, raw: Any, where: Path | str = FILE_NAME) -> Manifest:
        """Check the shape of a parsed st_manifest.json; raises ManifestError naming the key."""
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        versions = raw.get("versions") or {}
        if not isinstance(versions, dict):
            raise ManifestError(f"{where}: versions: expected an object")
        files = raw.get("files")
        if files is not None and not (
            isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        ):
            raise ManifestError(f"{where}: files: expected an object of file names to sha256 digests")
        untrained = raw.get("untrained_modules") or []
        if not isinstance(untrained, list) or not all(isinstance(i, int) for i in untrained):
            raise ManifestError(f"{where}: untrained_modules: expected a list of module indexes")
        for key in ("recipe", "training"):
            if raw.get(key) is not None and not isinstance(raw[key], dict):
                raise ManifestError(f"{where}: {key}: expected an object or null")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            st_cli=str(raw.get("st_cli")),
            format=raw.get("format") if isinstance(raw.get("format"), str) else None,
            versions={str(k): str(v) for k, v in versions.items()},
            files=files,
            probes=_probes(raw.get("probes"), where),
            recipe=raw.get("recipe"),
            untrained_modules=tuple(untrained),
            dialect=raw.get("dialect") if isinstance(raw.get("dialect"), str) else None,
            recorded_by=raw.get("recorded_by") if isinstance(raw.get("recorded_by"), str) else None,
            training=raw.get("training"),
            extra={k: v for k, v in raw.items() if k not in known},
        )


def _probes(raw: Any, where: Path | str) -> Probes | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: probes: expected an object")
    texts, rows = raw.get("texts"), raw.get("embeddings")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ManifestError(f"{where}: probes.texts: expected a non-empty list of strings")
    if not _matrix(rows, len(texts)):
        raise ManifestError(f"{where}: probes.embeddings: expected {len(texts)} rows of finite numbers, of one width")
    prompt_name, atol = raw.get("prompt_name"), raw.get("atol")
    if prompt_name is not None and not isinstance(prompt_name, str):
        raise ManifestError(f"{where}: probes.prompt_name: expected a string or null")
    if atol is not None and (not isinstance(atol, (int, float)) or isinstance(atol, bool)):
        raise ManifestError(f"{where}: probes.atol: expected a number or null")
    embeddings = tuple(tuple(float(x) for x in row) for row in rows or ())
    return Probes(tuple(texts), embeddings, prompt_name, atol)


def _matrix(rows: Any, n: int) -> bool:
    if not isinstance(rows, list) or len(rows) != n or not all(isinstance(r, list) and r for r in rows):
        return False
    width = len(rows[0])
    return all(
        len(r) == width and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r)
        for r in rows
    )


def build(
    root: Path,
    *,
    fmt: str | None,
    versions: Mapping[str, str],
    probes: Probes,
    recipe: Mapping[str, Any] | None = None,
    untrained_modules: Sequence[int] = (),
    dialect: str | None = None,
    recorded_by: str | None = None,
    training: Mapping[str, Any] | None = None,
) -> Manifest:
    """The manifest of a finished folder: the sha256 of every file in it (the manifest itself excluded)."""
    return Manifest(
        st_cli=__version__,
        format=fmt,
        versions={"st_cli": __version__, **versions, "python": platform.python_version()},
        files=layout.file_digests(root),
        probes=probes,
        recipe=recipe,
        untrained_modules=tuple(untrained_modules),
        dialect=dialect,
        recorded_by=recorded_by,
        training=training,
    )


def read(root: Path) -> Manifest | None:
    """The folder's manifest, None when it has none; ModelFolderError when it is unreadable or malformed."""
    path = root / FILE_NAME
    if not path.is_file():
        return None
    return Manifest.from_json(layout.read_json(path), path)


def dumps(manifest: Manifest) -> str:
    return json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"


def write(root: Path, manifest: Manifest) -> Path:
    """Write st_manifest.json into a folder: a temporary name beside it, then a rename that never replaces
    (a manifest that appeared meanwhile is kept: OutputExistsError)."""
    return fsio.write_text_atomic(root / FILE_NAME, dumps(manifest))
