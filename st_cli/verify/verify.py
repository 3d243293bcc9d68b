"""`st verify`: reload a saved model, re-encode the probe texts, and report named checks (DESIGN.md §6).

Each check is pass / fail / skipped with one figure. The report is an API: `VerifyReport.to_json()`
is what `st verify --json` prints, and its keys are documented in the README.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from st_cli import fsio
from st_cli._version import __version__
from st_cli.errors import ModelFolderError, OutputExistsError, StError, first_line
from st_cli.format import hub, layout
from st_cli.format.manifest import Manifest
from st_cli.format.manifest import read as read_manifest
from st_cli.format.manifest import write as write_manifest
from st_cli.format.probes import PROBE_TEXTS
from st_cli.model import registry, resolve

if TYPE_CHECKING:
    import torch

    from st_cli.format.summary import Finding, ModelSummary
    from st_cli.model.model import Model

SCHEMA_VERSION = 1  # of to_json(); keys are only ever added, any other change bumps it
Status = Literal["pass", "fail", "skipped"]
_MODEL_FILES = {layout.MODULES_JSON, layout.MODEL_CONFIG, layout.MODEL_CARD, layout.MANIFEST}


@dataclass
class Check:
    """One named check: its status, the figure that sums it up, and what went wrong."""

    name: str
    status: Status
    figure: str = ""
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable figures (max_abs_diff, files, ...)


@dataclass
class VerifyReport:
    """What `verify_model` found: `ok` unless a check failed (a skipped check does not fail)."""

    model: str
    path: str
    atol: float
    manifest: bool
    checks: list[Check]
    recorded: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skipped")}

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "st_cli": __version__,
            "model": self.model,
            "path": self.path,
            "ok": self.ok,
            "atol": self.atol,
            "manifest": self.manifest,
            "recorded": self.recorded,
            "counts": self.counts(),
            "checks": [asdict(c) for c in self.checks],
        }

    def to_junit(self) -> str:
        """JUnit XML: one testsuite, one testcase per check."""
        counts = self.counts()
        suites = ET.Element("testsuites")
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"st verify {self.model}",
            tests=str(len(self.checks)),
            failures=str(counts["fail"]),
            skipped=str(counts["skipped"]),
            errors="0",
        )
        for check in self.checks:
            case = ET.SubElement(suite, "testcase", classname="st.verify", name=check.name)
            if check.status == "fail":
                ET.SubElement(case, "failure", message=check.figure).text = check.detail
            elif check.status == "skipped":
                ET.SubElement(case, "skipped", message=check.detail or check.figure)
            else:
                ET.SubElement(case, "system-out").text = " — ".join(x for x in (check.figure, check.detail) if x)
        ET.indent(suites)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"

    def write_junit(self, path: str | os.PathLike[str] | fsio.Claim, *, force: bool = False) -> None:
        """Write `to_junit()` to a file (temporary name, then a rename that replaces only with force).

        Pass the fsio.Claim taken before the checks ran, so --force replaces only what existed then.
        """
        target = path.path if isinstance(path, fsio.Claim) else Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fsio.write_text_atomic(path, self.to_junit(), force=force)
        except OSError as e:
            raise StError(f"{target}: cannot write the JUnit report ({e.strerror or e})") from None


def verify_model(
    model: str | os.PathLike[str],
    *,
    atol: float = 1e-5,
    against: str | None = None,
    trust_remote_code: bool = False,
    require_portable: bool = False,
    record: bool = False,
) -> VerifyReport:
    """Run every check on a model folder (or Hub id) and return the report; raises StError for unusable input.

    Args:
        atol: tolerance for the reference, batch-invariance, normalization and against checks.
        against: another folder or Hub id to compare with, or "sentence-transformers" to load this
            folder with sentence-transformers.
        require_portable: fail the portability check unless every loader can read the folder.
        record: write st_manifest.json (atomically) when the folder has none and every check passes.
    """
    root = hub.resolve_model(model)
    if not (root / layout.MODULES_JSON).is_file() and not layout.is_plain_folder(root):
        raise ModelFolderError(f"{root}: no {layout.MODULES_JSON}; not a sentence-transformers model folder")
    recorded, manifest_error = _read_manifest(root)
    if record:
        _check_recordable(model, root)
    names = [spec.name for spec in CHECKS if spec.name != "against" or against is not None]
    try:
        entries = layout.read_modules_json(root)
    except ModelFolderError as e:
        problems = [_problem("invalid-json", str(e), layout.MODULES_JSON)]
        broken = Check("layout", "fail", "1 problem(s)", str(e), {"modules": 0, "problems": problems})
        skipped = [_skip(name, "layout check failed") for name in names[1:]]
        return VerifyReport(str(model), str(root), atol, recorded is not None, [broken, *skipped])
    _require_trust(root, entries, trust_remote_code)

    run = _Run(root, entries, recorded, manifest_error, atol, trust_remote_code)
    run.require_portable, run.against = require_portable, against
    run.summarize()
    checks = [run.run(spec) for spec in CHECKS if spec.name in names]
    _point_at_changed_modules(checks, entries)
    report = VerifyReport(str(model), str(root), atol, recorded is not None, checks)
    if record:
        report.recorded = _record(run, report)
    return report


def _check_recordable(model: str | os.PathLike[str], root: Path) -> None:
    """--record writes only into a folder the user named, never into a Hub cache or a package, and never twice."""
    if not Path(model).expanduser().is_dir():
        raise StError(f"{model}: --record needs a local folder, not a Hub cache or package copy; copy {root} first")
    if (root / layout.MANIFEST).exists():
        raise OutputExistsError(f"{root / layout.MANIFEST}: already exists; delete it to record a new one")


def _point_at_changed_modules(checks: list[Check], entries: list[layout.ModuleEntry]) -> None:
    """A reference failure names the modules whose files changed, when integrity found any."""
    by_name = {c.name: c for c in checks}
    changed = by_name["integrity"].data.get("modules") or []
    if by_name["reference"].status == "fail" and changed:
        labels = ", ".join(_label(e) for e in entries if e.idx in changed)
        by_name["reference"].detail += f"; likely cause: changed files in {labels}"


def _skip(name: str, why: str) -> Check:
    return Check(name, "skipped", "", why)


def _read_manifest(root: Path) -> tuple[Manifest | None, str | None]:
    try:
        return read_manifest(root), None
    except ModelFolderError as e:
        return None, str(e)


def _require_trust(root: Path, entries: list[layout.ModuleEntry], trust_remote_code: bool) -> None:
    """Refuse, before anything runs, a stack with custom module code the user has not trusted."""
    if not trust_remote_code:
        for entry in entries:
            # An unknown sentence_transformers.* type is not custom code: the layout check reports it.
            if entry.short_type is None and not entry.type.startswith("sentence_transformers."):
                resolve.load_custom_class(entry.type, root, trust_remote_code=False)  # raises TrustError


def _label(entry: layout.ModuleEntry) -> str:
    """`module 2 (Dense, 2_Dense)`: how the report names a module."""
    return f"module {entry.idx} ({entry.short_type or entry.type}, {entry.path or '.'})"


class _Run:
    """What the checks share: the folder, its manifest, the probe texts, and the loaded model."""

    def __init__(
        self,
        root: Path,
        entries: list[layout.ModuleEntry],
        manifest: Manifest | None,
        manifest_error: str | None,
        atol: float,
        trust_remote_code: bool,
    ) -> None:
        self.root, self.entries, self.atol, self.trust = root, entries, atol, trust_remote_code
        self.manifest, self.manifest_error = manifest, manifest_error
        self.texts: list[str] = list(manifest.probes.texts) if manifest and manifest.probes else list(PROBE_TEXTS)
        self.require_portable = False
        self.against: str | None = None
        self.results: dict[str, Check] = {}  # the checks run so far, by name
        self.model: Model | None = None
        self.prompt = ""
        self.raw: torch.Tensor | None = None  # the probes' embeddings in one padded batch, before truncation
        self.load_error: str | None = None
        self.summary: ModelSummary | None = None
        self.summary_error: str | None = None
        self._reload: Check | None = None

    def run(self, spec: CheckSpec) -> Check:
        """One row of CHECKS: skipped (or failed, for an unreadable manifest) when what it needs is missing."""
        result = self.unmet(spec) or spec.function(self)
        self.results[spec.name] = result
        return result

    def unmet(self, spec: CheckSpec) -> Check | None:
        for need in spec.needs:
            if need == "layout" and self.results.get("layout", _skip("layout", "")).status != "pass":
                return _skip(spec.name, "layout check failed")
            if need == "summary" and self.summary is None:
                return _skip(spec.name, "layout check failed")
            if need == "manifest" and self.manifest_error:
                return Check(spec.name, "fail", "manifest unreadable", self.manifest_error)
            if need == "manifest" and self.manifest is None:
                return _skip(spec.name, f"no {layout.MANIFEST} (st verify --record writes one)")
            if need == "model" and (self.loaded() and self.model is None):
                return self.unloaded(spec.name)
        return None

    def summarize(self) -> None:
        """What `st inspect` sees: JSON files and safetensors headers, no code run."""
        from st_cli.format.summary import summarize

        try:
            self.summary = summarize(str(self.root))
        except StError as e:
            self.summary_error = str(e)

    def findings(self, check: str) -> list[Finding]:
        """Error and warning findings that fail this check (summary.FINDING_CHECKS; info never fails one)."""
        found = self.summary.findings if self.summary else []
        return [f for f in found if f.check == check and f.severity != "info"]

    def loaded(self) -> Check:
        """The reload check, run once: the first check that needs the model loads it (only if layout passed)."""
        if self._reload is None:
            layout_ok = self.results.get("layout") is not None and self.results["layout"].status == "pass"
            self._reload = self.load() if layout_ok else _skip("reload", "layout check failed")
        return self._reload

    def load(self) -> Check:
        """Load the folder twice and run the probes through both; keeps the first load for the checks that follow."""
        from st_cli.model.model import load_model

        try:
            first = load_model(self.root, trust_remote_code=self.trust)
            second = load_model(self.root, trust_remote_code=self.trust)
            self.prompt = first.resolve_prompt()
        except StError as e:
            self.load_error = str(e)
            return Check("reload", "fail", "does not load", str(e))
        try:
            self.raw = first.embed(self.texts, self.prompt, **first.probe_kwargs())
            again = second.embed(self.texts, self.prompt, **second.probe_kwargs())
        except Exception as e:  # noqa: BLE001 - a folder whose stack cannot run (e.g. widths that do not chain)
            self.raw, self.load_error = None, f"running the stack failed: {type(e).__name__}: {first_line(e)}"
            return Check("reload", "fail", "does not run", self.load_error)
        self.model = first
        diff = _max_abs(self.raw, again)
        status: Status = "pass" if diff == 0 else "fail"
        detail = "" if status == "pass" else "two loads of the same folder give different outputs"
        return Check("reload", status, f"max |Δ| {diff:.1e}", detail, {"max_abs_diff": diff})

    def unloaded(self, name: str) -> Check:
        return _skip(name, f"model did not load: {self.load_error}" if self.load_error else "layout check failed")


def _max_abs(a: Any, b: Any) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max(initial=0.0))


# ---------------------------------------------------------------- layout


def check_layout(run: _Run) -> Check:
    """Configs parse, every type resolves, module folders and weights exist, no path leaves the folder."""
    problems = [f.to_json() for f in run.findings("layout")]
    if run.summary_error:
        problems.append(_problem("unreadable", run.summary_error))
    for entry in run.entries:
        problems += _st_problems(run.root, entry)
    n = len(run.entries)
    if problems:
        detail = "; ".join(p["message"] for p in problems)
        return Check("layout", "fail", f"{len(problems)} problem(s)", detail, {"modules": n, "problems": problems})
    return Check("layout", "pass", f"{n} modules", "", {"modules": n, "problems": []})


def _problem(code: str, message: str, path: str | None = None) -> dict[str, Any]:
    """A problem as the report lists it: the shape of summary.Finding.to_json()."""
    return {"severity": "error", "code": code, "message": message, "path": path}


def _st_problems(root: Path, entry: layout.ModuleEntry) -> list[dict[str, Any]]:
    """What st itself needs beyond the format: the type's code, and a tokenizer for the input module."""
    short, label = entry.short_type, _label(entry)
    if short is not None and short not in registry.names():
        return [_problem("st-unsupported", f"{entry.type} ({label}) is not supported by st yet", layout.MODULES_JSON)]
    # sentence_transformers.* types are summary's unknown-type; `org/repo--file.Class` comes from the Hub.
    if short is None and not entry.type.startswith("sentence_transformers.") and "--" not in entry.type:
        module_name = entry.type.rpartition(".")[0]
        top = module_name.partition(".")[0]
        found = (root / f"{module_name}.py").is_file() or (top and importlib.util.find_spec(top) is not None)
        if not found:
            message = f"{entry.type} ({label}): no {module_name}.py in the folder, and not importable"
            return [_problem("custom-code-missing", message, f"{module_name}.py")]
    return []


