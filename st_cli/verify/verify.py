"""`st verify`: reload a saved model, re-encode the probe texts, and report named checks (docs/explanation/design.md).

Each check is pass / fail / skipped with one figure. The report is an API: `VerifyReport.to_json()`
is what `st verify --json` prints, and its keys are documented in docs/reference/json.md.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from st_cli import fsio
from st_cli._version import __version__
from st_cli.errors import ModelFolderError, OutputExistsError, StError
from st_cli.format import hub, kinds, layout
from st_cli.format.manifest import Manifest
from st_cli.format.manifest import read as read_manifest
from st_cli.format.manifest import write as write_manifest
from st_cli.model import resolve
from st_cli.verify.base import Check, Run, label, problem, skip
from st_cli.verify.checks import CHECKS

SCHEMA_VERSION = 1  # of to_json(); keys are only ever added, any other change bumps it


def _looks_like_xml(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(64).lstrip()[:1] in (b"<", b"")


# What --force may replace with a JUnit report: an XML file, never a folder or another file.
JUNIT_REPORT = fsio.Kind("a JUnit XML report", folder=False, looks_right=_looks_like_xml)


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
    allow_untrained: bool = False,
    status: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Run every check on a model folder (or Hub id) and return the report; raises StError for unusable input.

    Args:
        atol: tolerance for the reference, batch-invariance, normalization and against checks.
        against: another folder or Hub id to compare with, or "sentence-transformers" to load this
            folder with sentence-transformers.
        require_portable: fail the portability check unless every loader can read the folder.
        record: write st_manifest.json (atomically) when the folder has none and every check passes.
        allow_untrained: pass the trained check even when a module is still freshly initialised.
        status: told each check as it starts ("check reload"), for a status line.
    """
    root = hub.resolve_model(model)
    if kinds.model_kind(root) == kinds.CROSS_ENCODER:  # scores, not embeddings: its own check set
        return _verify_cross_encoder(model, root, atol, against, record, status)
    kinds.refuse_unless(root, kinds.SENTENCE_TRANSFORMER, shown=str(model))
    if not (root / layout.MODULES_JSON).is_file() and not layout.is_plain_folder(root):
        raise ModelFolderError(f"{root}: {layout.NOT_A_MODEL}")
    recorded, manifest_error = _read_manifest(root)
    if record:
        _check_recordable(model, root)
    names = [spec.name for spec in CHECKS if _applies(spec.name, against, None)]
    try:
        entries = layout.read_modules_json(root)
    except ModelFolderError as e:
        problems = [problem("invalid-json", str(e), layout.MODULES_JSON)]
        broken = Check("layout", "fail", "1 problem(s)", str(e), {"modules": 0, "problems": problems})
        skipped = [skip(name, "layout check failed") for name in names[1:]]
        return VerifyReport(str(model), str(root), atol, recorded is not None, [broken, *skipped])
    _require_trust(root, entries, trust_remote_code)

    run = Run(root, entries, recorded, manifest_error, atol, trust_remote_code)
    run.require_portable, run.against, run.allow_untrained = require_portable, against, allow_untrained
    run.summarize()
    checks = []
    for spec in CHECKS:
        if _applies(spec.name, against, run.summary):
            if status is not None:
                status(f"check {spec.name}")
            checks.append(run.run(spec))
    _point_at_changed_modules(checks, entries)
    report = VerifyReport(str(model), str(root), atol, recorded is not None, checks)
    if record:
        report.recorded = _record(run, report)
    return report


def _verify_cross_encoder(
    model: str | os.PathLike[str],
    root: Path,
    atol: float,
    against: str | None,
    record: bool,
    status: Callable[[str], None] | None,
) -> VerifyReport:
    from st_cli.verify import cross_encoder

    if record:
        raise StError(f"{model}: --record writes an embedding model's probes; a CrossEncoder's are not recorded yet")
    checks = cross_encoder.run_checks(root, atol, against, status)
    return VerifyReport(str(model), str(root), atol, (root / layout.MANIFEST).is_file(), checks)


def _applies(name: str, against: str | None, summary: Any) -> bool:
    """`against` runs only when asked; `active_dims` only for a SparseEncoder (st inspect's `sparse`)."""
    if name == "against":
        return against is not None
    if name == "active_dims":
        return summary is not None and summary.sparse is not None
    return True


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
        labels = ", ".join(label(e) for e in entries if e.idx in changed)
        by_name["reference"].detail += f"; likely cause: changed files in {labels}"


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


# ---------------------------------------------------------------- record


def _record(run: Run, report: VerifyReport) -> str | None:
    """Write st_manifest.json atomically, only for a folder whose checks all passed."""
    if not report.ok or run.model is None:
        return None
    for index in report.check("trained").data.get("default_init", []):  # passed by --allow-untrained: say so
        run.model.steps[index].untrained = True
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
