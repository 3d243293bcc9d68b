"""Router (legacy Asym): folders saved by every sentence-transformers version load in st and route by task like
their writer; st's portable folders load in every version; `--task` / `encode(task=...)` pick the route and
the task's prompt (ST's encode_query / encode_document); a missing route or default is one line, exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.format import layout
from tests.texts import COMPARE_TEXTS

VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
OLD = ["st22", "st27", "st34", "st41"]  # Asym: routes dict inputs {"query": text} only
NEW = ["st57"]  # Router: encode_query / encode_document (6.2 is the main venv)
ATOL = 1e-6

# Saves Transformer + Pooling + a two-route Router/Asym of Dense layers, then encodes each route.
SAVE_AND_ENCODE = """
import sys, json, numpy as np, torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.models import Transformer, Pooling, Dense
tiny, out, texts_path, npz = sys.argv[1:5]
texts = json.load(open(texts_path, encoding="utf-8"))
torch.manual_seed(0)
first, pooling = Transformer(tiny), Pooling(32, "mean")
query, document = Dense(32, 8), Dense(32, 8)
try:
    from sentence_transformers.models import Router
    router = Router.for_query_document([query], [document])
except ImportError:
    from sentence_transformers.models import Asym
    router = Asym({"query": [query], "document": [document]})
model = SentenceTransformer(modules=[first, pooling, router], device="cpu")
model.save(out)
"""
ENCODE = """
import sys, json, numpy as np
from sentence_transformers import SentenceTransformer
folder, texts_path, npz = sys.argv[1:4]
texts = json.load(open(texts_path, encoding="utf-8"))
model = SentenceTransformer(folder, device="cpu")
if hasattr(model, "encode_query"):
    np.savez(npz, query=model.encode_query(texts), document=model.encode_document(texts), plain=model.encode(texts))
else:
    np.savez(npz, query=model.encode([{"query": t} for t in texts]), document=model.encode([{"document": t} for t in texts]))
