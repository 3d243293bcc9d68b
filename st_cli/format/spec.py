"""The shape of a module type's spec, and the two tables of specs (built-ins, plugins), torch-free.

A `TypeSpec` is everything st knows about one module type without torch. `layout.py` (type strings,
config codecs), `summary.py` (key checks, widths), `portability.py` (loader verdicts), `recipe.py`
and `verify.py` loop over the tables; none of them names a type. The built-in rows live one per file
in `st_cli/format/specs/` and fill `SPECS` when `st_cli.format.specs` is imported, so read the
tables through that package. Plugins add theirs at run time: `st_cli.register("Name")` derives one
from the class (`plugin_spec`), and installed packages declare plugins in the entry-point group
`st_cli.modules`, loaded here on the first type string no table knows. The torch classes (name ↔
class) are `st_cli.model.registry`'s.

How to add a built-in module type (say `LayerNorm`):

1. Write its row, `st_cli/format/specs/layer_norm.py`: `SPEC = add_builtin(TypeSpec(...))` with
   `name`, `module_file="layer_norm"` (the torch file below; the registry imports it lazily on the
   first lookup), the type strings (`legacy_type` is what `--format portable` writes, `st6_type`
   what `--format st6` writes, `read_types` every other spelling ST ever wrote or aliased, e.g.
   Asym → Router), `config_files` (the first is written; `()` = no config), `decode`/`encode`
   (codec functions sit right above the row), `accepted_keys` per loader generation
   (+ `lenient_in`), the `width` rule (and `check_weights`: every tensor the config's sizes imply,
   against the safetensors headers), `since` (first ST
   version that reads `legacy_type`; `since_by_type` for aliases, `st6_type_since` for the new
   spelling; `fails_in` for versions that have it but cannot run it) and `tei`, `loader_notes` for
   caveats of one loader or version, `required_files`, `path_keys` (recipe kwargs that name
   folders), `example` (a tiny recipe stack for tests/test_module_types.py and the cross-version
   table tests/test_type_table.py; "{tiny_bert}" is replaced by a tiny BERT folder, "{tiny_clip}"
   by a tiny CLIP folder; a type without one fails those tests), plus the flags below that apply.
   A row file imports only this module, `st_cli.format.files` and `st_cli.errors`; a helper that
   several rows use lives here.
2. Import it in `st_cli/format/specs/__init__.py`, in its place: the import order is the order
   of `SPECS`.
3. Write its torch class in `st_cli/model/modules/layer_norm.py` (the same file name): a `Module`
   (or `InputModule`) subclass decorated with `@register(SPECS["LayerNorm"])`, with
   `__init__(**config)`, `forward`, `plan`, and `save`/`load` if the base class's (config file
   through the codec + `model.safetensors`) do not fit.

Nothing else: tests parametrized over `registry.names()` pick the new type up, and
tests/test_registry.py checks that both folders hold the same file names.

A spec is pure data plus pure functions of JSON and safetensors headers. Torch must never be
imported by this file or the rows (`st inspect` and `st --help` stay instant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from st_cli.errors import ModelFolderError, StError
from st_cli.format.files import read_json

Format = Literal["portable", "st6"]
FORMATS: tuple[Format, ...] = ("portable", "st6")
Generation = Literal["ST<=5.3", "ST5.4-5.x", "ST>=6"]
GENERATIONS: tuple[Generation, ...] = ("ST<=5.3", "ST5.4-5.x", "ST>=6")
Loader = Literal["ST<=5.3", "ST5.4-5.x", "ST>=6", "TEI"]
LOADERS: tuple[Loader, ...] = ("ST<=5.3", "ST5.4-5.x", "ST>=6", "TEI")
Status = Literal["yes", "partial", "no"]
Role = Literal["text", "token_embeddings", "sentence_embedding"]

MODULE_CONFIG = "config.json"
SBERT_CONFIG = "sentence_bert_config.json"
LEGACY_PREFIX = "sentence_transformers.models."
BASE_PREFIX = "sentence_transformers.base.modules."
ST_PREFIX = "sentence_transformers.sentence_transformer.modules."
# The sparse module types (ST >= 5.0): `models.X` until 5.3, `modules.<file>.X` from 5.4 (both read by 5.4+).
SPARSE_LEGACY_PREFIX = "sentence_transformers.sparse_encoder.models."
SPARSE_PREFIX = "sentence_transformers.sparse_encoder.modules."
SPARSE_SINCE = "5.0"
# The first version of sentence-transformers that reads the new-dialect type strings.
NEW_DIALECT_SINCE = "5.4"

Config = dict[str, Any]
Shapes = Mapping[str, tuple[int, ...]]  # safetensors tensor name → shape


class WeightsView(Protocol):
    """What a loader rule may ask about a module's weight files (summary.WeightsInfo)."""

    files: list[str]
    pickled: list[str]

    def tensor(self, suffix: str) -> Any: ...


