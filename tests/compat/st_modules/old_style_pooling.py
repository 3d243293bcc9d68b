"""A custom module as sentence-transformers <= 5.3 documented them: a plain torch.nn.Module with save/load.

Mean pooling times a learned per-dimension scale, kept in pytorch_model.bin; `load` is a static
method that takes the module's folder, which is all ST before 5.0 passes.
"""

import json
import os

import torch
from torch import nn


class ScaledMeanPooling(nn.Module):
    def __init__(self, dimension: int):
        super().__init__()
        self.dimension = dimension
        self.scale = nn.Parameter(torch.ones(dimension))

    def forward(self, features):
        tokens = features["token_embeddings"]
        mask = features["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        features.update({"sentence_embedding": mean * self.scale})
        return features

    def get_sentence_embedding_dimension(self):
        return self.dimension

    def get_config_dict(self):
        return {"dimension": self.dimension}

    def save(self, output_path):
        with open(os.path.join(output_path, "config.json"), "w") as f:
            json.dump(self.get_config_dict(), f)
        torch.save(self.state_dict(), os.path.join(output_path, "pytorch_model.bin"))

    @staticmethod
    def load(input_path):
        with open(os.path.join(input_path, "config.json")) as f:
            config = json.load(f)
        model = ScaledMeanPooling(**config)
        state = torch.load(os.path.join(input_path, "pytorch_model.bin"), map_location="cpu")
        model.load_state_dict(state)
        return model
