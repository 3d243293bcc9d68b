"""A CrossEncoder folder (a reranker) loaded for scoring: a sequence-classification transformer over text pairs.

sentence-transformers 5.x/6.x save a CrossEncoder as one Transformer module (`transformer_task:
sequence-classification`) in the folder's root, with `model_type: CrossEncoder` and the activation's dotted
path in config_sentence_transformers.json; ST 4 wrote a plain transformers folder with the activation in
config.json's `sentence_transformers` block, ST < 4 as `sbert_ce_default_activation_function`. `predict`
gives the activation of the logits: sigmoid for one label and identity otherwise unless the folder names
another (ST's rule), squeezed to one score per pair for one label.

A BERT folder runs on st_cli.model.bert (the encoder) plus the pooler and classifier here, without importing
transformers' modeling code; anything else loads transformers' AutoModelForSequenceClassification.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from st_cli.errors import ModelFolderError, StError, first_line
from st_cli.format import hub, kinds, layout

Pair = tuple[str, str]

# The activations a folder may name (ST imports any `torch.` path; these are the ones that take no argument).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Sigmoid": torch.sigmoid,
    "Identity": lambda x: x,
    "Tanh": torch.tanh,
    "ReLU": torch.relu,
    "GELU": torch.nn.functional.gelu,
    "SiLU": torch.nn.functional.silu,
    "LogSigmoid": torch.nn.functional.logsigmoid,
}
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_BERT_PAIR = [
    {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
    {"Sequence": {"id": "A", "type_id": 0}},
    {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
    {"Sequence": {"id": "B", "type_id": 1}},
    {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
]


@dataclass(frozen=True)
class Head:
    """BertForSequenceClassification past the encoder: tanh(pooler(CLS)), then the classifier."""

    pooler_weight: torch.Tensor
    pooler_bias: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        pooled = torch.tanh(torch.nn.functional.linear(hidden[:, 0], self.pooler_weight, self.pooler_bias))
        return torch.nn.functional.linear(pooled, self.weight, self.bias)


class CrossEncoder:
    """A loaded reranker: `logits(pairs)` for one padded batch, `activation` as the folder saved it."""

    def __init__(self, folder: Path, tokenizer: Any, network: Any, head: Head | None, num_labels: int,
                 activation: str, max_length: int | None, type_ids: bool | None = None) -> None:  # fmt: skip
        self.folder, self.tokenizer, self.network, self.head = folder, tokenizer, network, head
        self.num_labels, self.activation, self.max_length = num_labels, activation, max_length
        self.type_ids = type_ids  # give the second text's token type ids: None, as the tokenizer decides

    def to(self, device: str) -> CrossEncoder:
        """Move the weights to `device` (cpu, cuda, mps)."""
        if device != "cpu" or any(p.device.type != "cpu" for p in self.network.parameters()):
            self.network = self.network.to(device)
            if self.head is not None:
                self.head = Head(*(t.to(device) for t in vars(self.head).values()))
        return self

    def lengths(self, pairs: Sequence[Pair]) -> tuple[np.ndarray, int]:
        """Tokens per pair after truncation (what batching sorts by), and how many pairs were truncated."""
        ids = self._call(pairs, add_special_tokens=True, truncation=False, return_attention_mask=False,
                         return_token_type_ids=False, verbose=False)["input_ids"]  # fmt: skip
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        if not self.max_length:
            return lengths, 0
        return np.minimum(lengths, self.max_length), int((lengths > self.max_length).sum())

    def tokenize(self, pairs: Sequence[Pair]) -> dict[str, torch.Tensor]:
        """One padded batch, truncated longest-first to max_length, as ST's preprocess does."""
        features = self._call(pairs, padding=True, truncation="longest_first", max_length=self.max_length,
                              return_tensors="pt", return_token_type_ids=self.type_ids)  # fmt: skip
        return {k: v for k, v in dict(features).items() if k in _MODEL_INPUTS}

    def _call(self, pairs: Sequence[Pair], **kwargs: Any) -> Any:
        from st_cli.model import bert

        if isinstance(self.tokenizer, bert.FastTokenizer):  # takes the pairs as tuples, as `tokenizers` does
            return self.tokenizer(list(pairs), **kwargs)  # type: ignore[arg-type]
        return self.tokenizer([a for a, _ in pairs], [b for _, b in pairs], **kwargs)

    @torch.inference_mode()
    def logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(rows, num_labels) float32 logits of one tokenized batch."""
        if self.head is not None:
            hidden = self.network(**features, return_dict=True).last_hidden_state
            return self.head(hidden).float()
        return self.network(**features, return_dict=True).logits.float()

    def activate(self, logits: torch.Tensor, *, raw: bool = False) -> np.ndarray:
        """ST's predict on logits: the activation (none with `raw`), one score per pair for one label."""
        scores = logits if raw else ACTIVATIONS[self.activation](logits)
        if self.num_labels == 1:
            scores = scores.squeeze(-1)
        return scores.float().cpu().numpy()

    def predict(self, pairs: Sequence[Pair], *, raw: bool = False) -> np.ndarray:
        """All pairs as one batch (a few probes; `st_cli.score` batches large inputs)."""
        if not pairs:
            return np.zeros((0,) if self.num_labels == 1 else (0, self.num_labels), np.float32)
        return self.activate(self.logits(self.tokenize(pairs)), raw=raw)


