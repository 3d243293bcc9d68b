"""Property-based fuzzing (hypothesis) of recipes and of model folders (modules.json + module configs).

The property: bad input is an StError (one line, exit 2), a damaged folder a failed verify check
(exit 1); never an internal error (exit 3) and never a traceback. Most examples stop at what is cheap
(recipe checks; inspect and the load refusal, which read JSON and safetensors headers only); a few
"heavy" tests run the whole `st build` / `st verify`. The seed is printed on failure: rerun with
ST_FUZZ_SEED=N to get the same examples.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.errors import EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_OK, StError
from st_cli.format.summary import FINDING_CHECKS, summarize
from st_cli.model.model import build as build_folder
from st_cli.model.model import refuse_damaged
from st_cli.model.recipe import load_recipe
from tests.conftest import DENSE_STACK, make_tiny_bert

SEED = int(os.environ.get("ST_FUZZ_SEED") or random.randrange(2**32))
runner = CliRunner()
FAST = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True
)
HEAVY = settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def note_seed() -> str:
    return f"(reproduce with ST_FUZZ_SEED={SEED})"


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT and a model folder built from it, shared by every example (each mutates a copy)."""
    root = tmp_path_factory.mktemp("fuzz")
    bert = make_tiny_bert(root / "bert")
    recipe = root / "recipe.yaml"
    recipe.write_text(f"seed: 7\nmodules:\n  - type: Transformer\n    model: {bert}\n{DENSE_STACK}")
    build_folder(recipe, root / "model")
    return root


def scratch(root: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


# ---------------------------------------------------------------- values

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 16, 32, 33, 64, 65, 10**12, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["mean", "cls", "max", "tanh", "identity", "abc", "os.system", "", "1e12", "../x", "/etc"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

# ---------------------------------------------------------------- recipes

MODULE_TYPES = ["Transformer", "Pooling", "Dense", "Normalize", "Poolng", "os.system", "x.py:Y", "", "LayerNorm"]
MODULE_KEYS = [
    "model", "max_seq_length", "do_lower_case", "mode", "include_prompt", "dimension", "in_features",
    "out_features", "bias", "activation", "kwargs", "revision", "pooling_mode", "typo",
]  # fmt: skip
TOP_KEYS = ["name", "seed", "prompts", "default_prompt", "similarity", "truncate_dim", "keep", "base", "extra"]


@st.composite
def recipes(draw: st.DrawFn, bert: str) -> Any:
    """Mostly-plausible recipes: a Transformer over the tiny BERT, then modules with keys from the real pool."""
    modules: list[Any] = []
    if draw(st.booleans()) or draw(st.booleans()):
        first: dict[str, Any] = {"type": "Transformer", "model": bert}
        if draw(st.booleans()):
            first["max_seq_length"] = draw(scalars)
        modules.append(first)
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 9)) == 0:
            modules.append(draw(values))  # not even a mapping
            continue
        module: dict[str, Any] = {"type": draw(st.sampled_from(MODULE_TYPES))}
        for key in draw(st.lists(st.sampled_from(MODULE_KEYS), max_size=3, unique=True)):
            module[key] = bert if key == "model" and draw(st.booleans()) else draw(values)
        modules.append(module)
    recipe: dict[str, Any] = {"modules": modules}
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=3, unique=True)):
        recipe[key] = draw(values)
    return recipe