# ---------------------------------------------------------------- integrity


def _malformed(check: str, key: str) -> Check:
    return Check(check, "fail", "manifest malformed", f"{layout.MANIFEST}: no {key!r} object")


def check_integrity(run: _Run) -> Check:
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
    return f"{rel} ({_label(entry)})" if entry else rel


# ---------------------------------------------------------------- dimensions


def check_dimensions(run: _Run) -> Check:
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


def _final_width(run: _Run, width: int | None, problems: list[dict[str, Any]]) -> int | None:
    """What the model gives, against the configs and the manifest's stored embeddings."""
    truncate = run.summary.truncate_dim if run.summary else None
    if run.raw is not None:
        running = int(run.raw.shape[-1])
        if width is not None and running != width:
            message = f"the stack gives {running}-d embeddings, the configs say {width}"
            problems.append(_problem("dimension-mismatch", message))
        width = running
    final = min(truncate, width) if truncate and width else width
    stored = run.manifest.probes.dimension if run.manifest and run.manifest.probes else None
    if final is not None and stored is not None and stored != final:
        message = f"{layout.MANIFEST} stores {stored}-d embeddings, the model gives {final}"
        problems.append(_problem("dimension-mismatch", message, layout.MANIFEST))
    return final


# ---------------------------------------------------------------- outputs


