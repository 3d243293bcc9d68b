"""Module type specs: everything st knows about a module type, in one torch-free row per type.

`layout.py` (type strings, config codecs), `summary.py` (key checks, widths), `portability.py`
(loader verdicts), `recipe.py` and `verify.py` loop over `SPECS`; none of them names a type.
The torch class in `st_cli/modules/<file>.py` points at its row with `@register(SPECS["Name"])`.

How to add a built-in module type (say `LayerNorm`):

1. Write `st_cli/modules/layer_norm.py`: a `Module` (or `InputModule`) subclass decorated with
   `@register(SPECS["LayerNorm"])`, with `__init__(**config)`, `forward`, `plan`, and `save`/`load`
   if the base class's (config file through the codec + `model.safetensors`) do not fit.
2. Add its row below with `_add(TypeSpec(...))`: `name`, `module_file="layer_norm"` (the registry
   imports that file lazily on the first lookup), the type strings (`legacy_type` is what
   `--format portable` writes, `st6_type` what `--format st6` writes, `read_types` every other
   spelling ST ever wrote or aliased, e.g. Asym → Router), `config_files` (the first is written;
   `()` = no config), `decode`/`encode` (codec functions may sit right above the row),
   `accepted_keys` per loader generation (+ `lenient_in`), the `width` rule (and `check_weights`
   for shape checks), `since` (first ST version that reads `legacy_type`; `since_by_type` for
   aliases, `st6_type_since` for the new spelling; `fails_in` for versions that have it but cannot
   run it) and `tei`, `loader_notes` for caveats of one loader or version, `required_files`,
   `path_keys` (recipe kwargs that name folders), `example` (a tiny recipe stack for
   tests/test_module_types.py and the cross-version table tests/test_type_table.py; "{tiny_bert}"
   is replaced by a tiny BERT folder, "{tiny_clip}" by a tiny CLIP folder; a type without one fails
   those tests), plus the flags below that apply.

Nothing else: tests parametrized over `registry.names()` pick the new type up.

A spec is pure data plus pure functions of JSON and safetensors headers. Torch must never be
imported by this file (`st inspect` and `st --help` stay instant).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from st_cli.errors import ModelFolderError
from st_cli.format.files import read_json, read_safetensors_header

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


def _pass_through(ctx: WidthContext) -> Widths:
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
    module_file: str | None = None  # st_cli/modules/<file>.py holds the torch class (None: a plugin)
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
    check_weights: Callable[[Mapping[str, Any], Shapes], list[str]] | None = None  # shape problems
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


SPECS: dict[str, TypeSpec] = {}
_BY_TYPE_STRING: dict[str, TypeSpec] = {}


def _add(spec: TypeSpec) -> TypeSpec:
    """Add a row to the table; every type string must be new."""
    taken = [s for s in spec.type_strings if s in _BY_TYPE_STRING]
    if spec.name in SPECS or taken:
        raise ValueError(f"type spec {spec.name!r} clashes with an existing row ({taken or spec.name})")
    SPECS[spec.name] = spec
    _BY_TYPE_STRING.update(dict.fromkeys(spec.type_strings, spec))
    return spec


def spec_for_type_string(type_string: str) -> TypeSpec | None:
    """The built-in spec that reads this modules.json `type`, in any dialect or alias."""
    return _BY_TYPE_STRING.get(type_string)


def is_legacy_type(type_string: str) -> bool:
    """A `sentence_transformers.models.X` spelling (ST <= 5.3, TEI, model2vec)."""
    return type_string.startswith(LEGACY_PREFIX)


def is_new_type(type_string: str) -> bool:
    """A sentence-transformers spelling from ST >= 5.4 (`sentence_transformers.base.modules...` etc.)."""
    return type_string.startswith("sentence_transformers.") and not is_legacy_type(type_string)


# ---------------------------------------------------------------- Transformer

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
_HIDDEN_SIZE_KEYS = ("hidden_size", "d_model", "dim", "n_embd")


def hidden_size(hf_config: Mapping[str, Any] | None) -> int | None:
    """The token embedding width a transformers config.json declares."""
    config = hf_config or {}
    return next((config[k] for k in _HIDDEN_SIZE_KEYS if isinstance(config.get(k), int)), None)


def _decode_transformer(raw: Config, path: Path) -> Config:
    return {k: raw[k] for k in ("max_seq_length", "do_lower_case") if k in raw}


def _encode_transformer(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    if fmt == "portable":
        return {SBERT_CONFIG: {"max_seq_length": config["max_seq_length"], "do_lower_case": False}}
    return {
        SBERT_CONFIG: {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings",
        }
    }


def _transformer_width(ctx: WidthContext) -> Widths:
    return Widths(None, hidden_size(ctx.hf_config))


_add(
    TypeSpec(
        name="Transformer",
        module_file="transformer",
        legacy_type=LEGACY_PREFIX + "Transformer",
        st6_type=BASE_PREFIX + "transformer.Transformer",
        # Older names for the Transformer's config, tried in this order.
        config_files=(
            SBERT_CONFIG,
            "sentence_roberta_config.json",
            "sentence_distilbert_config.json",
            "sentence_camembert_config.json",
            "sentence_albert_config.json",
            "sentence_xlm-roberta_config.json",
            "sentence_xlnet_config.json",
        ),
        decode=_decode_transformer,
        encode=_encode_transformer,
        accepted_keys={"ST<=5.3": _SBERT_KEYS_LEGACY, "ST5.4-5.x": _SBERT_KEYS_5X, "ST>=6": _SBERT_KEYS_6},
        width=_transformer_width,
        input_module=True,
        save_in_root=True,
        hf_model=True,
        needs_weights=True,
        reads="text",
        writes="token_embeddings",
        tei=True,
        path_keys=("model",),
        example=({"type": "Transformer", "model": "{tiny_bert}"}, {"type": "Pooling", "mode": "mean"}),
    )
)

# ---------------------------------------------------------------- Pooling

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
_POOLING_KEYS_LEGACY = frozenset(
    {"word_embedding_dimension", "pooling_mode", "include_prompt", *_LEGACY_POOLING_KEYS.values()}
)
_POOLING_KEYS_NEW = _POOLING_KEYS_LEGACY | {"embedding_dimension"}
TEI_POOLING_FOLDER = "1_Pooling"  # TEI reads pooling from this folder only


def _decode_pooling(raw: Config, path: Path) -> Config:
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


def _encode_pooling(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    modes = list(config["mode"])
    include_prompt = bool(config.get("include_prompt", True))
    if fmt == "st6":
        mode: str | list[str] = modes[0] if len(modes) == 1 else modes
        return {
            MODULE_CONFIG: {
                "embedding_dimension": config["dimension"],
                "pooling_mode": mode,
                "include_prompt": include_prompt,
            }
        }
    if modes != [m for m in POOLING_MODES if m in modes]:
        problem = f"pooling modes in the order {modes} need a list pooling_mode (ST >= 5.4): use --format st6"
        raise ModelFolderError(f"Pooling: {problem}")
    out: Config = {"word_embedding_dimension": config["dimension"]}
    out |= {_LEGACY_POOLING_KEYS[m]: m in modes for m in _ST22_POOLING_MODES}
    # The newer keys break ST <= 2.2, so they are written only when they carry information.
    if not include_prompt or any(m not in _ST22_POOLING_MODES for m in modes):
        out |= {_LEGACY_POOLING_KEYS[m]: m in modes for m in ("weightedmean", "lasttoken")}
        out["include_prompt"] = include_prompt
    return {MODULE_CONFIG: out}


def _pooling_width(ctx: WidthContext) -> Widths:
    dimension = ctx.config.get("dimension")
    if not isinstance(dimension, int):
        return Widths(ctx.incoming, None)
    return Widths(dimension, dimension * len(ctx.config.get("mode") or ["mean"]))


def _pooling_notes(m: ModuleView) -> Iterable[LoaderNote]:
    raw, where = m.raw_config or {}, m.config_file
    if isinstance(raw.get("pooling_mode"), list):
        yield LoaderNote("ST<=5.3", "no", f"{where}: a list pooling_mode needs ST >= 5.4")
    newer = [k for k in ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken") if k in raw]
    if newer:
        yield LoaderNote("ST<=5.3", "partial", f"{where}: ST 2.2 fails on {', '.join(newer)} (TypeError); 2.3+ read it")
    if "include_prompt" in raw:
        yield LoaderNote("ST<=5.3", "partial", f"{where}: ST <= 2.3 fail on include_prompt (TypeError); 2.4+ read it")
    yield from _tei_pooling_notes(m)


def _tei_pooling_notes(m: ModuleView) -> Iterable[LoaderNote]:
    """text-embeddings-inference's pooling rules (FORMAT.md §8)."""
    if m.path != TEI_POOLING_FOLDER:
        yield LoaderNote(
            "TEI", "no", f"TEI reads pooling only from {TEI_POOLING_FOLDER}/config.json; here at {m.path or '.'}"
        )
        return
    raw, modes = m.raw_config, list((m.config or {}).get("mode") or [])
    if raw is None:
        return
    where = f"{TEI_POOLING_FOLDER}/{MODULE_CONFIG}"
    if not all(isinstance(raw.get(k), bool) for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens")):
        yield LoaderNote(
            "TEI", "no", f"{where}: TEI needs the pooling_mode_cls_token/pooling_mode_mean_tokens booleans"
        )
        return
    if len(modes) != 1 or modes[0] not in ("cls", "mean", "lasttoken"):
        yield LoaderNote(
            "TEI", "no", f"{where}: TEI supports one of cls, mean, lasttoken; this asks for {'+'.join(modes)}"
        )
    if raw.get("include_prompt") is False:
        yield LoaderNote("TEI", "partial", f"{where}: TEI ignores include_prompt: false (it pools the prompt too)")


_add(
    TypeSpec(
        name="Pooling",
        module_file="pooling",
        legacy_type=LEGACY_PREFIX + "Pooling",
        st6_type=ST_PREFIX + "pooling.Pooling",
        decode=_decode_pooling,
        encode=_encode_pooling,
        accepted_keys={"ST<=5.3": _POOLING_KEYS_LEGACY, "ST5.4-5.x": _POOLING_KEYS_NEW, "ST>=6": _POOLING_KEYS_NEW},
        width=_pooling_width,
        width_mismatch="warning",  # ST pools whatever width arrives
        loader_notes=_pooling_notes,
        needs_config=True,
        reads="token_embeddings",
        tei=True,
        example=({"type": "Transformer", "model": "{tiny_bert}"}, {"type": "Pooling", "mode": ["cls", "max"]}),
    )
)

# ---------------------------------------------------------------- Dense

_EMBEDDING_IO = {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"}
_DENSE_KEYS_LEGACY = frozenset(
    {"in_features", "out_features", "bias", "activation_function", "init_weight", "init_bias"}
)
_DENSE_KEYS_5X = _DENSE_KEYS_LEGACY | {"module_input_name", "module_output_name"}
_DENSE_KEYS_6 = _DENSE_KEYS_5X | {"use_residual"}
TEI_ACTIVATIONS = {"torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity"}


def _decode_dense(raw: Config, path: Path) -> Config:
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


def _encode_dense(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    dense = {
        "in_features": config["in_features"],
        "out_features": config["out_features"],
        "bias": config["bias"],
        "activation_function": config["activation"],
    }
    return {MODULE_CONFIG: dense | (_EMBEDDING_IO if fmt == "st6" else {})}


def _dense_width(ctx: WidthContext) -> Widths:
    if "in_features" not in ctx.config:
        return Widths(ctx.incoming, None)
    return Widths(ctx.config["in_features"], ctx.config["out_features"])


def _dense_weight_problems(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    weight, bias = _tensor(shapes, "linear.weight"), _tensor(shapes, "linear.bias")
    expected = (config["out_features"], config["in_features"])
    problems = []
    if weight is None:
        problems.append("no tensor linear.weight")
    elif weight != expected:
        problems.append(f"linear.weight has shape {list(weight)}, the config says {list(expected)}")
    if config.get("bias") and bias != (config["out_features"],):
        found = f"shape {list(bias)}" if bias is not None else "no tensor"
        problems.append(f"linear.bias: {found}, the config asks for a bias")
    elif not config.get("bias") and bias is not None:
        problems.append("linear.bias present but the config says bias: false")
    return problems


def _dense_notes(m: ModuleView) -> Iterable[LoaderNote]:
    if m.weights and not m.weights.pickled:
        yield LoaderNote(
            "ST<=5.3", "partial", f"{m.path}: ST <= 3.0 need {m.path}/pytorch_model.bin (3.1+ read model.safetensors)"
        )
    raw, where = m.raw_config or {}, m.config_file
    missing = [k for k in ("in_features", "out_features", "bias") if k not in raw]
    if missing:
        yield LoaderNote("TEI", "no", f"{where}: TEI needs {', '.join(missing)}")
    activation = raw.get("activation_function")
    if activation is not None and (not isinstance(activation, str) or activation not in TEI_ACTIVATIONS):
        yield LoaderNote("TEI", "no", f"{where}: TEI supports only Tanh and Identity activations, not {activation}")
    if m.weights is not None and m.weights.files and m.weights.tensor("linear.weight") is None:
        yield LoaderNote("TEI", "no", f"{m.path}: TEI needs the tensor linear.weight")


_add(
    TypeSpec(
        name="Dense",
        module_file="dense",
        legacy_type=LEGACY_PREFIX + "Dense",
        st6_type=BASE_PREFIX + "dense.Dense",
        decode=_decode_dense,
        encode=_encode_dense,
        accepted_keys={"ST<=5.3": _DENSE_KEYS_LEGACY, "ST5.4-5.x": _DENSE_KEYS_5X, "ST>=6": _DENSE_KEYS_6},
        lenient_in=frozenset({"ST>=6"}),
        width=_dense_width,
        check_weights=_dense_weight_problems,
        loader_notes=_dense_notes,
        needs_config=True,
        needs_weights=True,
        tei=True,
        tei_needs_modules_json=True,
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "Pooling"},
            {"type": "Dense", "out_features": 8, "activation": "tanh"},
        ),
    )
)

# ---------------------------------------------------------------- Normalize


def _encode_normalize(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    return {MODULE_CONFIG: dict(_EMBEDDING_IO) if fmt == "st6" else None}


_add(
    TypeSpec(
        name="Normalize",
        module_file="normalize",
        legacy_type=LEGACY_PREFIX + "Normalize",
        st6_type=BASE_PREFIX + "normalize.Normalize",
        st6_type_since="6.0",
        read_types=(ST_PREFIX + "normalize.Normalize",),
        decode=lambda raw, path: {},
        encode=_encode_normalize,
        width=_pass_through,
        needs_folder=False,  # ST never reads it (all-MiniLM-L6-v2 has none)
        normalizes=True,
        tei=True,
        example=({"type": "Transformer", "model": "{tiny_bert}"}, {"type": "Pooling"}, {"type": "Normalize"}),
    )
)


# ---------------------------------------------------------------- WeightedLayerPooling, LayerNorm, Dropout, CNN, LSTM
# st's constructor kwargs are ST >= 5.4's names; ST <= 5.3 wrote a few of them under older names
# (`legacy_names`), which every later version still accepts (`config_key_renames`).


def _renaming_codec(
    file: str,
    keys: tuple[str, ...],
    required: tuple[str, ...],
    legacy_names: Mapping[str, str] | None = None,
    portable_omits: Callable[[Mapping[str, Any]], set[str]] = lambda config: set(),
) -> tuple[Callable[[Config, Path], Config], Callable[[Mapping[str, Any], Format], dict[str, Config | None]]]:
    """decode/encode for a config that is the constructor's kwargs, some spelled differently before ST 5.4."""
    legacy = dict(legacy_names or {})

    def decode(raw: Config, path: Path) -> Config:
        config = {}
        for key in keys:
            spelling = next((name for name in (key, legacy.get(key)) if name is not None and name in raw), None)
            if spelling is not None:
                config[key] = raw[spelling]
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


def _keys_by_generation(keys: tuple[str, ...], legacy_names: Mapping[str, str], extra: Iterable[str] = ()) -> Any:
    """ST <= 5.3 constructors take the legacy spellings; later ones take both (deprecated_kwargs)."""
    old = frozenset({legacy_names.get(k, k) for k in keys} | set(extra))
    new = old | set(keys)
    return {"ST<=5.3": old, "ST5.4-5.x": new, "ST>=6": new}


def _pickle_notes(m: ModuleView) -> Iterable[LoaderNote]:
    """ST <= 3.0 load these modules' weights from pytorch_model.bin only."""
    if m.weights and m.weights.files and not m.weights.pickled:
        yield LoaderNote(
            "ST<=5.3", "partial", f"{m.path}: ST <= 3.0 need {m.path}/pytorch_model.bin (3.1+ read model.safetensors)"
        )


def _shape_problems(shapes: Shapes, expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    problems = []
    for name, shape in expected.items():
        found = _tensor(shapes, name)
        if found is None:
            problems.append(f"no tensor {name}")
        elif tuple(found) != shape:
            problems.append(f"{name} has shape {list(found)}, the config says {list(shape)}")
    return problems


def _ints(config: Mapping[str, Any], *keys: str) -> list[int] | None:
    values = [config.get(k) for k in keys]
    return values if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else None  # type: ignore[return-value]


# WeightedLayerPooling: a weighted mean of the Transformer's hidden states (it needs `all_layer_embeddings`).
_WLP_KEYS = ("embedding_dimension", "layer_start", "num_hidden_layers")
_WLP_LEGACY = {"embedding_dimension": "word_embedding_dimension"}
_decode_wlp, _encode_wlp = _renaming_codec(MODULE_CONFIG, _WLP_KEYS, ("embedding_dimension",), _WLP_LEGACY)


def _wlp_width(ctx: WidthContext) -> Widths:
    dim = ctx.config.get("embedding_dimension")
    return Widths(dim, dim) if isinstance(dim, int) else Widths(ctx.incoming, None)


def _wlp_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    layers, start = config.get("num_hidden_layers", 12), config.get("layer_start", 4)
    if not isinstance(layers, int) or not isinstance(start, int):
        return ["num_hidden_layers and layer_start must be integers"]
    return _shape_problems(shapes, {"layer_weights": (layers + 1 - start,)})


_add(
    TypeSpec(
        name="WeightedLayerPooling",
        module_file="weighted_layer_pooling",
        legacy_type=LEGACY_PREFIX + "WeightedLayerPooling",
        st6_type=ST_PREFIX + "weighted_layer_pooling.WeightedLayerPooling",
        decode=_decode_wlp,
        encode=_encode_wlp,
        accepted_keys=_keys_by_generation(_WLP_KEYS, _WLP_LEGACY, ["layer_weights"]),
        width=_wlp_width,
        check_weights=_wlp_weights,
        loader_notes=_pickle_notes,
        needs_config=True,
        needs_weights=True,
        reads="token_embeddings",
        writes="token_embeddings",
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "WeightedLayerPooling", "num_hidden_layers": 2, "layer_start": 0, "layer_weights": [0.5, 1, 2]},
            {"type": "Pooling"},
        ),
    )
)

# LayerNorm on the sentence embedding.
_decode_layer_norm, _encode_layer_norm = _renaming_codec(MODULE_CONFIG, ("dimension",), ("dimension",))


def _layer_norm_width(ctx: WidthContext) -> Widths:
    dim = ctx.config.get("dimension")
    return Widths(dim, dim) if isinstance(dim, int) else Widths(ctx.incoming, None)


def _layer_norm_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    dim = _ints(config, "dimension")
    return _shape_problems(shapes, {"norm.weight": (dim[0],), "norm.bias": (dim[0],)}) if dim else []


_add(
    TypeSpec(
        name="LayerNorm",
        module_file="layer_norm",
        legacy_type=LEGACY_PREFIX + "LayerNorm",
        st6_type=ST_PREFIX + "layer_norm.LayerNorm",
        decode=_decode_layer_norm,
        encode=_encode_layer_norm,
        accepted_keys=dict.fromkeys(GENERATIONS, frozenset({"dimension"})),
        width=_layer_norm_width,
        check_weights=_layer_norm_weights,
        loader_notes=_pickle_notes,
        needs_config=True,
        needs_weights=True,
        example=({"type": "Transformer", "model": "{tiny_bert}"}, {"type": "Pooling"}, {"type": "LayerNorm"}),
    )
)

# Dropout on the sentence embedding: nothing at inference, but loaders read its config.json.
_decode_dropout, _encode_dropout = _renaming_codec(MODULE_CONFIG, ("dropout",), ())

_add(
    TypeSpec(
        name="Dropout",
        module_file="dropout",
        legacy_type=LEGACY_PREFIX + "Dropout",
        st6_type=ST_PREFIX + "dropout.Dropout",
        decode=_decode_dropout,
        encode=_encode_dropout,
        accepted_keys=dict.fromkeys(GENERATIONS, frozenset({"dropout"})),
        width=_pass_through,
        needs_config=True,
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "Pooling"},
            {"type": "Dropout", "dropout": 0.3},
        ),
    )
)

