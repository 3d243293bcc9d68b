"""Pooling: token embeddings to one sentence embedding (cls, mean, max, ...), in both dialects' spellings,
and text-embeddings-inference's rules for it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from st_cli.errors import ModelFolderError
from st_cli.format.spec import (
    LEGACY_PREFIX,
    MODULE_CONFIG,
    ST_PREFIX,
    Config,
    Format,
    LoaderNote,
    ModuleView,
    TypeSpec,
    WidthContext,
    Widths,
    add_builtin,
)

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
    """text-embeddings-inference's pooling rules (docs/reference/st-formats.md §8)."""
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


SPEC = add_builtin(
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
