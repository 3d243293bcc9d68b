"""The sentence-transformers folder format: file names, type strings, config spellings, atomic saves.

This is the only file that knows how a model folder is laid out on disk (see docs/reference/st-formats.md).
It must not import torch: `st inspect` and `st --help` read folders through it and stay instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from st_cli import fsio
from st_cli.errors import ModelFolderError, StError
from st_cli.format.files import (
    MANIFEST,
    file_digests,
    read_json,
    read_safetensors_header,
    sha256_file,
    walk,
    write_json,
)
from st_cli.format.spec import FORMATS, MODULE_CONFIG, SBERT_CONFIG, Format, TypeSpec, is_legacy_type, is_new_type
from st_cli.format.specs import SPECS, plain_stack, spec_for_type_string
from st_cli.format.specs.pooling import POOLING_MODES

# Re-exported: callers read a folder's plain files through the layout too (`layout.read_json`).
__all__ = [
    "FORMATS",
    "MANIFEST",
    "MODULE_CONFIG",
    "POOLING_MODES",
    "SBERT_CONFIG",
    "Format",
    "file_digests",
    "read_json",
    "read_safetensors_header",
    "sha256_file",
    "walk",
    "write_json",
]

MODULES_JSON = "modules.json"
MODEL_CONFIG = "config_sentence_transformers.json"
MODEL_CARD = "README.md"
SAFETENSORS_WEIGHTS = "model.safetensors"
# Files a transformers tokenizer is built from; without any, transformers builds a toy one silently.
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model"
)
PICKLED_WEIGHTS = "pytorch_model.bin"

# What each format writes for the built-ins, and every spelling read (views of SPECS).
TYPE_STRINGS: dict[Format, dict[str, str]] = {
    fmt: {name: spec.type_string(fmt) for name, spec in SPECS.items()} for fmt in FORMATS
}
KNOWN_TYPES: dict[str, str] = {s: spec.name for spec in SPECS.values() for s in spec.type_strings}


@dataclass(frozen=True)
class ModuleEntry:
    """One entry of modules.json."""

    idx: int
    name: str
    path: str
    type: str
    kwargs: tuple[str, ...] = ()
    # Set only for modules st supplies itself (a plain transformers folder's Pooling): no files on disk.
    config: Mapping[str, Any] | None = None

    @property
    def spec(self) -> TypeSpec | None:
        """The spec of a type st knows (a built-in or a registered plugin), or None for other code."""
        return spec_for_type_string(self.type)

    @property
    def short_type(self) -> str | None:
        """The st short name of a type st knows, or None for other code."""
        spec = self.spec
        return spec.name if spec else None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"idx": self.idx, "name": self.name, "path": self.path, "type": self.type}
        if self.kwargs:
            entry["kwargs"] = list(self.kwargs)
        return entry


@dataclass
class ModelConfig:
    """config_sentence_transformers.json, the model-level settings."""

    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    truncate_dim: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    model_type: str = "SentenceTransformer"  # or SparseEncoder (a stack with a sparse module)
    max_active_dims: int | None = None  # SparseEncoder: the non-zero dimensions kept per vector (None: all)


# Tasks with a prompt of their own: ST 6.2's encode_query / encode_document use prompts[task], and its
# SentenceTransformer always has both keys ("" unless the folder sets them), so never the default prompt.
TASK_PROMPTS = ("query", "document")


def task_prompt(task: str | None, prompts: Mapping[str, str]) -> str | None:
    """The prompt a task implies (its own, or ""), or None for no task or a task without one."""
    return prompts.get(task, "") if task in TASK_PROMPTS else None


def resolve_prompt(
    prompts: Mapping[str, str],
    default_prompt_name: str | None,
    prompt: str | None = None,
    prompt_name: str | None = None,
    task: str | None = None,
) -> str:
    """sentence-transformers' order: an explicit prompt, then a prompt name, then the task's prompt
    (encode_query/encode_document), then the default prompt. Every encoder (torch, static, exported) asks here."""
    if prompt is not None:
        return _whole_text(prompt, "--prompt")
    implied = task_prompt(task, prompts)
    if prompt_name is None and implied is not None:
        return _whole_text(implied, f"prompt {task!r}")
    name = prompt_name if prompt_name is not None else default_prompt_name
    if name is None:
        return ""
    if name not in prompts:
        raise StError(f"unknown prompt name {name!r}; this model has: {', '.join(prompts) or 'none'}")
    return _whole_text(prompts[name], f"prompt {name!r}")


def _whole_text(text: str, where: str) -> str:
    """A prompt a tokenizer accepts: no half surrogate pair (an argument with invalid UTF-8 arrives as one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        problem = f"not valid text (an invalid UTF-8 byte or half a surrogate pair at {e.start})"
        raise StError(f"{where}: {problem}") from None
    return text


# ---------------------------------------------------------------- reading


def module_folder(root: Path, entry_path: str, named_in: Path | None = None) -> Path:
    """The folder of a module, refusing a path that leaves `root` (`..`, absolute, symlink); `named_in` is the
    file that names the path (modules.json unless said otherwise: a Router's config names its routes' folders)."""
    where = named_in or root / MODULES_JSON
    if "\x00" in entry_path:  # no file system path holds one: every os call would raise ValueError
        raise ModelFolderError(f"{where}: module path {entry_path!r} contains a NUL character")
    root = root.resolve()
    target = (root / entry_path).resolve()
    if target != root and root not in target.parents:
        raise ModelFolderError(f"{where}: module path {entry_path!r} points outside the model folder")
    return target


def looks_like_model(folder: str | os.PathLike[str] | None) -> bool:
    """A local folder with modules.json or a transformers config.json (a guard's cheap test, nothing parsed)."""
    return folder is not None and any(os.path.isfile(os.path.join(folder, n)) for n in (MODULES_JSON, MODULE_CONFIG))


# What --force may replace with a model folder: a model folder (never a file, never another folder).
MODEL_FOLDER = fsio.Kind("a model folder", folder=True, looks_right=looks_like_model)


# Neither kind of folder st reads: the one line inspect, verify and every loader give (exit 2).
NOT_A_MODEL = (
    f"no {MODULES_JSON}, and no transformers {MODULE_CONFIG} (one naming model_type or architectures); "
    "not a model folder"
)


def is_plain_folder(root: Path) -> bool:
    """A transformers model folder without modules.json: loaders read it as Transformer + Pooling."""
    config = root / MODULE_CONFIG
    if (root / MODULES_JSON).exists() or not config.is_file():
        return False
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(raw, dict) and ("model_type" in raw or "architectures" in raw)


def plain_entries(root: Path) -> list[ModuleEntry]:
    """The stack sentence-transformers builds for a plain folder (specs.plain_stack), as modules.json entries."""
    hf_config = read_json(root / MODULE_CONFIG)
    return [
        ModuleEntry(idx=i, name=str(i), path="", type=spec.legacy_type, config=config)
        for i, (spec, config) in enumerate(plain_stack(hf_config))
    ]


def read_modules_json(root: Path) -> list[ModuleEntry]:
    """The entries of `root/modules.json`, checked for shape; a plain transformers folder's implied stack."""
    path = root / MODULES_JSON
    if not path.is_file() and is_plain_folder(root):
        return plain_entries(root)
    if not path.is_file() and (root / MODULE_CONFIG).is_file():
        # A transformers folder whose config.json does not read: name the file, not the missing modules.json.
        hf_config = read_json(root / MODULE_CONFIG)
        if not isinstance(hf_config, dict):
            raise ModelFolderError(f"{root / MODULE_CONFIG}: expected a JSON object")
    if not path.is_file():
        raise ModelFolderError(f"{root}: {NOT_A_MODEL}")
    raw = read_json(path)
    if not isinstance(raw, list) or not raw:
        raise ModelFolderError(f"{path}: expected a non-empty list of modules")
    entries = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not isinstance(item.get("path"), str):
            raise ModelFolderError(f"{path}: entry [{i}] needs string 'type' and 'path'")
        kwargs = item.get("kwargs") or []
        if not isinstance(kwargs, list) or not all(isinstance(k, str) for k in kwargs):
            raise ModelFolderError(f"{path}: entry [{i}].kwargs must be a list of names")
        idx = item.get("idx", i)
        if not isinstance(idx, int) and not (isinstance(idx, str) and idx.isdigit()):
            raise ModelFolderError(f"{path}: entry [{i}].idx must be a number, got {idx!r}")
        entries.append(
            ModuleEntry(
                idx=int(idx),
                name=str(item.get("name", i)),
                path=item["path"],
                type=item["type"],
                kwargs=tuple(kwargs),
            )
        )
    return entries


def dialect(entries: list[ModuleEntry]) -> str:
    """'legacy' (ST <= 5.3), 'new' (ST >= 5.4), 'mixed', or 'custom' (no built-in type at all)."""
    kinds = {"legacy" if is_legacy_type(e.type) else "new" for e in entries if _sentence_transformers_type(e)}
    if not kinds:
        return "custom"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _sentence_transformers_type(entry: ModuleEntry) -> bool:
    """A built-in spelled as sentence-transformers spells it (plugins and custom code have their own paths)."""
    return entry.spec is not None and (is_legacy_type(entry.type) or is_new_type(entry.type))


def read_model_config(root: Path) -> ModelConfig:
    """config_sentence_transformers.json; a missing file means the defaults."""
    path = root / MODEL_CONFIG
    if not path.is_file():
        return ModelConfig()
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ModelFolderError(f"{path}: expected a JSON object")
    prompts = raw.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ModelFolderError(f"{path}: 'prompts' must map names to strings")
    default = raw.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ModelFolderError(f"{path}: default_prompt_name {default!r} is not one of the prompts {sorted(prompts)}")
    truncate_dim = raw.get("truncate_dim")
    if truncate_dim is not None and (
        not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool) or truncate_dim <= 0
    ):
        raise ModelFolderError(f"{path}: truncate_dim must be a positive integer or null, got {truncate_dim!r}")
    max_active_dims = raw.get("max_active_dims")
    if max_active_dims is not None and (
        not isinstance(max_active_dims, int) or isinstance(max_active_dims, bool) or max_active_dims <= 0
    ):
        raise ModelFolderError(f"{path}: max_active_dims must be a positive integer or null, got {max_active_dims!r}")
    model_type = raw.get("model_type")
    return ModelConfig(
        prompts=dict(prompts),
        default_prompt_name=default,
        similarity_fn_name=raw.get("similarity_fn_name"),
        truncate_dim=truncate_dim,
        versions={str(k): str(v) for k, v in (raw.get("__version__") or {}).items()},
        model_type=model_type if isinstance(model_type, str) else "SentenceTransformer",
        max_active_dims=max_active_dims,
    )


