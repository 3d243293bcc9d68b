"""`score_pairs`, `score_file` and `rerank`: a CrossEncoder over text pairs, batched as `st encode` batches."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from st_cli import fsio
from st_cli.encode.batching import DEFAULT_MAX_BATCH_TOKENS, DEFAULT_WINDOW, plan_batches
from st_cli.encode.device import inference_linears
from st_cli.encode.inputs import ReadOptions, read_rows, read_texts
from st_cli.errors import StError
from st_cli.model.cross_encoder import CrossEncoder, Pair, check_pairs, load_cross_encoder

# The column pairs a pairs file may use, tried in this order (sentence-transformers' names).
PAIR_COLUMNS: tuple[tuple[str, str], ...] = (("query", "document"), ("sentence1", "sentence2"))


@dataclass(frozen=True)
class ScoreOptions:
    """One scoring job's settings (`st score`, `st rerank`)."""

    raw: bool = False  # the logits, without the activation the folder saved
    columns: tuple[str, str] | None = None  # (first, second) column names; None: PAIR_COLUMNS
    max_tokens: int = DEFAULT_MAX_BATCH_TOKENS  # padded tokens per batch
    max_rows: int | None = None  # rows per batch at most
    device: str = "cpu"
    force: bool = False  # replace an existing output

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise StError(f"--max-batch-tokens must be at least 1, got {self.max_tokens}")
        if self.max_rows is not None and self.max_rows < 1:
            raise StError(f"--batch-size must be at least 1, got {self.max_rows}")


@dataclass
class ScoreSummary:
    model: str
    data: str
    output: str
    pairs: int
    labels: int
    activation: str  # applied to the logits ("none" with --raw)
    truncated: int
    seconds: float
    max_length: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RankedDocument:
    corpus_id: int  # the document's 0-based position in --docs
    score: float
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"corpus_id": self.corpus_id, "score": self.score, "text": self.text}


@dataclass
class Ranking:
    model: str
    query: str
    documents: int
    activation: str
    results: list[RankedDocument] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        head = {k: v for k, v in self.__dict__.items() if k != "results"}
        return {**head, "results": [r.to_json() for r in self.results]}


def _load(model: CrossEncoder | str | os.PathLike[str], device: str) -> CrossEncoder:
    loaded = model if isinstance(model, CrossEncoder) else load_cross_encoder(model)
    loaded.to(device)
    return loaded


