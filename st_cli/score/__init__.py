"""Rerankers: `st score` (a file of text pairs to one score each) and `st rerank` (a query's documents,
best first), on a CrossEncoder folder (st_cli.model.cross_encoder).

Pairs go through `st encode`'s machinery: read by its input readers (encode/inputs.py), cut into batches
by encode/batching.py (sorted by token length, a padded-token budget), and published atomically.
"""

from st_cli.score.api import (
    RankedDocument,
    ScoreOptions,
    ScoreSummary,
    rerank,
    score_file,
    score_pairs,
)

__all__ = ["RankedDocument", "ScoreOptions", "ScoreSummary", "rerank", "score_file", "score_pairs"]
