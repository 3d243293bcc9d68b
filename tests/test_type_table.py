"""The cross-version table: every registered module type × every sentence-transformers version that reads it.

For each type, st builds its spec's `example` stack (seeded random init over the tiny BERT) and saves it
`--format portable` (and `st6` for ST 6.2). One subprocess per version (tests/compat/save_roundtrip.py, which
knows no module type) loads every folder with that version, encodes tests/texts.py and re-saves the model
with that version's own `save()`. Then, per type and version:

(a) that version's embeddings of st's folder equal st's within 1e-6;
(b) st loads the version-saved folder and gives that version's embeddings within 1e-6.

Which versions read a type comes from its spec (`since`, `st6_type_since`, `since_by_type`, `fails_in`):
a version that cannot read the stack is skipped with the spec's reason, never silently. A new type is in
the table as soon as it is registered with an `example`. `st inspect`'s widths for every example are
checked in a process where torch cannot be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

import st_cli
from st_cli.format import layout
from st_cli.format.spec import version_tuple
from st_cli.format.specs.transformer import LOAD_ARGS_SINCE
from st_cli.model import registry
from st_cli.model.recipe import load_recipe
from tests.texts import COMPARE_TEXTS

VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
SCRIPT = Path(__file__).parent / "compat" / "save_roundtrip.py"
# venv name → the sentence-transformers version in it; "st62" is the main venv (this interpreter).
VERSIONS = {"st22": "2.2.2", "st27": "2.7.0", "st34": "3.4.1", "st41": "4.1.0", "st57": "5.7.0", "st62": "6.2.0"}
FORMATS_BY_VERSION: dict[str, tuple[layout.Format, ...]] = {v: ("portable",) for v in VERSIONS} | {
    "st62": ("portable", "st6")
}
COLUMNS = [(v, fmt) for v, fmts in FORMATS_BY_VERSION.items() for fmt in fmts]
NAMES = registry.names()
# Both sides batch the texts alike (longest first, this many rows): padding reaches a CNN's outputs.
BATCH_SIZE = 16
# Across transformers versions the low bits differ (docs/reference/st-formats.md §4: 3.5e-7 between groups).
ATOL = 1e-6


def _python(version: str) -> Path | None:
    if version == "st62":
        return Path(sys.executable)
    python = VENVS / version / "bin" / "python"
    return python if python.is_file() else None


@dataclass
class Cell:
    """One type × version × format: why it is skipped, or the folders and vectors to compare."""

    skip: str | None = None
    folder: Path | None = None  # st's save
    ours: np.ndarray | None = None  # st's embeddings of `folder`
    theirs: Path | None = None  # that version's embeddings of `folder` (.npy)
    resaved: Path | None = None  # that version's save of the loaded model
    error: str | None = None  # what that version raised


@dataclass
class Table:
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    folders: dict[tuple[str, str], Path] = field(default_factory=dict)  # (name, fmt) → st's folder
    planned: dict[str, list[int | None]] = field(default_factory=dict)  # name → planned output widths


def _tiny_clip(folder: Path) -> Path:
    from tests.compat.tiny_clip import make_tiny_clip

    target = folder / "tiny_clip"
    return target if target.is_dir() else make_tiny_clip(target)


def _tiny_bert_mlm(folder: Path) -> Path:
    from tests.compat.tiny_mlm import make_tiny_bert_mlm

    target = folder / "tiny_bert_mlm"
    return target if target.is_dir() else make_tiny_bert_mlm(target)


# Placeholders an `example` may use, each a function of the work folder (made only when used).
PLACEHOLDERS = {"{tiny_clip}": _tiny_clip, "{tiny_bert_mlm}": _tiny_bert_mlm}


def example_recipe(name: str, tiny_bert: Path, folder: Path) -> Path:
    """The spec's `example` stack as a recipe file ("{tiny_bert}" → the tiny BERT folder, and PLACEHOLDERS)."""
    spec = registry.spec(name)
    assert spec.example, f"{name}: its spec (st_cli/format/specs/) has no `example` stack"
    text = json.dumps({"seed": 3, "modules": list(spec.example)}).replace("{tiny_bert}", str(tiny_bert))
    for placeholder, make in PLACEHOLDERS.items():
        if placeholder in text:
            text = text.replace(placeholder, str(make(folder)))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(json.loads(text)), encoding="utf-8")
    return path


def unreadable_reason(name: str, version: str, fmt: layout.Format) -> str | None:
    """Why this sentence-transformers version cannot read the example stack in this format, from the specs."""
    release = version_tuple(VERSIONS[version])
    for module in registry.spec(name).example:
        spec = registry.spec(module["type"])
        type_string = spec.type_string(fmt)
        first = spec.first_version(type_string)
        if release < version_tuple(first):
            return f"{spec.name}: {type_string} exists only in ST >= {first}"
        for prefix, reason in spec.fails_in.items():
            if VERSIONS[version] == prefix or VERSIONS[version].startswith(prefix + "."):
                return f"{spec.name} in ST {VERSIONS[version]}: {reason}"
    return None


