"""What every check of `st verify` shares: the `Check` result, the `Run` they read (folder, manifest,
probes, the loaded model), and the helpers that name a module or compare two sets of embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from st_cli.errors import StError, first_line
from st_cli.format import layout
from st_cli.format.manifest import Manifest
from st_cli.format.probes import PROBE_TEXTS

if TYPE_CHECKING:
    import torch

    from st_cli.format.summary import Finding, ModelSummary
    from st_cli.model.model import Model
    from st_cli.verify.checks import CheckSpec


Status = Literal["pass", "fail", "skipped"]


@dataclass
class Check:
    """One named check: its status, the figure that sums it up, and what went wrong."""

    name: str
    status: Status
    figure: str = ""
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable figures (max_abs_diff, files, ...)


def skip(name: str, why: str) -> Check:
    return Check(name, "skipped", "", why)


def label(entry: layout.ModuleEntry) -> str:
    """`module 2 (Dense, 2_Dense)`: how the report names a module."""
    return f"module {entry.idx} ({entry.short_type or entry.type}, {entry.path or '.'})"


class Run:
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
        self.allow_untrained = False
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
            if need == "layout" and self.results.get("layout", skip("layout", "")).status != "pass":
                return skip(spec.name, "layout check failed")
            if need == "summary" and self.summary is None:
                return skip(spec.name, "layout check failed")
            if need == "manifest" and self.manifest_error:
                return Check(spec.name, "fail", "manifest unreadable", self.manifest_error)
            if need == "manifest" and self.manifest is None:
                return skip(spec.name, f"no {layout.MANIFEST} (st verify --record writes one)")
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
            self._reload = self.load() if layout_ok else skip("reload", "layout check failed")
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
        broken = non_finite(self.raw, self.texts)
        if broken:  # NaN is unequal to itself: the difference below would blame the two loads
            return Check("reload", "fail", "NaN or inf outputs", broken, {"max_abs_diff": None})
        diff = max_abs(self.raw, again)
        status: Status = "pass" if diff == 0 else "fail"
        detail = "" if status == "pass" else "two loads of the same folder give different outputs"
        return Check("reload", status, f"max |Δ| {diff:.1e}", detail, {"max_abs_diff": diff})

    def unloaded(self, name: str) -> Check:
        return skip(name, f"model did not load: {self.load_error}" if self.load_error else "layout check failed")


def non_finite(rows: Any, texts: list[str]) -> str:
    """Which probe's embedding holds NaN or inf (and how many do), or "" when every value is finite."""
    values = np.asarray(rows, dtype=np.float64)
    if not values.size:
        return ""
    bad = np.flatnonzero(~np.isfinite(values).reshape(len(values), -1).all(axis=1))
    if not len(bad):
        return ""
    first = int(bad[0])
    what = "NaN" if np.isnan(values[first]).any() else "inf"
    more = f" ({len(bad)} probes in all)" if len(bad) > 1 else ""
    return f"probe {first} {preview(texts[first])} gives {what} in its embedding{more}"


def max_abs(a: Any, b: Any) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max(initial=0.0))


def problem(code: str, message: str, path: str | None = None) -> dict[str, Any]:
    """A problem as the report lists it: the shape of summary.Finding.to_json()."""
    return {"severity": "error", "code": code, "message": message, "path": path}


def compare_rows(name: str, got: np.ndarray, expected: np.ndarray, run: Run, what: str) -> Check:
    broken = non_finite(got, run.texts) or non_finite(expected, run.texts)
    if broken:
        return Check(name, "fail", "NaN or inf outputs", f"{broken} ({what})", {"max_abs_diff": None})
    rows = np.abs(got.astype(np.float64) - expected.astype(np.float64)).max(axis=1, initial=0.0)
    worst = int(rows.argmax()) if len(rows) else 0
    diff = float(rows.max(initial=0.0))
    status: Status = "pass" if diff <= run.atol else "fail"
    detail = f"worst: probe {worst} {preview(run.texts[worst])}" if len(rows) else ""
    if status == "fail":
        detail = f"max |Δ| {diff:.2e} > atol {run.atol:g} {what}; {detail}"
    data = {"max_abs_diff": diff, "worst_probe": worst, "atol": run.atol}
    return Check(name, status, f"max |Δ| {diff:.1e}", detail, data)


def preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "…")
