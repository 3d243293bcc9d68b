"""The table of `st verify` checks (`CHECKS`): one function per check, each pass / fail / skipped with one
figure, and what it needs before it can run. A new check is a function here and a row in the table.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_cli.errors import StError
from st_cli.format import layout
from st_cli.model import registry
from st_cli.verify.base import Check, Run, Status, compare_rows, label, preview, problem, skip
from st_cli.verify.compare import compare_with

_MODEL_FILES = {layout.MODULES_JSON, layout.MODEL_CONFIG, layout.MODEL_CARD, layout.MANIFEST}


def check_layout(run: Run) -> Check:
    """Configs parse, every type resolves, module folders and weights exist, no path leaves the folder."""
    problems = [f.to_json() for f in run.findings("layout")]
    if run.summary_error:
        problems.append(problem("unreadable", run.summary_error))
    for entry in run.entries:
        problems += _st_problems(run.root, entry)
    n = len(run.entries)
    if problems:
        detail = "; ".join(p["message"] for p in problems)
        return Check("layout", "fail", f"{len(problems)} problem(s)", detail, {"modules": n, "problems": problems})
    return Check("layout", "pass", f"{n} modules", "", {"modules": n, "problems": []})


def _st_problems(root: Path, entry: layout.ModuleEntry) -> list[dict[str, Any]]:
    """What st itself needs beyond the format: the type's code, and a tokenizer for the input module."""
    short, named = entry.short_type, label(entry)
    if short is not None and short not in registry.names():
        return [problem("st-unsupported", f"{entry.type} ({named}) is not supported by st yet", layout.MODULES_JSON)]
    # sentence_transformers.* types are summary's unknown-type; `org/repo--file.Class` comes from the Hub.
    if short is None and not entry.type.startswith("sentence_transformers.") and "--" not in entry.type:
        module_name = entry.type.rpartition(".")[0]
        top = module_name.partition(".")[0]
        found = (root / f"{module_name}.py").is_file() or (top and importlib.util.find_spec(top) is not None)
        if not found:
            message = f"{entry.type} ({named}): no {module_name}.py in the folder, and not importable"
            return [problem("custom-code-missing", message, f"{module_name}.py")]
    return []


def _malformed(check: str, key: str) -> Check:
    return Check(check, "fail", "manifest malformed", f"{layout.MANIFEST}: no {key!r} object")


def check_integrity(run: Run) -> Check:
    """sha256 of every file against the manifest, naming changed, missing and added files."""
    assert run.manifest is not None  # CHECKS: needs manifest
    if run.manifest.files is None:
        return _malformed("integrity", "files")
    try:
        digests = layout.file_digests(run.root)
    except OSError as e:  # an unreadable file is a damaged folder, not a crash
        return Check("integrity", "fail", "unreadable file", f"{e.filename}: cannot read ({e.strerror or e})")
    actual = {k: v for k, v in digests.items() if not _ignored(k)}
    expected = run.manifest.files
    expected = {k: v for k, v in expected.items() if not _ignored(k)}
    changed = sorted(k for k in expected if k in actual and actual[k] != expected[k])
    missing = sorted(k for k in expected if k not in actual)
    added = sorted(k for k in actual if k not in expected)
    data = {"files": len(actual), "changed": changed, "missing": missing, "added": added, "modules": []}
    if not (changed or missing or added):
        return Check("integrity", "pass", f"{len(actual)} files", "", data)
    parts = [
        f"{what}: " + ", ".join(_owned(f, run.entries) for f in files)
        for what, files in (("changed", changed), ("missing", missing), ("added", added))
        if files
    ]
    modules = sorted({m for f in changed + missing + added if (m := _owner(f, run.entries)) is not None})
    data["modules"] = modules
    figure = f"{len(changed)} changed, {len(missing)} missing, {len(added)} added"
    return Check("integrity", "fail", figure, "; ".join(parts), data)


def _ignored(rel: str) -> bool:
    """Python's bytecode cache appears beside custom module code once it has run."""
    return "__pycache__" in rel.split("/")


def _owner(rel: str, entries: list[layout.ModuleEntry]) -> int | None:
    """The index of the module a file belongs to; root files count for a module saved in the root."""
    best: layout.ModuleEntry | None = None
    for entry in entries:
        inside = rel.startswith(entry.path.rstrip("/") + "/") if entry.path else "/" not in rel
        if inside and (best is None or len(entry.path) > len(best.path)):
            best = entry
    if best is None or (not best.path and rel in _MODEL_FILES):
        return None
    return best.idx


