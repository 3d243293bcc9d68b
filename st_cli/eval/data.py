"""Reading evaluation data: scored pairs and triplets from .csv/.tsv/.jsonl rows (through encode's
readers), and BEIR retrieval folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from st_cli.encode.inputs import read_rows
from st_cli.errors import StError
from st_cli.format import layout

# Column roles and their default names (sentence-transformers' dataset conventions); --column ROLE=NAME.
DEFAULT_COLUMNS: dict[str, str] = {
    "sentence1": "sentence1",
    "sentence2": "sentence2",
    "score": "score",
    "anchor": "anchor",
    "positive": "positive",
    "negative": "negative",
    "query": "query",
    "documents": "documents",
}

CORPUS, QUERIES, QRELS = "corpus.jsonl", "queries.jsonl", "qrels"


def parse_columns(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`--column score=label` → the role → column table, defaults for the roles not named."""
    columns = dict(DEFAULT_COLUMNS)
    for item in items:
        role, sep, name = item.partition("=")
        if not sep or not name:
            raise StError(f"--column: expected ROLE=NAME (e.g. score=label), got {item!r}")
        if role not in DEFAULT_COLUMNS:
            close = difflib.get_close_matches(role, DEFAULT_COLUMNS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StError(f"--column: unknown role {role!r}{hint}; roles: {', '.join(DEFAULT_COLUMNS)}")
        columns[role] = name
    return columns


@dataclass(frozen=True)
class Pairs:
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


@dataclass(frozen=True)
class Triplets:
    anchors: list[str]
    positives: list[str]
    negatives: list[str]


@dataclass(frozen=True)
class Reranking:
    """Per query, its documents and which are relevant, as CrossEncoderRerankingEvaluator builds them
    (always_rerank_positives: the positives first, then the other documents); `base` is the documents'
    given order (a first-stage retriever's), scored for the base_* metrics; None for a sample without."""

    queries: list[str]
    documents: list[list[str]]
    relevant: list[list[int]]
    base: list[list[int] | None]


@dataclass(frozen=True)
class Retrieval:
    query_ids: list[str]  # queries with at least one relevant document, in queries.jsonl order
    queries: list[str]
    corpus_ids: list[str]
    corpus: list[str]  # `title text`, stripped (the BEIR convention of sentence-transformers' examples)
    relevant: list[set[str]]  # per query


def first_row_keys(path: Path) -> set[str] | None:
    """The columns of a .csv/.tsv/.jsonl file's first row (None for an empty file)."""
    for _, row in read_rows(path, what="evaluation data"):
        return set(row)
    return None


def _text(path: Path, number: int, row: Mapping[str, Any], role: str, column: str) -> str:
    value = row.get(column)
    if not isinstance(value, str):
        problem = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise StError(f"{path}:{number}: {role} column {column!r} is {problem} (set it with --column {role}=NAME)")
    return value


def _number(path: Path, number: int, row: Mapping[str, Any], column: str) -> float:
    value = row.get(column)
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StError(f"{path}:{number}: score column {column!r} is {value!r}, not a number") from None


def read_pairs(path: Path, columns: Mapping[str, str]) -> Pairs:
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for number, row in read_rows(path, what="evaluation data"):
        s1.append(_text(path, number, row, "sentence1", columns["sentence1"]))
        s2.append(_text(path, number, row, "sentence2", columns["sentence2"]))
        scores.append(_number(path, number, row, columns["score"]))
    if len(scores) < 2:
        raise StError(f"{path}: {len(scores)} scored pair(s); correlations need at least 2")
    return Pairs(s1, s2, scores)


def read_triplets(path: Path, columns: Mapping[str, str]) -> Triplets:
    rows = [
        tuple(_text(path, number, row, role, columns[role]) for role in ("anchor", "positive", "negative"))
        for number, row in read_rows(path, what="evaluation data")
    ]
    if not rows:
        raise StError(f"{path}: no triplets")
    anchors, positives, negatives = (list(col) for col in zip(*rows, strict=True))
    return Triplets(anchors, positives, negatives)


def _texts(path: Path, number: int, row: Mapping[str, Any], role: str, column: str) -> list[str]:
    """A column holding one text or a list of texts."""
    value = row.get(column)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    problem = "missing" if value is None else f"a {type(value).__name__}, not a text or a list of texts"
    raise StError(f"{path}:{number}: {role} column {column!r} is {problem} (set it with --column {role}=NAME)")


def read_reranking(path: Path, columns: Mapping[str, str]) -> Reranking:
    """Rows of query, positive (a text or a list) and either negative or documents (a list: a retriever's hits)."""
    data = Reranking([], [], [], [])
    for number, row in read_rows(path, what="evaluation data"):
        query = _text(path, number, row, "query", columns["query"])
        positive = _texts(path, number, row, "positive", columns["positive"])
        if columns["documents"] in row:
            hits = _texts(path, number, row, "documents", columns["documents"])
            base = [int(doc in positive) for doc in hits]
            if sum(base):
                base += [1] * (len(positive) - sum(base))  # positives the retriever missed rank after its hits
            docs = positive + [doc for doc in hits if doc not in positive]
            data.base.append(base)
        else:
            docs = positive + _texts(path, number, row, "negative", columns["negative"])
            data.base.append(None)
        data.queries.append(query)
        data.documents.append(docs)
        data.relevant.append([1] * len(positive) + [0] * (len(docs) - len(positive)))
    if not data.queries:
        raise StError(f"{path}: no queries to rerank")
    return data


def qrels_path(folder: Path, split: str) -> Path:
    path = folder / QRELS / f"{split}.tsv"
    if not path.is_file():
        found = sorted(p.stem for p in (folder / QRELS).glob("*.tsv")) if (folder / QRELS).is_dir() else []
        close = difflib.get_close_matches(split, found, n=1)
        hint = f" (did you mean --split {close[0]}?)" if close else ""
        raise StError(f"{path}: no such file{hint}; splits here: {', '.join(found) or 'none'}")
    return path


def read_retrieval(folder: Path, split: str) -> Retrieval:
    for name in (CORPUS, QUERIES):
        if not (folder / name).is_file():
            raise StError(f"{folder / name}: no such file (a BEIR folder has {CORPUS}, {QUERIES}, {QRELS}/<split>.tsv)")
    relevant: dict[str, set[str]] = {}
    qrels = qrels_path(folder, split)
    for number, row in read_rows(qrels, what="qrels"):
        qid, cid = row.get("query-id"), row.get("corpus-id")
        if qid is None or cid is None:
            raise StError(f"{qrels}:{number}: expected the columns query-id, corpus-id, score (BEIR's header)")
        score = _number(qrels, number, row, "score") if "score" in row else 1.0
        if score > 0:  # BEIR: 0 marks a judged, irrelevant document
            relevant.setdefault(str(qid), set()).add(str(cid))
    corpus_ids, corpus = [], []
    for number, row in read_rows(folder / CORPUS, what="a corpus"):
        if "_id" not in row:
            raise StError(f"{folder / CORPUS}:{number}: no '_id' field")
        title, text = row.get("title") or "", row.get("text") or ""
        if not isinstance(title, str) or not isinstance(text, str):
            raise StError(f"{folder / CORPUS}:{number}: title and text must be strings")
        corpus_ids.append(str(row["_id"]))
        corpus.append(f"{title} {text}".strip())
    query_ids, queries = [], []
    for number, row in read_rows(folder / QUERIES, what="queries"):
        qid = str(row.get("_id"))
        if qid in relevant:
            query_ids.append(qid)
            queries.append(_text(folder / QUERIES, number, row, "query", "text"))
    if not query_ids:
        raise StError(f"{qrels}: no query of {folder / QUERIES} has a relevant document in this split")
    if not corpus:
        raise StError(f"{folder / CORPUS}: no documents")
    return Retrieval(query_ids, queries, corpus_ids, corpus, [relevant[q] for q in query_ids])


def data_sha256(path: Path, split: str | None = None) -> str:
    """sha256 of a data file; of a retrieval folder, over its corpus, queries and the split's qrels."""
    if path.is_file():
        return layout.sha256_file(path)
    digest = hashlib.sha256()
    for part in (path / CORPUS, path / QUERIES, qrels_path(path, split or "test")):
        digest.update(f"{part.relative_to(path).as_posix()}\0{layout.sha256_file(part)}\n".encode())
    return digest.hexdigest()


def display_name(path: str | os.PathLike[str]) -> str:
    return Path(path).name or str(path)