class ModuleView(Protocol):
    """What a loader rule may ask about one module of a folder (summary.ModuleSummary)."""

    idx: int
    path: str
    config_file: str | None
    raw_config: dict[str, Any] | None
    config: dict[str, Any] | None
    weights: Any


@dataclass(frozen=True)
class WidthContext:
    """Everything a width rule may read: st's config, the raw file, tensor shapes, the incoming width."""

    config: Mapping[str, Any]
    raw: Mapping[str, Any]
    shapes: Shapes
    incoming: int | None
    hf_config: Mapping[str, Any] | None = None  # the transformers config.json of an `hf_model` type


@dataclass(frozen=True)
class Widths:
    """A module's input width (None: it takes text, or accepts any) and output width (None: unknown)."""

    input: int | None
    output: int | None


@dataclass(frozen=True)
class LoaderNote:
    """A type-specific reason why one loader reads a module only partly ("partial") or not at all ("no")."""

    loader: Loader
    status: Literal["partial", "no"]
    reason: str


def _as_is(raw: Config, path: Path) -> Config:
    return dict(raw)


def pass_through(ctx: WidthContext) -> Widths:
    return Widths(ctx.incoming, ctx.incoming)


def _unknown_width(ctx: WidthContext) -> Widths:
    return Widths(ctx.incoming, None)


def _no_notes(module: ModuleView) -> Iterable[LoaderNote]:
    return ()


