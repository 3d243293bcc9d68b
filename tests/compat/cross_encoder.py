"""Run inside a compat venv: save tiny CrossEncoders with that sentence-transformers, and its predictions.

    python cross_encoder.py BASE OUT PAIRS.json

writes OUT/ce1, OUT/ce3 (BertForSequenceClassification, 1 and 3 labels, seeded heads scaled up so scores
spread far apart) and OUT/ce1-short (max_length 12: pairs are truncated), and OUT/predictions.json: {folder: {"scores": predict, "raw": predict without activation}}.
"""

import json
import sys
from pathlib import Path

import torch
from sentence_transformers import CrossEncoder

base, out, pairs_file = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
pairs = [tuple(p) for p in json.loads(Path(pairs_file).read_text(encoding="utf-8"))]
predictions = {}
for name, labels, max_length in (("ce1", 1, None), ("ce3", 3, None), ("ce1-short", 1, 12)):
    torch.manual_seed(labels)
    model = CrossEncoder(base, num_labels=labels, max_length=max_length)
    with torch.no_grad():
        model.model.classifier.weight.normal_(0.0, 0.3)  # the default init gives scores all near 0.5
        model.model.classifier.bias.zero_()
        model.model.bert.pooler.dense.weight.normal_(0.0, 1.0)
    folder = out / name
    model.save(str(folder))
    reloaded = CrossEncoder(str(folder))
    predictions[folder.name] = {
        "scores": reloaded.predict(pairs).tolist(),
        "raw": reloaded.predict(pairs, activation_fn=torch.nn.Identity()).tolist(),
    }
(out / "predictions.json").write_text(json.dumps(predictions), encoding="utf-8")