# CNN over the token embeddings: one Conv1d per kernel size, outputs concatenated.
CNN_CONFIG = "cnn_config.json"
_CNN_KEYS = ("in_embedding_dimension", "out_channels", "kernel_sizes", "stride_sizes")
_CNN_LEGACY = {"in_embedding_dimension": "in_word_embedding_dimension"}


def _cnn_default_strides(config: Mapping[str, Any]) -> set[str]:
    """ST <= 5.3 never wrote stride_sizes (their constructors take it); leave it out when it is all ones."""
    strides = config.get("stride_sizes")
    return {"stride_sizes"} if strides is None or all(s == 1 for s in strides) else set()


_decode_cnn, _encode_cnn = _renaming_codec(
    CNN_CONFIG, _CNN_KEYS, ("in_embedding_dimension",), _CNN_LEGACY, _cnn_default_strides
)


def _cnn_width(ctx: WidthContext) -> Widths:
    dims, kernels = _ints(ctx.config, "in_embedding_dimension", "out_channels"), ctx.config.get("kernel_sizes")
    if dims is None or not isinstance(kernels, list):
        return Widths(ctx.incoming, None)
    return Widths(dims[0], dims[1] * len(kernels))


def _cnn_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    dims, kernels = _ints(config, "in_embedding_dimension", "out_channels"), config.get("kernel_sizes")
    if dims is None or not isinstance(kernels, list):
        return []
    n_in, n_out = dims
    return _shape_problems(shapes, {f"convs.{i}.weight": (n_out, n_in, k) for i, k in enumerate(kernels)})


