"""What a model folder holds, read from its JSON files and safetensors headers alone (`st inspect`).

Nothing here imports torch or transformers, and nothing imports or runs code from the folder
(docs/explanation/design.md): custom modules are reported, never loaded. `portability` restates the loader rules
of docs/reference/st-formats.md (§2-§8) as a static check; `st verify` reuses it.

A folder that cannot be read at all (no folder, no or unparsable `modules.json`) raises
ModelFolderError; every other problem becomes a `Finding`.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from st_cli.errors import ModelFolderError
from st_cli.format import exported, hub, kinds, layout
from st_cli.format.exported import ExportedFile
from st_cli.format.files import read_json, read_safetensors_header, walk
from st_cli.format.portability import LOADERS, TF5_TOKENIZER_CLASSES, LoaderVerdict, verdicts
from st_cli.format.spec import TypeSpec, WidthContext, hidden_size
from st_cli.format.specs import known_names, spec_for_type_string
from st_cli.format.specs.transformer import DTYPE_KEYS, LOAD_ARGS

__all__ = ["LOADERS", "LoaderVerdict", "ModelSummary", "ModuleSummary", "portability", "summarize"]

SCHEMA_VERSION = 1
Severity = Literal["error", "warning", "info"]

_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_EMBEDDING_TENSORS = ("word_embeddings.weight", "embed_tokens.weight", "wte.weight", "tok_embeddings.weight")
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
_NO_LIMIT = 10**9  # tokenizers store "no limit" as 1e30


# Which `st verify` check each finding code fails (docs/explanation/design.md). Every code summary.py emits has a row
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
    "bad-exported-file": "layout",  # a truncated or mislabelled onnx/*.onnx, openvino/*.xml
    "st-unsupported": "layout",
    "unsupported-type": "layout",
    "missing-tokenizer": "layout",
    "duplicate-module": "layout",
    "stack-order": "layout",
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
    "model-kind": None,  # a reranker or token-vector model is what it is: the finding says which st command runs it
    "untrained-module": "trained",  # a warning: verify's trained check reads the manifest itself
    "python-file": None,
    "no-model-config": None,
    "manifest": None,
    "no-manifest": None,
    "plain-transformers": None,
    "load-args": None,  # what sentence_bert_config.json hands to transformers (a warning where st differs)
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
    # sentence_bert_config.json's tokenizer_args, config_args, model_args: applied as ST applies them
    load_args: dict[str, Any] = field(default_factory=dict)

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
    spec: TypeSpec | None = field(default=None, repr=False, compare=False)  # what st knows of the type
    routes: dict[str, list[ModuleSummary]] = field(default_factory=dict)  # a Router's modules, per route

    def __post_init__(self) -> None:
        if self.spec is None:
            self.spec = spec_for_type_string(self.type)
        if self.short_type is None and self.spec is not None:
            self.short_type = self.spec.name

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
            "routes": {name: [m.to_json(tensors=tensors) for m in mods] for name, mods in self.routes.items()},
        }

    def with_routes(self) -> list[ModuleSummary]:
        """This module and, for a Router, every module of its routes (each once, in route order)."""
        inner = {id(m): m for mods in self.routes.values() for m in mods}
        return [self, *inner.values()]


@dataclass
class SparseSummary:
    """What a SparseEncoder's vectors are: one dimension per vocabulary token (SPLADE, SparseStaticEmbedding)
    or per latent (SparseAutoEncoder), and how SPLADE pools them."""

    dimensions: Literal["vocabulary", "latent"]
    size: int | None  # the vocabulary size, or the number of latents
    pooling: str | None = None  # SpladePooling's max or sum
    activation: str | None = None  # relu or log1p_relu
    max_active_dims: int | None = None  # config_sentence_transformers.json's (SparseAutoEncoder: its k)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ModelSummary:
    """Everything `st inspect` shows; `to_json()` is the documented `--json` schema (docs/reference/json.md)."""

    source: str
    path: str
    hub_id: str | None = None
    revision: str | None = None
    dialect: str = "custom"
    saved_by: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    model_type: str | None = None
    kind: str = "SentenceTransformer"  # format.kinds: SentenceTransformer, CrossEncoder, MultiVectorEncoder
    embedding_dimension: int | None = None
    truncate_dim: int | None = None
    max_seq_length: int | None = None
    similarity: str | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None
    manifest: bool = False
    modules: list[ModuleSummary] = field(default_factory=list)
    exported: list[ExportedFile] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    loaders: dict[str, LoaderVerdict] = field(default_factory=dict)
    sparse: SparseSummary | None = None  # a SparseEncoder's vectors; None for dense models

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
            "kind": self.kind,
            "embedding_dimension": self.embedding_dimension,
            "truncate_dim": self.truncate_dim,
            "max_seq_length": self.max_seq_length,
            "similarity": self.similarity,
            "prompts": self.prompts,
            "default_prompt": self.default_prompt,
            "manifest": self.manifest,
            "modules": [m.to_json(tensors=tensors) for m in self.modules],
            "exported": [f.to_json() for f in self.exported],
            "findings": [f.to_json() for f in self.findings],
            "loaders": {name: v.to_json() for name, v in self.loaders.items()},
            "sparse": self.sparse.to_json() if self.sparse else None,
        }


# ---------------------------------------------------------------- public API


def summarize(path_or_hub_id: str | os.PathLike[str], *, revision: str | None = None) -> ModelSummary:
    """Summarize a model folder or a Hub id (resolved through the local cache) without loading it."""
    source = str(path_or_hub_id)
    local = Path(source).expanduser()
    if local.is_dir() and revision is not None:
        raise ModelFolderError(f"{source}: --revision applies to Hub ids, and this is a local folder")
    root = hub.find_local(source, revision=revision)
    if root is None:  # a Hub id not on this machine: read its JSON files and safetensors headers only
        with tempfile.TemporaryDirectory(prefix="st-inspect-") as tmp:
            hub.fetch_headers(source, Path(tmp), revision=revision)
            summary = _Reader(Path(tmp)).read(source)
        summary.path = f"hf://{source}" + (f"@{revision}" if revision else "")
    else:
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
        self.max_active_dims: int | None = None  # config_sentence_transformers.json's
        self.model_type: str | None = None  # config_sentence_transformers.json's, for messages

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
            return read_json(path)
        except ModelFolderError as e:
            self.add("error", "invalid-json", str(e), self.rel(path))
            return None

    def read(self, source: str) -> ModelSummary:
        if not self.root.is_dir():
            raise ModelFolderError(f"{self.root}: not a folder")
        entries = layout.read_modules_json(self.root)
        summary = ModelSummary(source=source, path=str(self.root), dialect=layout.dialect(entries))
        summary.kind = kinds.model_kind(self.root)
        if summary.kind != kinds.SENTENCE_TRANSFORMER:
            kind = kinds.KINDS[summary.kind]
            self.add("info", "model-kind", f"{kinds.describe(summary.kind)} — {kind.use}")
        self.check_entries(entries)
        if layout.is_plain_folder(self.root):
            stack = " + ".join(f"{e.short_type}{_plain_detail(e)}" for e in entries)
            message = f"a plain transformers folder (no {layout.MODULES_JSON}): loaders build {stack}"
            self.add("info", "plain-transformers", message, layout.MODULE_CONFIG)
        else:
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
        summary.exported = self.read_exported()
        summary.sparse = _sparse_summary(summary, self.max_active_dims)
        self.check_folder(summary)
        summary.findings = self.findings
        summary.loaders = verdicts(summary, self.root)
        return summary

    def read_exported(self) -> list[ExportedFile]:
        """ONNX and OpenVINO files in sentence-transformers' places (`st export`), read from the files alone."""
        found = []
        for path in exported.find(self.root):
            try:
                found.append(exported.read(path, self.rel(path)))
            except ModelFolderError as e:  # a warning: the torch model still loads (and st export --force mends it)
                self.add("warning", "bad-exported-file", str(e), self.rel(path))
        return found

    # ------------------------------------------------------------ model level

    def check_entries(self, entries: list[layout.ModuleEntry]) -> None:
        """Duplicate idx or name: sentence-transformers keys its module stack by name and would collapse it."""
        for key in ("idx", "name"):
            counts = Counter(getattr(e, key) for e in entries)
            for value, n in counts.items():
                if n > 1:
                    message = f"{layout.MODULES_JSON}: {n} modules share {key} {value!r} (loaders collapse the stack)"
                    self.add("error", "duplicate-module", message, layout.MODULES_JSON)
        self.check_order(entries)

    def check_order(self, entries: list[layout.ModuleEntry]) -> None:
        """Each built-in module must find what it reads (its spec's `reads`) written by a module before it."""
        given: set[str] = {"text"}
        for position, entry in enumerate(entries):
            spec = entry.spec
            if spec is None:
                return  # custom code may read and write anything: nothing to say past it
            where = f"{layout.MODULES_JSON}: entry [{position}] {spec.name}"
            reads = "text" if spec.routes_text and position == 0 else spec.reads
            if reads == "text" and position > 0:
                message = f"{where} takes the input text, so it must come first"
                self.add("error", "stack-order", message, layout.MODULES_JSON)
            elif reads not in given:
                message = f"{where} reads {reads}, which no module before it gives"
                self.add("error", "stack-order", message, layout.MODULES_JSON)
            given.add(spec.writes)

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
        if summary.model_type not in (None, *kinds.KINDS, *kinds.ALIASES, *RUNNABLE_MODEL_TYPES):
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
        self.max_active_dims = config.max_active_dims
        self.model_type = summary.model_type
        if isinstance(config.truncate_dim, int) and config.truncate_dim > 0:
            summary.truncate_dim = config.truncate_dim
        if "requirements" in raw:
            self.add("info", "requirements", f"ST >= 6 checks the environment against {raw['requirements']!r}")

    # ------------------------------------------------------------ one module

    def read_module(self, entry: layout.ModuleEntry, dim: int | None, named_in: str | None = None) -> ModuleSummary:
        """`named_in`: the file that names the module's folder (modules.json, or a Router's config for its routes)."""
        spec = entry.spec
        module = ModuleSummary(
            entry.idx, entry.name, entry.type, spec.name if spec else None, entry.path, kwargs=entry.kwargs, spec=spec
        )
        try:
            folder = layout.module_folder(self.root, entry.path, self.root / named_in if named_in else None)
        except ModelFolderError as e:
            self.add("error", "path-escape", str(e), named_in or layout.MODULES_JSON)
            return module
        module.exists = folder.is_dir()
        if entry.config is not None:  # a module loaders supply themselves (plain folders): no files
            module.config = dict(entry.config)
            self.set_dims(module, dim)
            return module
        self.read_module_files(module, folder, dim)
        return module

    def read_module_files(self, module: ModuleSummary, folder: Path, dim: int | None) -> None:
        """A module's own files: config, the files its loader opens, weights, widths, and its sub-modules'."""
        spec = module.spec
        if spec is None:
            self.check_custom(module)
        if not module.exists:
            self.report_missing_folder(module)
            self.set_dims(module, dim)
            return
        self.read_config(module, folder)
        self.check_required_files(module, folder)
        module.weights = self.read_weights(folder, spec)
        if spec is not None and spec.hf_model:
            load_args = {k: v for k, v in (module.config or {}).items() if k in LOAD_ARGS}
            module.transformer = self.read_transformer(folder, module.weights or WeightsInfo(), load_args)
            self.check_max_seq_length(module)
            self.report_load_args(module)
        self.set_dims(module, dim)
        if spec is not None and spec.routes_text:
            self.read_routes(module, folder, dim)

    def read_routes(self, module: ModuleSummary, folder: Path, dim: int | None) -> None:
        """A Router's modules, read like top-level ones (configs, files, weights, widths: their findings too),
        each route's widths flowing from the Router's input."""
        raw = module.raw_config or {}
        types, structure = raw.get("types"), raw.get("structure")
        if not isinstance(types, dict) or not isinstance(structure, dict):
            return  # decode already reported the malformed table
        read: dict[str, ModuleSummary] = {}
        refused: set[str] = set()  # a folder that leaves the Router's: said once, never read

        def route_module(position: int, sub: str, width: int | None) -> ModuleSummary | None:
            if sub in refused or (sub not in read and not self.route_inside(module, folder, sub)):
                refused.add(sub)
                return None
            if sub not in read:
                inner = layout.ModuleEntry(position, sub, _join(module.path, sub), types[sub])
                read[sub] = self.read_module(inner, width, module.config_file)
            return read[sub]

        for route, subs in structure.items():
            width, modules = dim, []
            for position, sub in enumerate(subs if isinstance(subs, list) else []):
                if sub not in types or not isinstance(types[sub], str):
                    continue  # decode reported it
                found = route_module(position, str(sub), width)
                if found is None:
                    width = None
                    continue
                modules.append(found)
                width = found.output_dim
            module.routes[str(route)] = modules
        # The Router's loader loads every module its `types` table names, used by a route or not.
        for position, (sub, type_string) in enumerate(types.items()):
            if isinstance(type_string, str):
                route_module(position, str(sub), None)

    def route_inside(self, router: ModuleSummary, folder: Path, sub: str) -> bool:
        """A route's folder stays inside the Router's own (its loader reads `folder/sub`, as encode's does)."""
        named_in = router.config_file or layout.MODULES_JSON
        try:
            layout.module_folder(folder, sub, self.root / named_in)
        except ModelFolderError as e:
            self.add("error", "path-escape", str(e), named_in)
            return False
        return True

    def report_missing_folder(self, module: ModuleSummary) -> None:
        where = module.path or "."
        if module.spec is not None and not module.spec.needs_folder:
            message = f"{where}: no folder for {module.spec.name} (loaders do not need one)"
            self.add("info", "missing-module-folder", message)
        else:
            self.add("error", "missing-module-folder", f"{where}: module folder of {module.type} is missing", where)

    def check_custom(self, module: ModuleSummary) -> None:
        if module.type.startswith("sentence_transformers."):
            runs = ", ".join(known_names())
            kind = self.model_type or "SentenceTransformer"
            problem = f"a module type st cannot run in this {kind}; st would need a module type for it"
            message = f"{layout.MODULES_JSON}: {module.type}: {problem} (st runs: {runs})"
            self.add("error", "unsupported-type", message, layout.MODULES_JSON)
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
        spec = module.spec
        path = layout.find_config_file(spec, folder)
        if path is None:
            if spec is not None and spec.needs_config:
                where = self.rel(folder / spec.config_files[0])
                self.add("error", "missing-config", f"{where}: missing; {spec.name} cannot be built without it", where)
            return
        module.config_file = self.rel(path)
        raw = self.json(path)
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.add("error", "bad-config", f"{module.config_file}: expected a JSON object", module.config_file)
            return
        module.raw_config = raw
        if spec is None:
            module.config = dict(raw)
            return
        self.check_keys(module, spec)
        try:
            module.config = spec.decode(raw, path)
        except (AttributeError, TypeError, ValueError) as e:  # a value of the wrong JSON type
            self.add("error", "bad-config", f"{module.config_file}: malformed ({e})", module.config_file)
        except ModelFolderError as e:
            unsupported = "not supported by st" in str(e)
            code = "st-unsupported" if unsupported else "bad-config"
            self.add("warning" if unsupported else "error", code, str(e), module.config_file)

    def check_required_files(self, module: ModuleSummary, folder: Path) -> None:
        for name in module.spec.required_files if module.spec else ():
            if not (folder / name).is_file():
                where = self.rel(folder / name)
                self.add("error", "missing-config", f"{where}: missing; {module.type} needs it to load", where)

    def check_keys(self, module: ModuleSummary, spec: TypeSpec) -> None:
        known = spec.known_keys()
        if known is None or module.raw_config is None:
            return
        for key in sorted(set(module.raw_config) - known):
            # A TypeError in every version, unless some generation drops unknown keys with a warning.
            severity: Severity = "warning" if spec.lenient_in else "error"
            message = f"{module.config_file}: key {key!r} is unknown to every sentence-transformers version"
            self.add(severity, "unknown-config-key", message, module.config_file)

    def read_weights(self, folder: Path, spec: TypeSpec | None) -> WeightsInfo | None:
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
        needs_weights = spec is not None and spec.needs_weights
        if needs_weights and not weights.files and not weights.pickled and not _other_framework_weights(folder):
            where = self.rel(folder)
            message = f"{where}: {spec.name if spec else ''} has no model.safetensors or pytorch_model.bin"
            self.add("error", "missing-weights", message, where)
        return weights if weights.files or weights.pickled else None

    def read_header(self, path: Path, weights: WeightsInfo) -> None:
        if not path.is_file():
            self.add("error", "missing-weights", f"{self.rel(path)}: listed in the shard index but missing")
            return
        try:
            header = read_safetensors_header(path)
        except ModelFolderError as e:
            self.add("error", "bad-weights", str(e), self.rel(path))
            self.unreadable.add(self.rel(path))
            return
        for name, info in header.items():
            if name != "__metadata__":
                start, end = info["data_offsets"]
                shape = tuple(int(d) for d in info["shape"])
                weights.tensors.append(TensorInfo(name, info["dtype"], shape, int(end) - int(start), self.rel(path)))

    def text_value(self, value: Any, key: str, where: str) -> str | None:
        """`value` where it is a string; another JSON value is a bad-config error naming the key (a name that
        every loader reads as text: transformers fails on it)."""
        if value is None or isinstance(value, str):
            return value
        self.add("error", "bad-config", f"{where}: key {key!r} must be a string, got {value!r}", where)
        return None

    def read_transformer(self, folder: Path, weights: WeightsInfo, load_args: dict[str, Any]) -> TransformerInfo:
        info = TransformerInfo(tokenizer_json=(folder / "tokenizer.json").is_file(), load_args=load_args)
        config_path = folder / "config.json"
        where = self.rel(config_path)
        config = self.json(config_path) if config_path.is_file() else None
        if not config_path.is_file():
            self.add("error", "missing-config", f"{where}: no Hugging Face model config", where)
        elif config is not None and not isinstance(config, dict):
            self.add("error", "bad-config", f"{where}: expected a JSON object", where)
        # config_args override config.json's values (AutoConfig.from_pretrained(**config_args)), as in every loader.
        config = (config if isinstance(config, dict) else {}) | load_args.get("config_args", {})
        architectures = config.get("architectures")
        first = architectures[0] if isinstance(architectures, list) and architectures else None
        info.architecture = self.text_value(first, "architectures[0]", where)
        info.model_type = self.text_value(config.get("model_type"), "model_type", where)
        info.layers = _first_int(config, _LAYER_KEYS)
        info.hidden_size = hidden_size(config)
        info.vocab_size = _first_int(config, ("vocab_size",))
        info.max_position_embeddings = _first_int(config, ("max_position_embeddings", "n_positions"))
        tok_path = folder / "tokenizer_config.json"
        tok = self.json(tok_path) if tok_path.is_file() else None
        if tok is not None and not isinstance(tok, dict):
            self.add("error", "bad-config", f"{self.rel(tok_path)}: expected a JSON object", self.rel(tok_path))
        if isinstance(tok, dict):
            info.tokenizer_class = self.text_value(tok.get("tokenizer_class"), "tokenizer_class", self.rel(tok_path))
            limit = load_args.get("tokenizer_args", {}).get("model_max_length", tok.get("model_max_length"))
            info.model_max_length = limit if isinstance(limit, int) and limit < _NO_LIMIT else None
        if info.tokenizer_class in TF5_TOKENIZER_CLASSES:
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

    def report_load_args(self, module: ModuleSummary) -> None:
        """What sentence_bert_config.json hands to transformers: it changes the vectors, so say so."""
        load_args = module.transformer.load_args if module.transformer else {}
        where = module.config_file
        if load_args:
            given = "; ".join(f"{key} {_short(value)}" for key, value in load_args.items())
            self.add("info", "load-args", f"{where}: transformers gets {given} (st applies them as ST does)", where)
        lower = [k for k in DTYPE_KEYS if k in load_args.get("model_args", {})]
        if lower:
            value = load_args["model_args"][lower[0]]
            message = (
                f"{where}: model_args {lower[0]}={value!r}: st computes in float32, sentence-transformers in "
                f"{value} (the vectors differ by rounding)"
            )
            self.add("warning", "load-args", message, where)

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
            # More layers than weights: they would start random (and a huge count would exhaust memory
            # before transformers notices); fewer: transformers ignores the extra tensors.
            self.add("error" if info.layers > max(layers) + 1 else "warning", "shape-mismatch", message, where)

    # ------------------------------------------------------------ dimensions

    def set_dims(self, module: ModuleSummary, dim: int | None) -> None:
        """Input and output width of a module (its spec's rule), checked against the module before and its weights."""
        spec, where = module.spec, module.config_file or module.path or "."
        module.input_dim = dim
        if spec is None:
            return
        shapes = {t.name: t.shape for t in module.weights.tensors} if module.weights else {}
        t = module.transformer
        hf = {"hidden_size": t.hidden_size, "vocab_size": t.vocab_size} if t else None
        ctx = WidthContext(module.config or {}, module.raw_config or {}, shapes, dim, hf)
        widths = spec.width(ctx)
        module.input_dim, module.output_dim = widths.input, widths.output
        if dim is not None and widths.input is not None and widths.input != dim:
            message = f"{where}: {spec.name} expects {widths.input} dims but the module before gives {dim}"
            self.add(spec.width_mismatch, "dimension-mismatch", message, where)
        self.check_weight_shapes(module, spec)

    def check_weight_shapes(self, module: ModuleSummary, spec: TypeSpec) -> None:
        weights = module.weights
        if spec.check_weights is None or not module.config or weights is None or not weights.files:
            return
        if weights.files[0] in self.unreadable:
            return
        where = weights.files[0]
        for problem in spec.check_weights(module.config, {t.name: t.shape for t in weights.tensors}):
            self.add("error", "shape-mismatch", f"{where}: {problem}", where)

    # ------------------------------------------------------------ the whole folder

    def check_folder(self, summary: ModelSummary) -> None:
        self.check_manifest(summary)
        runs = {m.custom_code for m in summary.modules if m.custom_code}
        for path in walk(self.root):
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
            self.check_untrained(raw.get("untrained_modules"), summary)

    def check_untrained(self, listed: Any, summary: ModelSummary) -> None:
        """Modules the manifest records as freshly initialised: their vectors mean nothing yet."""
        if not isinstance(listed, list):
            return
        for index in listed:
            module = next((m for m in summary.modules if m.idx == index), None) if isinstance(index, int) else None
            if module is None:
                continue
            named = f"module {index} ({module.short_type or module.type}, {module.path or '.'})"
            message = f"{named} is freshly initialised and was never trained: train it (st train) before use"
            self.add("warning", "untrained-module", message, module.path or None)


