"""A first (input) module written against sentence-transformers' InputModule: no transformer at all.

Words are hashed into `buckets` rows of a trained embedding table; `preprocess` (ST >= 5.4's name)
turns texts into ids and a mask, `forward` looks the rows up as token embeddings for a Pooling.
It saves its config and weights with ST's helpers and overrides `load` to read the weights back.
"""

import re
import zlib

import torch
from sentence_transformers.base.modules import InputModule


class HashedWords(InputModule):
    config_keys: list[str] = ["buckets", "dimension"]

    def __init__(self, buckets: int = 97, dimension: int = 16, **kwargs) -> None:
        super().__init__()
        self.buckets = buckets
        self.dimension = dimension
        self.embedding = torch.nn.Embedding(buckets + 1, dimension, padding_idx=0)

    def preprocess(self, inputs, prompt=None, **kwargs) -> dict[str, torch.Tensor]:
        texts = [(prompt or "") + text for text in inputs]
        ids = [[1 + zlib.crc32(w.encode()) % self.buckets for w in re.findall(r"\w+", t.lower())] or [0] for t in texts]
        width = max(len(row) for row in ids)
        input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
        return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        features["token_embeddings"] = self.embedding(features["input_ids"])
        return features

    def get_embedding_dimension(self) -> int:
        return self.dimension

    @property
    def max_seq_length(self) -> int:
        return 512

    def save(self, output_path, *args, safe_serialization=True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path, subfolder="", token=None, cache_folder=None, revision=None,
             local_files_only=False, **kwargs):  # fmt: skip
        hub_kwargs = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
                      "local_files_only": local_files_only}  # fmt: skip
        model = cls(**cls.load_config(model_name_or_path, **hub_kwargs))
        return cls.load_torch_weights(model_name_or_path, model=model, **hub_kwargs)
