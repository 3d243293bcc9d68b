"""The frozen prefix, run once: per text, the features after the modules in front of the first trained
one, and the teacher's embedding (training a Dense on MiniLM costs one MiniLM pass, not one per epoch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from st_cli.training.options import ProgressFn

if TYPE_CHECKING:
    import torch

    from st_cli.model.model import Model


EMBED_BATCH = 32  # rows per batch when the frozen prefix and the teacher embed the data




# Features with a token axis: trimmed to each text's length in the cache, padded again per batch.
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "token_embeddings")


class PrefixCache:
    """Per text, the features after the student's frozen prefix (modules before the first trained one)."""

    def __init__(self, model: Model, first_trained: int, device: str) -> None:
        self.model, self.device = model, device
        self.prefix = model.steps[:first_trained]
        self.rest = model.steps[first_trained:]
        self.prompt = model.resolve_prompt()
        sentence_level = all(_reads_only_sentence_embedding(m) for m in self.rest)
        self.keys: tuple[str, ...] | None = ("sentence_embedding",) if sentence_level else None
        self.rows: dict[str, dict[str, torch.Tensor]] = {}
        self.constants: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        """Without a frozen prefix, or with left padding (the trimming assumes right), run the whole stack."""
        tokenizer = getattr(self.model.input_module, "tokenizer", None)
        return bool(self.prefix) and getattr(tokenizer, "padding_side", "right") == "right"

    def prefix_features(self, texts: list[str]) -> dict[str, Any]:
        import torch

        features = to_device(self.model.tokenize(texts, self.prompt), self.device)
        with torch.inference_mode():
            for module in self.prefix:
                features = module(features)
        return features

    def add(self, texts: list[str], features: dict[str, Any]) -> None:
        """Keep each text's slice of a prefix batch (token axes trimmed to its own length)."""
        import torch

        lengths = features["attention_mask"].sum(dim=1).tolist() if "attention_mask" in features else None
        for key, value in features.items():
            if self.keys is not None and key not in self.keys:
                continue
            if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != len(texts):
                self.constants[key] = value
        for row, text in enumerate(texts):
            if text in self.rows:
                continue
            kept = {}
            for key, value in features.items():
                if key in self.constants or (self.keys is not None and key not in self.keys):
                    continue
                piece = value[row]
                if key in TOKEN_KEYS and lengths is not None:
                    piece = piece[: int(lengths[row])]
                kept[key] = piece.detach().to("cpu").clone()
            self.rows[text] = kept

    def batch(self, texts: list[str]) -> dict[str, Any]:
        """Padded features for these texts, as the prefix would have given them together."""
        import torch

        features: dict[str, Any] = dict(self.constants)
        for key in self.rows[texts[0]]:
            pieces = [self.rows[t][key] for t in texts]
            if key in TOKEN_KEYS:
                features[key] = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
            else:
                features[key] = torch.stack(pieces)
        return to_device(features, self.device)

    def run_rest(self, features: dict[str, Any]) -> torch.Tensor:
        for module in self.rest:
            features = module(features)
        return features["sentence_embedding"]


def _reads_only_sentence_embedding(module: Any) -> bool:
    """A built-in whose spec says it reads `sentence_embedding` alone: after a prefix that ends before
    such modules, only that feature is cached. A plugin's spec does not say what it reads, and a Router's
    routes may read any feature."""
    spec = getattr(module, "spec", None)
    if spec is None or spec.module_file is None:
        return False
    return spec.reads == "sentence_embedding" and not spec.routes_text


def to_device(features: dict[str, Any], device: str) -> dict[str, Any]:
    if device == "cpu":
        return features
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def _length_batches(texts: Sequence[str], size: int = EMBED_BATCH) -> Iterator[list[str]]:
    """Distinct texts, longest first, in batches: little padding when embedding the data once."""
    ordered = sorted(dict.fromkeys(texts), key=len, reverse=True)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


class Embedder:
    """Runs the cache pass: the student's prefix and the teacher over every text, each once."""

    def __init__(self, cache: PrefixCache, teacher: Model | None, device: str) -> None:
        self.cache, self.teacher, self.device = cache, teacher, device
        self.targets: dict[str, torch.Tensor] = {}
        self.shared = teacher is not None and cache.enabled and _shares_prefix(teacher, cache)

    def run(self, texts: Sequence[str], progress: ProgressFn | None) -> None:
        import torch

        batches = list(_length_batches(texts))
        total, done = sum(map(len, batches)), 0
        for batch in batches:
            with torch.inference_mode():
                prefix_out = self.cache.prefix_features(batch) if self.cache.enabled else None
                if prefix_out is not None:
                    self.cache.add(batch, dict(prefix_out))
                if self.teacher is not None:
                    self.targets.update(zip(batch, self._teacher_embed(batch, prefix_out), strict=True))
            done += len(batch)
            if progress:
                progress("embedding", done, total, None)

    def _teacher_embed(self, batch: list[str], prefix_out: dict[str, Any] | None) -> torch.Tensor:
        assert self.teacher is not None
        if self.shared and prefix_out is not None:
            features = dict(prefix_out)
            for module in self.teacher.steps[len(self.cache.prefix) :]:
                features = module(features)
        else:
            tokens = to_device(self.teacher.tokenize(batch, self.teacher.resolve_prompt()), self.device)
            features = self.teacher.forward(tokens)
        return features["sentence_embedding"].float().detach().to("cpu").clone()


def _shares_prefix(teacher: Model, cache: PrefixCache) -> bool:
    """The teacher starts with the very modules of the student's frozen prefix (the default teacher)."""
    steps = teacher.steps
    same = len(steps) >= len(cache.prefix) and all(a is b for a, b in zip(steps, cache.prefix, strict=False))
    return same and teacher.resolve_prompt() == cache.prompt