_add(
    TypeSpec(
        name="CNN",
        module_file="cnn",
        legacy_type=LEGACY_PREFIX + "CNN",
        st6_type=ST_PREFIX + "cnn.CNN",
        config_files=(CNN_CONFIG,),
        decode=_decode_cnn,
        encode=_encode_cnn,
        accepted_keys=_keys_by_generation(_CNN_KEYS, _CNN_LEGACY),
        width=_cnn_width,
        check_weights=_cnn_weights,
        loader_notes=_pickle_notes,
        needs_config=True,
        needs_weights=True,
        reads="token_embeddings",
        writes="token_embeddings",
        batch_dependent="its convolutions read the padding tokens, so a text's vector depends on its batch (in ST too)",
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "CNN", "out_channels": 6, "kernel_sizes": [1, 3, 5]},
            {"type": "Pooling", "mode": ["mean", "max"]},
        ),
    )
)

# LSTM over the token embeddings; it packs by `sentence_lengths`, which only WordEmbeddings gives.
LSTM_CONFIG = "lstm_config.json"
_LSTM_KEYS = ("embedding_dimension", "hidden_dim", "num_layers", "dropout", "bidirectional")
_LSTM_LEGACY = {"embedding_dimension": "word_embedding_dimension"}
_decode_lstm, _encode_lstm = _renaming_codec(
    LSTM_CONFIG, _LSTM_KEYS, ("embedding_dimension", "hidden_dim"), _LSTM_LEGACY
)