def _owned(rel: str, entries: list[layout.ModuleEntry]) -> str:
    idx = _owner(rel, entries)
    entry = next((e for e in entries if e.idx == idx), None)
    return f"{rel} ({label(entry)})" if entry else rel


def check_dimensions(run: Run) -> Check:
    """Configs agree with weight shapes and with each other down the stack, and with what the model gives."""
    assert run.summary is not None  # CHECKS: needs summary
    run.loaded()  # what the model gives, when it loads
    problems = [f.to_json() for f in run.findings("dimensions")]
    widths = [m.output_dim for m in run.summary.modules]
    final = _final_width(run, widths[-1] if widths else None, problems)
    figure = " → ".join("?" if w is None else str(w) for w in widths)
    data = {"widths": widths, "dimension": final, "problems": problems}
    if problems:
        return Check("dimensions", "fail", figure, "; ".join(p["message"] for p in problems), data)
    return Check("dimensions", "pass", figure, "", data)


def _final_width(run: Run, width: int | None, problems: list[dict[str, Any]]) -> int | None:
    """What the model gives, against the configs and the manifest's stored embeddings."""
    truncate = run.summary.truncate_dim if run.summary else None
    if run.raw is not None:
        running = int(run.raw.shape[-1])
        if width is not None and running != width:
            message = f"the stack gives {running}-d embeddings, the configs say {width}"
            problems.append(problem("dimension-mismatch", message))
        width = running
    final = min(truncate, width) if truncate and width else width
    stored = run.manifest.probes.dimension if run.manifest and run.manifest.probes else None
    if final is not None and stored is not None and stored != final:
        message = f"{layout.MANIFEST} stores {stored}-d embeddings, the model gives {final}"
        problems.append(problem("dimension-mismatch", message, layout.MANIFEST))
    return final


def check_reference(run: Run) -> Check:
    """Outputs on the manifest's probes against its stored embeddings."""
    assert run.manifest is not None and run.model is not None  # CHECKS: needs manifest, model
    probes = run.manifest.probes
    if probes is None:
        return _malformed("reference", "probes")
    stored = np.asarray(probes.embeddings, dtype=np.float32)
    try:
        got = run.model.encode(
            run.texts, batch_size=len(run.texts), prompt_name=probes.prompt_name, **run.model.probe_kwargs()
        )
    except StError as e:
        return Check("reference", "fail", "cannot encode the probes", str(e))
    if stored.shape != got.shape:
        detail = f"{layout.MANIFEST} stores embeddings of shape {list(stored.shape)}, the model gives {list(got.shape)}"
        return Check("reference", "fail", "shape differs", detail, {"max_abs_diff": None})
    return compare_rows("reference", got, stored, run, "vs the stored embeddings")


def check_batch_invariance(run: Run) -> Check:
    """Each probe alone vs in one padded batch."""
    assert run.model is not None and run.raw is not None  # CHECKS: needs model
    import torch

    dependent = next((e.spec for e in run.entries if e.spec is not None and e.spec.batch_dependent), None)
    if dependent is not None:
        return skip("batch_invariance", f"{dependent.name}: {dependent.batch_dependent}")
    alone = torch.cat([run.model.embed([text], run.prompt, **run.model.probe_kwargs()) for text in run.texts])
    return compare_rows("batch_invariance", alone.numpy(), run.raw.numpy(), run, "alone vs in a padded batch")


def check_normalization(run: Run) -> Check:
    """Unit norms where the stack ends in Normalize."""
    last = run.entries[-1].spec
    if last is None or not last.normalizes:
        return skip("normalization", "the stack does not end in Normalize")
    if run.raw is None:
        return run.unloaded("normalization")
    norms = np.linalg.norm(run.raw.numpy().astype(np.float64), axis=1)
    # Normalize leaves a zero vector zero (as ST's does): a static model's text with no tokens gives one.
    errors = np.where(norms == 0.0, 0.0, np.abs(norms - 1.0))
    worst = int(errors.argmax())
    status: Status = "pass" if errors[worst] <= run.atol else "fail"
    detail = "" if status == "pass" else f"probe {worst} {preview(run.texts[worst])} has norm {norms[worst]:.6f}"
    figure = f"max |‖e‖−1| {errors[worst]:.1e}"
    return Check("normalization", status, figure, detail, {"max_abs_diff": float(errors[worst]), "worst_probe": worst})


