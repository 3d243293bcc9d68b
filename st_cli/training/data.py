"""Training data: pairs read through encode's readers, their sha256 for the manifest, and the seeded
split into training and held-out examples."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_cli.encode.inputs import read_rows
from st_cli.errors import StError
from st_cli.format import layout
from st_cli.training.options import DEFAULT_COLUMNS, Options, PairColumns


@dataclass(frozen=True)
class Pair:
    anchor: str
    positive: str
    negative: str | None = None


def read_pairs(inputs: Sequence[str | os.PathLike[str]], columns: PairColumns = DEFAULT_COLUMNS) -> list[Pair]:
    """(anchor, positive[, negative]) rows from .jsonl fields or .csv/.tsv columns, through encode's readers."""
    pairs: list[Pair] = []
    for item in inputs:
        rows = read_rows(item, what="contrastive data (anchor, positive columns)")
        pairs.extend(_pairs_from_rows(str(item), rows, columns))
    if not pairs:
        raise StError(f"{', '.join(map(str, inputs))}: no pairs")
    return pairs


def _pairs_from_rows(name: str, rows: Iterator[tuple[int, dict[str, Any]]], columns: PairColumns) -> list[Pair]:
    pairs: list[Pair] = []
    with_negative: bool | None = None  # decided by the first row, then required of every row
    for number, row in rows:
        if with_negative is None:
            with_negative = columns.negative in row
        wanted = [("anchor", columns.anchor), ("positive", columns.positive)]
        if with_negative:
            wanted.append(("negative", columns.negative))
        values = []
        for role, key in wanted:
            value = row.get(key)
            if not isinstance(value, str):
                problem = "missing" if value is None else f"a {type(value).__name__}, not a string"
                raise StError(f"{name}:{number}: {role} column {key!r} is {problem} (set its name with --{role})")
            values.append(value)
        pairs.append(Pair(*values))
    return pairs


def data_record(inputs: Sequence[str | os.PathLike[str]]) -> list[dict[str, str]]:
    return [{"file": str(item), "sha256": layout.sha256_file(Path(item))} for item in inputs]


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _held_out_count(n: int, fraction: float) -> int:
    return min(n - 2, round(n * fraction)) if fraction > 0 and n >= 4 else 0


def split_texts(texts: list[str], options: Options) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """Seeded split into training and held-out texts, and as many random held-out pairs as texts."""
    distinct = list(dict.fromkeys(texts))
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(len(distinct))
    held = _held_out_count(len(distinct), options.eval_fraction)
    eval_texts = [distinct[i] for i in order[:held]]
    train_texts = [distinct[i] for i in order[held:]]
    pairs = []
    if held >= 2:
        first = rng.integers(0, held, size=held)
        second = (first + rng.integers(1, held, size=held)) % held  # never a text with itself
        pairs = list(zip(first.tolist(), second.tolist(), strict=True))
    return train_texts, eval_texts, pairs


def split_pairs(pairs: list[Pair], options: Options) -> tuple[list[Pair], list[Pair]]:
    order = np.random.default_rng(options.seed).permutation(len(pairs))
    held = _held_out_count(len(pairs), options.eval_fraction)
    return [pairs[i] for i in order[held:]], [pairs[i] for i in order[:held]]
