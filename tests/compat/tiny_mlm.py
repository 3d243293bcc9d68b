"""A tiny random BertForMaskedLM (hidden 32, 2 layers) over the tiny BERT's WordPiece tokenizer: the fill-mask
model the sparse tests build SPLADE models on."""

from __future__ import annotations

from pathlib import Path


def make_tiny_bert_mlm(folder: Path, *, seed: int = 1) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from tests.conftest import make_tiny_bert

    make_tiny_bert(folder, seed=seed)
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig.from_pretrained(str(folder)))
    for name in ("model.safetensors", "pytorch_model.bin"):
        (folder / name).unlink(missing_ok=True)
    model.save_pretrained(str(folder))
    return folder
