"""What a model folder holds, read from its JSON files and safetensors headers alone (`st inspect`).

Nothing here imports torch or transformers, and nothing imports or runs code from the folder
(DESIGN.md §7): custom modules are reported, never loaded. `portability` restates the loader rules
of ../shared/FORMAT.md (§2-§8) as a static check; `st verify` reuses it.

A folder that cannot be read at all (no folder, no or unparsable `modules.json`) raises
ModelFolderError; every other problem becomes a `Finding`.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from st_cli import hub, layout
from st_cli.errors import ModelFolderError

SCHEMA_VERSION = 1
Severity = Literal["error", "warning", "info"]
Status = Literal["yes", "partial", "no"]
LOADERS = ("ST<=5.3", "ST5.4-5.x", "ST>=6", "TEI")

_HIDDEN_SIZE_KEYS = ("hidden_size", "d_model", "dim", "n_embd")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_EMBEDDING_TENSORS = ("word_embeddings.weight", "embed_tokens.weight", "wte.weight", "tok_embeddings.weight")
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
_NO_LIMIT = 10**9  # tokenizers store "no limit" as 1e30
_BUILTINS_WITH_CONFIG = ("Transformer", "Pooling", "Dense", "Normalize")
_PASS_THROUGH = {"Normalize", "LayerNorm", "Dropout", "WeightedLayerPooling", "WordWeights"}

# Config keys each generation of loaders accepts (FORMAT.md §2, §3, §6); anything else is a TypeError,
# except in ST 6 Dense (dropped with a warning) and Normalize (config ignored or filtered).
_SBERT_KEYS_LEGACY = frozenset(
    {"max_seq_length", "do_lower_case", "model_args", "tokenizer_args", "config_args", "cache_dir", "backend"}
    | {"tokenizer_name_or_path"}
)
_SBERT_KEYS_5X = _SBERT_KEYS_LEGACY | {
    "transformer_task",
    "modality_config",
    "module_output_name",
    "processing_kwargs",
    "unpad_inputs",
    "model_kwargs",
    "processor_kwargs",
    "config_kwargs",
}
_SBERT_KEYS_6 = _SBERT_KEYS_5X | {"query_length", "document_length", "query_expansion"}
_POOLING_BOOLEANS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
_POOLING_KEYS_LEGACY = frozenset({"word_embedding_dimension", "pooling_mode", "include_prompt", *_POOLING_BOOLEANS})
_POOLING_KEYS_NEW = _POOLING_KEYS_LEGACY | {"embedding_dimension"}
_DENSE_KEYS_LEGACY = frozenset(
    {"in_features", "out_features", "bias", "activation_function", "init_weight", "init_bias"}
)
_DENSE_KEYS_5X = _DENSE_KEYS_LEGACY | {"module_input_name", "module_output_name"}
_DENSE_KEYS_6 = _DENSE_KEYS_5X | {"use_residual"}
_KNOWN_KEYS = {"Transformer": _SBERT_KEYS_6, "Pooling": _POOLING_KEYS_NEW, "Dense": _DENSE_KEYS_6}
_ST6_ONLY_TYPES = {"sentence_transformers.base.modules.normalize.Normalize"}
_TEI_TYPES = {f"sentence_transformers.models.{n}" for n in ("Transformer", "Pooling", "Dense", "Normalize")}
_TEI_ACTIVATIONS = {"torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity"}
# Tokenizer classes that transformers 5 writes and 4.x cannot load; ST <= 4.x pins transformers < 5,
# ST 5.x allows either, ST 6 needs 5 (measured: ST 2.2.2 + transformers 4.30 fails on TokenizersBackend).
_TF5_TOKENIZER_CLASSES = {"TokenizersBackend", "SentencePieceBackend", "PythonBackend"}


# Which `st verify` check each finding code fails (DESIGN.md §6). Every code summary.py emits has a row
# (tests/test_bad_input.py reads this file to make sure), so a new finding cannot slip past verify:
# "layout" and "dimensions" fail those checks; "portability" feeds the loader verdicts; None is information.
FINDING_CHECKS: dict[str, str | None] = {
    "path-escape": "layout",
    "invalid-json": "layout",
    "bad-model-config": "layout",
    "missing-module-folder": "layout",
    "unknown-type": "layout",
    "missing-config": "layout",
    "bad-config": "layout",
    "missing-weights": "layout",
    "bad-weights": "layout",
    "st-unsupported": "layout",
    "missing-tokenizer": "layout",
    "duplicate-module": "layout",
    "bad-max-seq-length": "layout",
    "shape-mismatch": "dimensions",
    "dimension-mismatch": "dimensions",
    "truncate-dim": "dimensions",
    "unknown-config-key": "portability",
    "custom-code": "portability",
    "custom-code-missing": "portability",  # verify's layout check asks whether the code is importable
    "tokenizer-class": "portability",
    "pickled-weights": "portability",
    "requirements": "portability",
    "model-type": "portability",
    "python-file": None,
    "no-model-config": None,
    "manifest": None,
    "no-manifest": None,
}


def finding_check(code: str) -> str | None:
    """The verify check a finding code fails; an unknown code fails layout rather than pass unnoticed."""
    return FINDING_CHECKS.get(code, "layout")


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class Finding:
    """Something worth knowing about a folder: `code` is a short stable slug, `path` relative to the folder."""

    severity: Severity
    code: str
    message: str
    path: str | None = None

    @property
    def check(self) -> str | None:
        """The `st verify` check this finding fails (FINDING_CHECKS)."""
        return finding_check(self.code)

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "check": self.check,
        }


@dataclass(frozen=True)
class LoaderVerdict:
    """Whether one loader can read the folder: yes, partial (part of its version range, or with caveats), no."""

    loader: str
    status: Status
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True unless the loader cannot read the folder at all."""
        return self.status != "no"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "ok": self.ok, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str

    @property
    def parameters(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        shape = list(self.shape)
        return {"name": self.name, "dtype": self.dtype, "shape": shape, "bytes": self.nbytes, "file": self.file}


@dataclass
class WeightsInfo:
    """A module's weight files; counts come from the safetensors headers (pickled files are never opened)."""

    files: list[str] = field(default_factory=list)
    pickled: list[str] = field(default_factory=list)
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)

    @property
    def parameters(self) -> int:
        return sum(t.parameters for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def dtypes(self) -> dict[str, int]:
        return dict(Counter(t.dtype for t in self.tensors).most_common())

    def tensor(self, suffix: str) -> TensorInfo | None:
        return next((t for t in self.tensors if t.name == suffix or t.name.endswith("." + suffix)), None)

    def to_json(self, *, tensors: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": self.files,
            "pickled": self.pickled,
            "tensor_count": len(self.tensors),
            "parameters": self.parameters,
            "dtypes": self.dtypes,
            "bytes": self.nbytes,
        }
        if tensors:
            out["tensors"] = [t.to_json() for t in self.tensors]
        return out


@dataclass
class TransformerInfo:
    """The Hugging Face side of a Transformer module: config.json and tokenizer_config.json."""

    architecture: str | None = None
    model_type: str | None = None
    layers: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    tokenizer_class: str | None = None
    model_max_length: int | None = None
    tokenizer_json: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ModuleSummary:
    idx: int
    name: str
    type: str  # as written in modules.json
    short_type: str | None  # st's name for a sentence-transformers built-in; None for custom code
    path: str
    exists: bool = False
    config_file: str | None = None
    raw_config: dict[str, Any] | None = None  # the config file as written
    config: dict[str, Any] | None = None  # st's reading of it (layout.read_module_config)
    input_dim: int | None = None
    output_dim: int | None = None
    weights: WeightsInfo | None = None
    transformer: TransformerInfo | None = None
    custom_code: str | None = None  # the .py file a custom module would run
    kwargs: tuple[str, ...] = ()

    def to_json(self, *, tensors: bool = False) -> dict[str, Any]:
        return {
            "idx": self.idx,
            "name": self.name,
            "type": self.type,
            "short_type": self.short_type,
            "path": self.path,
            "exists": self.exists,
            "config_file": self.config_file,
            "raw_config": self.raw_config,
            "config": self.config,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "weights": self.weights.to_json(tensors=tensors) if self.weights else None,
            "transformer": self.transformer.to_json() if self.transformer else None,
            "custom_code": self.custom_code,
            "kwargs": list(self.kwargs),
        }


@dataclass
class ModelSummary:
    """Everything `st inspect` shows; `to_json()` is the documented `--json` schema (README)."""

    source: str
    path: str
    hub_id: str | None = None
    revision: str | None = None
    dialect: str = "custom"
    saved_by: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    model_type: str | None = None
    embedding_dimension: int | None = None
    truncate_dim: int | None = None
    max_seq_length: int | None = None
    similarity: str | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None
    manifest: bool = False
    modules: list[ModuleSummary] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    loaders: dict[str, LoaderVerdict] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_json(self, *, tensors: bool = False) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "source": self.source,
            "path": self.path,
            "hub_id": self.hub_id,
            "revision": self.revision,
            "dialect": self.dialect,
            "saved_by": self.saved_by,
            "versions": self.versions,
            "model_type": self.model_type,
            "embedding_dimension": self.embedding_dimension,
            "truncate_dim": self.truncate_dim,
            "max_seq_length": self.max_seq_length,
            "similarity": self.similarity,
            "prompts": self.prompts,
            "default_prompt": self.default_prompt,
            "manifest": self.manifest,
            "modules": [m.to_json(tensors=tensors) for m in self.modules],
            "findings": [f.to_json() for f in self.findings],
            "loaders": {name: v.to_json() for name, v in self.loaders.items()},
        }


