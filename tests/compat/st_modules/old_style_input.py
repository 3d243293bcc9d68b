"""A first (input) module as sentence-transformers <= 5.3 documented them: a plain torch.nn.Module.

It defines `tokenize(texts)`, which ST calls on the first module, and words hashed into a trained
embedding table give the token embeddings a Pooling averages. Config and weights are its own files.
"""

import json
import os
import re
import zlib

import torch
from torch import nn


class OldHashedWords(nn.Module):
    def __init__(self, buckets: int = 97, dimension: int = 16):
        super().__init__()
        self.buckets = buckets
        self.dimension = dimension
        self.max_seq_length = 256
        self.embedding = nn.Embedding(buckets + 1, dimension, padding_idx=0)

    def tokenize(self, texts):
        words = [re.findall(r"\w+", t.lower())[: self.max_seq_length] for t in texts]
        ids = [[1 + zlib.crc32(w.encode()) % self.buckets for w in row] or [0] for row in words]
        width = max(len(row) for row in ids)
        input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
        return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}

    def forward(self, features):
        features.update({"token_embeddings": self.embedding(features["input_ids"])})
        return features

    def get_word_embedding_dimension(self):
        return self.dimension

    def get_config_dict(self):
        return {"buckets": self.buckets, "dimension": self.dimension}

    def save(self, output_path):
        with open(os.path.join(output_path, "old_hashed_words_config.json"), "w") as f:
            json.dump(self.get_config_dict(), f)
        torch.save(self.state_dict(), os.path.join(output_path, "old_hashed_words.bin"))

    @staticmethod
    def load(input_path):
        with open(os.path.join(input_path, "old_hashed_words_config.json")) as f:
            model = OldHashedWords(**json.load(f))
        model.load_state_dict(torch.load(os.path.join(input_path, "old_hashed_words.bin"), map_location="cpu"))
        return model