def find_config_file(spec: TypeSpec | None, folder: Path) -> Path | None:
    """A module's config file, under any of the names its type has used (custom code: config.json)."""
    if spec is not None:
        return spec.config_path(folder)
    path = folder / MODULE_CONFIG
    return path if path.is_file() else None


def find_sbert_config(folder: Path) -> Path | None:
    """The input module's own config file (sentence_bert_config.json or an older name)."""
    return next(
        (p for spec in SPECS.values() if spec.input_module and (p := find_config_file(spec, folder))), None
    )


def read_module_config(spec: TypeSpec | None, folder: Path) -> dict[str, Any]:
    """A module's config as st constructor kwargs, whichever dialect wrote it (custom code: as written)."""
    if spec is not None:
        return spec.read_config(folder)
    path = find_config_file(None, folder)
    raw = read_json(path) if path else {}
    if not isinstance(raw, dict):
        raise ModelFolderError(f"{path}: expected a JSON object")
    return raw


# ---------------------------------------------------------------- writing


def module_dir_name(idx: int, class_name: str) -> str:
    """`{idx}_{Class}`, the folder ST gives a module that is not saved in the root."""
    return f"{idx}_{class_name}"


def module_config_files(spec: TypeSpec | None, config: Mapping[str, Any], fmt: Format) -> dict[str, dict | None]:
    """What a module's config looks like on disk: {file name: JSON object}; None means no file."""
    if spec is None:
        return {MODULE_CONFIG: dict(config)}
    return spec.encode_config(config, fmt)