def score_pairs(
    model: CrossEncoder | str | os.PathLike[str],
    pairs: Sequence[Pair],
    options: ScoreOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Scores of (query, document) pairs in input order: (n,) for one label, (n, labels) otherwise.

    Equal to sentence-transformers' `CrossEncoder.predict` on the same folder (to float rounding): the
    same activation, truncation and squeeze; batches are cut by token length under a padded-token budget.
    """
    return _score(_load(model, (options or ScoreOptions()).device), pairs, options or ScoreOptions(), progress)[0]


def _score(
    encoder: CrossEncoder, pairs: Sequence[Pair], options: ScoreOptions, progress: Callable[[int, int], None] | None
) -> tuple[np.ndarray, int]:
    """The scores, and how many pairs were truncated to max_length."""
    checked = check_pairs(pairs)
    shape = (len(checked),) if encoder.num_labels == 1 else (len(checked), encoder.num_labels)
    scores = np.zeros(shape, np.float32)
    done = truncated = 0
    with inference_linears(encoder.network, options.device, "float32"):  # cross-encoders load in float32
        for start in range(0, len(checked), DEFAULT_WINDOW):  # windows bound the tokenizer's memory, as in encode
            window = checked[start : start + DEFAULT_WINDOW]
            lengths, cut = encoder.lengths(window)
            truncated += cut
            for batch in plan_batches(lengths, options.max_tokens, options.max_rows):
                features = encoder.tokenize([window[i] for i in batch])
                logits = encoder.logits({k: v.to(options.device) for k, v in features.items()})
                scores[start + batch] = encoder.activate(logits, raw=options.raw)
                done += len(batch)
                if progress is not None:
                    progress(done, len(checked))
    return scores, truncated


def read_pairs(path: str | os.PathLike[str], columns: tuple[str, str] | None = None) -> tuple[list[Pair], list[int]]:
    """A pairs file (.jsonl/.json/.csv/.tsv/.parquet, compressed too) read by `st encode`'s readers:
    the pairs and the line each starts on. Columns query/document, else sentence1/sentence2, else `columns`."""
    pairs: list[Pair] = []
    lines: list[int] = []
    chosen = columns
    for number, row in read_rows(path, what="pairs (query, document columns)"):
        if chosen is None:
            chosen = next((c for c in PAIR_COLUMNS if c[0] in row and c[1] in row), None)
            if chosen is None:
                tried = " or ".join("/".join(c) for c in PAIR_COLUMNS)
                raise StError(f"{path}:{number}: no {tried} columns (name yours with --columns FIRST,SECOND)")
        values = []
        for key in chosen:
            value = row.get(key)
            if not isinstance(value, str):
                problem = "missing" if value is None else f"a {type(value).__name__}, not a string"
                raise StError(f"{path}:{number}: column {key!r} is {problem}")
            values.append(value)
        pairs.append((values[0], values[1]))
        lines.append(number)
    if not pairs:
        raise StError(f"{path}: no pairs")
    return pairs, lines


def _write_npy(path: Path, scores: np.ndarray, lines: list[int]) -> None:
    with open(path, "wb") as f:
        np.save(f, scores)


def _write_jsonl(path: Path, scores: np.ndarray, lines: list[int]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line, score in zip(lines, scores.tolist(), strict=True):
            key = "scores" if isinstance(score, list) else "score"
            f.write(json.dumps({"line": line, key: score}) + "\n")


# Output suffix → writer: .npy holds the array as predict returns it; .jsonl one object per pair.
WRITERS: dict[str, Callable[[Path, np.ndarray, list[int]], None]] = {".npy": _write_npy, ".jsonl": _write_jsonl}


def score_file(
    model: CrossEncoder | str | os.PathLike[str],
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: ScoreOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScoreSummary:
    """`st score`: every pair of `data` scored into `output` (.npy or .jsonl), published whole or not at all."""
    options = options or ScoreOptions()
    target = Path(output)
    writer = WRITERS.get(target.suffix.lower())
    if writer is None:
        raise StError(f"{output}: --out must end in {' or '.join(WRITERS)}")
    claim = fsio.claim(target, force=options.force)
    pairs, lines = read_pairs(data, options.columns)  # bad data is reported before the model loads
    started = time.perf_counter()
    encoder = _load(model, options.device)
    scores, truncated = _score(encoder, pairs, options, progress)
    tmp = fsio.temp_file(target)
    try:
        try:
            writer(tmp, scores, lines)
        except OSError as e:
            raise fsio.write_error(e, target) from None
        fsio.publish(tmp, claim)
    except BaseException:
        fsio.remove(tmp)
        raise
    return ScoreSummary(
        model=str(model) if not isinstance(model, CrossEncoder) else str(model.folder),
        data=str(data),
        output=str(target),
        pairs=len(pairs),
        labels=encoder.num_labels,
        activation="none" if options.raw else encoder.activation,
        truncated=truncated,
        seconds=round(time.perf_counter() - started, 3),
        max_length=encoder.max_length,
    )


def rerank(
    model: CrossEncoder | str | os.PathLike[str],
    query: str,
    documents: Sequence[str] | str | os.PathLike[str],
    *,
    top_k: int | None = None,
    options: ScoreOptions | None = None,
    field: str = "text",
) -> Ranking:
    """`st rerank`: the documents scored against `query`, best first (ties keep input order), the first
    `top_k`; what sentence-transformers' `CrossEncoder.rank` returns. `documents` may be a file read as
    `st encode` reads its inputs (a line each, or `field` of .jsonl/.csv)."""
    options = options or ScoreOptions()
    if top_k is not None and top_k < 1:
        raise StError(f"--top-k must be at least 1, got {top_k}")
    texts = _documents(documents, field)
    encoder = _load(model, options.device)
    if encoder.num_labels != 1:
        raise StError(
            f"{model}: rerank needs one score per pair, and this CrossEncoder has {encoder.num_labels} labels; "
            "use `st score` for its per-label scores"
        )
    scores, _ = _score(encoder, [(query, t) for t in texts], options, None)
    order = sorted(range(len(texts)), key=lambda i: -float(scores[i]))  # stable: ties in input order, as ST
    results = [RankedDocument(i, float(scores[i]), texts[i]) for i in order[:top_k]]
    name = str(model) if not isinstance(model, CrossEncoder) else str(model.folder)
    return Ranking(name, query, len(texts), "none" if options.raw else encoder.activation, results)


def _documents(documents: Sequence[str] | str | os.PathLike[str], field: str) -> list[str]:
    if isinstance(documents, (str, os.PathLike)):
        texts = read_texts([documents], ReadOptions(field=field, column=field))
    else:
        texts = list(documents)
    if not texts:
        raise StError(f"{documents}: no documents" if isinstance(documents, (str, os.PathLike)) else "no documents")
    return texts
