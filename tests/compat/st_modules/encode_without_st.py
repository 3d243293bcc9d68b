"""Run with sentence_transformers hidden (as if not installed): st loads trusted folders and saves their embeddings.

usage: python encode_without_st.py TEXTS_JSON OUT_DIR FOLDER[:TASK]...
Writes OUT_DIR/<folder name>[.<task>].npy. Exits non-zero if sentence_transformers could be imported
at any point, before or after loading.
"""

import importlib.abc
import json
import sys
from pathlib import Path

import numpy as np


class HideSentenceTransformers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sentence_transformers" or name.startswith("sentence_transformers."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)
        return None


def assert_hidden() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ModuleNotFoundError:
        return
    sys.exit("sentence_transformers was importable")


sys.meta_path.insert(0, HideSentenceTransformers())
assert_hidden()

import st_cli  # noqa: E402

texts_path, out_dir, *folders = sys.argv[1:]
texts = json.loads(Path(texts_path).read_text(encoding="utf-8"))
for arg in folders:
    folder, _, task = arg.partition(":")
    model = st_cli.load_model(folder, trust_remote_code=True)
    kwargs = {"task": task} if task else {}
    name = Path(folder).name + (f".{task}" if task else "")
    np.save(Path(out_dir) / f"{name}.npy", model.encode(texts, batch_size=16, **kwargs))
assert_hidden()
print("ok: sentence_transformers stayed hidden")
