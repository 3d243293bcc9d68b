"""BoW: a bag-of-words input module; each text becomes a vector of (weighted) word counts over the vocabulary."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, InputModule
from st_cli.model.modules.word_weights import word_weight_table
from st_cli.model.registry import register
from st_cli.model.word_tokenizers import WhitespaceTokenizer


@register(SPECS["BoW"])
class BoW(InputModule):
    save_in_root: ClassVar[bool] = False  # every ST version writes 0_BoW/
    config_keys: ClassVar[list[str]] = ["vocab", "word_weights", "unknown_word_weight", "cumulative_term_frequency"]

    def __init__(
        self,
        vocab: list[str],
        word_weights: dict[str, float] | None = None,
        unknown_word_weight: float = 1.0,
        cumulative_term_frequency: bool = True,
    ) -> None:
        super().__init__()
        # Unique words in their first order, as ST >= 5 (ST <= 4 used list(set(vocab)), a new order per process).
        self.vocab = list(dict.fromkeys(vocab))
        self.word_weights = dict(word_weights or {})
        self.unknown_word_weight, self.cumulative_term_frequency = unknown_word_weight, cumulative_term_frequency
        self.weights = word_weight_table(self.vocab, self.word_weights, unknown_word_weight)
        self.tokenizer = WhitespaceTokenizer(self.vocab, stop_words=(), do_lower_case=False)

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        if not kwargs.get("vocab"):
            raise ConfigValueError("vocab", "required: a non-empty list of words")
        return kwargs, len(dict.fromkeys(kwargs["vocab"]))

    def get_sentence_embedding_dimension(self) -> int:
        return len(self.vocab)

    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        vectors = torch.zeros((len(texts), len(self.vocab)), dtype=torch.float32)
        for row, text in enumerate(texts):
            for index in self.tokenizer.tokenize(text):
                if self.cumulative_term_frequency:
                    vectors[row, index] += self.weights[index]
                else:
                    vectors[row, index] = self.weights[index]
        return {"sentence_embedding": vectors}

    def forward(self, features: Features, **kwargs: Any) -> Features:
        return features  # tokenize already made the vectors
