"""SparseStaticEmbedding: a fast tokenizer and one weight per token id. A text's vector holds, at the id of
each token it contains (without special tokens), that token's weight: the query side of an inference-free
SPLADE model, as sentence-transformers computes it. Runs on the `tokenizers` library, without transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError, ModelFolderError
from st_cli.format import hub, layout
from st_cli.format.specs import SPECS
from st_cli.format.specs.sparse_static_embedding import WEIGHT_KEY
from st_cli.model.modules.base import Features, InputModule, local_folder, read_state
from st_cli.model.modules.mlm_transformer import vocabulary
from st_cli.model.registry import register

TOKENIZER_JSON = "tokenizer.json"
# The tokenizer's files copied into the module's folder: every ST reads them with AutoTokenizer.
TOKENIZER_FILES = (TOKENIZER_JSON, "tokenizer_config.json", "special_tokens_map.json")
# transformers' model_max_length when no file sets one: no truncation.
_UNLIMITED = int(1e30)


@register(SPECS["SparseStaticEmbedding"])
class SparseStaticEmbedding(InputModule):
    """`tokenizer`: a folder (or Hub id, `package:pkg/dir`) holding tokenizer.json; every token's weight
    starts at 1 (sentence-transformers' default); `frozen`: saved for training, unused by st."""

    config_keys: ClassVar[list[str]] = ["frozen"]
    save_in_root: ClassVar[bool] = False

    def __init__(self, tokenizer: str, frozen: bool = False, revision: str | None = None) -> None:
        super().__init__()
        folder = _tokenizer_folder(tokenizer, revision)
        files = {name: (folder / name).read_bytes() for name in TOKENIZER_FILES if (folder / name).is_file()}
        self._setup(folder, files, None, frozen)

    def _setup(self, folder: Path, files: dict[str, bytes], weight: torch.Tensor | None, frozen: bool) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_str(files[TOKENIZER_JSON].decode("utf-8"))
        except (KeyError, ValueError, UnicodeDecodeError) as e:
            raise ModelFolderError(f"{folder / TOKENIZER_JSON}: cannot load the tokenizer: {e}") from None
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.folder, self.files, self.frozen = folder, files, frozen
        self.max_length = _model_max_length(files)
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.weight = torch.nn.Parameter(torch.ones(size) if weight is None else weight, requires_grad=False)

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        if "tokenizer" not in kwargs:
            raise ConfigValueError("tokenizer", "required: a folder with tokenizer.json")
        try:
            folder = _tokenizer_folder(kwargs["tokenizer"], kwargs.get("revision"))
        except ModelFolderError as e:
            raise ConfigValueError("tokenizer", str(e)) from None
        from tokenizers import Tokenizer

        return kwargs, Tokenizer.from_file(str(folder / TOKENIZER_JSON)).get_vocab_size(with_added_tokens=True)

    # ------------------------------------------------------------ running

    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        ids = [e.ids[: self.max_length] for e in encodings]
        width = max((len(row) for row in ids), default=0)
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def forward(self, features: Features, **kwargs: Any) -> Features:
        ids, mask = features["input_ids"], features["attention_mask"]
        presence = torch.zeros(ids.shape[0], self.weight.shape[0], dtype=self.weight.dtype, device=ids.device)
        presence.scatter_(1, ids, mask.to(self.weight.dtype))  # padding (id 0, mask 0) writes a 0
        embeddings = presence * self.weight
        if "sentence_embedding" in features:  # as ST: a vector already there scales this one
            embeddings = embeddings * features["sentence_embedding"]
        features["sentence_embedding"] = embeddings
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.weight.shape[0])

    def get_max_seq_length(self) -> int | None:
        return None if self.max_length >= _UNLIMITED else self.max_length

    def output_vocabulary(self) -> list[str]:
        return vocabulary_of(self.tokenizer, int(self.weight.shape[0]))

    # ------------------------------------------------------------ persistence

    def save(self, output_path: str, *args: Any, format: layout.Format = "portable", **kwargs: Any) -> None:
        folder = Path(output_path)
        layout.write_module_config(folder, self.spec, self.get_config_dict(), format)
        for name, content in self.files.items():
            (folder / name).write_bytes(content)
        if format == "portable":
            layout.make_tokenizer_config_portable(folder)
        self.save_weights(folder)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> SparseStaticEmbedding:
        folder = local_folder(model_name_or_path, subfolder, **kwargs)
        config = layout.read_module_config(SPECS["SparseStaticEmbedding"], folder)
        if not (folder / TOKENIZER_JSON).is_file():
            raise ModelFolderError(f"{folder}: no {TOKENIZER_JSON}; SparseStaticEmbedding needs a fast tokenizer")
        files = {name: (folder / name).read_bytes() for name in TOKENIZER_FILES if (folder / name).is_file()}
        state = read_state(folder)
        weight = state.get(WEIGHT_KEY)
        if weight is None or weight.dim() != 1:
            raise ModelFolderError(f"{folder}: expected a tensor {WEIGHT_KEY!r} of one weight per token")
        module = cls.__new__(cls)
        InputModule.__init__(module)
        module._setup(folder, files, weight.float(), bool(config.get("frozen", False)))
        if module.tokenizer.get_vocab_size(with_added_tokens=True) > weight.shape[0]:
            size = weight.shape[0]
            raise ModelFolderError(f"{folder}: {WEIGHT_KEY} has {size} weights, fewer than the tokenizer's ids")
        return module


def vocabulary_of(tokenizer: Any, size: int) -> list[str]:
    tokens = [""] * size
    for token, index in tokenizer.get_vocab(with_added_tokens=True).items():
        if index < size:
            tokens[index] = token
    return tokens


def _model_max_length(files: dict[str, bytes]) -> int:
    """tokenizer_config.json's model_max_length, as transformers truncates to it (none: no truncation)."""
    import json

    try:
        config = json.loads(files.get("tokenizer_config.json", b"{}"))
    except ValueError:
        return _UNLIMITED
    value = config.get("model_max_length") if isinstance(config, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else _UNLIMITED


def _tokenizer_folder(tokenizer: Any, revision: str | None) -> Path:
    if not isinstance(tokenizer, str) or not tokenizer:
        raise ModelFolderError(f"expected a folder holding {TOKENIZER_JSON}, got {tokenizer!r}")
    folder = hub.resolve_model(tokenizer, revision=revision)
    if not (folder / TOKENIZER_JSON).is_file():
        raise ModelFolderError(f"{folder / TOKENIZER_JSON}: missing; SparseStaticEmbedding needs a fast tokenizer")
    return folder


__all__ = ["SparseStaticEmbedding", "vocabulary"]
