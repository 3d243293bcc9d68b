"""WordEmbeddings: a word-vector table (GloVe, word2vec, ...) looked up through a word tokenizer."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, ClassVar

import torch

from st_cli.errors import ConfigValueError, ModelFolderError
from st_cli.format import layout
from st_cli.format.specs import SPECS
from st_cli.format.specs.word_embeddings import DEFAULT_WORD_MAX_SEQ_LENGTH, WORD_TOKENIZERS
from st_cli.model.modules.base import Features, InputModule, local_folder, read_state
from st_cli.model.registry import register
from st_cli.model.word_tokenizers import ENGLISH_STOP_WORDS, WordTokenizer, make_tokenizer

PADDING_TOKEN = "PADDING_TOKEN"  # row 0 of a table read from a text file, all zeros (as ST's from_text_file)


@register(SPECS["WordEmbeddings"])
class WordEmbeddings(InputModule):
    """From a recipe: `embeddings_file_path` (one word and its numbers per line, .gz too), or a
    `vocab` and a `dimension` for a random table to train. `tokenizer` is WhitespaceTokenizer or
    PhraseTokenizer, with their `stop_words`, `do_lower_case`, `ngram_separator`, `max_ngram_length`."""

    save_in_root: ClassVar[bool] = False  # ST <= 4.x save it in 0_WordEmbeddings/, and every version reads that
    config_keys: ClassVar[list[str]] = ["tokenizer", "vocab", "stop_words", "do_lower_case", "ngram_separator"]
    config_keys += ["max_ngram_length", "update_embeddings", "max_seq_length"]

    def __init__(
        self,
        vocab: list[str] | None = None,
        dimension: int | None = None,
        tokenizer: str = "WhitespaceTokenizer",
        stop_words: list[str] | None = None,
        do_lower_case: bool = False,
        ngram_separator: str = "_",
        max_ngram_length: int = 5,
        update_embeddings: bool = False,
        max_seq_length: int = DEFAULT_WORD_MAX_SEQ_LENGTH,
        embeddings_file_path: str | None = None,
        item_separator: str = " ",
        max_vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        if embeddings_file_path is not None:
            vocab, weight = read_embeddings_file(Path(embeddings_file_path), item_separator, max_vocab_size)
        elif vocab is not None and dimension is not None:
            weight = torch.nn.Embedding(len(vocab), dimension).weight.detach()  # random N(0, 1), to be trained
            self.untrained = True
        else:
            raise ConfigValueError("embeddings_file_path", "required: a word-vector file, or both vocab and dimension")
        stops = ENGLISH_STOP_WORDS if stop_words is None else stop_words
        tokenizer_config: dict[str, Any] = {"vocab": vocab, "stop_words": stops, "do_lower_case": do_lower_case}
        if tokenizer == "PhraseTokenizer":
            tokenizer_config |= {"ngram_separator": ngram_separator, "max_ngram_length": max_ngram_length}
        self._setup(make_tokenizer(tokenizer, **tokenizer_config), weight, update_embeddings, max_seq_length)

    def _setup(self, tokenizer: WordTokenizer, weight: torch.Tensor, update: bool, max_seq_length: int) -> None:
        self.tokenizer = tokenizer
        self.emb_layer = torch.nn.Embedding.from_pretrained(weight.float(), freeze=not update)
        self.update_embeddings, self.max_seq_length = update, max_seq_length

    @classmethod
    def plan(cls, kwargs: dict[str, Any], input_dim: int | None) -> tuple[dict[str, Any], int | None]:
        kind = kwargs.get("tokenizer", "WhitespaceTokenizer")
        if kind not in WORD_TOKENIZERS:
            raise ConfigValueError(
                "tokenizer", f"unknown word tokenizer {kind!r}; choose from {', '.join(WORD_TOKENIZERS)}"
            )
        if kwargs.get("max_seq_length", 1) <= 0:
            raise ConfigValueError("max_seq_length", "must be a positive integer")
        path = kwargs.get("embeddings_file_path")
        if path is not None:
            return kwargs, _file_dimension(Path(path), kwargs.get("item_separator", " "))
        if kwargs.get("vocab") is None or kwargs.get("dimension") is None:
            raise ConfigValueError("embeddings_file_path", "required: a word-vector file, or both vocab and dimension")
        if kwargs["dimension"] <= 0 or not kwargs["vocab"]:
            raise ConfigValueError("dimension" if kwargs["vocab"] else "vocab", "must be positive / non-empty")
        return kwargs, kwargs["dimension"]

    # ------------------------------------------------------------ running

    def tokenize(self, texts: list[str], **kwargs: Any) -> Features:
        """Vocabulary ids per text, cut at max_seq_length (as ST >= 6), right-padded with 0."""
        rows = [self.tokenizer.tokenize(text)[: self.max_seq_length] for text in texts]
        width = max(1, max(map(len, rows), default=0))  # ST >= 6: one masked column for texts with no known word
        input_ids = torch.zeros((len(rows), width), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "sentence_lengths": lengths}

    def forward(self, features: Features, **kwargs: Any) -> Features:
        features["token_embeddings"] = self.emb_layer(features["input_ids"])
        return features

    def get_max_seq_length(self) -> int | None:
        return self.max_seq_length

    def get_word_embedding_dimension(self) -> int:
        return int(self.emb_layer.embedding_dim)

    # ------------------------------------------------------------ persistence

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer.kind,
            **self.tokenizer.config(),
            "update_embeddings": self.update_embeddings,
            "max_seq_length": self.max_seq_length,
        }

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> WordEmbeddings:
        folder = local_folder(model_name_or_path, subfolder, **kwargs)
        config = layout.read_module_config(SPECS["WordEmbeddings"], folder)
        weight = read_state(folder).get("emb_layer.weight")
        if weight is None or weight.dim() != 2:
            raise ModelFolderError(f"{folder}: no 2-d tensor emb_layer.weight in the weights")
        if weight.shape[0] < len(config["vocab"]):
            raise ModelFolderError(
                f"{folder}: {weight.shape[0]} embeddings for {len(config['vocab'])} vocabulary words"
            )
        kind = config.pop("tokenizer")
        update, max_seq_length = config.pop("update_embeddings"), config.pop("max_seq_length")
        module = cls.__new__(cls)
        InputModule.__init__(module)
        module._setup(make_tokenizer(kind, **config), weight, update, max_seq_length)
        return module


def _open_text(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf8") if path.suffix == ".gz" else path.open(encoding="utf8")


def _file_dimension(path: Path, separator: str) -> int:
    """The vector width from the first line of a word-vector file."""
    try:
        with _open_text(path) as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ConfigValueError("embeddings_file_path", f"{path}: cannot read ({e})") from None
    width = len(first.rstrip().split(separator)) - 1
    if width <= 0:
        raise ConfigValueError("embeddings_file_path", f"{path}:1: expected a word and its numbers")
    return width


def read_embeddings_file(path: Path, separator: str, max_vocab_size: int | None) -> tuple[list[str], torch.Tensor]:
    """ST's from_text_file: PADDING_TOKEN (zeros) first, then one word per line.

    Where ST logs and skips a line of the wrong width, st refuses it with its line number.
    """
    vocab, rows = [PADDING_TOKEN], list[list[float]]()
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                word, *values = line.rstrip().split(separator)
                if not rows:
                    rows.append([0.0] * len(values))
                if len(values) != len(rows[0]) or not values:
                    problem = f"{len(values)} numbers where line 1 has {len(rows[0])}"
                    raise ConfigValueError("embeddings_file_path", f"{path}:{number}: {problem}")
                try:
                    rows.append([float(v) for v in values])
                except ValueError as e:
                    raise ConfigValueError("embeddings_file_path", f"{path}:{number}: {e}") from None
                vocab.append(word)
                if max_vocab_size is not None and 0 < max_vocab_size < len(vocab):
                    break
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ConfigValueError("embeddings_file_path", f"{path}: cannot read ({e})") from None
    if len(vocab) == 1:
        raise ConfigValueError("embeddings_file_path", f"{path}: no word vectors in it")
    return vocab, torch.tensor(rows, dtype=torch.float32)