def missing_types(name: str) -> list[str]:
    known = set(registry.names())
    return [m["type"] for m in registry.spec(name).example if m["type"] not in known]


def _build_examples(table: Table, tiny_bert: Path, root: Path) -> dict[tuple[str, str], np.ndarray]:
    ours = {}
    for name in NAMES:
        if missing_types(name):
            continue
        recipe = example_recipe(name, tiny_bert, root)
        table.planned[name] = [p.output_dim for p in load_recipe(recipe).modules]
        for fmt in layout.FORMATS:
            model, folder = st_cli.build(recipe, root / fmt / name, format=fmt)
            table.folders[name, fmt] = folder
            ours[name, fmt] = model.encode(COMPARE_TEXTS, batch_size=BATCH_SIZE)
    return ours


# sentence_bert_config.json keys that hand arguments to transformers (format/specs/transformer.py): each is
# added to the Transformer example's portable folder (without max_seq_length, so the tokenizer's limit
# decides), and every version that reads the key (LOAD_ARGS_SINCE) must give st's vectors. All but
# model_args change the vectors (checked below), so a loader that ignored them would fail.
LOAD_ARG_CASES: dict[str, dict[str, dict]] = {
    "tokenizer_args": {"tokenizer_args": {"model_max_length": 6}},
    "config_args": {"config_args": {"hidden_act": "relu"}},
    "model_args": {"model_args": {"add_pooling_layer": False}},
    "processor_kwargs": {"processor_kwargs": {"model_max_length": 5}, "config_kwargs": {"hidden_act": "silu"}},
}
CHANGES_VECTORS = {"tokenizer_args", "config_args", "processor_kwargs"}


def _load_args_folder(table: Table, case: str, root: Path) -> Path:
    folder = root / "load-args" / case
    shutil.copytree(table.folders["Transformer", "portable"], folder)
    path = folder / layout.SBERT_CONFIG
    config = {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k != "max_seq_length"}
    path.write_text(json.dumps(config | LOAD_ARG_CASES[case]), encoding="utf-8")
    return folder


def _load_args_skip(case: str, version: str) -> str | None:
    release = version_tuple(VERSIONS[version])
    late = [k for k in LOAD_ARG_CASES[case] if release < version_tuple(LOAD_ARGS_SINCE[k])]
    return f"{late[0]} is read from ST {LOAD_ARGS_SINCE[late[0]]} on" if late else None