def check_active_dims(run: Run) -> Check:
    """A SparseEncoder's probe vectors: non-zeros per row, none past its max_active_dims (and none negative
    where every sparse module gives relu'd or pooled weights, which the specs cannot promise: not checked)."""
    assert run.model is not None  # CHECKS: needs model
    if not run.model.is_sparse:
        return skip("active_dims", "a SentenceTransformer (dense vectors)")
    try:
        got = run.model.encode(run.texts, batch_size=len(run.texts), **run.model.probe_kwargs())
    except StError as e:
        return Check("active_dims", "fail", "cannot encode the probes", str(e))
    active = (got != 0).sum(axis=1)
    limit, width = run.model.max_active_dims, got.shape[1]
    data = {"max_active": int(active.max(initial=0)), "mean_active": float(active.mean()) if len(active) else 0.0,
            "dimensions": int(width), "max_active_dims": limit}  # fmt: skip
    figure = f"≤ {data['max_active']} of {width} active (mean {data['mean_active']:.1f})"
    worst = int(active.argmax()) if len(active) else 0
    if limit is not None and int(active.max(initial=0)) > limit:
        found = f"{data['max_active']} non-zeros"
        detail = f"probe {worst} {preview(run.texts[worst])} has {found}, max_active_dims is {limit}"
        return Check("active_dims", "fail", figure, detail, data)
    return Check("active_dims", "pass", figure, "", data)


def check_portability(run: Run) -> Check:
    """Which loaders read the folder (st-formats.md §4, §8): a finding, failing only with --require-portable."""
    assert run.summary is not None  # CHECKS: needs summary
    require = run.require_portable
    verdicts = run.summary.loaders
    full = [name for name, v in verdicts.items() if v.status == "yes"]
    figure = f"{len(full)}/{len(verdicts)} loaders"
    notes = [
        f"{name}: {v.status}" + (f" ({'; '.join(v.reasons)})" if v.reasons else "")
        for name, v in verdicts.items()
        if v.status != "yes"
    ]
    status: Status = "fail" if require and len(full) < len(verdicts) else "pass"
    detail = "; ".join(notes) if notes else "every loader reads it: " + ", ".join(verdicts)
    data = {"required": require, "loaders": {name: v.to_json() for name, v in verdicts.items()}}
    return Check("portability", status, figure, detail, data)


def check_trained(run: Run) -> Check:
    """No module is still as it was initialised (--allow-untrained: pass anyway).

    With st_manifest.json: it lists no module as untrained, and no module the recipe added still
    equals what the recipe's seed initialises it to. Without one: no linear layer still has the
    signature of torch's default init (skipped when nothing says a module is untrained).
    """
    if run.manifest_error:
        return Check("trained", "fail", "manifest unreadable", run.manifest_error)
    if run.manifest is None:
        run.loaded()
        fresh = _default_init_linears(run)
        if not fresh:
            why = f"no {layout.MANIFEST}, and no linear layer looks freshly initialised"
            return skip("trained", why if run.model is not None else f"no {layout.MANIFEST} (st verify --record)")
        listed, seeded = [], []
    else:  # the manifest speaks for the weights: no statistical guess
        listed = [i for i in run.manifest.untrained_modules if 0 <= i < len(run.entries)]
        seeded = [i for i in _still_seeded(run) if i not in listed]
        fresh = []
    untrained = sorted(listed + seeded + fresh)
    data = {"untrained_modules": listed, "seeded_init": seeded, "default_init": fresh, "allowed": run.allow_untrained}
    if not untrained:
        return Check("trained", "pass", "no untrained module", "", data)
    names = ", ".join(label(run.entries[i]) for i in untrained)
    reasons: list[str] = []
    if listed:
        indexes = ", ".join(str(i) for i in listed)
        reasons.append(f"{layout.MANIFEST} records {indexes} as freshly initialised, never trained")
    if seeded:
        reasons.append(f"weights of {', '.join(str(i) for i in seeded)} still equal the recipe seed's initialisation")
    if fresh:
        figures = ", ".join(str(i) for i in fresh)
        reasons.append(f"weights of {figures} are uniform in ±1/√in_features, as torch initialises a new nn.Linear")
    figure = f"{len(untrained)} untrained"
    if run.allow_untrained:
        return Check("trained", "pass", f"{figure} (allowed)", f"{names}: allowed by --allow-untrained", data)
    detail = f"{names}: {'; '.join(reasons)}; train it (st train) or pass --allow-untrained"
    return Check("trained", "fail", figure, detail, data)