@dataclass(frozen=True)
class TypeSpec:
    """Everything st knows about one module type, without torch."""

    name: str  # the short name: a recipe's `type:` and the registry key
    legacy_type: str  # what `--format portable` writes (ST <= 5.3, TEI, model2vec read it)
    st6_type: str  # what `--format st6` writes (ST 6.2's own spelling)
    module_file: str | None = None  # st_cli/model/modules/<file>.py holds the torch class (None: a plugin)
    read_types: tuple[str, ...] = ()  # every other spelling read: 5.x paths, aliases
    st6_type_since: str = NEW_DIALECT_SINCE  # the first ST version that reads `st6_type`
    config_files: tuple[str, ...] = (MODULE_CONFIG,)  # first one written; others read (older names)
    # raw config (either dialect) → constructor kwargs; raises ModelFolderError naming `path`
    decode: Callable[[Config, Path], Config] = _as_is
    # constructor kwargs → {file name: JSON object, or None for no file}; None: config_files[0] as is
    encode: Callable[[Mapping[str, Any], Format], dict[str, Config | None]] | None = None
    # config keys each loader generation's constructor accepts; None: not checked (config ignored or free)
    accepted_keys: Mapping[Generation, frozenset[str]] | None = None
    lenient_in: frozenset[Generation] = frozenset()  # generations that drop unknown keys with a warning
    width: Callable[[WidthContext], Widths] = _unknown_width
    width_mismatch: Literal["error", "warning"] = "error"  # incoming width ≠ the config's input width
    # shape problems: every tensor the config's sizes imply, against the safetensors headers, so a size no
    # weights back (num_layers: 1000000) is refused before anything is allocated
    check_weights: Callable[[Mapping[str, Any], Shapes], list[str]] | None = None
    loader_notes: Callable[[ModuleView], Iterable[LoaderNote]] = _no_notes
    input_module: bool = False  # tokenizes texts; must come first
    save_in_root: bool = False  # as the first module, its files sit in the model root
    root_formats: tuple[Format, ...] = FORMATS  # the formats that put it in the root (others: {idx}_{Name}/)
    hf_model: bool = False  # the folder holds a transformers model (config.json, tokenizer)
    needs_config: bool = False  # a missing config file is an error
    needs_weights: bool = False  # a missing weights file is an error
    needs_folder: bool = True  # False: loaders never read its folder (Normalize)
    required_files: tuple[str, ...] = ()  # other files its loader opens (e.g. a word tokenizer's vocabulary)
    reads: Role = "sentence_embedding"  # the feature it consumes
    routes_text: bool = False  # as the first module it takes the text to its routes' own input modules (Router)
    writes: Role = "sentence_embedding"  # the feature it produces
    normalizes: bool = False  # its output has unit length
    # Its output is a sparse vector (one dimension per vocabulary token or latent): a stack holding it is a
    # SparseEncoder (config_sentence_transformers.json's model_type), encoded to sparse outputs.
    sparse: bool = False
    # Why its output depends on the other texts of a batch in sentence-transformers too (padding reaches it);
    # "" when it does not. st then batches such stacks as ST does, and verify skips batch invariance.
    batch_dependent: str = ""
    since: str = "2.0"  # the first sentence-transformers version that reads `legacy_type`
    since_by_type: Mapping[str, str] = field(default_factory=dict)  # the same for other spellings (aliases)
    # ST versions ("2.7" or "2.7.0") that have the type but cannot run it, with the reason (tests skip them)
    fails_in: Mapping[str, str] = field(default_factory=dict)
    tei: bool = False  # text-embeddings-inference runs it
    tei_needs_modules_json: bool = False  # TEI finds it only by parsing modules.json (it skips it otherwise)
    path_keys: tuple[str, ...] = ()  # recipe kwargs naming a folder, resolved against the recipe's folder
    # (rows, columns) config keys of a weight matrix that grows as their product (Dense): a recipe asking
    # for one larger than the machine can hold is refused before any weights are made
    weight_matrix: tuple[str, str] | None = None
    example: tuple[Mapping[str, Any], ...] = ()  # a tiny recipe stack using it ("{tiny_bert}": a folder)

    @property
    def type_strings(self) -> tuple[str, ...]:
        """Every spelling this type has had, the written ones first."""
        return (self.legacy_type, self.st6_type, *self.read_types)

    def first_version(self, type_string: str) -> str:
        """The first sentence-transformers version that reads this spelling of the type."""
        if type_string in self.since_by_type:
            return self.since_by_type[type_string]
        if type_string == self.legacy_type:
            return self.since
        return self.st6_type_since if type_string == self.st6_type else NEW_DIALECT_SINCE

    def type_string(self, fmt: Format) -> str:
        return self.legacy_type if fmt == "portable" else self.st6_type

    def encode_config(self, config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
        if self.encode is not None:
            return self.encode(config, fmt)
        return {self.config_files[0]: dict(config)} if self.config_files else {}

    def known_keys(self) -> frozenset[str] | None:
        """Keys some loader generation accepts; None when keys are not checked."""
        if self.accepted_keys is None:
            return None
        return frozenset().union(*self.accepted_keys.values())

    def config_path(self, folder: Path) -> Path | None:
        """The module's config file in `folder`, under any of the names this type has used."""
        return next((folder / name for name in self.config_files if (folder / name).is_file()), None)

    def read_config(self, folder: Path) -> Config:
        """The module's config in `folder` as st constructor kwargs, whichever dialect wrote it."""
        path = self.config_path(folder)
        raw = read_json(path) if path else {}
        if not isinstance(raw, dict):
            raise ModelFolderError(f"{path}: expected a JSON object")
        return self.decode(raw, path or folder / MODULE_CONFIG)


# ---------------------------------------------------------------- the built-in table (filled by st_cli.format.specs)

SPECS: dict[str, TypeSpec] = {}
_BY_TYPE_STRING: dict[str, TypeSpec] = {}


def add_builtin(spec: TypeSpec) -> TypeSpec:
    """Add a built-in row to the table; every type string must be new."""
    taken = [s for s in spec.type_strings if s in _BY_TYPE_STRING]
    if spec.name in SPECS or taken:
        raise ValueError(f"type spec {spec.name!r} clashes with an existing row ({taken or spec.name})")
    SPECS[spec.name] = spec
    _BY_TYPE_STRING.update(dict.fromkeys(spec.type_strings, spec))
    return spec


def builtin_spec_for_type_string(type_string: str) -> TypeSpec | None:
    """The built-in spec that reads this modules.json `type`, in any dialect or alias."""
    return _BY_TYPE_STRING.get(type_string)


# ---------------------------------------------------------------- the plugin table

ENTRY_POINT_GROUP = "st_cli.modules"

_PLUGIN_SPECS: dict[str, TypeSpec] = {}  # short name → spec of a plugin (derived, or its own)
_PLUGIN_TYPES: dict[str, str] = {}  # type string → short name of a plugin
# Classes entry points named that were not registered on import: the torch registry registers them on its next lookup.
_ENTRY_POINT_CLASSES: dict[str, type] = {}
_entry_points_loaded = False


def plugin_spec(name: str, cls: type) -> TypeSpec:
    """The spec a plugin gets: its import path as the type string, its config_keys in config.json as written."""
    type_string = f"{cls.__module__}.{cls.__qualname__}"
    keys = frozenset(getattr(cls, "config_keys", []))
    accepted = dict.fromkeys(GENERATIONS, keys)
    base = TypeSpec(name=name, legacy_type=type_string, st6_type=type_string, accepted_keys=accepted)
    input_module = bool(getattr(cls, "save_in_root", False))
    return replace(base, input_module=input_module, save_in_root=input_module, since="3.1", tei=False)


def add_plugin(spec: TypeSpec) -> None:
    """Add (or replace) a plugin's spec; a built-in's name or type string is refused (ValueError)."""
    name = spec.name
    if name in SPECS:
        raise ValueError(f"module type {name!r} is a built-in name; choose another")
    taken = [t for t in spec.type_strings if builtin_spec_for_type_string(t) is not None]
    if taken:
        raise ValueError(f"module type {name!r}: type string {taken[0]!r} belongs to a built-in")
    _PLUGIN_SPECS[name] = spec
    _PLUGIN_TYPES.update(dict.fromkeys(spec.type_strings, name))


def remove_plugin(name: str) -> None:
    """Forget a plugin's spec (and a class its entry point left for the registry)."""
    spec = _PLUGIN_SPECS.pop(name, None)
    for type_string in spec.type_strings if spec else ():
        _PLUGIN_TYPES.pop(type_string, None)
    _ENTRY_POINT_CLASSES.pop(name, None)


def plugin(name: str) -> TypeSpec | None:
    """The spec of the plugin registered (or found by an entry point) under `name`."""
    return _PLUGIN_SPECS.get(name)


def known_names() -> list[str]:
    """The types st can run, from the specs alone (no torch import): built-ins and plugins registered so far."""
    return sorted({*SPECS, *_PLUGIN_SPECS})


def spec_for_type_string(type_string: str) -> TypeSpec | None:
    """The spec that reads a modules.json `type` (built-in in any dialect, or a plugin); no imports of torch.

    Entry-point plugins are loaded only when a type string is neither a built-in nor a known plugin.
    """
    found = builtin_spec_for_type_string(type_string)
    if found is None and type_string in _PLUGIN_TYPES:
        found = _PLUGIN_SPECS[_PLUGIN_TYPES[type_string]]
    if found is None and not type_string.startswith("sentence_transformers.") and not _entry_points_loaded:
        load_entry_points()
        return spec_for_type_string(type_string)
    return found


def load_entry_points() -> None:
    """Import the plugins installed packages declare, once.

    An entry point names a module, which registers its classes on import (`st_cli.register`), or a
    class, which gets its derived spec here under the entry point's name; the torch registry
    registers the class itself on its next lookup (`entry_point_classes`).
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()  # a module registers its classes on import; a class is recorded here
        except Exception as e:  # a broken plugin must not break st for every other model
            raise StError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) failed to load: {e}") from None
        if isinstance(loaded, type) and not _registered(loaded):
            _add_entry_point_class(ep.name, loaded)


def entry_point_classes() -> dict[str, type]:
    """Classes entry points named that did not register themselves (short name → class): the torch registry
    registers each one it does not hold yet."""
    return dict(_ENTRY_POINT_CLASSES)


def _registered(cls: type) -> bool:
    """A class the torch registry holds: registering sets `spec` on the class itself (a subclass only inherits it)."""
    spec = vars(cls).get("spec")
    return isinstance(spec, TypeSpec) and (spec is SPECS.get(spec.name) or spec is _PLUGIN_SPECS.get(spec.name))


def _add_entry_point_class(name: str, cls: type) -> None:
    spec = plugin_spec(name, cls)
    existing = _PLUGIN_SPECS.get(name)
    if existing is not None and existing != spec:
        raise ValueError(f"module type {name!r} is already registered by {existing.legacy_type.rpartition('.')[0]}")
    add_plugin(spec)
    _ENTRY_POINT_CLASSES[name] = cls


# ---------------------------------------------------------------- type strings


def is_legacy_type(type_string: str) -> bool:
    """A `sentence_transformers.models.X` spelling (ST <= 5.3, TEI, model2vec), or a sparse type's
    `sentence_transformers.sparse_encoder.models.X` (ST 5.0-5.3)."""
    return type_string.startswith((LEGACY_PREFIX, SPARSE_LEGACY_PREFIX))


def is_new_type(type_string: str) -> bool:
    """A sentence-transformers spelling from ST >= 5.4 (`sentence_transformers.base.modules...` etc.)."""
    return type_string.startswith("sentence_transformers.") and not is_legacy_type(type_string)


def version_tuple(version: str) -> tuple[int, ...]:
    """'3.2' → (3, 2); for comparing `since` fields."""
    return tuple(int(p) for p in version.split(".") if p.isdigit())


# ---------------------------------------------------------------- what several rows share

# The input modules' sentence_bert_config.json keys each loader generation accepts (Transformer, CLIPModel).
SBERT_KEYS_LEGACY = frozenset(
    {"max_seq_length", "do_lower_case", "model_args", "tokenizer_args", "config_args", "cache_dir", "backend"}
    | {"tokenizer_name_or_path"}
)
SBERT_KEYS_5X = SBERT_KEYS_LEGACY | {
    "transformer_task",
    "modality_config",
    "module_output_name",
    "processing_kwargs",
    "unpad_inputs",
    "model_kwargs",
    "processor_kwargs",
    "config_kwargs",
}
SBERT_KEYS_6 = SBERT_KEYS_5X | {"query_length", "document_length", "query_expansion"}
_HIDDEN_SIZE_KEYS = ("hidden_size", "d_model", "dim", "n_embd")
# What ST >= 5.4 write for a module on the sentence embedding (Dense, Normalize in st6 folders).
EMBEDDING_IO = {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"}


def vocab_width(ctx: WidthContext) -> Widths:
    """A fill-mask model's token embeddings (its logits) are as wide as its vocabulary (MLMTransformer)."""
    size = (ctx.hf_config or {}).get("vocab_size")
    return Widths(None, size if isinstance(size, int) and not isinstance(size, bool) else None)


def hidden_size(hf_config: Mapping[str, Any] | None) -> int | None:
    """The token embedding width a transformers config.json declares."""
    config = hf_config or {}
    return next((config[k] for k in _HIDDEN_SIZE_KEYS if isinstance(config.get(k), int)), None)


# WeightedLayerPooling, LayerNorm, Dropout, CNN, LSTM: st's constructor kwargs are ST >= 5.4's names;
# ST <= 5.3 wrote a few of them under older names (`legacy_names`), which every later version still
# accepts (`config_key_renames`).


# What a config value must be, by kind: (test, what the error line says it must be).
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "count": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "sizes": (lambda v: isinstance(v, list) and bool(v) and all(_is_int(x) and x > 0 for x in v),
              "a non-empty list of positive integers"),
}  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_kind(value: Any, kind: str, key: str, path: Path) -> Any:
    """`value` if it is of `kind` (KINDS), else ModelFolderError naming the file and the key."""
    test, must_be = KINDS[kind]
    if not test(value):
        raise ModelFolderError(f"{path}: key {key!r} must be {must_be}, got {value!r}")
    return value