# ---------------------------------------------------------------- loading


def load_cross_encoder(name_or_path: str | os.PathLike[str], *, revision: str | None = None) -> CrossEncoder:
    """A CrossEncoder folder (or Hub id); a folder of another kind is refused with its kind's line."""
    root = hub.resolve_model(name_or_path, revision=revision)
    found = kinds.model_kind(root)
    config = _json(root / "config.json")
    # ST < 4 saved a CrossEncoder as a bare sequence-classification folder, with nothing that names the kind.
    bare = found == kinds.SENTENCE_TRANSFORMER and not (root / layout.MODULES_JSON).exists()
    if found != kinds.CROSS_ENCODER and not (bare and _is_sequence_classification(config)):
        kinds.refuse_unless(root, kinds.CROSS_ENCODER, shown=str(name_or_path))
    if not isinstance(config, dict):
        raise ModelFolderError(f"{root / 'config.json'}: missing or not a JSON object (a CrossEncoder needs one)")
    num_labels = _num_labels(config)
    tokenizer = _tokenizer(root)
    network, head = _network(root, config, num_labels)
    max_length = _max_length(root, tokenizer, config)
    activation = _activation(root, config, num_labels)
    return CrossEncoder(root, tokenizer, network, head, num_labels, activation, max_length, _type_ids(root, config))


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def _is_sequence_classification(config: Any) -> bool:
    archs = config.get("architectures") if isinstance(config, dict) else None
    head = "ForSequenceClassification"
    return isinstance(archs, list) and any(isinstance(a, str) and a.endswith(head) for a in archs)


def _num_labels(config: dict[str, Any]) -> int:
    """transformers' rule: id2label's size, else num_labels, else 2."""
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    n = config.get("num_labels", 2)
    return n if isinstance(n, int) and n > 0 else 2


def _activation(root: Path, config: dict[str, Any], num_labels: int) -> str:
    """ST's order: config_sentence_transformers.json, config.json's sentence_transformers block, the ST < 4 key,
    then sigmoid for one label, identity otherwise. A path outside torch is not run (ST needs trust_remote_code)."""
    st_config = _json(root / layout.MODEL_CONFIG)
    block = config.get("sentence_transformers")
    candidates = [
        st_config.get("activation_fn") if isinstance(st_config, dict) else None,
        block.get("activation_fn") if isinstance(block, dict) else None,
        config.get("sbert_ce_default_activation_function"),
    ]
    path = next((c for c in candidates if isinstance(c, str)), None)
    if path is not None and path.startswith("torch."):
        name = path.rsplit(".", 1)[-1]
        if name not in ACTIVATIONS:
            known = ", ".join(ACTIVATIONS)
            raise ModelFolderError(f"{root}: activation {path!r} is not one st runs ({known})")
        return name
    return "Sigmoid" if num_labels == 1 else "Identity"


