"""Run inside an old sentence-transformers venv: load a folder, encode texts, save the embeddings.

usage: python crossload.py MODEL_DIR TEXTS_JSON OUT_NPY
Kept to the APIs every version from 2.2 on has (no prompt_name, no trust_remote_code).
"""

import json
import sys

import numpy as np
from sentence_transformers import SentenceTransformer

folder, texts_path, out_path = sys.argv[1:4]
with open(texts_path, encoding="utf-8") as f:
    texts = json.load(f)
model = SentenceTransformer(folder, device="cpu")
np.save(out_path, model.encode(texts, batch_size=16, convert_to_numpy=True))