def _lstm_width(ctx: WidthContext) -> Widths:
    dims = _ints(ctx.config, "embedding_dimension", "hidden_dim")
    if dims is None:
        return Widths(ctx.incoming, None)
    return Widths(dims[0], dims[1] * (2 if ctx.config.get("bidirectional", True) else 1))


def _lstm_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    dims = _ints(config, "embedding_dimension", "hidden_dim")
    return _shape_problems(shapes, {"encoder.weight_ih_l0": (4 * dims[1], dims[0])}) if dims else []


_add(
    TypeSpec(
        name="LSTM",
        module_file="lstm",
        legacy_type=LEGACY_PREFIX + "LSTM",
        st6_type=ST_PREFIX + "lstm.LSTM",
        config_files=(LSTM_CONFIG,),
        decode=_decode_lstm,
        encode=_encode_lstm,
        accepted_keys=_keys_by_generation(_LSTM_KEYS, _LSTM_LEGACY),
        width=_lstm_width,
        check_weights=_lstm_weights,
        loader_notes=_pickle_notes,
        needs_config=True,
        needs_weights=True,
        reads="token_embeddings",
        writes="token_embeddings",
        example=(
            # words from both halves of tests/texts.py: ST <= 5.7 fail on a batch without one known word
            {
                "type": "WordEmbeddings",
                "vocab": ["PADDING", "man", "food", "eating", "quick", "fox", "word", "paris"],
                "dimension": 8,
            },
            {"type": "LSTM", "hidden_dim": 4},
            # not max: over a text without known words, ST <= 4.1 give -1e9 where later ones give -inf
            {"type": "Pooling", "mode": "mean"},
        ),
    )
)