def check_reference(run: _Run) -> Check:
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
    return _compare("reference", got, stored, run, "vs the stored embeddings")


def check_batch_invariance(run: _Run) -> Check:
    """Each probe alone vs in one padded batch."""
    assert run.model is not None and run.raw is not None  # CHECKS: needs model
    import torch

    dependent = next((e.spec for e in run.entries if e.spec is not None and e.spec.batch_dependent), None)
    if dependent is not None:
        return _skip("batch_invariance", f"{dependent.name}: {dependent.batch_dependent}")
    alone = torch.cat([run.model.embed([text], run.prompt, **run.model.probe_kwargs()) for text in run.texts])
    return _compare("batch_invariance", alone.numpy(), run.raw.numpy(), run, "alone vs in a padded batch")


def check_normalization(run: _Run) -> Check:
    """Unit norms where the stack ends in Normalize."""
    last = run.entries[-1].spec
    if last is None or not last.normalizes:
        return _skip("normalization", "the stack does not end in Normalize")
    if run.raw is None:
        return run.unloaded("normalization")
    norms = np.linalg.norm(run.raw.numpy().astype(np.float64), axis=1)
    # Normalize leaves a zero vector zero (as ST's does): a static model's text with no tokens gives one.
    errors = np.where(norms == 0.0, 0.0, np.abs(norms - 1.0))
    worst = int(errors.argmax())
    status: Status = "pass" if errors[worst] <= run.atol else "fail"
    detail = "" if status == "pass" else f"probe {worst} {_preview(run.texts[worst])} has norm {norms[worst]:.6f}"
    figure = f"max |‖e‖−1| {errors[worst]:.1e}"
    return Check("normalization", status, figure, detail, {"max_abs_diff": float(errors[worst]), "worst_probe": worst})