"""


def _python(version: str) -> str:
    if version == "st62":
        return sys.executable
    python = VENVS / version / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python} missing: run `make compat-venvs` (make test does)")
    return str(python)


def _run(version: str, script: str, *args: object) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [_python(version), "-c", script, *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.fixture(scope="module")
def portable_bert(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT as a portable folder (its tokenizer config readable by transformers 4.x)."""
    root = tmp_path_factory.mktemp("pbert")
    recipe = root / "r.yaml"
    recipe.write_text(f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n")
    return st_cli.build(recipe, root / "bert")[1]


@pytest.fixture
def texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.json"
    path.write_text(json.dumps(COMPARE_TEXTS), encoding="utf-8")
    return path


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("version", [*OLD, *NEW, "st62"])
def test_folder_saved_by_each_version_routes_like_it(
    version: str, portable_bert: Path, texts_file: Path, tmp_path: Path
) -> None:
    folder, npz = tmp_path / "saved", tmp_path / "theirs.npz"
    _run(version, SAVE_AND_ENCODE, portable_bert, folder, texts_file, npz)
    _run(version, ENCODE, folder, texts_file, npz)
    theirs = np.load(npz)
    model = st_cli.load_model(folder)
    for task in ("query", "document"):
        _close(model.encode(COMPARE_TEXTS, task=task), theirs[task])
    if "plain" in theirs:  # ST >= 5: no task takes the default route
        _close(model.encode(COMPARE_TEXTS), theirs["plain"])
    summary = st_cli.summarize(folder)
    assert not summary.errors, summary.errors
    assert summary.modules[-1].short_type == "Router" and summary.embedding_dimension == 8


@pytest.fixture(scope="module")
def built_router(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("router")
    recipe = root / "router.yaml"
    recipe.write_text(
        f"""seed: 5
prompts: {{query: "query: ", passage: "passage: "}}
modules:
  - type: Transformer
    model: {tiny_bert_dir}
  - type: Pooling
  - type: Router
    routes:
      query:
        - type: Dense
          out_features: 8
      document:
        - type: Dense
          out_features: 8
          activation: identity
        - type: Normalize
    default_route: document
""",
        encoding="utf-8",
    )
    return {fmt: st_cli.build(recipe, root / fmt, format=fmt)[1] for fmt in layout.FORMATS}


def test_layouts(built_router: dict[str, Path]) -> None:
    portable = built_router["portable"]
    assert layout.read_modules_json(portable)[2].type == "sentence_transformers.models.Asym"
    config = json.loads((portable / "2_Router" / "config.json").read_text())
    assert list(config["structure"]) == ["document", "query"]  # the default first: ST >= 5 default to it
    assert config["types"]["query_0_Dense"] == "sentence_transformers.models.Dense"
    st6 = built_router["st6"]
    assert layout.read_modules_json(st6)[2].type == "sentence_transformers.base.modules.router.Router"
    assert json.loads((st6 / "2_Router" / "router_config.json").read_text())["parameters"]["default_route"] == "document"
    for folder in built_router.values():
        summary = st_cli.summarize(folder)
        assert not summary.errors and summary.embedding_dimension == 8


@pytest.mark.parametrize("fmt", layout.FORMATS)
def test_st62_routes_st_folders_alike(built_router: dict[str, Path], fmt: str) -> None:
    from sentence_transformers import SentenceTransformer

    ours = st_cli.load_model(built_router[fmt])
    theirs = SentenceTransformer(str(built_router[fmt]), device="cpu")
    # encode_query uses the "query" prompt; encode_document the "document" one ("" here: never "passage")
    _close(ours.encode(COMPARE_TEXTS, task="query"), theirs.encode_query(COMPARE_TEXTS))
    _close(ours.encode(COMPARE_TEXTS, task="document"), theirs.encode_document(COMPARE_TEXTS))
    _close(ours.encode(COMPARE_TEXTS), theirs.encode(COMPARE_TEXTS))
    with_prompt = ours.encode(["hello"], task="query")
    assert np.allclose(with_prompt, ours.encode(["hello"], task="query", prompt="query: "))
    assert not np.allclose(with_prompt, ours.encode(["hello"], task="query", prompt=""))


@pytest.mark.parametrize("version", [*OLD, *NEW])
def test_portable_folder_routes_alike_in_each_version(
    version: str, built_router: dict[str, Path], texts_file: Path, tmp_path: Path
) -> None:
    npz = tmp_path / "theirs.npz"
    _run(version, ENCODE, built_router["portable"], texts_file, npz)
    theirs = np.load(npz)
    model = st_cli.load_model(built_router["portable"])
    if version in OLD:  # dict inputs pick a route and no prompt
        for task in ("query", "document"):
            _close(theirs[task], model.encode(COMPARE_TEXTS, task=task, prompt=""))
    else:
        for task in ("query", "document"):
            _close(theirs[task], model.encode(COMPARE_TEXTS, task=task))
        _close(theirs["plain"], model.encode(COMPARE_TEXTS))


def test_cli_task_picks_route_and_prompt(built_router: dict[str, Path], tmp_path: Path) -> None:
    lines = ["hello world", "a man is eating food", ""]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = st_cli.load_model(built_router["portable"])
    for task in ("query", "document"):
        out = tmp_path / f"{task}.npy"
        args = ["encode", str(tmp_path / "in.txt"), "-m", str(built_router["portable"]), "-o", str(out), "--task", task]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        _close(np.load(out), model.encode(lines, task=task))


@pytest.mark.parametrize("fmt", layout.FORMATS)
def test_no_default_route_and_unknown_route_are_one_line_errors(
    tiny_bert_dir: Path, tmp_path: Path, fmt: str
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n  - type: Router\n"
        "    allow_empty_key: false\n    routes:\n      query: [{type: Dense, out_features: 4}]\n      document: [{type: Dense, out_features: 4}]\n",
        encoding="utf-8",
    )
    _, folder = st_cli.build(recipe, tmp_path / "m", format=fmt)
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    base = ["encode", str(tmp_path / "in.txt"), "-m", str(folder), "-o", str(tmp_path / "o.npy")]
    for extra, message in (([], "no default route"), (["--task", "passage"], "no route for task 'passage'")):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
        assert "Traceback" not in result.output and not (tmp_path / "o.npy").exists()
    assert CliRunner().invoke(app, base + ["--task", "query"]).exit_code == 0
    verified = CliRunner().invoke(app, ["verify", str(folder), "--allow-untrained"])  # its first route; freshly built
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize(
    ("router", "message"),
    [
        ("    routes: {query: [{type: Normalize}]}\n    default_route: document\n", "default_route: 'document' is not a route"),
        (
            "    routes: {query: [{type: Dense, out_features: 4}], document: [{type: Normalize}]}\n",
            "every route must give the same width",
        ),
        ("    routes: {query: [{type: Dense, out_featurez: 4}]}\n", "routes.query[0]"),
        ("    routes: {query: []}\n", "routes.query: expected a non-empty list"),
    ],
)
def test_bad_router_recipes(tiny_bert_dir: Path, tmp_path: Path, router: str, message: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n  - type: Router\n{router}",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["build", str(recipe), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_router_as_first_module(portable_bert: Path, tmp_path: Path) -> None:
    """ST >= 5's Router.for_query_document with whole stacks per route (here a StaticEmbedding for queries and
    Transformer + Pooling for documents): saved in the root; each route tokenizes with its own input module."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Router, StaticEmbedding, Transformer
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(str(portable_bert / "tokenizer.json"))
    router = Router.for_query_document(
        [StaticEmbedding(tokenizer, embedding_dim=32)], [Transformer(str(portable_bert)), Pooling(32, "mean")]
    )
    SentenceTransformer(modules=[router], device="cpu").save(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "router_config.json").is_file()
    model = st_cli.load_model(tmp_path / "saved")
    for fmt in layout.FORMATS:  # and st's own saves of it, in both formats
        folder = model.save(tmp_path / fmt, format=fmt)
        theirs = SentenceTransformer(str(folder), device="cpu")
        _close(model.encode(COMPARE_TEXTS, task="query"), theirs.encode_query(COMPARE_TEXTS))
        _close(model.encode(COMPARE_TEXTS, task="document"), theirs.encode_document(COMPARE_TEXTS))
        _close(model.encode(COMPARE_TEXTS), theirs.encode(COMPARE_TEXTS))
        assert st_cli.summarize(folder).embedding_dimension == 32
    lines = ["hello world", "a man is eating food"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["encode", str(tmp_path / "in.txt"), "-m", str(tmp_path / "saved"), "-o", str(tmp_path / "q.npy"), "--task", "query"]
    assert CliRunner().invoke(app, args).exit_code == 0
    _close(np.load(tmp_path / "q.npy"), model.encode(lines, task="query"))


def _damage_route(folder: Path, sub: str) -> tuple[Path, str]:
    """Point the Router's first route module at the folder `sub` (its config names it); returns the config and the old name."""
    entry = next(e for e in json.loads((folder / "modules.json").read_text()) if e["type"].endswith(("Asym", "Router")))
    router = folder / entry["path"]
    config_path = next(router / n for n in ("router_config.json", "config.json") if (router / n).is_file())
    config = json.loads(config_path.read_text())
    old = next(iter(config["types"]))
    config["types"] = {(sub if k == old else k): v for k, v in config["types"].items()}
    config["structure"] = {r: [sub if s == old else s for s in subs] for r, subs in config["structure"].items()}
    config_path.write_text(json.dumps(config))
    return config_path, old


@pytest.mark.parametrize(
    ("sub", "code"), [("../outside", "path-escape"), ("nowhere", "missing-module-folder")], ids=["dotdot", "missing"]
)
@pytest.mark.parametrize("fmt", layout.FORMATS)
def test_route_folders_are_checked_like_module_folders(
    built_router: dict[str, Path], tmp_path: Path, fmt: str, sub: str, code: str
) -> None:
    """A route naming a folder outside the model or a missing one: an inspect error, verify's layout fails, and
    encode refuses it in one line naming the folder."""
    folder = Path(shutil.copytree(built_router[fmt], tmp_path / "m"))
    (tmp_path / "outside").mkdir()  # a real folder beside the model: `..` must be refused, not read
    config_path, _ = _damage_route(folder, sub)
    found = [f for f in st_cli.summarize(folder).errors if f.code == code]
    assert found and sub in found[0].message, st_cli.summarize(folder).findings
    if code == "path-escape":
        assert str(config_path) in found[0].message
    result = CliRunner().invoke(app, ["verify", str(folder), "--json"])
    layout_check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "layout")
    assert result.exit_code == 1 and layout_check["status"] == "fail" and sub in layout_check["detail"]
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(app, ["encode", "-", "-m", str(folder), "-o", str(out)], input="hello\n")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and sub in result.stderr
    assert not out.exists()


def test_route_module_configs_are_checked_too(built_router: dict[str, Path], tmp_path: Path) -> None:
    """The sizes of a route's modules are checked against their weights as modules.json's are."""
    folder = Path(shutil.copytree(built_router["portable"], tmp_path / "m"))
    config_path, old = _damage_route(folder, "keep")
    (config_path.parent / old).rename(config_path.parent / "keep")
    dense = config_path.parent / "keep" / "config.json"
    dense.write_text(json.dumps(json.loads(dense.read_text()) | {"out_features": 10**6}))
    assert any("linear.weight has shape [8, 32]" in f.message for f in st_cli.summarize(folder).errors)


def test_a_module_the_types_table_names_outside_every_route_is_checked_too(
    built_router: dict[str, Path], tmp_path: Path
) -> None:
    """The Router's loader loads every module of its `types` table, used by a route or not: inspect checks them all."""
    folder = Path(shutil.copytree(built_router["portable"], tmp_path / "m"))
    (tmp_path / "outside").mkdir()
    entry = next(e for e in json.loads((folder / "modules.json").read_text()) if e["type"].endswith(("Asym", "Router")))
    router = folder / entry["path"]
    config_path = next(router / n for n in ("router_config.json", "config.json") if (router / n).is_file())
    config = json.loads(config_path.read_text())
    config["types"]["spare"] = next(iter(config["types"].values()))
    config_path.write_text(json.dumps(config))
    findings = [f for f in st_cli.summarize(folder).findings if "spare" in f.message]
    assert [f.code for f in findings] == ["missing-module-folder"], findings
    config["types"] = {("../outside" if k == "spare" else k): v for k, v in config["types"].items()}
    config_path.write_text(json.dumps(config))
    escaped = [f for f in st_cli.summarize(folder).errors if f.code == "path-escape"]
    assert len(escaped) == 1 and "../outside" in escaped[0].message and str(config_path) in escaped[0].message
