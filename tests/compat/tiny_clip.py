"""A tiny random CLIP folder (2-layer text tower, hidden 32, projection 16, 32-pixel images) with a BPE tokenizer.

Importable (tests/conftest.py) and runnable in any venv: python tiny_clip.py OUT_DIR [SAVED_BY_ST_DIR TEXTS_JSON]
writes the HF folder, and with the extra arguments also saves it as a sentence-transformers model of that
version with its embeddings of the texts (SAVED_BY_ST_DIR.npy; none if that version cannot encode them).
"""

import json
import sys
from pathlib import Path

WORDS = "the a is of and to in it on man woman food eating playing horse hello world cat dog photo query".split()
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(CHARS)}
    vocab.update({c + "</w>": len(CHARS) + i for i, c in enumerate(CHARS)})
    merges = []
    for word in WORDS:  # merge each word left to right into one token
        current = word[0]
        for i, ch in enumerate(word[1:]):
            piece = ch + ("</w>" if i == len(word) - 2 else "")
            merges.append(f"{current} {piece}")
            current += piece
            vocab.setdefault(current, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(str(folder))
    end, start = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, eos_token_id=end, bos_token_id=start,
                pad_token_id=end)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32,
                  patch_size=16)  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(folder))
    return folder


def _save_with_sentence_transformers(source: Path, out: Path, texts: list) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.models import CLIPModel
    except ImportError:  # ST >= 5.4 moved it
        from sentence_transformers.sentence_transformer.modules import CLIPModel
    model = SentenceTransformer(modules=[CLIPModel(str(source))], device="cpu")
    model.save(str(out))
    np.save(f"{out}.npy", model.encode(texts, batch_size=16, convert_to_numpy=True))


if __name__ == "__main__":
    hf_folder = make_tiny_clip(Path(sys.argv[1]))
    if len(sys.argv) > 2:
        with open(sys.argv[3], encoding="utf-8") as f:
            _save_with_sentence_transformers(hf_folder, Path(sys.argv[2]), json.load(f))