def _default_init_linears(run: Run) -> list[int]:
    """Modules holding an nn.Linear whose weights still look like torch's default init: every weight
    within ±1/√in_features (kaiming_uniform with a=√5), spread over the whole range with the uniform
    law's spread. Training moves weights past that bound; only layers with 1,024+ weights are judged."""
    if run.model is None:
        return []
    import torch

    found: list[int] = []
    for index, module in enumerate(run.model.steps):
        linear = getattr(module, "linear", None)
        if not isinstance(linear, torch.nn.Linear) or linear.weight.numel() < 1024:
            continue
        weight = linear.weight.detach().double().flatten()
        bound = 1.0 / math.sqrt(linear.in_features)
        spread = float(weight.std()) / (bound / math.sqrt(3.0))
        inside = float(weight.abs().max()) <= bound and (
            linear.bias is None or float(linear.bias.detach().abs().max()) <= bound
        )
        if inside and float(weight.abs().max()) >= 0.95 * bound and abs(spread - 1.0) < 0.05:
            found.append(index)
    return found


def _still_seeded(run: Run) -> list[int]:
    """Modules whose weights equal a fresh build of the manifest's recipe with its seed.

    One-sided: the recipe's own built-in modules are rebuilt in order after seeding, as `st build` does,
    except a Transformer (it loads pretrained weights: not rebuilt, assumed to draw no random numbers)
    and the base model's modules. Where something did draw, nothing matches and nothing is reported.
    Only the model already loaded by the reload check is read.
    """
    recipe = run.manifest.recipe if run.manifest else None
    if run.model is None or not isinstance(recipe, dict) or not isinstance(recipe.get("seed"), int):
        return []
    specs = recipe.get("modules")
    if not isinstance(specs, list) or len(specs) > len(run.model.steps):
        return []
    import torch

    offset = len(run.model.steps) - len(specs)
    found: list[int] = []
    try:
        torch.manual_seed(recipe["seed"])
        for i, spec in enumerate(specs):
            kind = spec.get("type") if isinstance(spec, dict) else None
            if kind == "Transformer":
                continue
            if kind not in registry.names():
                return found  # custom code: what it draws is unknown
            fresh = registry.get(kind)(**{k: v for k, v in spec.items() if k != "type"})
            loaded = run.model.steps[offset + i]
            ours, theirs = fresh.state_dict(), loaded.state_dict()
            if ours and ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours):
                found.append(offset + i)
    except (StError, TypeError, ValueError, OSError, RuntimeError):
        return found  # a recipe this st cannot rebuild: the manifest's list stands alone
    return found


@dataclass(frozen=True)
class ExportBound:
    """How close an exported file must come to the torch model on the probes: float files by max |Δ|,
    int8 files by cosine (their rounding moves every value; the direction is what retrieval reads)."""

    pattern: str  # fnmatch over the file's name
    max_abs: float | None = None
    mean_cosine: float | None = None
    min_cosine: float | None = None

    def holds(self, max_abs: float, mean_cos: float, min_cos: float) -> bool:
        if self.max_abs is not None:
            return max_abs <= self.max_abs
        return mean_cos >= (self.mean_cosine or 0.0) and min_cos >= (self.min_cosine or 0.0)

    def describe(self) -> str:
        if self.max_abs is not None:
            return f"max |Δ| ≤ {self.max_abs:g}"
        return f"mean cos ≥ {self.mean_cosine:g}, min ≥ {self.min_cosine:g}"


# First match wins; sentence-transformers' file names (onnx/model_O3.onnx, model_qint8_avx512_vnni.onnx,
# openvino_model_qint8_quantized.xml). O1–O2 only fuse operators; O3–O4 approximate GELU (and O4 runs
# float16 on GPUs), so they get 1e-3.
EXPORT_BOUNDS = (
    ExportBound("*int8*", mean_cosine=0.99, min_cosine=0.95),
    ExportBound("*_O3.*", max_abs=1e-3),
    ExportBound("*_O4.*", max_abs=1e-3),
    ExportBound("*", max_abs=1e-5),
)


def export_bound(rel: str) -> ExportBound:
    import fnmatch

    name = Path(rel).name
    return next(b for b in EXPORT_BOUNDS if fnmatch.fnmatch(name, b.pattern))