# ---------------------------------------------------------------- word models: WordEmbeddings, WordWeights, BoW

WORD_EMBEDDINGS_CONFIG = "wordembedding_config.json"
DEFAULT_WORD_MAX_SEQ_LENGTH = 1000000  # sentence-transformers' default: no truncation in practice
_TOKENIZER_PREFIX_LEGACY = "sentence_transformers.models.tokenizer."
_TOKENIZER_PREFIX_NEW = "sentence_transformers.sentence_transformer.modules.tokenizer."


@dataclass(frozen=True)
class WordTokenizerSpec:
    """A word tokenizer ST saves beside WordEmbeddings: its class paths (`tokenizer_class`) and config file."""

    kind: str  # the class name, and st's `tokenizer:` value
    config_file: str
    legacy_class: str  # what ST <= 5.3 write, and what every version imports
    st6_class: str  # what ST >= 5.4 write
    keys: frozenset[str]  # the constructor's keywords (anything else is a TypeError in every version)
    read_classes: tuple[str, ...] = ()  # package-level spellings that import the same class

    @property
    def classes(self) -> tuple[str, ...]:
        return (self.legacy_class, self.st6_class, *self.read_classes)


_WORD_TOKENIZER_KEYS = frozenset({"vocab", "stop_words", "do_lower_case"})
WORD_TOKENIZERS: dict[str, WordTokenizerSpec] = {
    t.kind: t
    for t in (
        WordTokenizerSpec(
            "WhitespaceTokenizer",
            "whitespacetokenizer_config.json",
            _TOKENIZER_PREFIX_LEGACY + "WhitespaceTokenizer.WhitespaceTokenizer",
            _TOKENIZER_PREFIX_NEW + "whitespace.WhitespaceTokenizer",
            _WORD_TOKENIZER_KEYS,
            (_TOKENIZER_PREFIX_LEGACY + "WhitespaceTokenizer", _TOKENIZER_PREFIX_NEW + "WhitespaceTokenizer"),
        ),
        WordTokenizerSpec(
            "PhraseTokenizer",
            "phrasetokenizer_config.json",
            _TOKENIZER_PREFIX_LEGACY + "PhraseTokenizer.PhraseTokenizer",
            _TOKENIZER_PREFIX_NEW + "phrase.PhraseTokenizer",
            _WORD_TOKENIZER_KEYS | {"ngram_separator", "max_ngram_length"},
            (_TOKENIZER_PREFIX_LEGACY + "PhraseTokenizer", _TOKENIZER_PREFIX_NEW + "PhraseTokenizer"),
        ),
    )
}
_TOKENIZER_BY_CLASS = {c: t for t in WORD_TOKENIZERS.values() for c in t.classes}


def _read_json_object(path: Path) -> Config:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ModelFolderError(f"{path}: expected a JSON object")
    return raw


def _string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModelFolderError(f"{where}: expected a list of strings")
    return value


def _decode_word_embeddings(raw: Config, path: Path) -> Config:
    """wordembedding_config.json plus the tokenizer config it names, as one set of st kwargs."""
    name = raw.get("tokenizer_class")
    tokenizer = _TOKENIZER_BY_CLASS.get(name) if isinstance(name, str) else None
    if tokenizer is None:
        known = ", ".join(WORD_TOKENIZERS)
        raise ModelFolderError(f"{path}: tokenizer_class {name!r} is not supported by st (it reads {known})")
    tokenizer_path = path.parent / tokenizer.config_file
    tok = _read_json_object(tokenizer_path)
    unknown = sorted(set(tok) - tokenizer.keys)
    if unknown:
        raise ModelFolderError(f"{tokenizer_path}: unknown key {unknown[0]!r} (a TypeError in sentence-transformers)")
    config: Config = {
        "tokenizer": tokenizer.kind,
        "vocab": _string_list(tok.get("vocab", []), f"{tokenizer_path}: vocab"),
        "update_embeddings": bool(raw.get("update_embeddings", False)),
        "max_seq_length": raw.get("max_seq_length", DEFAULT_WORD_MAX_SEQ_LENGTH),
    }
    if "stop_words" in tok:
        config["stop_words"] = _string_list(tok["stop_words"], f"{tokenizer_path}: stop_words")
    return config | {k: tok[k] for k in ("do_lower_case", "ngram_separator", "max_ngram_length") if k in tok}


