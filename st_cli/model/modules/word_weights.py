"""WordWeights: scale each token embedding by a per-word weight (e.g. idf); Pooling then divides by their sum."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from st_cli.format import layout
from st_cli.format.specs import SPECS
from st_cli.model.modules.base import Features, Module
from st_cli.model.registry import register


def word_weight_table(vocab: list[str], word_weights: dict[str, float], unknown_word_weight: float) -> list[float]:
    """Per vocabulary word: its weight, else its lower-cased form's, else the unknown weight (ST's rule)."""
    return [float(word_weights.get(w, word_weights.get(w.lower(), unknown_word_weight))) for w in vocab]


@register(SPECS["WordWeights"])
class WordWeights(Module):
    config_keys: ClassVar[list[str]] = ["vocab", "word_weights", "unknown_word_weight"]

    def __init__(self, vocab: list[str], word_weights: dict[str, float], unknown_word_weight: float = 1.0) -> None:
        super().__init__()
        self.vocab, self.word_weights, self.unknown_word_weight = vocab, word_weights, unknown_word_weight
        table = torch.tensor(word_weight_table(vocab, word_weights, unknown_word_weight), dtype=torch.float32)
        self.emb_layer = torch.nn.Embedding.from_pretrained(table.unsqueeze(1), freeze=False)

    def forward(self, features: Features, **kwargs: Any) -> Features:
        mask = features["attention_mask"]
        weights = self.emb_layer(features["input_ids"]).squeeze(-1) * mask.float()
        features["token_embeddings"] = features["token_embeddings"] * weights.unsqueeze(-1)
        features["token_weights_sum"] = weights.sum(dim=1)
        return features

    def save(self, output_path: str, *args: Any, format: layout.Format = "portable", **kwargs: Any) -> None:
        """config.json; ST >= 5 also write model.safetensors (no version reads it back), so st6 does too."""
        folder = Path(output_path)
        layout.write_module_config(folder, self.spec, self.get_config_dict(), format)
        if format == "st6":
            self.save_weights(folder)

    def load_weights(self, folder: Path) -> None:
        """Every sentence-transformers version rebuilds the table from config.json; so does st."""
