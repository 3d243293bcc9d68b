"""Which loaders can read a folder: the rules of docs/reference/st-formats.md (§2-§8) as a static check.

Driven by the type specs (st_cli/format/specs/): a type's key sets per loader generation, the first ST
version that has it, whether TEI runs it, and its own loader notes. Nothing here names a module
type. Torch-free; `summary.summarize` calls `verdicts` on what it read, `st verify` reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_cli.format import layout
from st_cli.format.spec import (
    GENERATIONS,
    LOADERS,
    NEW_DIALECT_SINCE,
    Generation,
    Status,
    TypeSpec,
    is_new_type,
    version_tuple,
)
from st_cli.format.specs import SPECS
from st_cli.format.specs.pooling import TEI_POOLING_FOLDER

if TYPE_CHECKING:
    from st_cli.format.summary import ModelSummary, ModuleSummary

__all__ = ["LOADERS", "LoaderVerdict", "verdicts"]

# Tokenizer classes that transformers 5 writes and 4.x cannot load; ST <= 4.x pins transformers < 5,
# ST 5.x allows either, ST 6 needs 5 (measured: ST 2.2.2 + transformers 4.30 fails on TokenizersBackend).
TF5_TOKENIZER_CLASSES = {"TokenizersBackend", "SentencePieceBackend", "PythonBackend"}
# How a TypeError about config keys reads for each generation.
_KEYS_UNKNOWN = {"ST<=5.3": "before ST 5.4", "ST5.4-5.x": "before ST 6", "ST>=6": "to ST 6"}
# What a custom (unregistered) module costs each generation.
_CUSTOM_CODE = {
    "ST<=5.3": "custom module {type}: ST <= 3.0 cannot import {code}; 3.1-5.3 load it unasked",
    "ST5.4-5.x": "custom module {type}: ST 5.x runs {code} without asking for trust",
    "ST>=6": "custom module {type}: loads only with trust_remote_code=True (runs {code})",
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

    def add(self, status: str, reason: str) -> None:
        (self.no if status == "no" else self.partial)(reason)

    def result(self) -> LoaderVerdict:
        status: Status = "no" if self.fatal else "partial" if self.caveats else "yes"
        return LoaderVerdict(self.loader, status, tuple(self.fatal or self.caveats))  # caveats matter only if it loads


def verdicts(summary: ModelSummary, root: Path) -> dict[str, LoaderVerdict]:
    """One verdict per loader (ST<=5.3, ST5.4-5.x, ST>=6, TEI), each with its reasons."""
    found: dict[str, _Verdict] = {name: _Verdict(name) for name in LOADERS}
    for finding in summary.findings:
        if finding.severity == "error" and finding.code != "unknown-config-key":  # the key rules below name those
            for v in found.values():
                v.no(finding.message)
    for module in (m for top in summary.modules for m in top.with_routes()):  # a Router's modules too
        spec = module.spec
        if spec is None:
            _custom_module(module, found)
            continue
        _type_availability(module, spec, found)
        for generation in GENERATIONS:
            _key_rules(module, spec, generation, found[generation])
        for note in spec.loader_notes(module):
            found[note.loader].add(note.status, note.reason)
        if module.kwargs:
            found["ST<=5.3"].partial(
                f"modules.json: ST < 3.4 ignore kwargs {list(module.kwargs)} of module {module.idx}"
            )
    _model_level(summary, found)
    _tei(summary, root, found["TEI"])
    return {name: v.result() for name, v in found.items()}


def _custom_module(module: ModuleSummary, found: dict[str, _Verdict]) -> None:
    if module.custom_code:
        for generation, text in _CUSTOM_CODE.items():
            found[generation].partial(text.format(type=module.type, code=module.custom_code))
    found["TEI"].no(f"TEI cannot run custom module {module.type}")


def _type_availability(module: ModuleSummary, spec: TypeSpec, found: dict[str, _Verdict]) -> None:
    """Which versions know this spelling of the type at all (TypeSpec.first_version)."""
    first = spec.first_version(module.type)
    since = version_tuple(first)
    reason = f"modules.json: {module.type} exists only in ST >= {first}"
    if since >= (6,):
        found["ST5.4-5.x"].no(reason)
    elif since > version_tuple(NEW_DIALECT_SINCE):
        found["ST5.4-5.x"].partial(reason)
    if since >= version_tuple(NEW_DIALECT_SINCE):
        found["ST<=5.3"].no(reason)
    elif since > (2, 0):
        found["ST<=5.3"].partial(reason)
    if not spec.tei:
        found["TEI"].no(f"TEI has no {spec.name} module ({module.type})")


def _key_rules(module: ModuleSummary, spec: TypeSpec, generation: Generation, v: _Verdict) -> None:
    accepted = (spec.accepted_keys or {}).get(generation)
    if accepted is None or module.raw_config is None:
        return
    extra = sorted(set(module.raw_config) - accepted)
    if not extra:
        return
    if generation in spec.lenient_in:
        for key in extra:
            v.partial(f"{module.config_file}: {generation} drops unknown key {key!r} with a warning")
        return
    keys = ", ".join(repr(k) for k in extra)
    v.no(f"{module.config_file}: {'keys' if len(extra) > 1 else 'key'} {keys} unknown {_KEYS_UNKNOWN[generation]}")


def tf5_tokenizer(s: ModelSummary) -> str | None:
    info = s.modules[0].transformer if s.modules else None
    return info.tokenizer_class if info and info.tokenizer_class in TF5_TOKENIZER_CLASSES else None


def _model_level(s: ModelSummary, found: dict[str, _Verdict]) -> None:
    tokenizer = tf5_tokenizer(s)
    if tokenizer:
        found["ST<=5.3"].partial(
            f"tokenizer_class {tokenizer!r}: ST <= 4.x (transformers < 5) fail; 5.0-5.3 need transformers 5"
        )
        found["ST5.4-5.x"].partial(f"tokenizer_class {tokenizer!r}: loads only with transformers >= 5")
    if s.default_prompt:
        found["ST<=5.3"].partial(f"ST <= 2.3 ignore default_prompt_name {s.default_prompt!r} (different vectors)")
    if s.truncate_dim:
        found["ST<=5.3"].partial(f"ST <= 5.3 ignore truncate_dim {s.truncate_dim} (full-width vectors)")


# ---------------------------------------------------------------- TEI (st-formats.md §8; read in its source, not run)


def _tei_inputs() -> list[str]:
    return [spec.name for spec in SPECS.values() if spec.tei and spec.input_module]


def _tei(s: ModelSummary, root: Path, v: _Verdict) -> None:
    first = s.modules[0] if s.modules else None
    tei_types = {spec.legacy_type for spec in SPECS.values() if spec.tei}
    if (
        first is None
        or first.spec is None
        or not first.spec.tei
        or not first.spec.input_module
        or first.path not in ("", ".")
    ):
        v.no(f"the first module must be a {' or '.join(_tei_inputs())} saved in the root")
    unparsed = [m for m in s.modules if m.type not in tei_types]
    if unparsed and any(m.spec is not None and m.spec.tei_needs_modules_json for m in s.modules):
        v.no("modules.json has types TEI cannot parse, so it would skip every Dense layer without an error")
    elif any(is_new_type(m.type) for m in s.modules):
        v.partial("modules.json uses new-dialect type strings; TEI ignores the file (no Dense here)")
    _tei_pooling_file(s, root, v)
    _tei_max_seq_length(s, root, v)
    if first is not None and first.transformer is not None and not first.transformer.tokenizer_json:
        v.no("TEI needs tokenizer.json")
    if first is not None and (first.raw_config or {}).get("do_lower_case"):
        v.partial(f"{first.config_file}: TEI ignores do_lower_case")
    if s.default_prompt:
        v.partial(f"TEI ignores default_prompt_name {s.default_prompt!r}; start it with --default-prompt-name")
    if s.truncate_dim:
        v.partial(f"TEI ignores truncate_dim {s.truncate_dim}")
    if not any(m.spec is not None and m.spec.normalizes for m in s.modules):
        v.partial("the stack has no Normalize, but TEI normalizes unless a request sends normalize=false")


def _tei_pooling_file(s: ModelSummary, root: Path, v: _Verdict) -> None:
    """TEI reads pooling from 1_Pooling/config.json only; without it, BERT models fall back to CLS."""
    if (root / TEI_POOLING_FOLDER / layout.MODULE_CONFIG).is_file():
        return
    pooler = next((m for m in s.modules if m.spec is not None and m.spec.reads == "token_embeddings"), None)
    modes = list((pooler.config or {}).get("mode") or []) if pooler else []
    model_type = (s.modules[0].transformer.model_type if s.modules and s.modules[0].transformer else None) or ""
    if "bert" in model_type and modes in ([], ["cls"]):
        v.partial("no 1_Pooling/config.json: TEI defaults to CLS pooling for BERT models, with a warning")
    else:
        v.no("no 1_Pooling/config.json: TEI needs --pooling")


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
