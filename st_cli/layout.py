"""The sentence-transformers folder format: file names, type strings, config spellings, atomic saves.

This is the only file that knows how a model folder is laid out on disk (see ../shared/FORMAT.md).
It must not import torch: `st inspect` and `st --help` read folders through it and stay instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from st_cli.errors import ModelFolderError, OutputExistsError, StError

Format = Literal["portable", "st6"]
FORMATS: tuple[Format, ...] = ("portable", "st6")

MODULES_JSON = "modules.json"
MODEL_CONFIG = "config_sentence_transformers.json"
SBERT_CONFIG = "sentence_bert_config.json"
MODULE_CONFIG = "config.json"
MANIFEST = "st_manifest.json"
MODEL_CARD = "README.md"
SAFETENSORS_WEIGHTS = "model.safetensors"
# Files a transformers tokenizer is built from; without any, transformers builds a toy one silently.
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model"
)
PICKLED_WEIGHTS = "pytorch_model.bin"
# Older names for the Transformer's config, tried in this order when SBERT_CONFIG is absent.
LEGACY_SBERT_CONFIGS = (
    SBERT_CONFIG,
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)

_LEGACY_PREFIX = "sentence_transformers.models."
_BASE = "sentence_transformers.base.modules."
_ST = "sentence_transformers.sentence_transformer.modules."

# What each format writes for the built-ins.
TYPE_STRINGS: dict[Format, dict[str, str]] = {
    "portable": {name: _LEGACY_PREFIX + name for name in ("Transformer", "Pooling", "Dense", "Normalize")},
    "st6": {
        "Transformer": _BASE + "transformer.Transformer",
        "Pooling": _ST + "pooling.Pooling",
        "Dense": _BASE + "dense.Dense",
        "Normalize": _BASE + "normalize.Normalize",
    },
}

# Every spelling of a sentence-transformers built-in, in either dialect, to its short name.
_NEW_DIALECT_PATHS = {
    "Transformer": [_BASE + "transformer"],
    "Pooling": [_ST + "pooling"],
    "Dense": [_BASE + "dense"],
    "Normalize": [_BASE + "normalize", _ST + "normalize"],
    "Router": [_BASE + "router"],
    "StaticEmbedding": [_ST + "static_embedding"],
    "WordEmbeddings": [_ST + "word_embeddings"],
    "WeightedLayerPooling": [_ST + "weighted_layer_pooling"],
    "LayerNorm": [_ST + "layer_norm"],
    "Dropout": [_ST + "dropout"],
    "CNN": [_ST + "cnn"],
    "LSTM": [_ST + "lstm"],
    "BoW": [_ST + "bow"],
    "WordWeights": [_ST + "word_weights"],
    "CLIPModel": [_ST + "clip_model"],
}
LEGACY_TYPES: dict[str, str] = {_LEGACY_PREFIX + name: name for name in _NEW_DIALECT_PATHS} | {
    _LEGACY_PREFIX + "Asym": "Router"
}
NEW_TYPES: dict[str, str] = {f"{path}.{name}": name for name, paths in _NEW_DIALECT_PATHS.items() for path in paths}
KNOWN_TYPES: dict[str, str] = LEGACY_TYPES | NEW_TYPES

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# Legacy boolean keys, in sentence-transformers' concatenation order.
_LEGACY_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
_ST22_POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens")  # the five keys ST 2.2 accepts
_EMBEDDING_IO = {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"}


@dataclass(frozen=True)
class ModuleEntry:
    """One entry of modules.json."""

    idx: int
    name: str
    path: str
    type: str
    kwargs: tuple[str, ...] = ()

    @property
    def short_type(self) -> str | None:
        """The st short name of a sentence-transformers built-in, or None for other code."""
        return KNOWN_TYPES.get(self.type)

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


# ---------------------------------------------------------------- reading


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


def module_folder(root: Path, entry_path: str) -> Path:
    """The folder of a module, refusing a path that leaves the model folder (`..`, absolute, symlink)."""
    root = root.resolve()
    target = (root / entry_path).resolve()
    if target != root and root not in target.parents:
        raise ModelFolderError(f"{root / MODULES_JSON}: module path {entry_path!r} points outside the model folder")
    return target


def read_modules_json(root: Path) -> list[ModuleEntry]:
    """The entries of `root/modules.json`, checked for shape."""
    path = root / MODULES_JSON
    if not path.is_file():
        raise ModelFolderError(f"{root}: no {MODULES_JSON}; not a sentence-transformers model folder")
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
    kinds = {"legacy" if e.type in LEGACY_TYPES else "new" for e in entries if e.type in KNOWN_TYPES}
    if not kinds:
        return "custom"
    return kinds.pop() if len(kinds) == 1 else "mixed"


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
    return ModelConfig(
        prompts=dict(prompts),
        default_prompt_name=default,
        similarity_fn_name=raw.get("similarity_fn_name"),
        truncate_dim=truncate_dim,
        versions={str(k): str(v) for k, v in (raw.get("__version__") or {}).items()},
    )


def find_sbert_config(folder: Path) -> Path | None:
    """The Transformer's own config file, under any of the names ST has used."""
    return next((folder / name for name in LEGACY_SBERT_CONFIGS if (folder / name).is_file()), None)


