"""`st eval --record`: the results go into the folder's st_manifest.json (`evaluations`) and a metrics
table in its model card (README.md), and the manifest's digest of README.md follows the card, so
`st verify`'s integrity check keeps passing. Nothing else in the folder changes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from st_cli import fsio
from st_cli._version import __version__
from st_cli.errors import StError
from st_cli.eval.data import display_name
from st_cli.eval.evaluate import EvalResult
from st_cli.format import layout

CARD_START = "<!-- st eval: start -->"
CARD_END = "<!-- st eval: end -->"


def check_recordable(folder: str | Path) -> Path:
    """The manifest --record will change; refused (before any evaluation) without a local folder and manifest."""
    root = Path(folder)
    manifest_path = root / layout.MANIFEST
    if not root.is_dir() or not manifest_path.is_file():
        raise StError(f"{root}: --record needs a local folder with {layout.MANIFEST} (st verify --record writes one)")
    return manifest_path


def record(folder: str | Path, results: Sequence[EvalResult]) -> Path:
    """Add `results` to the folder's manifest and model card; returns the manifest's path."""
    root = Path(folder)
    manifest_path = check_recordable(root)
    raw = layout.read_json(manifest_path)
    if not isinstance(raw, dict):
        raise StError(f"{manifest_path}: expected a JSON object")
    files = raw.get("files") if isinstance(raw.get("files"), dict) else None
    card = root / layout.MODEL_CARD
    if files is not None and card.is_file() and files.get(layout.MODEL_CARD) != layout.sha256_file(card):
        raise StError(f"{card}: changed since {layout.MANIFEST} was written; st verify names what changed")
    entries = [e for e in raw.get("evaluations") or [] if isinstance(e, dict)]
    for result in results:
        entry = _entry(result)
        entries = [e for e in entries if (e.get("data"), e.get("sha256")) != (entry["data"], entry["sha256"])]
        entries.append(entry)
    raw["evaluations"] = entries
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    fsio.write_text_atomic(card, with_metrics_table(text, entries), force=True)
    if files is not None:
        files[layout.MODEL_CARD] = layout.sha256_file(card)
    fsio.write_text_atomic(manifest_path, json.dumps(raw, indent=2, ensure_ascii=False) + "\n", force=True)
    return manifest_path


def _entry(result: EvalResult) -> dict[str, Any]:
    doc = result.to_json()
    return {
        "data": display_name(result.data),
        "sha256": result.sha256,
        "task": result.task,
        "split": result.split,
        "n": result.n,
        "primary": result.primary,
        "metrics": doc["metrics"],
        "dtype": result.dtype,
        "st_cli": __version__,
    }


def with_metrics_table(card: str, entries: list[dict[str, Any]]) -> str:
    """The card with its `st eval` section replaced (or appended): one table per data file."""
    lines = [CARD_START, "## Evaluation", "", "Recorded by `st eval --record`.", ""]
    for entry in entries:
        split = f", split `{entry['split']}`" if entry.get("split") else ""
        lines += [
            f"### {entry['data']} ({entry['task']}, n={entry['n']}{split})",
            "",
            f"sha256 `{entry['sha256']}`",
            "",
            "| Metric | Value |",
            "|---|---|",
        ]
        for name, value in entry["metrics"].items():
            shown = "n/a" if value is None else f"{value:.4f}"
            lines.append(f"| {'**' + name + '**' if name == entry['primary'] else name} | {shown} |")
        lines.append("")
    section = "\n".join(lines) + CARD_END + "\n"
    if CARD_START in card and CARD_END in card:
        before, _, rest = card.partition(CARD_START)
        _, _, after = rest.partition(CARD_END)
        return before + section + after.lstrip("\n")
    return card.rstrip("\n") + ("\n\n" if card.strip() else "") + section
