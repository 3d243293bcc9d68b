"""`st verify --against`: compare a folder with another stack, module by module (docs/explanation/design.md).

The other stack is another st folder or Hub id, or sentence-transformers loading the same folder.
When the outputs differ, each module runs on the same input features in both stacks, and the first
one whose output differs is named.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from st_cli.errors import StError
from st_cli.format import hub, layout
from st_cli.verify.base import Check, label, max_abs, non_finite

if TYPE_CHECKING:
    from st_cli.verify.base import Run

ST_AGAINST = "sentence-transformers"  # `--against sentence-transformers`: the same folder, loaded by ST


@dataclass
class _Stack:
    """Another implementation to compare with: how it prepares inputs, its modules, and its encode."""

    label: str
    prepare: Callable[[list[str], str], dict[str, Any]]
    modules: Sequence[Any]
    types: list[str]
    encode: Callable[[list[str], str], np.ndarray]


def compare_with(run: Run, other: str) -> Check:
    """The `against` check: the probes through both stacks; on a difference, the first module that diverges."""
    assert run.model is not None  # CHECKS: against needs model
    try:
        stack = _sentence_transformers_stack(run) if other == ST_AGAINST else _st_stack(other, run.trust)
    except _STLoadError as e:
        return Check("against", "fail", "does not load", str(e), {"against": ST_AGAINST})
    model, texts, prompt = run.model, run.texts, run.prompt
    ours = model.encode(texts, batch_size=len(texts), prompt=prompt)
    try:
        theirs = stack.encode(texts, prompt)
    except Exception as e:  # noqa: BLE001 - the other stack failing is the finding
        return Check(
            "against", "fail", "cannot encode", f"{stack.label}: {type(e).__name__}: {e}", {"against": stack.label}
        )
    data: dict[str, Any] = {"against": stack.label, "max_abs_diff": None, "first_divergence": None}
    sides = (("st", ours), (stack.label, theirs))
    broken = [f"{who}: {why}" for who, rows in sides if (why := non_finite(rows, texts))]
    if broken:  # NaN is unequal to everything: name it rather than report a NaN difference
        return Check("against", "fail", "NaN or inf outputs", "; ".join(broken), data)
    if ours.shape == theirs.shape:
        data["max_abs_diff"] = diff = max_abs(ours, theirs)
        if diff <= run.atol:
            return Check("against", "pass", f"max |Δ| {diff:.1e}", f"vs {stack.label}", data)
        figure = f"max |Δ| {diff:.1e}"
    else:
        figure = f"shape {list(ours.shape)} vs {list(theirs.shape)}"
    divergence = first_divergence(run, stack)
    data["first_divergence"] = divergence
    where = (
        f"first divergence: {divergence['module']}: {divergence['why']}"
        if divergence
        else "every module agrees on the same inputs; the difference comes from prompts, batching or truncation"
    )
    return Check("against", "fail", figure, f"vs {stack.label}: {where}", data)


def first_divergence(run: Run, stack: _Stack) -> dict[str, Any] | None:
    """Run both stacks module by module, each module on the same input features; the first that differs."""
    import torch

    assert run.model is not None
    model, texts, atol = run.model, run.texts, run.atol
    with torch.inference_mode():
        features = model.tokenize(texts, run.prompt)
        their_features = stack.prepare(texts, run.prompt)
        extras = {k: v for k, v in their_features.items() if not isinstance(v, torch.Tensor)}
        for key in ("input_ids", "attention_mask"):
            if key in features and not _same_tensor(features[key], their_features.get(key)):
                return _divergence(run, 0, f"the tokenizers give different {key}", None)
        for i, module in enumerate(model.stack):
            if i >= len(stack.modules):
                return _divergence(run, i, f"{stack.label} has no module {i}", None)
            if stack.types[i] != _short(run.entries[i]):
                why = f"{stack.label} has {stack.types[i]} here"
                return _divergence(run, i, why, None)
            mine = module(_clone(features))
            try:
                theirs = stack.modules[i](extras | _clone(features))
            except Exception as e:  # noqa: BLE001 - a module that fails on our inputs is where they diverge
                return _divergence(run, i, f"{stack.label} raises {type(e).__name__}: {e}", None)
            diff = _output_diff(mine, theirs)
            if diff > atol:
                return _divergence(run, i, f"max |Δ| {diff:.2e} on the same inputs", diff)
            features = mine
        if len(stack.modules) > len(model.stack):
            return _divergence(run, len(model.stack), f"{stack.label} has {len(stack.modules)} modules", None)
    return None


def _short(entry: layout.ModuleEntry) -> str:
    return entry.short_type or entry.type.rpartition(".")[2]


def _divergence(run: Run, index: int, why: str, diff: float | None) -> dict[str, Any]:
    entry = run.entries[index] if index < len(run.entries) else None
    return {
        "index": index,
        "type": _short(entry) if entry else None,
        "path": entry.path if entry else None,
        "module": label(entry) if entry else f"module {index}",
        "why": why,
        "max_abs_diff": diff,
    }


def _clone(features: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if hasattr(v, "clone") else v for k, v in features.items()}


def _same_tensor(a: Any, b: Any) -> bool:
    return b is not None and tuple(a.shape) == tuple(b.shape) and bool((a == b).all())


def _output_diff(mine: dict[str, Any], theirs: dict[str, Any]) -> float:
    """Max |Δ| of the sentence embeddings, else of the token embeddings where the mask is on."""
    key = "sentence_embedding" if "sentence_embedding" in mine else "token_embeddings"
    a, b = mine.get(key), theirs.get(key)
    if a is None or b is None or tuple(a.shape) != tuple(b.shape):
        return float("inf")
    if key == "token_embeddings" and "attention_mask" in mine:
        keep = mine["attention_mask"].bool()
        a, b = a[keep], b[keep]
    return max_abs(a.float().numpy(), b.float().numpy())


def _st_stack(other: str, trust: bool) -> _Stack:
    from st_cli.model.model import load_model

    model = load_model(other, trust_remote_code=trust)
    entries = layout.read_modules_json(hub.resolve_model(other))
    return _Stack(
        label=str(other),
        prepare=lambda texts, prompt: model.tokenize(texts, prompt),
        modules=list(model.stack),
        types=[_short(e) for e in entries],
        encode=lambda texts, prompt: model.encode(texts, batch_size=len(texts), prompt=prompt),
    )


def _sentence_transformers_stack(run: Run) -> _Stack:
    if importlib.util.find_spec("sentence_transformers") is None:
        raise StError("--against sentence-transformers: sentence-transformers is not installed (pip install it)")
    from sentence_transformers import SentenceTransformer

    try:
        st = SentenceTransformer(str(run.root), device="cpu", trust_remote_code=run.trust)
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        raise _STLoadError(e) from None
    version = importlib.metadata.version("sentence-transformers")
    return _Stack(
        label=f"sentence-transformers {version}",
        prepare=lambda texts, prompt: _st_features(st, texts, prompt),
        modules=list(st),
        types=[type(m).__name__ for m in st],
        encode=lambda texts, prompt: st.encode(
            texts, batch_size=len(texts), prompt=prompt or None, convert_to_numpy=True
        ),
    )


def _st_features(st: Any, texts: list[str], prompt: str) -> dict[str, Any]:
    """sentence-transformers' own input features: `preprocess` in 6.x, `tokenize` before."""
    if hasattr(st, "preprocess"):
        return dict(st.preprocess(texts, prompt=prompt or None))
    return dict(st.tokenize([prompt + t for t in texts]))


class _STLoadError(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(f"sentence-transformers cannot load the folder: {type(error).__name__}: {error}")
