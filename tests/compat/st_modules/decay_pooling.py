"""The custom module of the sentence-transformers docs ("Creating Custom Models"), written against ST's own Module.

Mean pooling whose dimension d is weighted by decay ** d. It has no weights: ST's default `load`
builds it from 1_DecayMeanPooling/config.json alone. The test writes copies with the other import
spellings ST has had (sentence_transformers.models / .base.modules / .sentence_transformer.modules).
"""

import torch
from sentence_transformers.models import Module


class DecayMeanPooling(Module):
    config_keys: list[str] = ["dimension", "decay"]

    def __init__(self, dimension: int, decay: float = 0.95, **kwargs) -> None:
        super(DecayMeanPooling, self).__init__()  # noqa: UP008 - as the docs write it
        self.dimension = dimension
        self.decay = decay

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        token_embeddings = features["token_embeddings"]
        attention_mask = features["attention_mask"].unsqueeze(-1)
        token_embeddings = token_embeddings * attention_mask
        sentence_embeddings = token_embeddings.sum(1) / attention_mask.sum(1)
        importance_per_dim = self.decay ** torch.arange(sentence_embeddings.size(1), device=sentence_embeddings.device)
        features["sentence_embedding"] = sentence_embeddings * importance_per_dim
        return features

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def save(self, output_path, *args, safe_serialization=True, **kwargs) -> None:
        self.save_config(output_path)