def _type_ids(root: Path, config: dict[str, Any]) -> bool | None:
    """Whether the writer's tokenizer gave token type ids (the second text's 1s change a BERT's scores).

    A tokenizer_config.json's model_input_names says; a generic PreTrainedTokenizerFast saved by transformers 4
    gave them (its default inputs), while transformers 5 loads the same file as TokenizersBackend, which does
    not: the writer's `predict` (ST 5.x on transformers 4) is the reference, so its inputs are kept.
    """
    settings = _json(root / "tokenizer_config.json")
    if not isinstance(settings, dict):
        return None
    names = settings.get("model_input_names")
    if isinstance(names, list):
        return "token_type_ids" in names
    written_by = str(config.get("transformers_version") or "")
    if settings.get("tokenizer_class") == "PreTrainedTokenizerFast" and written_by[:2] in {"4.", "3."}:
        return True
    return None


def _max_length(root: Path, tokenizer: Any, config: dict[str, Any]) -> int | None:
    """ST's rule: sentence_bert_config.json's max_seq_length, else the tokenizer's limit capped by the positions."""
    sbert = _json(root / layout.SBERT_CONFIG)
    if isinstance(sbert, dict) and isinstance(sbert.get("max_seq_length"), int):
        return int(sbert["max_seq_length"])
    limits = [config.get("max_position_embeddings"), getattr(tokenizer, "model_max_length", None)]
    usable = [int(x) for x in limits if isinstance(x, int) and 0 < x < int(1e29)]
    return min(usable) if usable else None


def _tokenizer(root: Path) -> Any:
    light = _light_tokenizer(root)
    if light is not None:
        return light
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(root), use_fast=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - a damaged folder: one line naming it
        raise ModelFolderError(f"{root}: cannot load the tokenizer: {first_line(e)}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelFolderError(f"{root}: st needs a fast tokenizer (tokenizer.json)")
    return tokenizer


def _light_tokenizer(root: Path) -> Any:
    """st's own BERT tokenizer where it gives transformers' ids for pairs too (BERT's pair template, type ids)."""
    from st_cli.model import bert

    tokenizer = bert.load_tokenizer(root)
    if tokenizer is None or not tokenizer.type_ids:
        return None
    post = (_json(root / "tokenizer.json") or {}).get("post_processor") or {}
    return tokenizer if post.get("pair") == _BERT_PAIR else None


def _network(root: Path, config: dict[str, Any], num_labels: int) -> tuple[Any, Head | None]:
    if config.get("architectures") == ["BertForSequenceClassification"]:
        light = _light_bert(root, num_labels)
        if light is not None:
            return light
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(root), dtype=torch.float32, trust_remote_code=False
        )
    except Exception as e:  # noqa: BLE001 - a damaged folder: one line naming it
        raise ModelFolderError(f"{root / 'config.json'}: cannot load the classifier: {first_line(e)}") from None
    return model.eval(), None


def _light_bert(root: Path, num_labels: int) -> tuple[Any, Head] | None:
    from safetensors import SafetensorError, safe_open

    from st_cli.model import bert

    encoder = bert.load(root, prefix="bert.")
    if encoder is None:
        return None
    hidden = encoder.config.hidden_size
    shapes = {
        "bert.pooler.dense.weight": [hidden, hidden],
        "bert.pooler.dense.bias": [hidden],
        "classifier.weight": [num_labels, hidden],
        "classifier.bias": [num_labels],
    }
    try:
        with safe_open(str(root / bert.WEIGHTS), framework="pt") as weights:
            if not set(weights.keys()).issuperset(shapes):
                return None
            if any(list(weights.get_slice(n).get_shape()) != s for n, s in shapes.items()):
                return None
            tensors = [weights.get_tensor(n).to(torch.float32) for n in shapes]
    except (OSError, SafetensorError, ValueError):
        return None
    return encoder, Head(*tensors)


def check_pairs(pairs: Sequence[Any]) -> list[Pair]:
    """Pairs of strings, or one line naming the first that is not."""
    checked = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise StError(f"pair {i}: expected two texts (query, document), got {type(pair).__name__}")
        checked.append((pair[0], pair[1]))
    return checked
