"""BoW: a bag-of-words vector over a vocabulary, weighted per word; an input module (it takes the text)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from st_cli.errors import ModelFolderError
from st_cli.format.spec import (
    EXAMPLE_VOCAB,
    EXAMPLE_WORD_WEIGHTS,
    GENERATIONS,
    LEGACY_PREFIX,
    ST_PREFIX,
    WORD_WEIGHTS_KEYS,
    Config,
    LoaderNote,
    ModuleView,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
    word_weights_fields,
)


def _decode_bow(raw: Config, path: Path) -> Config:
    cumulative = raw.get("cumulative_term_frequency", True)
    if not isinstance(cumulative, bool):
        raise ModelFolderError(f"{path}: cumulative_term_frequency must be true or false")
    return word_weights_fields(raw, path, weights_required=False) | {"cumulative_term_frequency": cumulative}


def _bow_width(ctx: WidthContext) -> Widths:
    vocab = ctx.config.get("vocab")
    return Widths(None, len(dict.fromkeys(vocab)) if isinstance(vocab, list) else None)


_BOW_REORDERS = "reorders BoW's dimensions in every process (list(set(vocab)))"


def _bow_notes(m: ModuleView) -> Iterable[LoaderNote]:
    yield LoaderNote("ST<=5.3", "partial", f"{m.path}: ST 2.7 cannot encode BoW (StopIteration: it has no parameters)")
    yield LoaderNote(
        "ST<=5.3", "partial", f"{m.path}: ST <= 4.x reorder BoW's dimensions in every process (list(set(vocab)))"
    )


SPEC = add_builtin(
    TypeSpec(
        name="BoW",
        module_file="bow",
        legacy_type=LEGACY_PREFIX + "BoW",
        st6_type=ST_PREFIX + "bow.BoW",
        decode=_decode_bow,
        accepted_keys=dict.fromkeys(GENERATIONS, WORD_WEIGHTS_KEYS | {"cumulative_term_frequency"}),
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
        example=({"type": "BoW", "vocab": EXAMPLE_VOCAB[1:], **EXAMPLE_WORD_WEIGHTS},),
    )
)
