"""Run inside the ST 5.7 + optimum venv: load a folder with backend="onnx" and one exported file, encode, save.

usage: python onnx_load.py MODEL_DIR FILE_NAME TEXTS_JSON OUT_NPY
"""

import json
import sys

import numpy as np
from sentence_transformers import SentenceTransformer

folder, file_name, texts_path, out_path = sys.argv[1:5]
with open(texts_path, encoding="utf-8") as f:
    texts = json.load(f)
model = SentenceTransformer(folder, device="cpu", backend="onnx", model_kwargs={"file_name": file_name})
np.save(out_path, model.encode(texts, batch_size=16, convert_to_numpy=True))
