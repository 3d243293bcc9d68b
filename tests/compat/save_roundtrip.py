"""Run inside one sentence-transformers venv: for each job, load a folder, encode, and re-save it with that version.

usage: python save_roundtrip.py JOBS_JSON RESULTS_JSON

JOBS_JSON: {"texts": [...], "batch_size": int, "jobs": [{"id": str, "folder": str, "out": str (.npy), "resave": str (a new folder)}]}
RESULTS_JSON (written): {id: null on success, or the error as one line}

Knows nothing about module types: whatever the folder holds, the version's own SentenceTransformer (SparseEncoder
where config_sentence_transformers.json's model_type says so) loads it,
its own `encode` embeds the texts and its own `save` writes the copy. One failing job does not stop the others.
Kept to the APIs every version from 2.2 on has (no prompt_name, no trust_remote_code).
"""

import json
import os
import sys
import traceback

import numpy as np
from sentence_transformers import SentenceTransformer


def _model_type(folder):
    path = os.path.join(folder, "config_sentence_transformers.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("model_type")


def run(job, texts, batch_size):
    if _model_type(job["folder"]) == "SparseEncoder":  # ST >= 5.0: its own class, dense vectors out
        from sentence_transformers import SparseEncoder

        model = SparseEncoder(job["folder"], device="cpu")
        vectors = model.encode(texts, batch_size=batch_size, convert_to_sparse_tensor=False).cpu().numpy()
    else:
        model = SentenceTransformer(job["folder"], device="cpu")
        vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    np.save(job["out"], vectors)
    model.save(job["resave"])


def main():
    jobs_path, results_path = sys.argv[1:3]
    with open(jobs_path, encoding="utf-8") as f:
        spec = json.load(f)
    results = {}
    for job in spec["jobs"]:
        try:
            run(job, spec["texts"], spec["batch_size"])
            results[job["id"]] = None
        except Exception as e:  # report, then go on with the next folder
            last = traceback.extract_tb(e.__traceback__)[-1]
            results[job["id"]] = f"{type(e).__name__}: {e} (at {last.filename}:{last.lineno})".replace("\n", " ")
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