def dump(recipe: Any) -> str:
    try:
        return yaml.safe_dump(recipe, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(recipe, default=str)  # JSON is YAML too


@seed(SEED)
@FAST
@given(data=st.data())
def test_recipes_are_accepted_or_refused_in_one_line(fuzz_root: Path, data: st.DataObject) -> None:
    recipe = data.draw(recipes(str(fuzz_root / "bert")))
    path = scratch(fuzz_root) / "recipe.yaml"
    path.write_text(dump(recipe))
    try:
        load_recipe(path).check_format("portable")
    except StError as e:
        assert "\n" not in str(e) and str(path) in str(e), f"{e!r} {note_seed()}"
    except Exception as e:  # noqa: BLE001 - the property under test
        raise AssertionError(f"internal error {type(e).__name__}: {e} on {recipe!r} {note_seed()}") from e


@seed(SEED)
@HEAVY
@given(data=st.data())
def test_build_never_exits_3(fuzz_root: Path, data: st.DataObject) -> None:
    """Heavy: the whole `st build` (weights and all) on generated recipes."""
    recipe = data.draw(recipes(str(fuzz_root / "bert")))
    folder = scratch(fuzz_root)
    (folder / "recipe.yaml").write_text(dump(recipe))
    result = runner.invoke(app, ["build", str(folder / "recipe.yaml"), "-o", str(folder / "out")])
    assert result.exit_code in (EXIT_OK, EXIT_BAD_INPUT), f"{result.output} {recipe!r} {note_seed()}"
    assert "Traceback" not in result.output, note_seed()
    if result.exit_code == EXIT_BAD_INPUT:
        assert len(result.stderr.strip().splitlines()) == 1, f"{result.stderr} {note_seed()}"
        assert not (folder / "out").exists() and [p.name for p in folder.iterdir()] == ["recipe.yaml"]


# ---------------------------------------------------------------- folders

TYPE_STRINGS = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Dense",
    "sentence_transformers.models.Normalize",
    "sentence_transformers.base.modules.dense.Dense",
    "sentence_transformers.models.Nope",
    "sentence_transformers.models.Asym",
    "gate.Gate",
    "../evil.Evil",
    "os.system",
    "",
]
PATHS = ["", "1_Pooling", "2_Dense", "3_Normalize", "..", "../model", "/etc", "missing", "1_Pooling/../2_Dense"]
CONFIGS = {
    "1_Pooling/config.json": ["word_embedding_dimension", "pooling_mode_mean_tokens", "pooling_mode", "include_prompt"],
    "2_Dense/config.json": ["in_features", "out_features", "bias", "activation_function", "use_residual"],
    "sentence_bert_config.json": ["max_seq_length", "do_lower_case", "model_args"],
    "config_sentence_transformers.json": ["prompts", "default_prompt_name", "truncate_dim", "__version__"],
    "config.json": ["hidden_size", "vocab_size", "num_hidden_layers", "model_type", "max_position_embeddings"],
}