def renaming_codec(
    file: str,
    keys: tuple[str, ...],
    required: tuple[str, ...],
    legacy_names: Mapping[str, str] | None = None,
    portable_omits: Callable[[Mapping[str, Any]], set[str]] = lambda config: set(),
    kinds: Mapping[str, str] | None = None,
) -> tuple[Callable[[Config, Path], Config], Callable[[Mapping[str, Any], Format], dict[str, Config | None]]]:
    """decode/encode for a config that is the constructor's kwargs, some spelled differently before ST 5.4;
    `kinds` says what each value must be (KINDS), checked here, where the file is read."""
    legacy = dict(legacy_names or {})

    def decode(raw: Config, path: Path) -> Config:
        config = {}
        for key in keys:
            spelling = next((name for name in (key, legacy.get(key)) if name is not None and name in raw), None)
            if spelling is not None:
                kind = (kinds or {}).get(key)
                config[key] = check_kind(raw[spelling], kind, spelling, path) if kind else raw[spelling]
        missing = [legacy.get(k, k) for k in required if k not in config]
        if missing:
            raise ModelFolderError(f"{path}: missing key {missing[0]!r}")
        return config

    def encode(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
        if fmt == "st6":
            return {file: {k: config[k] for k in keys if k in config}}
        omitted = portable_omits(config)
        return {file: {legacy.get(k, k): config[k] for k in keys if k in config and k not in omitted}}

    return decode, encode


def keys_by_generation(keys: tuple[str, ...], legacy_names: Mapping[str, str], extra: Iterable[str] = ()) -> Any:
    """ST <= 5.3 constructors take the legacy spellings; later ones take both (deprecated_kwargs)."""
    old = frozenset({legacy_names.get(k, k) for k in keys} | set(extra))
    new = old | set(keys)
    return {"ST<=5.3": old, "ST5.4-5.x": new, "ST>=6": new}


def pickle_notes(m: ModuleView) -> Iterable[LoaderNote]:
    """ST <= 3.0 load these modules' weights from pytorch_model.bin only."""
    if m.weights and m.weights.files and not m.weights.pickled:
        yield LoaderNote(
            "ST<=5.3", "partial", f"{m.path}: ST <= 3.0 need {m.path}/pytorch_model.bin (3.1+ read model.safetensors)"
        )


def shape_problems(shapes: Shapes, expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    problems = []
    for name, shape in expected.items():
        found = tensor(shapes, name)
        if found is None:
            problems.append(f"no tensor {name}")
        elif tuple(found) != shape:
            problems.append(f"{name} has shape {list(found)}, the config says {list(shape)}")
    return problems


def ints(config: Mapping[str, Any], *keys: str) -> list[int] | None:
    values = [config.get(k) for k in keys]
    return values if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else None  # type: ignore[return-value]


def tensor(shapes: Shapes, suffix: str) -> tuple[int, ...] | None:
    """The shape of the tensor named `suffix` (or `<prefix>.suffix`), None if there is none."""
    return next((s for n, s in shapes.items() if n == suffix or n.endswith("." + suffix)), None)


# The word models: WordEmbeddings, WordWeights, BoW.


def string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModelFolderError(f"{where}: expected a list of strings")
    return value


def word_weights_fields(raw: Config, path: Path, *, weights_required: bool) -> Config:
    """The vocabulary and its weights, as WordWeights and BoW both read them."""
    word_weights = raw.get("word_weights", None if weights_required else {})
    if not isinstance(word_weights, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in word_weights.values()
    ):
        raise ModelFolderError(f"{path}: word_weights must map words to numbers")
    unknown = raw.get("unknown_word_weight", 1)
    if not isinstance(unknown, (int, float)) or isinstance(unknown, bool):
        raise ModelFolderError(f"{path}: unknown_word_weight must be a number, got {unknown!r}")
    return {"vocab": string_list(raw.get("vocab"), f"{path}: vocab"), "word_weights": word_weights,
            "unknown_word_weight": unknown}  # fmt: skip


WORD_WEIGHTS_KEYS = frozenset({"vocab", "word_weights", "unknown_word_weight"})
# The word models' example stacks share one vocabulary.
EXAMPLE_VOCAB = ["PADDING", "man", "food", "eating", "horse", "quick", "fox", "the", "a"]
EXAMPLE_WORD_WEIGHTS = {"word_weights": {"food": 2.5, "man": 0.5}, "unknown_word_weight": 0.25}
