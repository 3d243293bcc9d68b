"""Which kind of sentence-transformers model a folder holds, read from its JSON files alone (no torch).

sentence-transformers 5/6 write `model_type` in config_sentence_transformers.json: SentenceTransformer
(sentence embeddings, what `st encode` runs), CrossEncoder (a reranker: one score per text pair) or
MultiVectorEncoder (ColBERT-style: one vector per token). Older CrossEncoder writers left a plain
transformers sequence-classification folder whose config.json carries a `sentence_transformers` block
(ST 4) or `sbert_ce_default_activation_function` (ST < 4). A command that cannot run a kind refuses it
with the kind's own line, which says what the folder is and which st command serves it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from st_cli.errors import StError

SENTENCE_TRANSFORMER = "SentenceTransformer"
CROSS_ENCODER = "CrossEncoder"
MULTI_VECTOR = "MultiVectorEncoder"


@dataclass(frozen=True)
class Kind:
    name: str  # sentence-transformers' model_type
    what: str  # what the model is, for people
    gives: str  # what it computes
    use: str  # which st commands serve it (or what st would need)


KINDS: dict[str, Kind] = {
    SENTENCE_TRANSFORMER: Kind(
        SENTENCE_TRANSFORMER, "a sentence embedding model", "it gives one vector per text", "use `st encode`"
    ),
    CROSS_ENCODER: Kind(
        CROSS_ENCODER, "a reranker", "it scores (query, document) pairs", "use `st score` or `st rerank`"
    ),
    MULTI_VECTOR: Kind(
        MULTI_VECTOR,
        "ColBERT-style",
        "it gives one vector per token, compared by MaxSim",
        "st does not run token-vector models yet (it would need token outputs and MaxSim scoring)",
    ),
}
# Other writers' names for a kind: PyLate v3 saved its ColBERT models as model_type "ColBERT".
ALIASES = {"ColBERT": MULTI_VECTOR}


class ModelKindError(StError):
    """A command was given a model of a kind it does not run."""


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # damaged files are reported by the loaders, with their own lines


def model_kind(root: Path) -> str:
    """The folder's kind (a KINDS key); SentenceTransformer where nothing says otherwise."""
    config = _json(root / "config_sentence_transformers.json")
    if isinstance(config, dict) and isinstance(config.get("model_type"), str):
        name = ALIASES.get(config["model_type"], config["model_type"])
        if name in KINDS:
            return name
    if not (root / "modules.json").exists():
        hf = _json(root / "config.json")
        if isinstance(hf, dict) and (
            isinstance(hf.get("sentence_transformers"), dict) or "sbert_ce_default_activation_function" in hf
        ):
            return CROSS_ENCODER
    return SENTENCE_TRANSFORMER


def describe(name: str) -> str:
    """'a CrossEncoder (a reranker: it scores (query, document) pairs)'."""
    kind = KINDS[name]
    return f"a {kind.name} ({kind.what}: {kind.gives})"


def refuse_unless(root: Path, wanted: str, shown: str | None = None) -> None:
    """Raise the kind's one line when the folder at `root` is not of kind `wanted`."""
    found = model_kind(root)
    if found != wanted:
        raise ModelKindError(f"{shown or root} is {describe(found)} — {KINDS[found].use}")
