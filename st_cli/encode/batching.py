"""Cutting records into batches (docs/explanation/design.md): windows sorted by token length, a padded-token budget.

A window of records is tokenized once to learn each text's length, sorted longest first, and cut
into batches that hold as many rows as fit `max_tokens` padded tokens. Windows can be prepared in a
background thread one ahead of the model (tokenizers release the GIL).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from st_cli.encode.inputs import Record
    from st_cli.model.model import Model
    from st_cli.model.runtime import RuntimeEncoder

# Measured on 2 cores with all-MiniLM-L6-v2, 2,000 lines, one run: 1024 padded tokens per batch
# 1.81x sentence-transformers, 2048 1.53x, 4096 1.34x (activations leave the L2 cache). 512 costs
# ~7% more CPU than 1024 but keeps the FFN activations (512 x 1536 floats) under MMAP_THRESHOLD:
# at 1024 every one of them is a fresh mmap, +14% CPU in page faults.
DEFAULT_MAX_BATCH_TOKENS = 512
DEFAULT_WINDOW = 8192
# Pad batches to a multiple of this (1: no rounding). Rounding to 8 means fewer tensor shapes but
# runs ~8% more tokens; with the rows of a batch set by its width alone and the mmap threshold
# pinned, RSS stayed flat without it (MiniLM: 612 MB at 2,000 lines, 619 MB at 6,000), so it is off.
PAD_MULTIPLE = 1


@dataclass(frozen=True)
class Batch:
    indices: np.ndarray  # positions inside the window
    features: dict[str, Any]
    tokens: int
    padded_tokens: int


@dataclass(frozen=True)
class Window:
    start: int  # first output row
    size: int
    batches: list[Batch]
    truncated: int


@dataclass(frozen=True)
class BatchPlan:
    prompt: str
    max_tokens: int
    max_rows: int | None
    pad_multiple: int
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # encode-time kwargs (a Router's task picks the tokenizer)
    like_st: bool = False  # cut batches as sentence-transformers does (the stack's output depends on padding)


# sentence-transformers' encode(): texts longest first by characters, this many rows per batch.
ST_BATCH_SIZE = 32


def st_batches(texts: list[str], rows: int | None) -> list[np.ndarray]:
    """ST's batches: np.argsort of minus the character lengths (its exact tie order), `rows` (32) at a time.

    Only these batches reproduce ST's vectors for a module that reads the padding (CNN).
    """
    order = np.argsort([-len(t) for t in texts])
    size = rows or ST_BATCH_SIZE
    return [order[i : i + size] for i in range(0, len(order), size)]


def token_lengths(model: Model | RuntimeEncoder, texts: list[str], prompt: str = "") -> tuple[np.ndarray, int]:
    """Tokens per text after truncation, and how many texts were truncated.

    Uses the input module's fast tokenizer when it has one; otherwise characters stand in.
    """
    full = [prompt + t for t in texts] if prompt else texts
    tokenizer = getattr(model.input_module, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        return np.fromiter(map(len, full), np.int64, len(full)), 0
    ids = tokenizer(
        full,
        add_special_tokens=True,
        truncation=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )["input_ids"]
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    limit = model.get_max_seq_length()
    if not limit:
        return lengths, 0
    return np.minimum(lengths, limit), int((lengths > limit).sum())


def plan_batches(
    lengths: np.ndarray, max_tokens: int, max_rows: int | None = None, multiple: int = 1
) -> list[np.ndarray]:
    """Longest first; each batch holds as many rows as fit `max_tokens` padded tokens (at least one).

    The row count depends only on the batch's padded width, so the tensor shapes repeat.
    """
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        width = _round_up(int(lengths[order[start]]), multiple)
        rows = max(1, max_tokens // max(width, 1))
        if max_rows:
            rows = min(rows, max_rows)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple > 1 else n


def _pad_features(features: dict[str, Any], multiple: int) -> dict[str, Any]:
    """Right-pad every (rows, seq) tensor to a multiple of `multiple` (zeros: masked out)."""
    if multiple <= 1:
        return features
    import torch

    mask = features.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return features
    seq = mask.shape[1]
    extra = _round_up(seq, multiple) - seq
    if extra == 0:
        return features
    padded = dict(features)
    for key, value in features.items():
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == mask.shape:
            padded[key] = torch.nn.functional.pad(value, (0, extra), value=0)
    return padded


def prepare_window(model: Model | RuntimeEncoder, start: int, records: list[Record], plan: BatchPlan) -> Window:
    """Tokenize a window's records and cut them into batches (sorted by length)."""
    texts = [r.text for r in records]
    lengths, truncated = token_lengths(model, texts, plan.prompt)
    batches = []
    if plan.like_st:
        cuts, multiple = st_batches(texts, plan.max_rows), 1  # extra padding would change the vectors
    else:
        cuts, multiple = plan_batches(lengths, plan.max_tokens, plan.max_rows, plan.pad_multiple), plan.pad_multiple
    for indices in cuts:
        features = _pad_features(model.tokenize([texts[i] for i in indices], plan.prompt, **plan.kwargs), multiple)
        mask = features.get("attention_mask")
        padded = int(np.prod(mask.shape)) if mask is not None else int(lengths[indices].max()) * len(indices)
        batches.append(Batch(indices, features, int(lengths[indices].sum()), padded))
    return Window(start, len(records), batches, truncated)


def chunked(records: Iterable[Record], size: int, start: int = 0) -> Iterator[tuple[int, list[Record]]]:
    """(first row, records) for consecutive runs of `size` records (the last may be shorter), from row `start`."""
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield start, chunk
            start += size
            chunk = []
    if chunk:
        yield start, chunk


def windows(
    model: Model | RuntimeEncoder, records: Iterable[Record], size: int, plan: BatchPlan, start: int = 0
) -> Iterator[Window]:
    """The records as prepared windows of `size`, in input order; the first is row `start` (a resumed run)."""
    return (prepare_window(model, first, chunk, plan) for first, chunk in chunked(records, size, start))


def prefetched(items: Iterator[Window], depth: int = 1) -> Iterator[Window]:
    """Run `items` in a background thread, `depth` windows ahead (tokenizers release the GIL)."""
    import queue

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)

    thread = threading.Thread(target=work, name="st-tokenize", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            while True:
                q.get_nowait()