def read_module_config(short_type: str | None, folder: Path) -> dict[str, Any]:
    """A module's config as st constructor kwargs, whichever dialect wrote it."""
    if short_type == "Transformer":
        path = find_sbert_config(folder)
        raw = read_json(path) if path else {}
        return {k: raw[k] for k in ("max_seq_length", "do_lower_case") if k in raw}
    path = folder / MODULE_CONFIG
    raw = read_json(path) if path.is_file() else {}
    if not isinstance(raw, dict):
        raise ModelFolderError(f"{path}: expected a JSON object")
    if short_type == "Pooling":
        return _decode_pooling(raw, path)
    if short_type == "Dense":
        return _decode_dense(raw, path)
    if short_type == "Normalize":
        return {}
    return raw


def _decode_pooling(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    dimension = raw.get("embedding_dimension", raw.get("word_embedding_dimension"))
    if "pooling_mode" in raw:
        mode = raw["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        modes = [m for m, key in _LEGACY_POOLING_KEYS.items() if raw.get(key)] or ["mean"]
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not isinstance(dimension, int):
        problem = f"unknown pooling mode {unknown[0]!r}" if unknown else "missing embedding dimension"
        raise ModelFolderError(f"{path}: {problem}")
    return {"dimension": dimension, "mode": modes, "include_prompt": bool(raw.get("include_prompt", True))}


def _decode_dense(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    if raw.get("use_residual"):
        raise ModelFolderError(f"{path}: use_residual is not supported by st")
    for key in ("module_input_name", "module_output_name"):
        if raw.get(key, "sentence_embedding") != "sentence_embedding":
            raise ModelFolderError(f"{path}: {key}={raw[key]!r} is not supported by st")
    try:
        return {
            "in_features": int(raw["in_features"]),
            "out_features": int(raw["out_features"]),
            "bias": bool(raw.get("bias", True)),
            "activation": raw.get("activation_function", "torch.nn.modules.activation.Tanh"),
        }
    except KeyError as e:
        raise ModelFolderError(f"{path}: missing key {e}") from None


# ---------------------------------------------------------------- writing


def module_dir_name(idx: int, class_name: str) -> str:
    """`{idx}_{Class}`, the folder ST gives a module that is not saved in the root."""
    return f"{idx}_{class_name}"


def module_config_files(short_type: str | None, config: Mapping[str, Any], fmt: Format) -> dict[str, dict | None]:
    """What a module's config looks like on disk: {file name: JSON object}; None means no file."""
    if short_type == "Transformer":
        if fmt == "portable":
            return {SBERT_CONFIG: {"max_seq_length": config["max_seq_length"], "do_lower_case": False}}
        return {
            SBERT_CONFIG: {
                "transformer_task": "feature-extraction",
                "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                "module_output_name": "token_embeddings",
            }
        }
    if short_type == "Pooling":
        return {MODULE_CONFIG: _encode_pooling(config, fmt)}
    if short_type == "Dense":
        dense = {
            "in_features": config["in_features"],
            "out_features": config["out_features"],
            "bias": config["bias"],
            "activation_function": config["activation"],
        }
        return {MODULE_CONFIG: dense | (_EMBEDDING_IO if fmt == "st6" else {})}
    if short_type == "Normalize":
        return {MODULE_CONFIG: dict(_EMBEDDING_IO) if fmt == "st6" else None}
    return {MODULE_CONFIG: dict(config)}


def _encode_pooling(config: Mapping[str, Any], fmt: Format) -> dict[str, Any]:
    modes = list(config["mode"])
    include_prompt = bool(config.get("include_prompt", True))
    if fmt == "st6":
        mode: str | list[str] = modes[0] if len(modes) == 1 else modes
        return {"embedding_dimension": config["dimension"], "pooling_mode": mode, "include_prompt": include_prompt}
    out: dict[str, Any] = {"word_embedding_dimension": config["dimension"]}
    out |= {_LEGACY_POOLING_KEYS[m]: m in modes for m in _ST22_POOLING_MODES}
    # The newer keys break ST <= 2.2, so they are written only when they carry information.
    if not include_prompt or any(m not in _ST22_POOLING_MODES for m in modes):
        out |= {_LEGACY_POOLING_KEYS[m]: m in modes for m in ("weightedmean", "lasttoken")}
        out["include_prompt"] = include_prompt
    return out


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_module_config(folder: Path, short_type: str | None, config: Mapping[str, Any], fmt: Format) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in module_config_files(short_type, config, fmt).items():
        if content is not None:
            write_json(folder / name, content)


def make_tokenizer_config_portable(folder: Path) -> None:
    """transformers 5 names generic fast tokenizers `TokenizersBackend`, a class 4.x lacks; use the old name."""
    path = folder / "tokenizer_config.json"
    if path.is_file():
        config = read_json(path)
        if isinstance(config, dict) and config.get("tokenizer_class") == "TokenizersBackend":
            write_json(path, config | {"tokenizer_class": "PreTrainedTokenizerFast"})


def write_model_files(root: Path, entries: list[ModuleEntry], config: ModelConfig, fmt: Format) -> None:
    """modules.json and config_sentence_transformers.json."""
    write_json(root / MODULES_JSON, [e.to_json() for e in entries])
    model_config: dict[str, Any] = {
        "__version__": config.versions,
        "model_type": "SentenceTransformer",
        "prompts": config.prompts,
        "default_prompt_name": config.default_prompt_name,
        "similarity_fn_name": config.similarity_fn_name or "cosine",
    }
    if config.truncate_dim is not None:
        model_config["truncate_dim"] = config.truncate_dim
    if fmt == "st6":
        model_config = dict(sorted(model_config.items()))
    write_json(root / MODEL_CONFIG, model_config)


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


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    return read_json(path) if path.is_file() else None


@contextlib.contextmanager
def atomic_folder(target: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target`.

    On any exception the temporary folder is removed and `target` is left exactly as it was.
    """
    target = Path(target)
    check_output_free(target, force=force)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise StError(f"{target}: cannot create the output folder ({e.strerror or e}: {e.filename})") from None
    try:
        yield tmp
        _apply_umask(tmp)
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _apply_umask(root: Path) -> None:
    """mkdtemp makes private folders; give the result the permissions a plain mkdir would."""
    umask = _current_umask()
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def temp_file_beside(target: Path, tag: str = "tmp") -> Path:
    """An empty hidden file next to `target` (same filesystem, so publish() is an atomic rename)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{tag}", dir=target.parent)
    os.close(fd)
    return Path(name)


def publish(tmp: Path, target: Path) -> None:
    """Give a temporary file a plain file's permissions (mkstemp makes it private) and rename it into place."""
    tmp.chmod(0o666 & ~_current_umask())
    os.replace(tmp, target)


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside `path` under a temporary name, then rename over it: readers never see half a file."""
    tmp = temp_file_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_free(target: Path, *, force: bool) -> None:
    """Refuse to overwrite something the user has, unless --force."""
    if (target.exists() or target.is_symlink()) and not force:
        raise OutputExistsError(f"{target}: already exists; pass --force to replace it")


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
