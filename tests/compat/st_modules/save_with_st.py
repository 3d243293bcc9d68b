"""Run with a sentence-transformers venv: save one example stack the way ST itself does, and its embeddings.

usage: python save_with_st.py TINY_BERT_DIR TEXTS_JSON OUT_ROOT STACK...
STACK: decay (Transformer, DecayMeanPooling, Normalize), task (CustomTransformer with kwargs
[task], Pooling, Normalize), input (HashedWords, Pooling, Normalize), st5-style (CharTrigrams,
Pooling, Shift), old-style (Transformer, ScaledMeanPooling, Normalize) or old-input
(OldHashedWords, Pooling, Normalize).
Writes OUT_ROOT/STACK (with the module's .py copied in, as the docs say to) and OUT_ROOT/STACK.npy;
for `task` also OUT_ROOT/task.clustering.npy, encoded with task="clustering". ST 3.4 is the oldest
version that reloads a custom module from the folder (ST 2.x records only the file's module name).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, models

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
bert, texts_path, out_root, *stacks = sys.argv[1:]
texts = json.loads(Path(texts_path).read_text(encoding="utf-8"))


def build(stack: str) -> tuple[list, str]:
    torch.manual_seed(3)
    if stack == "decay":
        from decay_pooling import DecayMeanPooling

        transformer = models.Transformer(bert)
        width = transformer.auto_model.config.hidden_size
        return [transformer, DecayMeanPooling(width, decay=0.9), models.Normalize()], "decay_pooling.py"
    if stack == "task":
        from custom_transformer import CustomTransformer

        return [CustomTransformer(bert), models.Pooling(32, "mean"), models.Normalize()], "custom_transformer.py"
    if stack == "input":
        from hashed_words import HashedWords

        return [HashedWords(97, 16), models.Pooling(16, "mean"), models.Normalize()], "hashed_words.py"
    if stack == "st5-style":
        from st5_style import CharTrigrams, Shift

        shift = Shift(16)
        with torch.no_grad():
            shift.bias.copy_(torch.rand(16) - 0.5)
        return [CharTrigrams(101, 16), models.Pooling(16, "mean"), shift], "st5_style.py"
    if stack == "old-input":
        from old_style_input import OldHashedWords

        return [OldHashedWords(97, 16), models.Pooling(16, "mean"), models.Normalize()], "old_style_input.py"
    from old_style_pooling import ScaledMeanPooling

    pooling = ScaledMeanPooling(32)
    with torch.no_grad():
        pooling.scale.copy_(torch.rand(32) + 0.5)  # trained-looking weights that must be read back
    return [models.Transformer(bert), pooling, models.Normalize()], "old_style_pooling.py"


for stack in stacks:
    out = Path(out_root) / stack
    modules, source = build(stack)
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    shutil.copy(HERE / source, out / source)
    if stack == "task":  # the docs' way to declare an encode-time keyword
        entries = json.loads((out / "modules.json").read_text())
        entries[0]["kwargs"] = ["task"]
        (out / "modules.json").write_text(json.dumps(entries, indent=2))
    model = SentenceTransformer(str(out), device="cpu", trust_remote_code=True)  # reloaded as a user would
    np.save(f"{out}.npy", model.encode(texts, batch_size=16, convert_to_numpy=True))
    if stack == "task":
        np.save(f"{out}.clustering.npy", model.encode(texts, batch_size=16, convert_to_numpy=True, task="clustering"))