def _short(value: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in value.items()) if isinstance(value, dict) else repr(value)


def _plain_detail(entry: layout.ModuleEntry) -> str:
    modes = (entry.config or {}).get("mode")
    return f" ({'+'.join(modes)})" if modes else ""


def _first_int(config: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    return next((config[k] for k in keys if isinstance(config.get(k), int)), None)


def _is_pickle(path: Path) -> bool:
    """A file torch would unpickle: by suffix, save an OpenVINO IR's `.bin` (raw weights beside its `.xml`)."""
    return path.suffix in _PICKLE_SUFFIXES and path.is_file() and not exported.is_openvino_weights(path)


def _other_framework_weights(folder: Path) -> bool:
    """Weights a loader reads other than safetensors and pickles: TF, Flax, and the exported Transformer
    of a folder that ships only onnx/ or openvino/ (sentence-transformers' backend="onnx"; st encode)."""
    names = ("tf_model.h5", "flax_model.msgpack", "pytorch_model.bin.index.json")
    exported = ("onnx/model.onnx", "openvino/openvino_model.xml")
    return any((folder / n).is_file() for n in (*names, *exported))


def _saved_by(versions: dict[str, str]) -> str | None:
    if "sentence_transformers" in versions:
        return f"sentence-transformers {versions['sentence_transformers']}"
    if "st_cli" in versions:
        return f"st {versions['st_cli']}"
    return None


# The model_type values of sentence-transformers classes st runs (config_sentence_transformers.json).
RUNNABLE_MODEL_TYPES = ("SentenceTransformer", "SparseEncoder")


def _join(parent: str, sub: str) -> str:
    return f"{parent.rstrip('/')}/{sub}" if parent not in ("", ".") else sub


def _sparse_summary(summary: ModelSummary, max_active_dims: int | None) -> SparseSummary | None:
    """What the vectors of a stack with a sparse module are (the last sparse module decides), from specs alone."""
    modules = [m for top in summary.modules for m in top.with_routes()]
    sparse = [m for m in modules if m.spec is not None and m.spec.sparse]
    if not sparse:
        return None
    last = sparse[-1]
    by_token = last.spec is not None and last.spec.reads in ("text", "token_embeddings")
    config = next((m.config for m in reversed(modules) if m.config and "pooling_strategy" in m.config), None) or {}
    return SparseSummary(
        dimensions="vocabulary" if by_token else "latent",
        size=last.output_dim,
        pooling=config.get("pooling_strategy"),
        activation=config.get("activation_function"),
        max_active_dims=max_active_dims or (last.config or {}).get("k") if not by_token else max_active_dims,
    )


def _max_seq_length(modules: list[ModuleSummary]) -> int | None:
    """ST's rule: sentence_bert_config's value, else the tokenizer limit capped by the position table."""
    first = modules[0] if modules else None
    if first is None or first.spec is None or not first.spec.hf_model:
        return None
    info = first.transformer or TransformerInfo()
    limit = info.load_args.get("tokenizer_args", {}).get("model_max_length")
    if isinstance(limit, int):  # ST >= 5.4 (and st): tokenizer_args' limit over max_seq_length
        return limit
    configured = (first.raw_config or {}).get("max_seq_length")
    if isinstance(configured, int):
        return configured
    limits = [x for x in (info.model_max_length, info.max_position_embeddings) if isinstance(x, int) and x > 0]
    return min(limits) if limits else None