def check_exported(run: Run) -> Check:
    """Every onnx/ and openvino/ file against the torch model on the probes (EXPORT_BOUNDS).

    A runtime that is not installed leaves its files unchecked and says which extra installs it: the
    check is skipped when no file could be checked (a missing extra is the verifying machine's state,
    not the folder's), and names the unchecked files beside a pass or fail otherwise.
    """
    from st_cli.model import runtime

    files = runtime.exported_files(run.root)
    if not files:
        return skip("exported", "no exported files (onnx/, openvino/)")
    assert run.model is not None and run.raw is not None  # CHECKS: needs model
    expected = run.raw.float().numpy().astype(np.float64)
    results: list[dict[str, Any]] = []
    unchecked: dict[str, list[str]] = {}
    for backend, rel in files:
        try:
            runtime.require(backend)
        except StError:
            unchecked.setdefault(backend, []).append(rel)
            continue
        results.append(_compare_exported(run, backend, rel, expected))
    missing = "; ".join(
        f"{', '.join(rels)} not checked: {runtime.RUNTIMES[b].package} is not installed "
        f"(pip install 'st-cli[{runtime.RUNTIMES[b].extra}]')"
        for b, rels in unchecked.items()
    )
    data: dict[str, Any] = {"files": results, "unchecked": [rel for rels in unchecked.values() for rel in rels]}
    if not results:
        return Check("exported", "skipped", "", missing, data)
    failed = [r for r in results if not r["ok"]]
    by_cosine = [r for r in results if "error" not in r and export_bound(r["file"]).max_abs is None]
    by_diff = [r for r in results if "error" not in r and r not in by_cosine]
    parts = [f"{len(results)} files"]
    if by_diff:
        parts.append(f"max |Δ| {max(r['max_abs_diff'] for r in by_diff):.1e}")
    if by_cosine:
        parts.append(f"int8 min cos {min(r['min_cosine'] for r in by_cosine):.5f}")
    figure = ", ".join(parts)
    detail = "; ".join(
        f"{r['file']}: {r['error']}"
        if "error" in r
        else f"{r['file']}: max |Δ| {r['max_abs_diff']:.2e}, mean cos {r['mean_cosine']:.5f}, "
        f"min cos {r['min_cosine']:.5f}; needs {r['bound']}"
        for r in failed
    )
    detail = "; ".join(part for part in (detail, missing) if part)
    return Check("exported", "fail" if failed else "pass", figure, detail, data)


def _compare_exported(run: Run, backend: str, rel: str, expected: np.ndarray) -> dict[str, Any]:
    from st_cli.model import runtime

    bound = export_bound(rel)
    entry: dict[str, Any] = {"file": rel, "backend": backend, "bound": bound.describe()}
    assert run.model is not None
    try:
        encoder = runtime.load(run.root, backend, rel, trust_remote_code=run.trust)
        with encoder.thread_count():
            got = encoder.embed(run.texts, run.prompt, **run.model.probe_kwargs()).astype(np.float64)
    except StError as e:
        return entry | {"ok": False, "error": str(e)}
    if got.shape != expected.shape:
        return entry | {"ok": False, "error": f"gives shape {list(got.shape)}, torch {list(expected.shape)}"}
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    cosines = np.einsum("ij,ij->i", got, expected) / np.maximum(norms, 1e-12)
    max_abs, mean_cos, min_cos = (
        float(np.abs(got - expected).max(initial=0.0)),
        float(cosines.mean()),
        float(cosines.min()),
    )
    ok = bool(np.isfinite(got).all()) and bound.holds(max_abs, mean_cos, min_cos)
    return entry | {"ok": ok, "max_abs_diff": max_abs, "mean_cosine": mean_cos, "min_cosine": min_cos}


def check_against(run: Run) -> Check:
    """--against: another folder, a Hub id, or sentence-transformers loading this folder (compare.py)."""
    assert run.against is not None
    return compare_with(run, run.against)


@dataclass(frozen=True)
class CheckSpec:
    """A row of CHECKS: the check's name, its function, and what it needs before it can run.

    needs: "layout" (the layout check passed), "summary" (inspect could read the folder), "manifest"
    (st_manifest.json readable: else fail; absent: skipped), "model" (the reload check loaded it).
    """

    name: str
    function: Callable[[Run], Check]
    needs: tuple[str, ...] = ()


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("layout", check_layout),
    CheckSpec("integrity", check_integrity, needs=("manifest",)),
    CheckSpec("dimensions", check_dimensions, needs=("layout", "summary")),
    CheckSpec("reload", Run.loaded),
    CheckSpec("reference", check_reference, needs=("manifest", "model")),
    CheckSpec("batch_invariance", check_batch_invariance, needs=("model",)),
    CheckSpec("active_dims", check_active_dims, needs=("model",)),  # skipped for a dense model
    CheckSpec("normalization", check_normalization),  # skipped without a final Normalize, before any load
    CheckSpec("portability", check_portability, needs=("summary",)),
    CheckSpec("trained", check_trained),  # reads the manifest, or without one the weights (docs/reference/checks.md)
    CheckSpec("exported", check_exported, needs=("model",)),  # onnx/, openvino/ against torch
    CheckSpec("against", check_against, needs=("model",)),  # only with --against
)
