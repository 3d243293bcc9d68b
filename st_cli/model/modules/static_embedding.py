"""StaticEmbedding: a fast tokenizer and one vector per token id; a text's embedding is the mean of its rows.

Reads folders as sentence-transformers writes them (key `embedding.weight`) and as model2vec writes them
(key `embeddings`, optionally a `mapping` and per-token `weights`, folded into one row per id as ST 6.2
does; float32 or float16). The weights keep their dtype, so a float16 model gives ST's float16 results.
`st_cli/static.py` runs the same arithmetic in numpy, without torch, for `st encode`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file

from st_cli.errors import ConfigValueError, ModelFolderError
from st_cli.format import hub, layout
from st_cli.format.specs import SPECS
from st_cli.model import static
from st_cli.model.modules.base import Features, InputModule, load_pickled_weights, local_folder
from st_cli.model.registry import register

_MAX_DIM = 1 << 16  # wider than any static model; a typo like 3840000 should not allocate gigabytes


@register(SPECS["StaticEmbedding"])
class StaticEmbedding(InputModule):
    """`tokenizer`: a folder (or Hub id, `package:pkg/dir`) with tokenizer.json, or the file itself;
    `embedding_dim`: the width of the randomly initialised (seeded) table, one row per vocabulary entry."""

    config_keys: ClassVar[list[str]] = []  # sentence-transformers saves no config for it

    def __init__(self, tokenizer: str, embedding_dim: int, revision: str | None = None) -> None:
        super().__init__()
        tok = static.read_tokenizer(_tokenizer_file(tokenizer, revision))
        # nn.EmbeddingBag's own init (normal(0, 1)), as sentence-transformers' StaticEmbedding(tokenizer, embedding_dim)
        self._setup(tok, torch.nn.EmbeddingBag(tok.get_vocab_size(), embedding_dim).weight.detach())
        self.untrained = True

    @classmethod
    def from_parts(cls, tokenizer: Any, weights: torch.Tensor) -> StaticEmbedding:
        """A module from a `tokenizers.Tokenizer` and a (vocab, dim) table, as loaded from a folder."""
        module = cls.__new__(cls)
        InputModule.__init__(module)
        module._setup(tokenizer, weights)
        return module

    def _setup(self, tokenizer: Any, weights: torch.Tensor) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.embedding = torch.nn.EmbeddingBag.from_pretrained(weights, freeze=False, mode="mean")
        self.embedding_dim = int(weights.shape[1])

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        dim = kwargs.get("embedding_dim")
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= _MAX_DIM:
            raise ConfigValueError("embedding_dim", f"must be an integer between 1 and {_MAX_DIM}, got {dim!r}")
        if "tokenizer" not in kwargs:
            raise ConfigValueError("tokenizer", "required: a folder with tokenizer.json, or the file itself")
        try:
            _tokenizer_file(kwargs["tokenizer"], kwargs.get("revision"))
        except ModelFolderError as e:
            raise ConfigValueError("tokenizer", str(e)) from None
        return kwargs, dim

    # ------------------------------------------------------------ running

    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        ids, offsets = static.token_ids(self.tokenizer, texts)
        return {"input_ids": torch.from_numpy(ids), "offsets": torch.from_numpy(offsets)}

    def forward(self, features: Features, **kwargs: Any) -> Features:
        features["sentence_embedding"] = self.embedding(features["input_ids"], features["offsets"])
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.embedding_dim

    def get_max_seq_length(self) -> int | None:
        return None  # every token counts (sentence-transformers: math.inf)

    @property
    def max_seq_length(self) -> float:
        return math.inf

    # ------------------------------------------------------------ persistence

    def save(self, output_path: str, *args: Any, format: layout.Format = "portable", **kwargs: Any) -> None:
        folder = Path(output_path)
        folder.mkdir(parents=True, exist_ok=True)
        weights = self.embedding.weight.detach().contiguous().cpu()
        save_file({static.ST_KEY: weights}, str(folder / layout.SAFETENSORS_WEIGHTS))
        self.tokenizer.save(str(folder / static.TOKENIZER_FILE))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> StaticEmbedding:
        folder = local_folder(model_name_or_path, subfolder, **kwargs)
        tokenizer = static.read_tokenizer(folder / static.TOKENIZER_FILE)
        safetensors_path = folder / layout.SAFETENSORS_WEIGHTS
        if safetensors_path.is_file():
            table = static.read_table(safetensors_path, tokenizer.get_vocab_size())
            return cls.from_parts(tokenizer, torch.from_numpy(table))
        pickled = folder / layout.PICKLED_WEIGHTS
        if not pickled.is_file():
            raise ModelFolderError(f"{folder}: no {layout.SAFETENSORS_WEIGHTS} or {layout.PICKLED_WEIGHTS}")
        state = {k: v.numpy() for k, v in load_pickled_weights(pickled).items()}
        table = static.fold_table(state, pickled, tokenizer.get_vocab_size())
        return cls.from_parts(tokenizer, torch.from_numpy(table))


def _tokenizer_file(tokenizer: Any, revision: str | None) -> Path:
    """The tokenizer.json a recipe's `tokenizer:` names: the file, or one in a folder / Hub id / package."""
    if not isinstance(tokenizer, str) or not tokenizer:
        raise ModelFolderError(f"expected a folder or a tokenizer.json file, got {tokenizer!r}")
    if Path(tokenizer).is_file():
        return Path(tokenizer)
    path = hub.resolve_model(tokenizer, revision=revision) / static.TOKENIZER_FILE
    if not path.is_file():
        raise ModelFolderError(f"{path}: missing; StaticEmbedding needs a fast tokenizer's tokenizer.json")
    return path
