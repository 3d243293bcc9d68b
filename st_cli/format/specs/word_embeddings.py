"""WordEmbeddings: a table of word vectors behind one of sentence-transformers' own word tokenizers
(`WORD_TOKENIZERS`), whose config file sits beside wordembedding_config.json."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from st_cli.errors import ModelFolderError
from st_cli.format.spec import (
    EXAMPLE_VOCAB,
    GENERATIONS,
    LEGACY_PREFIX,
    ST_PREFIX,
    Config,
    Format,
    LoaderNote,
    ModuleView,
    Shapes,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    string_list,
    tensor,
)

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
        "vocab": string_list(tok.get("vocab", []), f"{tokenizer_path}: vocab"),
        "update_embeddings": bool(raw.get("update_embeddings", False)),
        "max_seq_length": raw.get("max_seq_length", DEFAULT_WORD_MAX_SEQ_LENGTH),
    }
    if "stop_words" in tok:
        config["stop_words"] = string_list(tok["stop_words"], f"{tokenizer_path}: stop_words")
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
    shape = tensor(ctx.shapes, "emb_layer.weight")
    return Widths(None, shape[1] if shape and len(shape) == 2 else None)


def _word_embeddings_weights(config: Mapping[str, Any], shapes: Shapes) -> list[str]:
    shape = tensor(shapes, "emb_layer.weight")
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

SPEC = add_builtin(
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
            {"type": "WordEmbeddings", "vocab": EXAMPLE_VOCAB, "dimension": 8},
            {"type": "Pooling", "mode": ["mean", "mean_sqrt_len_tokens"]},
        ),
    )
)
