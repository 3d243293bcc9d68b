"""`st verify` on a CrossEncoder (a reranker): its own check set, since it gives scores, not embeddings.

The probe pairs are the probe texts (format/probes.py) each paired with the next one: empty, unicode,
code and a text longer than max_length included. Checks, in order (CHECKS): reload, scores (finite, in
the activation's range), batch_invariance (each pair alone against all together, within --atol) and,
with --against, against (sentence-transformers' `CrossEncoder.predict` on this folder, or another
folder's st scores, within --atol).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from st_cli.errors import StError, first_line
from st_cli.format.probes import PROBE_TEXTS
from st_cli.model.cross_encoder import CrossEncoder, load_cross_encoder
from st_cli.verify.base import Check, skip

PROBE_PAIRS = list(zip(PROBE_TEXTS, PROBE_TEXTS[1:] + PROBE_TEXTS[:1], strict=True))
ST_AGAINST = "sentence-transformers"
# The activations whose scores lie in a known range: a score outside it is a broken head or activation.
RANGES = {"Sigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}


@dataclass
class CrossEncoderRun:
    root: Path
    atol: float
    against: str | None
    model: CrossEncoder | None = None
    scores: np.ndarray | None = None


def _reload(run: CrossEncoderRun) -> Check:
    try:
        run.model = load_cross_encoder(run.root)
    except StError as e:
        return Check("reload", "fail", "not loadable", str(e))
    m = run.model
    figure = f"{m.num_labels} label(s), activation {m.activation}, max_length {m.max_length}"
    return Check("reload", "pass", figure, data={"labels": m.num_labels, "activation": m.activation})


def _scores(run: CrossEncoderRun) -> Check:
    assert run.model is not None
    run.scores = run.model.predict(PROBE_PAIRS)
    if not np.isfinite(run.scores).all():
        return Check("scores", "fail", "non-finite scores", "a probe pair scores NaN or inf")
    low, high = RANGES.get(run.model.activation, (-np.inf, np.inf))
    outside = int(((run.scores < low) | (run.scores > high)).sum())
    if outside:
        problem = f"{run.model.activation} gives no such score"
        return Check("scores", "fail", f"{outside} outside [{low}, {high}]", problem)
    return Check("scores", "pass", f"{len(PROBE_PAIRS)} probe pairs, finite", data={"scores": run.scores.tolist()})


def _batch_invariance(run: CrossEncoderRun) -> Check:
    assert run.model is not None and run.scores is not None
    alone = np.stack([run.model.predict([pair])[0] for pair in PROBE_PAIRS])
    problem = "a pair's score depends on the batch it is padded with"
    return _within("batch_invariance", float(np.abs(alone - run.scores).max()), run.atol, problem)


def _against(run: CrossEncoderRun) -> Check:
    assert run.scores is not None and run.against is not None
    if run.against == ST_AGAINST:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise StError("--against sentence-transformers: sentence-transformers is not installed (pip install it)")
        from sentence_transformers import CrossEncoder as STCrossEncoder

        try:
            other = np.asarray(STCrossEncoder(str(run.root), device="cpu").predict(PROBE_PAIRS, batch_size=1))
        except Exception as e:  # noqa: BLE001 - the other loader's failure is the check's finding
            return Check("against", "fail", "sentence-transformers cannot load it", first_line(e))
    else:
        other = load_cross_encoder(run.against).predict(PROBE_PAIRS)
    if other.shape != run.scores.shape:
        shapes = f"shape {other.shape} vs {run.scores.shape}"
        return Check("against", "fail", shapes, "the models give different labels")
    return _within("against", float(np.abs(other - run.scores).max()), run.atol, "scores differ")


def _within(name: str, diff: float, atol: float, problem: str) -> Check:
    if diff <= atol:
        return Check(name, "pass", f"max |Δ| {diff:.2e}", "", {"max_abs_diff": diff})
    return Check(name, "fail", f"max |Δ| {diff:.2e}", problem, {"max_abs_diff": diff})


# The check set of a CrossEncoder folder, in order; a check after a failed reload is skipped.
CHECKS: tuple[tuple[str, Callable[[CrossEncoderRun], Check]], ...] = (
    ("reload", _reload),
    ("scores", _scores),
    ("batch_invariance", _batch_invariance),
    ("against", _against),
)


def run_checks(root: Path, atol: float, against: str | None, status: Callable[[str], None] | None) -> list[Check]:
    run = CrossEncoderRun(root, atol, against)
    checks: list[Check] = []
    for name, check in CHECKS:
        if name == "against" and against is None:
            continue
        if status is not None:
            status(f"check {name}")
        failed = next((c.name for c in checks if c.status == "fail"), None)
        checks.append(skip(name, f"{failed} check failed") if failed else check(run))
    return checks