# ---------------------------------------------------------------- public API


def summarize(path_or_hub_id: str | os.PathLike[str], *, revision: str | None = None) -> ModelSummary:
    """Summarize a model folder or a Hub id (resolved through the local cache) without loading it."""
    source = str(path_or_hub_id)
    local = Path(source).expanduser()
    if local.is_dir() and revision is not None:
        raise ModelFolderError(f"{source}: --revision applies to Hub ids, and this is a local folder")
    root = hub.resolve_model(source, revision=revision)
    summary = _Reader(root).read(source)
    if not local.is_dir() and not source.startswith(hub.PACKAGE_PREFIX):
        summary.hub_id, summary.revision = source, revision
    return summary


def portability(root: str | os.PathLike[str]) -> dict[str, LoaderVerdict]:
    """Which loaders (ST<=5.3, ST5.4-5.x, ST>=6, TEI) can read the folder, each with its reasons."""
    return _Reader(Path(root)).read(str(root)).loaders


# ---------------------------------------------------------------- reading a folder


class _Reader:
    """One pass over a folder: collects module summaries and findings."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()  # module folders come back resolved (layout.module_folder)
        self.findings: list[Finding] = []
        self.unreadable: set[str] = set()  # weight files whose header is broken (already reported)

    def add(self, severity: Severity, code: str, message: str, path: str | None = None) -> None:
        self.findings.append(Finding(severity, code, message, path))

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def inside(self, path: Path) -> bool:
        """Whether a path resolves inside the folder (or, for a Hub cache snapshot, to its repo's blobs)."""
        target = path.resolve()
        allowed = [self.root]
        if self.root.parent.name == "snapshots":  # huggingface_hub: snapshots/REV/file -> ../../blobs/SHA
            allowed.append(self.root.parent.parent / "blobs")
        return any(target == a or a in target.parents for a in allowed)

    def plain_name(self, name: str, named_in: Path) -> bool:
        """A file name without directories (HF cache files are symlinks, so resolving would not help)."""
        if name not in ("", ".", "..") and "/" not in name and "\\" not in name:
            return True
        where = self.rel(named_in)
        self.add("error", "path-escape", f"{where}: {name!r} is not a file name inside the folder", where)
        return False

    def json(self, path: Path) -> Any:
        """A JSON file's content, or None (with an invalid-json finding) when it does not parse."""
        try:
            return layout.read_json(path)
        except ModelFolderError as e:
            self.add("error", "invalid-json", str(e), self.rel(path))
            return None

    def read(self, source: str) -> ModelSummary:
        if not self.root.is_dir():
            raise ModelFolderError(f"{self.root}: not a folder")
        entries = layout.read_modules_json(self.root)
        summary = ModelSummary(source=source, path=str(self.root), dialect=layout.dialect(entries))
        self.check_entries(entries)
        self.read_model_config(summary)
        dim: int | None = None
        for entry in entries:
            module = self.read_module(entry, dim)
            summary.modules.append(module)
            dim = module.output_dim
        summary.embedding_dimension = summary.truncate_dim or dim
        if summary.truncate_dim and dim and summary.truncate_dim > dim:
            self.add("warning", "truncate-dim", f"truncate_dim {summary.truncate_dim} exceeds the output size {dim}")
        summary.max_seq_length = _max_seq_length(summary.modules)
        self.check_folder(summary)
        summary.findings = self.findings
        summary.loaders = _verdicts(summary, self.root)
        return summary

    # ------------------------------------------------------------ model level

    def check_entries(self, entries: list[layout.ModuleEntry]) -> None:
        """Duplicate idx or name: sentence-transformers keys its module stack by name and would collapse it."""
        for key in ("idx", "name"):
            counts = Counter(getattr(e, key) for e in entries)
            for value, n in counts.items():
                if n > 1:
                    message = f"{layout.MODULES_JSON}: {n} modules share {key} {value!r} (loaders collapse the stack)"
                    self.add("error", "duplicate-module", message, layout.MODULES_JSON)

    def read_model_config(self, summary: ModelSummary) -> None:
        path = self.root / layout.MODEL_CONFIG
        if not path.is_file():
            self.add("info", "no-model-config", f"no {layout.MODEL_CONFIG}: defaults apply", layout.MODEL_CONFIG)
            return
        raw = self.json(path)
        if not isinstance(raw, dict):
            if raw is not None:
                self.add(
                    "error", "bad-model-config", f"{layout.MODEL_CONFIG}: expected a JSON object", layout.MODEL_CONFIG
                )
            return
        versions = raw.get("__version__")
        summary.versions = {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}
        summary.saved_by = _saved_by(summary.versions)
        summary.model_type = raw.get("model_type") if isinstance(raw.get("model_type"), str) else None
        if summary.model_type not in (None, "SentenceTransformer"):
            self.add("warning", "model-type", f"model_type is {summary.model_type!r}, not SentenceTransformer")
        try:
            config = layout.read_model_config(self.root)
        except ModelFolderError as e:
            self.add("error", "bad-model-config", str(e), layout.MODEL_CONFIG)
            return
        except (AttributeError, TypeError, ValueError) as e:  # a value of the wrong JSON type
            self.add("error", "bad-model-config", f"{layout.MODEL_CONFIG}: malformed ({e})", layout.MODEL_CONFIG)
            return
        summary.prompts, summary.default_prompt = config.prompts, config.default_prompt_name
        summary.similarity = config.similarity_fn_name
        if isinstance(config.truncate_dim, int) and config.truncate_dim > 0:
            summary.truncate_dim = config.truncate_dim
        if "requirements" in raw:
            self.add("info", "requirements", f"ST >= 6 checks the environment against {raw['requirements']!r}")

    # ------------------------------------------------------------ one module

    def read_module(self, entry: layout.ModuleEntry, dim: int | None) -> ModuleSummary:
        module = ModuleSummary(entry.idx, entry.name, entry.type, entry.short_type, entry.path, kwargs=entry.kwargs)
        try:
            folder = layout.module_folder(self.root, entry.path)
        except ModelFolderError as e:
            self.add("error", "path-escape", str(e), layout.MODULES_JSON)
            return module
        module.exists = folder.is_dir()
        if module.short_type is None:
            self.check_custom(module)
        if not module.exists:
            self.report_missing_folder(module)
            module.input_dim = dim
            module.output_dim = dim if module.short_type in _PASS_THROUGH else None
            return module
        self.read_config(module, folder)
        module.weights = self.read_weights(folder, module.short_type)
        if module.short_type == "Transformer":
            module.transformer = self.read_transformer(folder, module.weights or WeightsInfo())
            self.check_max_seq_length(module)
        self.set_dims(module, dim)
        return module

    def report_missing_folder(self, module: ModuleSummary) -> None:
        where = module.path or "."
        if module.short_type == "Normalize":  # ST never reads it (all-MiniLM-L6-v2 has none)
            self.add("info", "missing-module-folder", f"{where}: no folder for Normalize (loaders do not need one)")
        else:
            self.add("error", "missing-module-folder", f"{where}: module folder of {module.type} is missing", where)

    def check_custom(self, module: ModuleSummary) -> None:
        if module.type.startswith("sentence_transformers."):
            message = f"{layout.MODULES_JSON}: {module.type}: no sentence-transformers version has this module type"
            self.add("error", "unknown-type", message, layout.MODULES_JSON)
            return
        module_name, _, _ = module.type.rpartition(".")
        repo, sep, file_name = module_name.partition("--")
        if not all(part.isidentifier() for part in (file_name if sep else module_name).split(".")):
            message = f"{layout.MODULES_JSON}: {module.type!r}: not a class path (expected file.Class)"
            self.add("error", "unknown-type", message, layout.MODULES_JSON)
            return
        if sep:  # `org/repo--file.Class`: code fetched from another Hub repository
            self.add("warning", "custom-code", f"{module.type}: runs {file_name}.py from Hub repo {repo} (needs trust)")
            module.custom_code = f"{repo}/{file_name}.py"
            return
        source = self.root / f"{module_name}.py"
        module.custom_code = self.rel(source)
        if source.is_file():
            self.add(
                "warning",
                "custom-code",
                f"{module.type}: custom module code in {module.custom_code}; runs only with --trust-remote-code",
                module.custom_code,
            )
        else:
            self.add(
                "error",
                "custom-code-missing",
                f"{module.type}: no {module.custom_code} in the folder; loads only if {module_name!r} is importable",
                module.custom_code,
            )

    def read_config(self, module: ModuleSummary, folder: Path) -> None:
        short = module.short_type
        if short == "Transformer":
            path = layout.find_sbert_config(folder)
        else:
            path = folder / layout.MODULE_CONFIG
            path = path if path.is_file() else None
        if path is None:
            if short in ("Pooling", "Dense"):
                where = self.rel(folder / layout.MODULE_CONFIG)
                self.add("error", "missing-config", f"{where}: missing; {short} cannot be built without it", where)
            return
        module.config_file = self.rel(path)
        raw = self.json(path)
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.add("error", "bad-config", f"{module.config_file}: expected a JSON object", module.config_file)
            return
        module.raw_config = raw
        self.check_keys(module)
        if short in _BUILTINS_WITH_CONFIG:
            try:
                module.config = layout.read_module_config(short, folder)
            except (AttributeError, TypeError, ValueError) as e:  # a value of the wrong JSON type
                self.add("error", "bad-config", f"{module.config_file}: malformed ({e})", module.config_file)
            except ModelFolderError as e:
                unsupported = "not supported by st" in str(e)
                code = "st-unsupported" if unsupported else "bad-config"
                self.add("warning" if unsupported else "error", code, str(e), module.config_file)
        else:
            module.config = dict(raw)

    def check_keys(self, module: ModuleSummary) -> None:
        known = _KNOWN_KEYS.get(module.short_type or "")
        if known is None or module.raw_config is None:
            return
        for key in sorted(set(module.raw_config) - known):
            # Every ST version refuses unknown Transformer and Pooling keys; ST 6 only warns for Dense.
            severity: Severity = "warning" if module.short_type == "Dense" else "error"
            message = f"{module.config_file}: key {key!r} is unknown to every sentence-transformers version"
            self.add(severity, "unknown-config-key", message, module.config_file)

    def read_weights(self, folder: Path, short: str | None) -> WeightsInfo | None:
        weights = WeightsInfo()
        index = folder / "model.safetensors.index.json"
        files: list[Path]
        if index.is_file():
            raw = self.json(index)
            weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
            names = sorted({str(n) for n in weight_map.values()}) if isinstance(weight_map, dict) else []
            files = [folder / n for n in names if self.plain_name(n, index)]
        else:
            files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
        for path in files:
            weights.files.append(self.rel(path))
            self.read_header(path, weights)
        weights.pickled = [self.rel(p) for p in sorted(folder.iterdir()) if _is_pickle(p)]
        needs_weights = short in ("Transformer", "Dense", "StaticEmbedding")
        if needs_weights and not weights.files and not weights.pickled and not _other_framework_weights(folder):
            where = self.rel(folder)
            message = f"{where}: {short} has no model.safetensors or pytorch_model.bin"
            self.add("error", "missing-weights", message, where)
        return weights if weights.files or weights.pickled else None

    def read_header(self, path: Path, weights: WeightsInfo) -> None:
        if not path.is_file():
            self.add("error", "missing-weights", f"{self.rel(path)}: listed in the shard index but missing")
            return
        try:
            header = layout.read_safetensors_header(path)
        except ModelFolderError as e:
            self.add("error", "bad-weights", str(e), self.rel(path))
            self.unreadable.add(self.rel(path))
            return
        for name, info in header.items():
            if name != "__metadata__":
                start, end = info["data_offsets"]
                shape = tuple(int(d) for d in info["shape"])
                weights.tensors.append(TensorInfo(name, info["dtype"], shape, int(end) - int(start), self.rel(path)))

    def read_transformer(self, folder: Path, weights: WeightsInfo) -> TransformerInfo:
        info = TransformerInfo(tokenizer_json=(folder / "tokenizer.json").is_file())
        config_path = folder / "config.json"
        where = self.rel(config_path)
        config = self.json(config_path) if config_path.is_file() else None
        if not config_path.is_file():
            self.add("error", "missing-config", f"{where}: no Hugging Face model config", where)
        elif config is not None and not isinstance(config, dict):
            self.add("error", "bad-config", f"{where}: expected a JSON object", where)
        config = config if isinstance(config, dict) else {}
        architectures = config.get("architectures")
        info.architecture = architectures[0] if isinstance(architectures, list) and architectures else None
        info.model_type = config.get("model_type")
        info.layers = _first_int(config, _LAYER_KEYS)
        info.hidden_size = _first_int(config, _HIDDEN_SIZE_KEYS)
        info.vocab_size = _first_int(config, ("vocab_size",))
        info.max_position_embeddings = _first_int(config, ("max_position_embeddings", "n_positions"))
        tok_path = folder / "tokenizer_config.json"
        tok = self.json(tok_path) if tok_path.is_file() else None
        if isinstance(tok, dict):
            info.tokenizer_class = tok.get("tokenizer_class")
            limit = tok.get("model_max_length")
            info.model_max_length = limit if isinstance(limit, int) and limit < _NO_LIMIT else None
        if info.tokenizer_class in _TF5_TOKENIZER_CLASSES:
            where = self.rel(tok_path)
            message = f"{where}: tokenizer_class {info.tokenizer_class!r} needs transformers >= 5 (4.x cannot load it)"
            self.add("warning", "tokenizer-class", message, where)
        for name, content in (("config.json", config), ("tokenizer_config.json", tok)):
            if isinstance(content, dict) and content.get("auto_map"):
                where = self.rel(folder / name)
                self.add("warning", "custom-code", f"{where}: auto_map needs trust_remote_code in transformers", where)
        self.check_transformer_shapes(info, weights, self.rel(config_path))
        if not any((folder / name).is_file() for name in layout.TOKENIZER_FILES):
            where = self.rel(folder) if folder != self.root else "."
            files = f"no tokenizer files ({', '.join(layout.TOKENIZER_FILES[:3])}, …)"
            self.add("error", "missing-tokenizer", files if where == "." else f"{where}: {files}", where)
        return info

    def check_max_seq_length(self, module: ModuleSummary) -> None:
        """The Transformer's max_seq_length: absent or null (the tokenizer decides), else a positive integer."""
        raw = module.raw_config or {}
        value = raw.get("max_seq_length")
        limit = module.transformer.max_position_embeddings if module.transformer else None
        where = module.config_file
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            message = f"{where}: max_seq_length must be a positive integer, got {value!r}"
            self.add("error", "bad-max-seq-length", message, where)
        elif limit is not None and value > limit:
            message = f"{where}: max_seq_length {value} exceeds the model's {limit} position embeddings"
            self.add("error", "bad-max-seq-length", message, where)

    def check_transformer_shapes(self, info: TransformerInfo, weights: WeightsInfo, where: str) -> None:
        embedding = next((t for s in _EMBEDDING_TENSORS if (t := weights.tensor(s))), None)
        if embedding is not None and len(embedding.shape) == 2:
            for key, value, actual in (
                ("vocab_size", info.vocab_size, embedding.shape[0]),
                ("hidden_size", info.hidden_size, embedding.shape[1]),
            ):
                if value is not None and value != actual:
                    message = f"{where}: {key} is {value} but {embedding.name} has shape {list(embedding.shape)}"
                    self.add("error", "shape-mismatch", message, where)
        layers = {int(m.group(1)) for t in weights.tensors if (m := _LAYER_INDEX.search(t.name))}
        if layers and info.layers is not None and max(layers) + 1 != info.layers:
            message = f"{where}: config has {info.layers} layers, the weights hold {max(layers) + 1}"
            self.add("warning", "shape-mismatch", message, where)

    # ------------------------------------------------------------ dimensions

    def set_dims(self, module: ModuleSummary, dim: int | None) -> None:
        """Input and output width of a module, checked against what comes before it and its weights."""
        short, config, where = module.short_type, module.config or {}, module.config_file or module.path or "."
        module.input_dim = dim
        if short == "Transformer":
            module.input_dim = None
            module.output_dim = module.transformer.hidden_size if module.transformer else None
        elif short == "Pooling" and isinstance(config.get("dimension"), int):
            module.input_dim = config["dimension"]
            module.output_dim = config["dimension"] * len(config.get("mode") or ["mean"])
            if dim is not None and dim != module.input_dim:
                message = f"{where}: Pooling expects {module.input_dim} dims but the module before gives {dim}"
                self.add("warning", "dimension-mismatch", message, where)
        elif short == "Dense" and "in_features" in config:
            module.input_dim, module.output_dim = config["in_features"], config["out_features"]
            if dim is not None and dim != module.input_dim:
                message = f"{where}: in_features is {module.input_dim} but the module before gives {dim}"
                self.add("error", "dimension-mismatch", message, where)
            self.check_dense_weights(module, config)
        elif short == "StaticEmbedding" and module.weights:
            table = module.weights.tensor("embedding.weight") or module.weights.tensor("embeddings")
            module.input_dim, module.output_dim = None, table.shape[-1] if table and table.shape else None
        elif short in _PASS_THROUGH:
            module.output_dim = dim

    def check_dense_weights(self, module: ModuleSummary, config: dict[str, Any]) -> None:
        weights = module.weights
        if weights is None or not weights.files or weights.files[0] in self.unreadable:
            return
        weight, bias = weights.tensor("linear.weight"), weights.tensor("linear.bias")
        where = weights.files[0]
        expected = (config["out_features"], config["in_features"])
        if weight is None:
            self.add("error", "shape-mismatch", f"{where}: no tensor linear.weight", where)
        elif weight.shape != expected:
            message = f"{where}: linear.weight has shape {list(weight.shape)}, the config says {list(expected)}"
            self.add("error", "shape-mismatch", message, where)
        if config.get("bias") and (bias is None or bias.shape != (config["out_features"],)):
            found = f"shape {list(bias.shape)}" if bias else "no tensor"
            self.add("error", "shape-mismatch", f"{where}: linear.bias: {found}, the config asks for a bias", where)
        elif not config.get("bias") and bias is not None:
            self.add("error", "shape-mismatch", f"{where}: linear.bias present but the config says bias: false", where)

    # ------------------------------------------------------------ the whole folder

    def check_folder(self, summary: ModelSummary) -> None:
        self.check_manifest(summary)
        runs = {m.custom_code for m in summary.modules if m.custom_code}
        for path in layout.walk(self.root):
            rel = self.rel(path)
            if path.is_symlink() and not self.inside(path):
                message = f"{rel}: a symlink to {os.path.realpath(path)}, outside the model folder"
                self.add("error", "path-escape", message, rel)
            elif _is_pickle(path):
                beside = any(path.parent.glob("*.safetensors"))
                if beside:
                    message = f"{rel}: pickled weights next to safetensors (loaders prefer the safetensors)"
                    self.add("info", "pickled-weights", message, rel)
                else:
                    message = f"{rel}: pickled weights only; loaded with weights_only=True, convert to safetensors"
                    self.add("warning", "pickled-weights", message, rel)
            elif path.suffix == ".py" and path.is_file() and rel not in runs:
                self.add("info", "python-file", f"{rel}: Python code no module refers to (st never runs it)", rel)

    def check_manifest(self, summary: ModelSummary) -> None:
        path = self.root / layout.MANIFEST
        if not path.is_file():
            self.add("info", "no-manifest", f"no {layout.MANIFEST}: st verify can only check layout and reload")
            return
        summary.manifest = True
        raw = self.json(path)
        if isinstance(raw, dict):
            made_by = f"st {raw.get('st_cli')}, format {raw.get('format')}"
            message = f"{layout.MANIFEST} present ({made_by}): st verify can check hashes and reference embeddings"
            self.add("info", "manifest", message, layout.MANIFEST)


def _first_int(config: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    return next((config[k] for k in keys if isinstance(config.get(k), int)), None)


def _is_pickle(path: Path) -> bool:
    return path.suffix in _PICKLE_SUFFIXES and path.is_file()


def _other_framework_weights(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("tf_model.h5", "flax_model.msgpack", "pytorch_model.bin.index.json"))


def _saved_by(versions: dict[str, str]) -> str | None:
    if "sentence_transformers" in versions:
        return f"sentence-transformers {versions['sentence_transformers']}"
    if "st_cli" in versions:
        return f"st {versions['st_cli']}"
    return None


def _max_seq_length(modules: list[ModuleSummary]) -> int | None:
    """ST's rule: sentence_bert_config's value, else the tokenizer limit capped by the position table."""
    first = modules[0] if modules else None
    if first is None or first.short_type != "Transformer":
        return None
    configured = (first.raw_config or {}).get("max_seq_length")
    if isinstance(configured, int):
        return configured
    info = first.transformer or TransformerInfo()
    limits = [x for x in (info.model_max_length, info.max_position_embeddings) if isinstance(x, int) and x > 0]
    return min(limits) if limits else None


# ---------------------------------------------------------------- loader verdicts (FORMAT.md)


class _Verdict:
    def __init__(self, loader: str) -> None:
        self.loader = loader
        self.fatal: list[str] = []
        self.caveats: list[str] = []

    def no(self, reason: str) -> None:
        if reason not in self.fatal:
            self.fatal.append(reason)

    def partial(self, reason: str) -> None:
        if reason not in self.caveats:
            self.caveats.append(reason)

    def result(self) -> LoaderVerdict:
        status: Status = "no" if self.fatal else "partial" if self.caveats else "yes"
        return LoaderVerdict(self.loader, status, tuple(self.fatal or self.caveats))  # caveats matter only if it loads


def _verdicts(summary: ModelSummary, root: Path) -> dict[str, LoaderVerdict]:
    verdicts = {name: _Verdict(name) for name in LOADERS}
    for finding in summary.findings:
        if finding.severity == "error" and finding.code != "unknown-config-key":  # the rules below name those
            for v in verdicts.values():
                v.no(finding.message)
    _st_legacy(summary, verdicts["ST<=5.3"])
    _st_5x(summary, verdicts["ST5.4-5.x"])
    _st_6(summary, verdicts["ST>=6"])
    _tei(summary, root, verdicts["TEI"])
    return {name: v.result() for name, v in verdicts.items()}


def _tf5_tokenizer(s: ModelSummary) -> str | None:
    info = s.modules[0].transformer if s.modules else None
    return info.tokenizer_class if info and info.tokenizer_class in _TF5_TOKENIZER_CLASSES else None


def _extra_keys(module: ModuleSummary, allowed: frozenset[str]) -> list[str]:
    return sorted(set(module.raw_config or {}) - allowed)


def _key_check(v: _Verdict, module: ModuleSummary, short: str, allowed: frozenset[str], when: str) -> None:
    extra = _extra_keys(module, allowed) if module.short_type == short else []
    if extra:
        keys = ", ".join(repr(k) for k in extra)
        v.no(f"{module.config_file}: {'keys' if len(extra) > 1 else 'key'} {keys} unknown {when} (TypeError)")


def _types_check(v: _Verdict, s: ModelSummary, types: set[str] | dict[str, str], when: str) -> None:
    found = [m.type for m in s.modules if m.type in types]
    if found:
        v.no(f"modules.json: {', '.join(found)} {'exist' if len(found) > 1 else 'exists'} only in {when}")


def _st_legacy(s: ModelSummary, v: _Verdict) -> None:
    _types_check(v, s, layout.NEW_TYPES, "ST >= 5.4")
    for m in s.modules:
        if m.short_type is None and m.custom_code:
            v.partial(f"custom module {m.type}: ST <= 3.0 cannot import {m.custom_code}; 3.1-5.3 load it unasked")
        _key_check(v, m, "Transformer", _SBERT_KEYS_LEGACY, "before ST 5.4")
        _key_check(v, m, "Pooling", _POOLING_KEYS_LEGACY, "before ST 5.4")
        _key_check(v, m, "Dense", _DENSE_KEYS_LEGACY, "before ST 5.4")
        raw = m.raw_config or {}
        if m.short_type == "Pooling":
            if isinstance(raw.get("pooling_mode"), list):
                v.no(f"{m.config_file}: a list pooling_mode needs ST >= 5.4")
            newer = [k for k in ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken") if k in raw]
            if newer:
                v.partial(f"{m.config_file}: ST 2.2 fails on {', '.join(newer)} (TypeError); 2.3+ read it")
            if "include_prompt" in raw:
                v.partial(f"{m.config_file}: ST <= 2.3 fail on include_prompt (TypeError); 2.4+ read it")
        if m.short_type == "Dense" and m.weights and not m.weights.pickled:
            v.partial(f"{m.path}: ST <= 3.0 need {m.path}/pytorch_model.bin (3.1+ read model.safetensors)")
        if m.kwargs:
            v.partial(f"modules.json: ST < 3.4 ignore kwargs {list(m.kwargs)} of module {m.idx}")
    if _tf5_tokenizer(s):
        v.partial(
            f"tokenizer_class {_tf5_tokenizer(s)!r}: ST <= 4.x (transformers < 5) fail; 5.0-5.3 need transformers 5"
        )
    if s.default_prompt:
        v.partial(f"ST <= 2.3 ignore default_prompt_name {s.default_prompt!r} (different vectors)")
    if s.truncate_dim:
        v.partial(f"ST <= 5.3 ignore truncate_dim {s.truncate_dim} (full-width vectors)")


def _st_5x(s: ModelSummary, v: _Verdict) -> None:
    _types_check(v, s, _ST6_ONLY_TYPES, "ST >= 6.0")
    if _tf5_tokenizer(s):
        v.partial(f"tokenizer_class {_tf5_tokenizer(s)!r}: loads only with transformers >= 5")
    for m in s.modules:
        _key_check(v, m, "Transformer", _SBERT_KEYS_5X, "before ST 6")
        _key_check(v, m, "Pooling", _POOLING_KEYS_NEW, "to ST")
        _key_check(v, m, "Dense", _DENSE_KEYS_5X, "before ST 6")
        if m.short_type is None and m.custom_code:
            v.partial(f"custom module {m.type}: ST 5.x runs {m.custom_code} without asking for trust")


def _st_6(s: ModelSummary, v: _Verdict) -> None:
    for m in s.modules:
        _key_check(v, m, "Transformer", _SBERT_KEYS_6, "to ST")
        _key_check(v, m, "Pooling", _POOLING_KEYS_NEW, "to ST")
        if m.short_type == "Dense":
            for key in _extra_keys(m, _DENSE_KEYS_6):
                v.partial(f"{m.config_file}: ST 6 drops unknown key {key!r} with a warning")
        if m.short_type is None and m.custom_code:
            v.partial(f"custom module {m.type}: loads only with trust_remote_code=True (runs {m.custom_code})")


def _tei(s: ModelSummary, root: Path, v: _Verdict) -> None:
    """text-embeddings-inference's parse rules (FORMAT.md §8); read in its source, not run."""
    first = s.modules[0] if s.modules else None
    if first is None or first.short_type != "Transformer" or first.path not in ("", "."):
        v.no("the first module must be a Transformer saved in the root")
    others = [m for m in s.modules if m.type not in _TEI_TYPES]
    tei_modules = {"Transformer", "Pooling", "Dense", "Normalize"}  # new-dialect spellings are reported below
    for m in others:
        if m.short_type is None:
            v.no(f"TEI cannot run custom module {m.type}")
        elif m.short_type not in tei_modules:
            v.no(f"TEI has no {m.short_type} module ({m.type})")
    if others and any(m.short_type == "Dense" for m in s.modules):
        v.no("modules.json has types TEI cannot parse, so it would skip every Dense layer without an error")
    elif any(m.type in layout.NEW_TYPES for m in s.modules):
        v.partial("modules.json uses new-dialect type strings; TEI ignores the file (no Dense here)")
    _tei_pooling(s, root, v)
    _tei_max_seq_length(s, root, v)
    for m in s.modules:
        if m.short_type == "Dense":
            _tei_dense(m, v)
    if first is not None and first.transformer is not None and not first.transformer.tokenizer_json:
        v.no("TEI needs tokenizer.json")
    if first is not None and (first.raw_config or {}).get("do_lower_case"):
        v.partial(f"{first.config_file}: TEI ignores do_lower_case")
    if s.default_prompt:
        v.partial(f"TEI ignores default_prompt_name {s.default_prompt!r}; start it with --default-prompt-name")
    if s.truncate_dim:
        v.partial(f"TEI ignores truncate_dim {s.truncate_dim}")
    if not any(m.short_type == "Normalize" for m in s.modules):
        v.partial("the stack has no Normalize, but TEI normalizes unless a request sends normalize=false")


def _tei_pooling(s: ModelSummary, root: Path, v: _Verdict) -> None:
    path = root / "1_Pooling" / layout.MODULE_CONFIG
    pooling = next((m for m in s.modules if m.short_type == "Pooling"), None)
    modes = list((pooling.config or {}).get("mode") or []) if pooling else []
    if pooling is not None and pooling.path != "1_Pooling":
        v.no(f"TEI reads pooling only from 1_Pooling/config.json; Pooling here is at {pooling.path or '.'}")
    if not path.is_file():
        model_type = (s.modules[0].transformer.model_type if s.modules and s.modules[0].transformer else None) or ""
        if "bert" in model_type and modes in ([], ["cls"]):
            v.partial("no 1_Pooling/config.json: TEI defaults to CLS pooling for BERT models, with a warning")
        else:
            v.no("no 1_Pooling/config.json: TEI needs --pooling")
        return
    raw = pooling.raw_config if pooling is not None and pooling.path == "1_Pooling" else None
    if raw is None:
        return
    if not all(isinstance(raw.get(k), bool) for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens")):
        v.no("1_Pooling/config.json: TEI needs the pooling_mode_cls_token/pooling_mode_mean_tokens booleans")
        return
    if len(modes) != 1 or modes[0] not in ("cls", "mean", "lasttoken"):
        v.no(f"1_Pooling/config.json: TEI supports one of cls, mean, lasttoken; this asks for {'+'.join(modes)}")
    if raw.get("include_prompt") is False:
        v.partial("1_Pooling/config.json: TEI ignores include_prompt: false (it pools the prompt too)")


def _tei_max_seq_length(s: ModelSummary, root: Path, v: _Verdict) -> None:
    first = s.modules[0] if s.modules else None
    path = layout.find_sbert_config(root)
    if path is not None:
        raw = first.raw_config if first is not None and first.config_file == path.name else None
        if raw is not None and not isinstance(raw.get("max_seq_length"), int):
            v.no(f"{path.name}: TEI requires max_seq_length in it")
        return
    info = first.transformer if first is not None else None
    if info is not None and info.max_position_embeddings and s.max_seq_length != info.max_position_embeddings:
        v.partial(f"no sentence_bert_config.json: TEI uses max_position_embeddings ({info.max_position_embeddings})")


def _tei_dense(m: ModuleSummary, v: _Verdict) -> None:
    raw = m.raw_config or {}
    missing = [k for k in ("in_features", "out_features", "bias") if k not in raw]
    if missing:
        v.no(f"{m.config_file}: TEI needs {', '.join(missing)}")
    activation = raw.get("activation_function")
    if activation is not None and (not isinstance(activation, str) or activation not in _TEI_ACTIVATIONS):
        v.no(f"{m.config_file}: TEI supports only Tanh and Identity activations, not {activation}")
    if m.weights is not None and m.weights.files and m.weights.tensor("linear.weight") is None:
        v.no(f"{m.path}: TEI needs the tensor linear.weight")
