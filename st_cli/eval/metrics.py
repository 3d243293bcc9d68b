"""Similarity functions and metrics, computed as sentence-transformers' evaluators compute them.

Names follow sentence-transformers 6.2's evaluators called without a name: `pearson_cosine`,
`cosine_ndcg@10`, `cosine_accuracy`. Correlations are computed here in float64 (scipy is not a
dependency): Pearson on the raw values, Spearman as Pearson on average ranks (ties share a rank).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# ---------------------------------------------------------------- similarity functions

# Row-wise similarity of two (n, d) arrays, and the (q, c) matrix of two sets; larger = more similar
# (the distances are negated, as in sentence-transformers).
PairwiseFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
MatrixFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


PAIRWISE: dict[str, PairwiseFn] = {
    "cosine": lambda a, b: (_unit(a) * _unit(b)).sum(axis=1),
    "dot": lambda a, b: (a.astype(np.float32) * b.astype(np.float32)).sum(axis=1),
    "euclidean": lambda a, b: -np.linalg.norm(a.astype(np.float32) - b.astype(np.float32), axis=1),
    "manhattan": lambda a, b: -np.abs(a.astype(np.float32) - b.astype(np.float32)).sum(axis=1),
}


def _cosine_matrix(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(c, dim=1).T


def _dot_matrix(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return q @ c.T


def _euclidean_matrix(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    import torch

    return -torch.cdist(q, c, p=2.0)


def _manhattan_matrix(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    import torch

    return -torch.cdist(q, c, p=1.0)


MATRIX: dict[str, MatrixFn] = {
    "cosine": _cosine_matrix,
    "dot": _dot_matrix,
    "euclidean": _euclidean_matrix,
    "manhattan": _manhattan_matrix,
}

SIMILARITIES = tuple(PAIRWISE)


# ---------------------------------------------------------------- correlations


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson's r in float64; nan when either side is constant (as scipy returns)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def average_ranks(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    values = np.asarray(x, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    return pearson(average_ranks(x), average_ranks(y))


# ---------------------------------------------------------------- retrieval


# The cutoffs of sentence-transformers' InformationRetrievalEvaluator defaults, in its output order.
ACCURACY_AT = (1, 3, 5, 10)
PRECISION_RECALL_AT = (1, 3, 5, 10)
NDCG_AT = (10,)
MRR_AT = (10,)
MAP_AT = (100,)
MAX_K = max(*ACCURACY_AT, *PRECISION_RECALL_AT, *NDCG_AT, *MRR_AT, *MAP_AT)


def _dcg(relevances: Sequence[int], k: int) -> float:
    return sum(relevances[i] / np.log2(i + 2) for i in range(min(len(relevances), k)))


def retrieval_metrics(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]], prefix: str) -> dict[str, float]:
    """Metrics over queries from each query's ranked document ids (best first) and its relevant ids.

    Binary relevance, averaged over queries, as the evaluator does; `prefix` is the similarity name.
    """
    n = len(ranked)
    hits = [[doc in rel for doc in docs] for docs, rel in zip(ranked, relevant, strict=True)]
    out: dict[str, float] = {}
    for k in ACCURACY_AT:
        out[f"{prefix}_accuracy@{k}"] = sum(any(h[:k]) for h in hits) / n
    for k in PRECISION_RECALL_AT:
        out[f"{prefix}_precision@{k}"] = float(np.mean([sum(h[:k]) / k for h in hits]))
    for k in PRECISION_RECALL_AT:
        recalls = [sum(h[:k]) / len(rel) for h, rel in zip(hits, relevant, strict=True)]
        out[f"{prefix}_recall@{k}"] = float(np.mean(recalls))
    for k in NDCG_AT:
        ndcg = [
            _dcg([int(x) for x in h[:k]], k) / _dcg([1] * len(rel), k) for h, rel in zip(hits, relevant, strict=True)
        ]
        out[f"{prefix}_ndcg@{k}"] = float(np.mean(ndcg))
    for k in MRR_AT:
        out[f"{prefix}_mrr@{k}"] = sum(next((1 / (r + 1) for r, x in enumerate(h[:k]) if x), 0.0) for h in hits) / n
    for k in MAP_AT:
        precisions = [_average_precision(h[:k], len(rel), k) for h, rel in zip(hits, relevant, strict=True)]
        out[f"{prefix}_map@{k}"] = float(np.mean(precisions))
    return out


def _average_precision(hits: Sequence[bool], relevant: int, k: int) -> float:
    found, total = 0, 0.0
    for rank, hit in enumerate(hits):
        if hit:
            found += 1
            total += found / (rank + 1)
    return total / min(k, relevant)


# ---------------------------------------------------------------- reranking (a CrossEncoder's scores)

RERANK_AT_K = 10  # CrossEncoderRerankingEvaluator's default at_k: mrr@10, ndcg@10


def reranking_metrics(relevant: Sequence[int], scores: np.ndarray, k: int = RERANK_AT_K) -> tuple[float, float, float]:
    """(MRR@k, NDCG@k, AP) of one query's documents, as CrossEncoderRerankingEvaluator computes them:
    MRR over numpy's descending argsort, NDCG and AP as scikit-learn's ndcg_score and
    average_precision_score (tied scores share their gains and count as one threshold)."""
    y_true = np.asarray(relevant, dtype=np.float64)
    y_score = np.asarray(scores)
    ranking = np.argsort(y_score)[::-1]
    mrr = next((1.0 / (rank + 1) for rank, i in enumerate(ranking[:k]) if y_true[i]), 0.0)
    return mrr, _ndcg(y_true, y_score, k), _tied_average_precision(y_true, y_score)


def _ndcg(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    discount = 1.0 / np.log2(np.arange(len(y_true)) + 2)
    discount[k:] = 0.0
    ideal = float((np.sort(y_true)[::-1] * discount).sum())
    if ideal == 0.0:
        return 0.0
    _, inverse, counts = np.unique(-y_score, return_inverse=True, return_counts=True)
    gains = np.zeros(len(counts))
    np.add.at(gains, inverse, y_true)
    gains /= counts  # a group of tied documents shares its average gain
    cumulative = np.cumsum(discount)[np.cumsum(counts) - 1]
    return float((gains * np.diff(cumulative, prepend=0.0)).sum()) / ideal


def _tied_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    order = np.argsort(-y_score, kind="mergesort")
    ranked_true, ranked_score = y_true[order], y_score[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked_score)), len(ranked_true) - 1]  # one threshold per distinct score
    tp = np.cumsum(ranked_true)[ends]
    precision = tp / (ends + 1)
    if tp[-1] == 0:
        return 0.0
    recall = tp / tp[-1]
    return float((np.diff(recall, prepend=0.0) * precision).sum())