def _run_version(version: str, jobs: list[dict[str, str]], work: Path) -> dict[str, str | None]:
    """One subprocess of that version for all its folders."""
    python = _python(version)
    assert python is not None
    jobs_file, results_file = work / f"{version}-jobs.json", work / f"{version}-results.json"
    jobs_file.write_text(json.dumps({"texts": COMPARE_TEXTS, "batch_size": BATCH_SIZE, "jobs": jobs}), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(
        [str(python), str(SCRIPT), str(jobs_file), str(results_file)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    if run.returncode != 0 or not results_file.is_file():
        return {job["id"]: f"the ST {VERSIONS[version]} subprocess failed: {run.stderr[-2000:]}" for job in jobs}
    results: dict[str, str | None] = json.loads(results_file.read_text(encoding="utf-8"))
    return results


@pytest.fixture(scope="module")
def table(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Table:
    root = tmp_path_factory.mktemp("type-table")
    table = Table()
    ours = _build_examples(table, tiny_bert_dir, root)
    jobs: dict[str, list[dict[str, str]]] = {}
    for name in NAMES:
        for version, fmt in COLUMNS:
            cell = table.cells.setdefault((name, version, fmt), Cell())
            missing = missing_types(name)
            if missing:
                cell.skip = f"{name}: its example needs {', '.join(missing)}, which is not registered"
            elif _python(version) is None:
                cell.skip = f"{VENVS / version} missing: run `make compat-venvs` (make test does)"
            else:
                cell.skip = unreadable_reason(name, version, fmt)
            if cell.skip:
                continue
            cell.folder, cell.ours = table.folders[name, fmt], ours[name, fmt]
            out = root / "out" / version / fmt / name
            out.mkdir(parents=True)
            cell.theirs, cell.resaved = out / "emb.npy", out / "resaved"
            job = {"folder": str(cell.folder), "out": str(cell.theirs), "resave": str(cell.resaved)}
            jobs.setdefault(version, []).append({"id": f"{name}/{fmt}", **job})
    _add_load_args_jobs(table, root, jobs)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores are all a CI runner gives us
        done = dict(zip(jobs, pool.map(lambda v: _run_version(v, jobs[v], root), jobs), strict=True))
    for version, results in done.items():
        for job_id, error in results.items():
            name, fmt = job_id.split("/")
            table.cells[name, version, fmt].error = error
    return table


def _add_load_args_jobs(table: Table, root: Path, jobs: dict[str, list[dict[str, str]]]) -> None:
    """The LOAD_ARG_CASES folders, as cells named load-args:<case> in the portable column."""
    for case in LOAD_ARG_CASES:
        folder = _load_args_folder(table, case, root)
        ours = st_cli.load_model(folder).encode(COMPARE_TEXTS, batch_size=BATCH_SIZE)
        for version in VERSIONS:
            name = f"load-args:{case}"
            cell = table.cells.setdefault((name, version, "portable"), Cell())
            cell.skip = "no venv" if _python(version) is None else _load_args_skip(case, version)
            if cell.skip:
                continue
            cell.folder, cell.ours = folder, ours
            out = root / "out" / version / "load-args" / case
            out.mkdir(parents=True)
            cell.theirs, cell.resaved = out / "emb.npy", out / "resaved"
            job = {"folder": str(folder), "out": str(cell.theirs), "resave": str(cell.resaved)}
            jobs.setdefault(version, []).append({"id": f"{name}/portable", **job})


def _cell(table: Table, name: str, version: str, fmt: str) -> Cell:
    cell = table.cells[name, version, fmt]
    if cell.skip:
        pytest.skip(cell.skip)
    assert cell.error is None, f"ST {VERSIONS[version]} on st's {fmt} folder of {name}: {cell.error}"
    return cell


@pytest.mark.parametrize(("version", "fmt"), COLUMNS, ids=[f"{v}-{f}" for v, f in COLUMNS])
@pytest.mark.parametrize("name", NAMES)
def test_version_reads_st_folder(table: Table, name: str, version: str, fmt: str) -> None:
    """(a) That version's embeddings of st's folder are st's."""
    cell = _cell(table, name, version, fmt)
    assert cell.theirs is not None and cell.ours is not None
    np.testing.assert_allclose(np.load(cell.theirs), cell.ours, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("version", "fmt"), COLUMNS, ids=[f"{v}-{f}" for v, f in COLUMNS])
@pytest.mark.parametrize("name", NAMES)
def test_st_reads_version_folder(table: Table, name: str, version: str, fmt: str) -> None:
    """(b) st loads the folder that version saved and gives that version's embeddings."""
    cell = _cell(table, name, version, fmt)
    assert cell.theirs is not None and cell.resaved is not None
    loaded = st_cli.load_model(cell.resaved)
    np.testing.assert_allclose(loaded.encode(COMPARE_TEXTS, batch_size=BATCH_SIZE), np.load(cell.theirs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", LOAD_ARG_CASES)
def test_load_args_as_each_version_applies_them(table: Table, case: str, version: str) -> None:
    """sentence_bert_config.json's tokenizer/config/model args: st's vectors are each reading version's, both ways."""
    cell = _cell(table, f"load-args:{case}", version, "portable")
    assert cell.theirs is not None and cell.ours is not None and cell.resaved is not None
    np.testing.assert_allclose(np.load(cell.theirs), cell.ours, atol=ATOL, rtol=0)
    plain = table.cells["Transformer", version, "portable"]
    if case in CHANGES_VECTORS and plain.ours is not None:
        assert np.abs(cell.ours - plain.ours).max() > 1e-3, "the case does not change the vectors: it tests nothing"
    resaved = st_cli.load_model(cell.resaved).encode(COMPARE_TEXTS, batch_size=BATCH_SIZE)
    np.testing.assert_allclose(resaved, np.load(cell.theirs), atol=ATOL, rtol=0)
    if version == "st62":  # st's own save bakes the args into config.json and the tokenizer: same vectors
        ours = st_cli.load_model(cell.folder)
        ours.save(cell.resaved.parent / "st-resaved")
        again = st_cli.load_model(cell.resaved.parent / "st-resaved").encode(COMPARE_TEXTS, batch_size=BATCH_SIZE)
        np.testing.assert_allclose(again, cell.ours, atol=ATOL, rtol=0)


_SUMMARIZE_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import st_cli
out = {}
for key, folder in json.loads(sys.argv[1]).items():
    s = st_cli.summarize(folder)
    out[key] = {"widths": [m.output_dim for m in s.modules], "types": [m.short_type for m in s.modules],
                "dim": s.embedding_dimension, "errors": [f.message for f in s.errors]}
assert "torch" not in sys.modules or sys.modules["torch"] is None
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def summaries(table: Table) -> dict[str, dict]:
    folders = {f"{name}/{fmt}": str(folder) for (name, fmt), folder in table.folders.items()}
    run = subprocess.run(
        [sys.executable, "-c", _SUMMARIZE_WITHOUT_TORCH, json.dumps(folders)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, dict] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("fmt", layout.FORMATS)
@pytest.mark.parametrize("name", NAMES)
def test_inspect_gives_example_widths_without_torch(
    table: Table, summaries: dict[str, dict], name: str, fmt: str
) -> None:
    missing = missing_types(name)
    if missing:
        pytest.skip(f"{name}: its example needs {', '.join(missing)}, which is not registered")
    summary = summaries[f"{name}/{fmt}"]
    assert not summary["errors"], summary["errors"]
    assert summary["types"] == [m["type"] for m in registry.spec(name).example]
    assert summary["widths"] == table.planned[name]
    assert summary["dim"] == table.planned[name][-1]
