"""`st eval`: a model's quality on labelled data, with the metric names and values of
sentence-transformers' evaluators (docs/how-to/evaluate.md).

`tasks.py` holds the TASKS table (pairs, retrieval, triplets: how each recognises its data and
which metrics it computes), `metrics.py` the similarity functions and the metrics themselves,
`embed.py` the encoding (st encode's sorted, token-budget batches), `evaluate.py` the job and its
report, `record.py` what `--record` writes into the folder.
"""
