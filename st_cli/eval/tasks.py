"""The TASKS table: each evaluation task, how it recognises its data, and how it computes its metrics.

A task's metrics are named as sentence-transformers 6.2's evaluator for it names them when given
no name: EmbeddingSimilarityEvaluator (pairs), InformationRetrievalEvaluator (retrieval),
TripletEvaluator (triplets). Queries and anchors are encoded as encode_query does (the model's
`query` prompt), documents, positives and negatives as encode_document does, pairs as encode does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from st_cli.eval import data as evaldata
from st_cli.eval.embed import EmbedProgress, embed_all, embed_windows
from st_cli.eval.metrics import (
    MATRIX,
    MAX_K,
    PAIRWISE,
    RERANK_AT_K,
    pearson,
    reranking_metrics,
    retrieval_metrics,
    spearman,
)

if TYPE_CHECKING:
    import torch

    from st_cli.encode.options import EncodeOptions
    from st_cli.model.cross_encoder import CrossEncoder
    from st_cli.model.model import Model
    from st_cli.model.runtime import RuntimeEncoder


@dataclass(frozen=True)
class Context:
    """What every task's run gets besides its data."""

    model: Model | RuntimeEncoder | None  # a sentence embedding model (None for a reranker's run)
    similarities: tuple[str, ...]  # the model's own first, then --similarity's
    options: EncodeOptions
    progress: EmbedProgress | None = None
    reranker: CrossEncoder | None = None  # a CrossEncoder, for the reranking task

    @property
    def embedder(self) -> Model | RuntimeEncoder:
        assert self.model is not None  # evaluate() loads an embedding model for every task but reranking
        return self.model


# ---------------------------------------------------------------- pairs


def run_pairs(data: evaldata.Pairs, ctx: Context) -> dict[str, float]:
    model, options, progress = ctx.embedder, ctx.options, ctx.progress
    e1 = embed_all(model, data.sentences1, task=None, options=options, progress=progress, what="sentence1")
    e2 = embed_all(model, data.sentences2, task=None, options=options, progress=progress, what="sentence2")
    metrics: dict[str, float] = {}
    for name in ctx.similarities:
        scores = PAIRWISE[name](e1, e2)
        metrics[f"pearson_{name}"] = pearson(data.scores, scores)
        metrics[f"spearman_{name}"] = spearman(data.scores, scores)
    if len(ctx.similarities) > 1:
        metrics["pearson_max"] = max(metrics[f"pearson_{n}"] for n in ctx.similarities)
        metrics["spearman_max"] = max(metrics[f"spearman_{n}"] for n in ctx.similarities)
    return metrics


# ---------------------------------------------------------------- triplets


def run_triplets(data: evaldata.Triplets, ctx: Context) -> dict[str, float]:
    def side(texts: list[str], task: str, what: str) -> np.ndarray:
        return embed_all(ctx.embedder, texts, task=task, options=ctx.options, progress=ctx.progress, what=what)

    anchors = side(data.anchors, "query", "anchors")
    positives, negatives = side(data.positives, "document", "positives"), side(data.negatives, "document", "negatives")
    metrics: dict[str, float] = {}
    for name in ctx.similarities:
        # Compared in float32, as the evaluator compares its torch scores.
        good = PAIRWISE[name](anchors, positives).astype(np.float32)
        bad = PAIRWISE[name](anchors, negatives).astype(np.float32)
        metrics[f"{name}_accuracy"] = float((good > bad).mean())
    if len(ctx.similarities) > 1:
        metrics["max_accuracy"] = max(metrics.values())
    return metrics


# ---------------------------------------------------------------- retrieval

# Scores held at once: a block of queries × one window of the corpus (64 MB of float32).
SCORE_BLOCK = 1 << 24