def _encode_word_embeddings(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    tokenizer = WORD_TOKENIZERS[config["tokenizer"]]
    main = {
        "tokenizer_class": tokenizer.legacy_class if fmt == "portable" else tokenizer.st6_class,
        "update_embeddings": bool(config.get("update_embeddings", False)),
        "max_seq_length": config.get("max_seq_length", DEFAULT_WORD_MAX_SEQ_LENGTH),
    }
    keys = ("vocab", "stop_words", "do_lower_case", "ngram_separator", "max_ngram_length")
    tok = {k: config[k] for k in keys if k in tokenizer.keys and k in config}
    return {WORD_EMBEDDINGS_CONFIG: main, tokenizer.config_file: tok}


def _word_embeddings_width(ctx: WidthContext) -> Widths:
    shape = _tensor(ctx.shapes, "emb_layer.weight")
    return Widths(None, shape[1] if shape and len(shape) == 2 else None)


def _word_embeddings_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    shape = _tensor(shapes, "emb_layer.weight")
    if shape is None or len(shape) != 2:
        return ["no 2-d tensor emb_layer.weight"]
    vocab = len(config.get("vocab") or ())
    if shape[0] < vocab:
        return [f"emb_layer.weight has {shape[0]} rows but the tokenizer's vocab has {vocab} words"]
    return []


def _word_embeddings_notes(m: ModuleView) -> Iterable[LoaderNote]:
    where, raw, config = m.config_file, m.raw_config or {}, m.config or {}
    tokenizer_class = raw.get("tokenizer_class")
    if isinstance(tokenizer_class, str) and tokenizer_class.startswith(_TOKENIZER_PREFIX_NEW):
        yield LoaderNote("ST<=5.3", "no", f"{where}: tokenizer_class {tokenizer_class} needs ST >= 5.4")
    if m.weights and m.weights.files and not m.weights.pickled:
        yield LoaderNote(
            "ST<=5.3", "partial", f"{m.path or '.'}: ST 2.x read only pytorch_model.bin (3.x+ read safetensors)"
        )
    if config.get("tokenizer") == "PhraseTokenizer":
        for loader in GENERATIONS:
            yield LoaderNote(
                loader, "partial", f"{where}: PhraseTokenizer needs nltk installed beside sentence-transformers"
            )
    if config.get("max_seq_length", DEFAULT_WORD_MAX_SEQ_LENGTH) != DEFAULT_WORD_MAX_SEQ_LENGTH:
        length = config.get("max_seq_length")
        reason = f"{where}: max_seq_length {length} is applied only by ST >= 6 (earlier: no truncation)"
        yield LoaderNote("ST<=5.3", "partial", reason)
        yield LoaderNote("ST5.4-5.x", "partial", reason)


_WORD_EMBEDDINGS_KEYS = frozenset({"tokenizer_class", "update_embeddings", "max_seq_length"})
_EXAMPLE_VOCAB = ["PADDING", "man", "food", "eating", "horse", "quick", "fox", "the", "a"]
_EXAMPLE_WEIGHTS = {"word_weights": {"food": 2.5, "man": 0.5}, "unknown_word_weight": 0.25}
_add(
    TypeSpec(
        name="WordEmbeddings",
        module_file="word_embeddings",
        legacy_type=LEGACY_PREFIX + "WordEmbeddings",
        st6_type=ST_PREFIX + "word_embeddings.WordEmbeddings",
        config_files=(WORD_EMBEDDINGS_CONFIG,),
        decode=_decode_word_embeddings,
        encode=_encode_word_embeddings,
        # ST <= 5.3 read only tokenizer_class and update_embeddings; later ones pass every key to the constructor.
        accepted_keys={
            "ST<=5.3": _WORD_EMBEDDINGS_KEYS,
            "ST5.4-5.x": _WORD_EMBEDDINGS_KEYS,
            "ST>=6": _WORD_EMBEDDINGS_KEYS,
        },
        lenient_in=frozenset({"ST<=5.3"}),
        width=_word_embeddings_width,
        check_weights=_word_embeddings_weights,
        loader_notes=_word_embeddings_notes,
        input_module=True,
        needs_config=True,
        needs_weights=True,
        reads="text",
        writes="token_embeddings",
        path_keys=("embeddings_file_path",),
        example=(
            {"type": "WordEmbeddings", "vocab": _EXAMPLE_VOCAB, "dimension": 8},
            {"type": "Pooling", "mode": ["mean", "mean_sqrt_len_tokens"]},
        ),
    )
)


def _word_weights_fields(raw: Config, path: Path, *, weights_required: bool) -> Config:
    word_weights = raw.get("word_weights", None if weights_required else {})
    if not isinstance(word_weights, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in word_weights.values()
    ):
        raise ModelFolderError(f"{path}: word_weights must map words to numbers")
    unknown = raw.get("unknown_word_weight", 1)
    if not isinstance(unknown, (int, float)) or isinstance(unknown, bool):
        raise ModelFolderError(f"{path}: unknown_word_weight must be a number, got {unknown!r}")
    return {"vocab": _string_list(raw.get("vocab"), f"{path}: vocab"), "word_weights": word_weights,
            "unknown_word_weight": unknown}  # fmt: skip


def _decode_word_weights(raw: Config, path: Path) -> Config:
    return _word_weights_fields(raw, path, weights_required=True)


_WORD_WEIGHTS_KEYS = frozenset({"vocab", "word_weights", "unknown_word_weight"})
_add(
    TypeSpec(
        name="WordWeights",
        module_file="word_weights",
        legacy_type=LEGACY_PREFIX + "WordWeights",
        st6_type=ST_PREFIX + "word_weights.WordWeights",
        decode=_decode_word_weights,
        accepted_keys=dict.fromkeys(GENERATIONS, _WORD_WEIGHTS_KEYS),
        width=_pass_through,
        needs_config=True,  # every version rebuilds the weights from config.json; ST >= 5 also write (unread) weights
        reads="token_embeddings",
        writes="token_embeddings",
        example=(
            {"type": "WordEmbeddings", "vocab": _EXAMPLE_VOCAB, "dimension": 8},
            {"type": "WordWeights", "vocab": _EXAMPLE_VOCAB, **_EXAMPLE_WEIGHTS},
            {"type": "Pooling"},
        ),
    )
)


def _decode_bow(raw: Config, path: Path) -> Config:
    cumulative = raw.get("cumulative_term_frequency", True)
    if not isinstance(cumulative, bool):
        raise ModelFolderError(f"{path}: cumulative_term_frequency must be true or false")
    return _word_weights_fields(raw, path, weights_required=False) | {"cumulative_term_frequency": cumulative}


def _bow_width(ctx: WidthContext) -> Widths:
    vocab = ctx.config.get("vocab")
    return Widths(None, len(dict.fromkeys(vocab)) if isinstance(vocab, list) else None)


_BOW_REORDERS = "reorders BoW's dimensions in every process (list(set(vocab)))"


def _bow_notes(m: ModuleView) -> Iterable[LoaderNote]:
    yield LoaderNote("ST<=5.3", "partial", f"{m.path}: ST 2.7 cannot encode BoW (StopIteration: it has no parameters)")
    yield LoaderNote(
        "ST<=5.3", "partial", f"{m.path}: ST <= 4.x reorder BoW's dimensions in every process (list(set(vocab)))"
    )


_add(
    TypeSpec(
        name="BoW",
        module_file="bow",
        legacy_type=LEGACY_PREFIX + "BoW",
        st6_type=ST_PREFIX + "bow.BoW",
        decode=_decode_bow,
        accepted_keys=dict.fromkeys(GENERATIONS, _WORD_WEIGHTS_KEYS | {"cumulative_term_frequency"}),
        width=_bow_width,
        loader_notes=_bow_notes,
        # The cross-version table compares vectors column by column; these versions cannot give them.
        fails_in={
            "2.2": _BOW_REORDERS,
            "2.7": "cannot encode a BoW (StopIteration: it has no parameters)",
            "3": _BOW_REORDERS,
            "4": _BOW_REORDERS,
        },
        input_module=True,
        needs_config=True,
        reads="text",
        example=({"type": "BoW", "vocab": _EXAMPLE_VOCAB[1:], **_EXAMPLE_WEIGHTS},),
    )
)


# ---------------------------------------------------------------- StaticEmbedding

_STATIC_TABLES = ("embedding.weight", "embeddings")  # sentence-transformers' key, model2vec's


def _static_width(ctx: WidthContext) -> Widths:
    table = next((ctx.shapes[k] for k in _STATIC_TABLES if k in ctx.shapes), None)
    return Widths(None, table[1] if table is not None and len(table) == 2 else None)


_add(
    TypeSpec(
        name="StaticEmbedding",
        module_file="static_embedding",
        legacy_type=LEGACY_PREFIX + "StaticEmbedding",
        st6_type=ST_PREFIX + "static_embedding.StaticEmbedding",
        config_files=(),  # no config: model2vec's root config.json is its own, ignored by every loader
        decode=lambda raw, path: {},
        encode=lambda config, fmt: {},
        width=_static_width,
        input_module=True,
        save_in_root=True,
        root_formats=("st6",),  # ST <= 4.1 write 0_StaticEmbedding/, which every version reads
        needs_weights=True,
        required_files=("tokenizer.json",),
        reads="text",
        since="3.2",
        path_keys=("tokenizer",),
        example=({"type": "StaticEmbedding", "tokenizer": "{tiny_bert}", "embedding_dim": 16}, {"type": "Normalize"}),
    )
)


# ---------------------------------------------------------------- Router (Asym)

ROUTER_CONFIG = "router_config.json"  # ST >= 5.0
ASYM_CONFIG = "config.json"  # Asym (ST <= 4.1), and st's portable folders


def _decode_router(raw: Config, path: Path) -> Config:
    """The routing table, plus each route's module names and widths (from the sub-modules' own files)."""
    types, structure, parameters = raw.get("types"), raw.get("structure"), raw.get("parameters") or {}
    if not isinstance(types, dict) or not isinstance(structure, dict) or not isinstance(parameters, dict):
        raise ModelFolderError(f"{path}: expected 'types' and 'structure' mappings (a Router/Asym config)")
    routes: dict[str, list[str | None]] = {}
    widths: dict[str, tuple[int | None, int | None]] = {}
    for name, subs in structure.items():
        if not isinstance(subs, list) or any(s not in types for s in subs):
            raise ModelFolderError(f"{path}: structure[{name!r}] names a module that is not in types")
        specs = [spec_for_type_string(str(types[s])) for s in subs]
        routes[str(name)] = [spec.name if spec else None for spec in specs]
        widths[str(name)] = _route_widths(path.parent, subs, specs)
    default = parameters.get("default_route")
    if default is None and parameters.get("allow_empty_key", True) and routes:
        default = next(iter(routes))
    return {"routes": routes, "route_widths": widths, "default_route": default}


def _route_widths(folder: Path, subs: list[str], specs: list[TypeSpec | None]) -> tuple[int | None, int | None]:
    """(input, output) width of one route: each module's width rule on its config and safetensors header."""
    first: int | None = None
    dim: int | None = None
    for i, (sub, spec) in enumerate(zip(subs, specs, strict=True)):
        if spec is None:
            return first, None
        sub_folder = folder / sub
        try:
            config = spec.read_config(sub_folder)
            weights = sub_folder / "model.safetensors"
            header = read_safetensors_header(weights) if weights.is_file() else {}
            hf = read_json(sub_folder / MODULE_CONFIG) if spec.hf_model else None
        except (ModelFolderError, AttributeError, TypeError, ValueError):
            return first, None
        shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        widths = spec.width(WidthContext(config, {}, shapes, dim, hf if isinstance(hf, dict) else None))
        first = widths.input if i == 0 else first
        dim = widths.output
    return first, dim


def _router_notes(m: ModuleView) -> Iterable[LoaderNote]:
    reason = f"{m.path or '.'}: ST <= 4.1 route only dict inputs ({{'query': text}}); plain text takes no route"
    yield LoaderNote("ST<=5.3", "partial", reason)


def _router_width(ctx: WidthContext) -> Widths:
    widths = ctx.config.get("route_widths") or {}
    route = ctx.config.get("default_route") or next(iter(widths), None)
    if route not in widths:
        return Widths(ctx.incoming, None)
    return Widths(*widths[route])


_add(
    TypeSpec(
        name="Router",
        module_file="router",
        legacy_type=LEGACY_PREFIX + "Asym",  # every version reads Asym; ST >= 5 as a Router
        st6_type=BASE_PREFIX + "router.Router",
        read_types=(LEGACY_PREFIX + "Router",),
        since_by_type={LEGACY_PREFIX + "Router": "5.0"},
        st6_type_since="5.4",
        config_files=(ROUTER_CONFIG, ASYM_CONFIG),
        decode=_decode_router,
        encode=lambda config, fmt: {},  # Router.save writes its table: it names the sub-modules' type strings
        width=_router_width,
        loader_notes=_router_notes,
        needs_config=True,
        save_in_root=True,
        routes_text=True,
        width_mismatch="warning",
        # They read the folder and route dict inputs ({"query": text}, tests/test_router.py), but plain text
        # goes through no route at all (their Asym's allow_empty_key), so plain vectors are not comparable.
        fails_in=dict.fromkeys(("2", "3", "4"), "routes only dict inputs; plain text takes no route (Asym)"),
        example=(
            {"type": "Transformer", "model": "{tiny_bert}"},
            {"type": "Pooling"},
            {
                "type": "Router",
                "routes": {
                    "query": [{"type": "Dense", "out_features": 8}],
                    "document": [{"type": "Dense", "out_features": 8}, {"type": "Normalize"}],
                },
                "default_route": "document",
            },
        ),
    )
)


# ---------------------------------------------------------------- CLIPModel

# Image-processor settings: transformers 5 nest them in processor_config.json, 4.x read preprocessor_config.json.
CLIP_PROCESSOR_CONFIG = "processor_config.json"
CLIP_PREPROCESSOR_CONFIG = "preprocessor_config.json"
CLIP_MAX_SEQ_LENGTH = 77  # every CLIP tokenizer's model_max_length
_CLIP_SBERT_6 = {
    "transformer_task": "feature-extraction",
    "modality_config": {
        "text": {"method": "get_text_features", "method_output_name": "pooler_output"},
        "image": {"method": "get_image_features", "method_output_name": "pooler_output"},
    },
    "module_output_name": "sentence_embedding",
}


def _decode_clip(raw: Config, path: Path) -> Config:
    # ST <= 4.x write no config; ST >= 5 write how to call the model, which is fixed for CLIP.
    return {k: raw[k] for k in ("max_seq_length",) if k in raw}


def _encode_clip(config: Mapping[str, Any], fmt: Format) -> dict[str, Config | None]:
    # ST >= 5 read max_seq_length from it (ST <= 4 ignore the file and cut at the tokenizer's 77).
    length = {"max_seq_length": config["max_seq_length"]} if config.get("max_seq_length") else {}
    return {SBERT_CONFIG: (dict(_CLIP_SBERT_6) if fmt == "st6" else {}) | length}


def _clip_width(ctx: WidthContext) -> Widths:
    shape = _tensor(ctx.shapes, "text_projection.weight")
    return Widths(None, shape[0] if shape else None)


def _clip_notes(m: ModuleView) -> Iterable[LoaderNote]:
    yield LoaderNote("ST<=5.3", "partial", f"{m.path or '.'}: ST < 4 do not truncate CLIP texts: over 77 tokens fails")
    length = (m.raw_config or {}).get("max_seq_length", CLIP_MAX_SEQ_LENGTH)
    if length != CLIP_MAX_SEQ_LENGTH:
        yield LoaderNote(
            "ST<=5.3", "partial", f"{m.config_file}: ST <= 4 ignore max_seq_length {length} (they cut at 77)"
        )
    yield LoaderNote("ST5.4-5.x", "partial", f"{m.path or '.'}: ST 5.x log that CLIPModel is deprecated (it loads)")


_add(
    TypeSpec(
        name="CLIPModel",
        module_file="clip_model",
        legacy_type=LEGACY_PREFIX + "CLIPModel",
        st6_type=ST_PREFIX + "clip_model.CLIPModel",
        config_files=(SBERT_CONFIG,),
        decode=_decode_clip,
        encode=_encode_clip,
        # ST <= 5.3 never read a config for it; later ones build a Transformer from it.
        accepted_keys={"ST5.4-5.x": _SBERT_KEYS_5X, "ST>=6": _SBERT_KEYS_6},
        width=_clip_width,
        loader_notes=_clip_notes,
        fails_in={  # the table's texts include long ones
            "2": "does not truncate CLIP texts to 77 tokens (longer texts fail)",
            "3": "does not truncate CLIP texts to 77 tokens (longer texts fail)",
        },
        input_module=True,
        save_in_root=True,
        needs_weights=True,
        reads="text",
        path_keys=("model", "processor_name"),
        example=({"type": "CLIPModel", "model": "{tiny_clip}"},),
    )
)


# ---------------------------------------------------------------- plain transformers folders


def plain_stack(hf_config: Mapping[str, Any]) -> list[tuple[TypeSpec, Config | None]]:
    """What sentence-transformers builds for a folder with no modules.json: Transformer + Pooling.

    Pooling is mean, except lasttoken for a causal LM that has not been made bidirectional
    (ST 6.2's `_load_default_modules`). None: the module reads its own files from the root.
    """
    architectures = hf_config.get("architectures") or [""]
    causal = str(architectures[0]).endswith("ForCausalLM") and hf_config.get("is_causal", True) is not False
    pooling = {"dimension": hidden_size(hf_config), "mode": ["lasttoken" if causal else "mean"], "include_prompt": True}
    return [(SPECS["Transformer"], None), (SPECS["Pooling"], pooling)]


# ---------------------------------------------------------------- helpers


def _tensor(shapes: Shapes, suffix: str) -> tuple[int, ...] | None:
    return next((s for n, s in shapes.items() if n == suffix or n.endswith("." + suffix)), None)


def version_tuple(version: str) -> tuple[int, ...]:
    """'3.2' → (3, 2); for comparing `since` fields."""
    return tuple(int(p) for p in version.split(".") if p.isdigit())