@st.composite
def folder_edits(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Edits to a good folder: modules.json entries changed or rewritten, config keys set, files replaced."""
    edits: list[tuple[str, Any]] = []
    if draw(st.booleans()):
        entries = [
            {"idx": i, "name": str(i), "path": p, "type": t}
            for i, (p, t) in enumerate(
                [("", TYPE_STRINGS[0]), ("1_Pooling", TYPE_STRINGS[1]), ("2_Dense", TYPE_STRINGS[2]), ("3_Normalize", TYPE_STRINGS[3])]
            )
        ]  # fmt: skip
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(entries) - 1))
            key = draw(st.sampled_from(["idx", "name", "path", "type", "kwargs", "drop", "dup"]))
            if key == "drop" and len(entries) > 1:
                entries.pop(i)
            elif key == "dup":
                entries.append(dict(entries[i]))
            elif key == "path":
                entries[i]["path"] = draw(st.sampled_from(PATHS) | st.text(max_size=8))
            elif key == "type":
                entries[i]["type"] = draw(st.sampled_from(TYPE_STRINGS))
            elif key != "drop":
                entries[i][key] = draw(values)
        edits.append(("modules.json", entries if draw(st.integers(0, 9)) else draw(values)))
    for _ in range(draw(st.integers(0, 3))):
        file = draw(st.sampled_from(sorted(CONFIGS)))
        kind = draw(st.integers(0, 9))
        if kind == 0:
            edits.append((file, draw(values)))  # the whole file replaced by any JSON value
        elif kind == 1:
            edits.append((file, None))  # deleted
        else:
            edits.append((file, {draw(st.sampled_from(CONFIGS[file])): draw(values)}))
    return edits


def apply(folder: Path, edits: list[tuple[str, Any]]) -> None:
    for file, edit in edits:
        path = folder / file
        if edit is None:
            path.unlink(missing_ok=True)
            continue
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = None
        if file != "modules.json" and isinstance(edit, dict) and isinstance(current, dict):
            edit = {**current, **edit}  # a key set in the existing config
        path.write_text(json.dumps(edit, default=str))


def mutated(fuzz_root: Path, edits: list[tuple[str, Any]]) -> Path:
    folder = scratch(fuzz_root) / "model"
    shutil.copytree(fuzz_root / "model", folder)
    apply(folder, edits)
    return folder


@seed(SEED)
@FAST
@given(edits=folder_edits())
def test_damaged_folders_are_findings_or_one_line_refusals(fuzz_root: Path, edits: list[tuple[str, Any]]) -> None:
    folder = mutated(fuzz_root, edits)
    result = runner.invoke(app, ["inspect", str(folder), "--json"])
    assert result.exit_code in (EXIT_OK, EXIT_BAD_INPUT), f"{result.output} {edits!r} {note_seed()}"
    assert "Traceback" not in result.output, note_seed()
    if result.exit_code == EXIT_BAD_INPUT:
        assert len(result.stderr.strip().splitlines()) == 1, f"{result.stderr} {note_seed()}"
        return
    findings = json.loads(result.stdout)["findings"]
    assert all(f["code"] in FINDING_CHECKS for f in findings), f"{findings} {note_seed()}"
    try:
        refuse_damaged(folder)  # what load_model does before any weights load
    except StError as e:
        assert "\n" not in str(e) and str(folder) in str(e), f"{e!r} {note_seed()}"
        errors = [f for f in summarize(str(folder)).findings if f.severity == "error"]
        assert errors, note_seed()
    except Exception as e:  # noqa: BLE001 - the property under test
        raise AssertionError(f"internal error {type(e).__name__}: {e} on {edits!r} {note_seed()}") from e


@seed(SEED)
@HEAVY
@given(edits=folder_edits())
def test_verify_on_damaged_folders_never_exits_3(fuzz_root: Path, edits: list[tuple[str, Any]]) -> None:
    """Heavy: the whole `st verify` (loads the model when the layout passes)."""
    folder = mutated(fuzz_root, edits)
    result = runner.invoke(app, ["verify", str(folder), "--json"])
    assert result.exit_code in (EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT), f"{result.output} {edits!r} {note_seed()}"
    assert "Traceback" not in result.output, note_seed()
    if result.exit_code == EXIT_BAD_INPUT:
        assert len(result.stderr.strip().splitlines()) == 1, f"{result.stderr} {note_seed()}"


@pytest.mark.parametrize(
    ("file", "key", "value", "named"),
    [
        ("config.json", "model_type", True, "'model_type'"),  # found by the fuzz test above (seed 1572533756)
        ("config.json", "architectures", [3], "'architectures[0]'"),
        ("tokenizer_config.json", "tokenizer_class", ["BertTokenizer"], "'tokenizer_class'"),
    ],
)
def test_a_transformers_name_that_is_not_text_is_a_finding_naming_the_key(tiny_bert_dir, tmp_path, file, key, value, named):
    folder = tmp_path / "bert"
    shutil.copytree(tiny_bert_dir, folder)
    path = folder / file
    path.write_text(json.dumps(json.loads(path.read_text()) | {key: value}))
    result = CliRunner().invoke(app, ["inspect", str(folder), "--json"])
    assert result.exit_code == EXIT_OK, result.output
    findings = json.loads(result.stdout)["findings"]
    assert any(f["code"] == "bad-config" and f"key {named} must be a string" in f["message"] for f in findings), findings