class RunningTopK:
    """The best `k` documents per query over corpus windows seen so far, ordered as the evaluator
    orders them: score descending, then corpus id ascending. Never a queries × corpus matrix.

    Unfilled places hold a sentinel document (index n, score -inf) that sorts after every real one.
    """

    def __init__(self, queries: int, k: int, id_rank: torch.Tensor) -> None:
        import torch

        self.k, self.n = k, len(id_rank)
        self.id_rank = torch.cat([id_rank, torch.tensor([self.n])])  # the sentinel ranks last
        self.scores = torch.full((queries, k), -torch.inf, dtype=torch.float32)
        self.index = torch.full((queries, k), self.n, dtype=torch.long)

    def add(self, rows: slice, scores: torch.Tensor, start: int) -> None:
        """Fold one block's scores (queries[rows] × corpus[start:start + n]) into the running top-k."""
        import torch

        k = min(self.k, scores.shape[1])
        top, index = _window_top(scores.float(), self.id_rank[start : start + scores.shape[1]], k)
        merged_scores = torch.cat([self.scores[rows], top], dim=1)
        merged_index = torch.cat([self.index[rows], index + start], dim=1)
        by_id = torch.argsort(self.id_rank[merged_index], dim=1, stable=True)
        merged_scores, merged_index = merged_scores.gather(1, by_id), merged_index.gather(1, by_id)
        by_score = torch.sort(merged_scores, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.scores[rows], self.index[rows] = merged_scores.gather(1, by_score), merged_index.gather(1, by_score)

    def ranked(self) -> list[list[int]]:
        """Per query, the corpus indices kept, best first."""
        return [[i for i in row if i != self.n] for row in self.index.tolist()]


def _window_top(scores: torch.Tensor, id_rank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """topk, except where ties cross the cut: there the lower corpus ids win, as in the evaluator."""
    import torch

    top, index = torch.topk(scores, k, dim=1, largest=True, sorted=False)
    threshold = top.min(dim=1, keepdim=True).values
    tied = ((scores >= threshold).sum(dim=1) > k).nonzero().flatten()
    if len(tied):
        by_id = torch.argsort(id_rank, stable=True)
        reordered = scores[tied][:, by_id]
        best = torch.sort(reordered, dim=1, descending=True, stable=True).indices[:, :k]
        index[tied] = by_id[best]
        top[tied] = scores[tied].gather(1, index[tied])
    return top, index


def run_retrieval(data: evaldata.Retrieval, ctx: Context) -> dict[str, float]:
    import torch

    queries = torch.from_numpy(
        embed_all(ctx.embedder, data.queries, task="query", options=ctx.options, progress=ctx.progress, what="queries")
    )
    order = np.argsort(np.array(data.corpus_ids, dtype=object), kind="stable")
    id_rank = torch.empty(len(order), dtype=torch.long)
    id_rank[torch.from_numpy(order.astype(np.int64))] = torch.arange(len(order))
    best = {name: RunningTopK(len(queries), MAX_K, id_rank) for name in ctx.similarities}
    windows = embed_windows(
        ctx.embedder, data.corpus, task="document", options=ctx.options, progress=ctx.progress, what="corpus"
    )
    for start, block in windows:
        documents = torch.from_numpy(block)
        step = max(1, SCORE_BLOCK // max(1, len(documents)))
        for first in range(0, len(queries), step):
            rows = slice(first, first + step)
            for name in ctx.similarities:
                best[name].add(rows, MATRIX[name](queries[rows], documents), start)
    metrics: dict[str, float] = {}
    for name in ctx.similarities:
        ranked = [[data.corpus_ids[i] for i in row] for row in best[name].ranked()]
        metrics.update(retrieval_metrics(ranked, data.relevant, name))
    return metrics


# ---------------------------------------------------------------- reranking


def run_reranking(data: evaldata.Reranking, ctx: Context) -> dict[str, float]:
    """CrossEncoderRerankingEvaluator's metrics: every (query, document) pair scored by the CrossEncoder
    (through st score's batches), then MAP, MRR@10 and NDCG@10 averaged over the queries; base_* for the
    documents' given order where the data has `documents`."""
    from st_cli.score import ScoreOptions, score_pairs

    assert ctx.reranker is not None
    pairs = [(q, doc) for q, docs in zip(data.queries, data.documents, strict=True) for doc in docs]
    scores = score_pairs(ctx.reranker, pairs, ScoreOptions(device=ctx.options.device))
    per_query, start = [], 0
    for docs, relevant in zip(data.documents, data.relevant, strict=True):
        per_query.append(reranking_metrics(relevant, scores[start : start + len(docs)]))
        start += len(docs)
    mrr, ndcg, ap = (float(np.mean(column)) for column in zip(*per_query, strict=True))
    metrics = {"map": ap, f"mrr@{RERANK_AT_K}": mrr, f"ndcg@{RERANK_AT_K}": ndcg}
    given = [b for b in data.base if b is not None]
    if given:
        base = [reranking_metrics(b, np.arange(len(b), 0, -1)) if sum(b) else (0.0, 0.0, 0.0) for b in given]
        base_mrr, base_ndcg, base_ap = (float(np.mean(column)) for column in zip(*base, strict=True))
        metrics["base_map"] = base_ap
        metrics[f"base_mrr@{RERANK_AT_K}"], metrics[f"base_ndcg@{RERANK_AT_K}"] = base_mrr, base_ndcg
    return metrics


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Task:
    """A row of TASKS: how to tell the data is this task's, read it, count it and score it."""

    name: str
    what: str  # for --help and messages: the data's shape
    matches: Callable[[Path, Mapping[str, str]], bool]
    read: Callable[[Path, Mapping[str, str], str], Any]
    count: Callable[[Any], int]
    run: Callable[[Any, Context], dict[str, float]]
    primary: Callable[[str], str]  # similarity name → the metric --keep best and the summary line use
    kind: str = "SentenceTransformer"  # the model kind it evaluates (format.kinds): reranking takes a CrossEncoder


def _has_columns(*roles: str) -> Callable[[Path, Mapping[str, str]], bool]:
    def matches(path: Path, columns: Mapping[str, str]) -> bool:
        if not path.is_file():
            return False
        keys = evaldata.first_row_keys(path)
        return keys is not None and all(columns[role] in keys for role in roles)

    return matches


TASKS: tuple[Task, ...] = (
    Task(
        "retrieval",
        "a BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv",
        lambda path, _: path.is_dir() and (path / evaldata.CORPUS).is_file(),
        lambda path, _, split: evaldata.read_retrieval(path, split),
        lambda d: len(d.query_ids),
        run_retrieval,
        lambda sim: f"{sim}_ndcg@10",
    ),
    Task(
        "pairs",
        "scored pairs: sentence1, sentence2, score",
        _has_columns("sentence1", "sentence2", "score"),
        lambda path, columns, _: evaldata.read_pairs(path, columns),
        lambda d: len(d.scores),
        run_pairs,
        lambda sim: f"spearman_{sim}",
    ),
    Task(
        "triplets",
        "triplets: anchor, positive, negative",
        _has_columns("anchor", "positive", "negative"),
        lambda path, columns, _: evaldata.read_triplets(path, columns),
        lambda d: len(d.anchors),
        run_triplets,
        lambda sim: f"{sim}_accuracy",
    ),
    Task(
        "reranking",
        "reranking: query, positive, negative or documents (a CrossEncoder's)",
        lambda path, columns: _has_columns("query", "positive")(path, columns)
        and (_has_columns("negative")(path, columns) or _has_columns("documents")(path, columns)),
        lambda path, columns, _: evaldata.read_reranking(path, columns),
        lambda d: len(d.queries),
        run_reranking,
        lambda _: f"ndcg@{RERANK_AT_K}",
        kind="CrossEncoder",
    ),
)


def task_for(path: Path, columns: Mapping[str, str]) -> Task:
    """The task whose data shape `path` has; StError naming what was found and what each task reads."""
    if not path.exists():
        raise evaldata.StError(f"{path}: no such file or folder")
    for task in TASKS:
        if task.matches(path, columns):
            return task
    found = ""
    if path.is_file():
        keys = evaldata.first_row_keys(path)
        found = f"; its columns: {', '.join(sorted(keys))}" if keys else "; it has no rows"
    shapes = "; ".join(f"{t.name}: {t.what}" for t in TASKS)
    raise evaldata.StError(f"{path}: not evaluation data I recognise{found} (expected {shapes}; see --column)")


def similarities_for(model: Model | RuntimeEncoder, extra: Sequence[str]) -> tuple[str, ...]:
    from st_cli.eval.metrics import SIMILARITIES

    names = [model.similarity_fn_name, *extra]
    for name in names:
        if name not in SIMILARITIES:
            raise evaldata.StError(f"--similarity: {name!r} is not one of {', '.join(SIMILARITIES)}")
    return tuple(dict.fromkeys(names))