def _compare(name: str, got: np.ndarray, expected: np.ndarray, run: _Run, what: str) -> Check:
    rows = np.abs(got.astype(np.float64) - expected.astype(np.float64)).max(axis=1, initial=0.0)
    worst = int(rows.argmax()) if len(rows) else 0
    diff = float(rows.max(initial=0.0))
    status: Status = "pass" if diff <= run.atol else "fail"
    detail = f"worst: probe {worst} {_preview(run.texts[worst])}" if len(rows) else ""
    if status == "fail":
        detail = f"max |Δ| {diff:.2e} > atol {run.atol:g} {what}; {detail}"
    data = {"max_abs_diff": diff, "worst_probe": worst, "atol": run.atol}
    return Check(name, status, f"max |Δ| {diff:.1e}", detail, data)


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "…")


# ---------------------------------------------------------------- portability


def check_portability(run: _Run) -> Check:
    """Which loaders read the folder (FORMAT.md §4, §8): a finding, failing only with --require-portable."""
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


# ---------------------------------------------------------------- against


def check_against(run: _Run) -> Check:
    """--against: another folder, a Hub id, or sentence-transformers loading this folder (compare.py)."""
    from st_cli.verify.compare import compare_with

    assert run.against is not None
    return compare_with(run, run.against)


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class CheckSpec:
    """A row of CHECKS: the check's name, its function, and what it needs before it can run.

    needs: "layout" (the layout check passed), "summary" (inspect could read the folder), "manifest"
    (st_manifest.json readable: else fail; absent: skipped), "model" (the reload check loaded it).
    """

    name: str
    function: Callable[[_Run], Check]
    needs: tuple[str, ...] = ()


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("layout", check_layout),
    CheckSpec("integrity", check_integrity, needs=("manifest",)),
    CheckSpec("dimensions", check_dimensions, needs=("layout", "summary")),
    CheckSpec("reload", _Run.loaded),
    CheckSpec("reference", check_reference, needs=("manifest", "model")),
    CheckSpec("batch_invariance", check_batch_invariance, needs=("model",)),
    CheckSpec("normalization", check_normalization),  # skipped without a final Normalize, before any load
    CheckSpec("portability", check_portability, needs=("summary",)),
    CheckSpec("against", check_against, needs=("model",)),  # only with --against
)


# ---------------------------------------------------------------- record


def _record(run: _Run, report: VerifyReport) -> str | None:
    """Write st_manifest.json atomically, only for a folder whose checks all passed."""
    if not report.ok or run.model is None:
        return None
    # format None: not written by `st build`, so no --format profile applies
    recorded = run.model.build_manifest(
        run.root, None, None, dialect=layout.dialect(run.entries), recorded_by="st verify --record"
    )
    target = run.root / layout.MANIFEST
    try:
        write_manifest(run.root, recorded)
    except OSError as e:
        raise StError(f"{target}: cannot write ({e.strerror or e})") from None
    for name in ("integrity", "reference"):
        check = report.check(name)
        check.detail = f"no {layout.MANIFEST} before this run; recorded one for the next run"
    return str(target)
