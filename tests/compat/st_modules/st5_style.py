"""Custom modules in the style of sentence-transformers 5.0-5.3, which later versions still load.

CharTrigrams is an input module that defines `tokenize` (not 5.4's `preprocess`) and
`get_sentence_embedding_dimension` (not 6.0's `get_embedding_dimension`), and keeps its weights in
pytorch_model.bin. Shift has the old one-argument `load(input_path)`, which gets the module's folder.
"""

import json
import os
import zlib

import torch
from sentence_transformers.models import InputModule, Module


class CharTrigrams(InputModule):
    config_keys: list[str] = ["buckets", "dimension"]

    def __init__(self, buckets: int = 101, dimension: int = 16, **kwargs) -> None:
        super().__init__()
        self.buckets = buckets
        self.dimension = dimension
        self.embedding = torch.nn.Embedding(buckets + 1, dimension, padding_idx=0)

    def tokenize(self, texts, **kwargs) -> dict[str, torch.Tensor]:
        grams = [[f" {t.lower()} "[i : i + 3] for i in range(len(t) + 1)] for t in texts]
        ids = [[1 + zlib.crc32(g.encode()) % self.buckets for g in row] for row in grams]
        width = max(len(row) for row in ids)
        input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
        return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        features["token_embeddings"] = self.embedding(features["input_ids"])
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    def save(self, output_path, *args, safe_serialization=True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=False)

    @classmethod
    def load(cls, model_name_or_path, subfolder="", **kwargs):
        model = cls(**cls.load_config(model_name_or_path, subfolder=subfolder))
        return cls.load_torch_weights(model_name_or_path, subfolder=subfolder, model=model)


class Shift(Module):
    config_keys: list[str] = ["dimension"]

    def __init__(self, dimension: int) -> None:
        super().__init__()
        self.dimension = dimension
        self.bias = torch.nn.Parameter(torch.zeros(dimension))

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        features["sentence_embedding"] = features["sentence_embedding"] + self.bias
        return features

    def save(self, output_path, *args, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path)

    @staticmethod
    def load(input_path):
        with open(os.path.join(input_path, "config.json")) as f:
            module = Shift(**json.load(f))
        return Shift.load_torch_weights(input_path, model=module)
