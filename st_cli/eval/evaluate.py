"""The evaluation job: `evaluate(model, data, options)` → one `EvalResult` per data path, and the
`--min NAME=VALUE` gate. `EvalResult.to_json()` is what `st eval --json` prints (docs/reference/json.md).
"""

from __future__ import annotations

import difflib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_cli.errors import StError
from st_cli.eval import data as evaldata
from st_cli.eval.embed import EmbedProgress, encode_options
from st_cli.eval.tasks import Context, Task, similarities_for, task_for

if TYPE_CHECKING:
    from st_cli.model.cross_encoder import CrossEncoder
    from st_cli.model.model import Model
    from st_cli.model.runtime import RuntimeEncoder

SCHEMA_VERSION = 1  # of EvalResult.to_json(); keys are only ever added, any other change bumps it


@dataclass(frozen=True)
class EvalOptions:
    """Everything that shapes an evaluation besides the model and the data."""

    similarities: tuple[str, ...] = ()  # besides the model's own
    split: str = "test"  # a BEIR folder's qrels/<split>.tsv
    columns: tuple[str, ...] = ()  # --column ROLE=NAME
    device: str = "cpu"
    trust_remote_code: bool = False
    backend: str = "torch"  # or onnx / openvino: the Transformer's exported file (model/runtime.py)
    backend_file: str | None = None
    dtype: str = "float32"  # bfloat16/float16: faster where the hardware has them, metrics off by rounding


# What `--dtype` takes: float32 computes sentence-transformers' own metrics; a reduced dtype trades that for speed.
EVAL_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class EvalResult:
    model: str
    data: str
    task: str
    n: int
    seconds: float
    metrics: dict[str, float]
    sha256: str
    primary: str  # the metric the summary line shows and `st train --keep best` compares
    split: str | None = None
    similarities: list[str] = field(default_factory=list)
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "model": self.model,
            "data": self.data,
            "task": self.task,
            "n": self.n,
            "seconds": round(self.seconds, 3),
            "metrics": {name: _finite(value) for name, value in self.metrics.items()},
            "primary": self.primary,
            "sha256": self.sha256,
            "split": self.split,
            "dtype": self.dtype,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EvalResult:
        """Back from `to_json()` (a training checkpoint keeps results as JSON)."""
        metrics = {k: float("nan") if v is None else float(v) for k, v in doc["metrics"].items()}
        return cls(
            model=doc["model"], data=doc["data"], task=doc["task"], n=doc["n"], seconds=doc["seconds"],
            metrics=metrics, sha256=doc["sha256"], primary=doc["primary"], split=doc.get("split"),
            dtype=doc.get("dtype", "float32"),
        )  # fmt: skip


def _check_dtype(options: EvalOptions) -> None:
    if options.dtype not in EVAL_DTYPES:
        raise StError(f"--dtype: expected one of {', '.join(EVAL_DTYPES)}, got {options.dtype!r}")
    if options.dtype != "float32" and options.backend != "torch":
        raise StError(f"--dtype {options.dtype}: applies to --backend torch (an exported file has its own precision)")


def _finite(value: float) -> float | None:
    """JSON has no NaN: a correlation over constant scores is null."""
    return None if math.isnan(value) else float(value)