def write_module_config(folder: Path, spec: TypeSpec | None, config: Mapping[str, Any], fmt: Format) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in module_config_files(spec, config, fmt).items():
        if content is not None:
            write_json(folder / name, content)


def make_tokenizer_config_portable(folder: Path) -> None:
    """transformers 5 names generic fast tokenizers `TokenizersBackend`, a class 4.x lacks; use the old name."""
    path = folder / "tokenizer_config.json"
    if path.is_file():
        config = read_json(path)
        if isinstance(config, dict) and config.get("tokenizer_class") == "TokenizersBackend":
            write_json(path, config | {"tokenizer_class": "PreTrainedTokenizerFast"})


def make_tokenizer_json_portable(folder: Path) -> None:
    """tokenizers >= 0.20 write BPE merges as pairs, which older tokenizers cannot parse ("untagged enum
    ModelWrapper"); every version reads the older "left right" strings, so write those where no part has a space."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return
    config = read_json(path)
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return
    merges = model.get("merges")
    if not isinstance(merges, list) or not all(isinstance(m, list) and len(m) == 2 for m in merges):
        return
    if any(" " in part for merge in merges for part in merge):
        return
    model["merges"] = [f"{left} {right}" for left, right in merges]
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")


def write_model_files(root: Path, entries: list[ModuleEntry], config: ModelConfig, fmt: Format) -> None:
    """modules.json and config_sentence_transformers.json."""
    write_json(root / MODULES_JSON, [e.to_json() for e in entries])
    model_config: dict[str, Any] = {
        "__version__": config.versions,
        "model_type": config.model_type,
        "prompts": config.prompts,
        "default_prompt_name": config.default_prompt_name,
        "similarity_fn_name": config.similarity_fn_name or "cosine",
    }
    if config.truncate_dim is not None:
        model_config["truncate_dim"] = config.truncate_dim
    if config.max_active_dims is not None:
        model_config["max_active_dims"] = config.max_active_dims
    if fmt == "st6":
        model_config = dict(sorted(model_config.items()))
    write_json(root / MODEL_CONFIG, model_config)


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    return read_json(path) if path.is_file() else None