def evaluate(
    model: Model | CrossEncoder | str | os.PathLike[str],
    data: Sequence[str | os.PathLike[str]],
    options: EvalOptions = EvalOptions(),
    *,
    progress: EmbedProgress | None = None,
) -> list[EvalResult]:
    """Evaluate a model (folder, Hub id or Model) on each data path; the task is read from the data's shape."""
    from st_cli.model.model import Model, load_model
    from st_cli.model.runtime import RuntimeEncoder

    if not data:
        raise StError("--data: give at least one file or BEIR folder to evaluate on")
    _check_dtype(options)
    columns = evaldata.parse_columns(options.columns)
    plans = []
    for item in data:  # every path is read and recognised before the model loads
        path = Path(item)
        task = task_for(path, columns)
        plans.append((path, task, task.read(path, columns, options.split)))
    from st_cli.encode.device import resolve_device

    name = "<Model>" if isinstance(model, Model) else str(model)
    if _reranking(plans):
        from st_cli.model.cross_encoder import CrossEncoder, load_cross_encoder

        if isinstance(model, Model):
            raise StError("reranking data needs a CrossEncoder (a reranker), and this is a sentence embedding model")
        if options.backend != "torch":
            raise StError(f"--backend {options.backend}: a CrossEncoder (reranker) runs on torch only")
        device = resolve_device(options.device)
        reranker = model if isinstance(model, CrossEncoder) else load_cross_encoder(model)
        name = str(reranker.folder) if isinstance(model, CrossEncoder) else name
        sims: tuple[str, ...] = ()
        if options.dtype != "float32":
            raise StError(f"--dtype {options.dtype}: a CrossEncoder (reranker) is evaluated in float32")
        ctx = Context(None, sims, encode_options(device), progress, reranker=reranker.to(device))
    else:
        if not isinstance(model, (Model, str, os.PathLike)):  # a CrossEncoder given for embedding tasks
            raise StError("this data needs a sentence embedding model, and this is a CrossEncoder (a reranker)")
        loaded: Model | RuntimeEncoder
        if isinstance(model, Model):
            loaded = model
        else:
            loaded = _load_exported(model, options) or load_model(model, trust_remote_code=options.trust_remote_code)
        sims = similarities_for(loaded, options.similarities)
        device = "cpu" if isinstance(loaded, RuntimeEncoder) else resolve_device(options.device)
        loaded.to(device)
        ctx = Context(loaded, sims, encode_options(device, options.dtype), progress)
    results = []
    for path, task, read in plans:
        started = time.perf_counter()
        metrics = task.run(read, ctx)
        split = options.split if task.name == "retrieval" else None
        results.append(
            EvalResult(
                model=name,
                data=str(path),
                task=task.name,
                n=task.count(read),
                seconds=time.perf_counter() - started,
                metrics=metrics,
                sha256=evaldata.data_sha256(path, split),
                primary=task.primary(sims[0] if sims else ""),
                split=split,
                similarities=list(sims),
                dtype=ctx.options.dtype,
            )
        )
    return results


def _reranking(plans: Sequence[tuple[Path, Task, Any]]) -> bool:
    """Whether the data is for a CrossEncoder (reranking) — all of it, or one line saying to split the run."""
    kinds = {task.kind for _, task, _ in plans}
    if len(kinds) > 1:
        paths = ", ".join(str(path) for path, task, _ in plans if task.kind == "CrossEncoder")
        raise StError(f"{paths}: reranking data is for a CrossEncoder, the rest for an embedding model: evaluate apart")
    return kinds == {"CrossEncoder"}


def _load_exported(model: str | os.PathLike[str], options: EvalOptions) -> RuntimeEncoder | None:
    """The folder on --backend onnx/openvino (or on its exported file when it has no torch weights), as
    st encode loads it; None for torch."""
    from st_cli.encode.options import EncodeOptions
    from st_cli.encode.run import load_exported

    encode_options = EncodeOptions(
        device=options.device,
        backend=options.backend,
        backend_file=options.backend_file,
        trust_remote_code=options.trust_remote_code,
    )
    encode_options.check_backend()
    return load_exported(str(model), encode_options)


# ---------------------------------------------------------------- --min


def parse_minimums(items: Sequence[str]) -> dict[str, float]:
    """`--min spearman_cosine=0.8` → {name: value}; a malformed one is StError (exit 2)."""
    minimums: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            minimums[name] = float(value)
        except ValueError:
            raise StError(f"--min: expected NAME=VALUE (e.g. spearman_cosine=0.8), got {item!r}") from None
    return minimums


def below_minimums(results: Sequence[EvalResult], minimums: dict[str, float]) -> list[str]:
    """One line per metric under its minimum; StError (exit 2) for a name no result has."""
    known = {name for r in results for name in r.metrics}
    for name in minimums:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StError(f"--min: no metric named {name!r}{hint}; metrics: {', '.join(sorted(known))}")
    failures = []
    for result in results:
        for name, minimum in minimums.items():
            value = result.metrics.get(name)
            if value is not None and not (value >= minimum):  # NaN fails too
                failures.append(f"{result.data}: {name} {value:.4f} is below --min {minimum:g}")
    return failures
