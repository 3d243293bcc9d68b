"""Recipe parsing and `st build` input errors: each bad input is one line naming file, line and key, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.errors import RecipeError
from st_cli.model.recipe import load_recipe

runner = CliRunner()

HEAD = "modules:\n  - type: Transformer\n    model: {model}\n"

# (recipe text, extra CLI args, expected message after "recipe.yaml")
BAD_RECIPES = [
    (HEAD + "  - type: Pooling\n    mode: [mean\n", [], ":6: invalid YAML"),
    (HEAD + "  - type: Poolin\n", [], ":4: modules[1].type: unknown module type 'Poolin' (did you mean 'Pooling'?)"),
    (HEAD + "  - type: Pooling\n    pooling_mod: mean\n", [], ":5: modules[1].pooling_mod: unknown key 'pooling_mod' for Pooling (did you mean 'mode'?)"),
    (HEAD + "  - type: Pooling\n  - type: Dense\n    out_features: abc\n", [], ":6: modules[2].out_features: expected an integer, got str 'abc'"),
    (HEAD + "  - type: Pooling\n  - type: Dense\n", [], ":5: modules[2].out_features: required"),
    (HEAD + "  - type: Pooling\n  - type: Dense\n    in_features: 10\n    out_features: 4\n", [], ":6: modules[2].in_features: is 10 but the module before gives 32"),
    (HEAD + "  - type: Pooling\n    dimension: 16\n", [], ":5: modules[1].dimension: is 16 but the module before gives 32"),
    (HEAD + "  - type: Pooling\n  - type: Dense\n    out_features: -3\n", [], ":6: modules[2].out_features: must be a positive integer"),
    ("modules:\n  - type: Transformer\n    model: ./does/not/exist\n", [], ":3: modules[0].model: ./does/not/exist: no such model folder"),
    (HEAD + "    max_seq_length: 1000\n", [], ":4: modules[0].max_seq_length: must be between 1 and 64"),
    (HEAD + "  - type: Pooling\n    mode: avg\n", [], ":5: modules[1].mode: unknown pooling mode 'avg'"),
    (HEAD + "  - type: Pooling\n    include_prompt: maybe\n", [], ":5: modules[1].include_prompt: expected true or false"),
    (HEAD + "  - type: Pooling\n  - type: Dense\n    out_features: 8\n    activation: swishy\n", [], ":7: modules[2].activation: unknown activation 'swishy'"),
    (HEAD + "  - type: Pooling\n  - type: Dense\n    out_features: 8\n    activation: glu\n", [], ":7: modules[2].activation: unknown activation 'glu'"),
    ("modulez: []\n", [], ":1: modulez: unknown key 'modulez' (did you mean 'modules'?)"),
    (HEAD + "  - type: Dense\n    out_features: 8\n", [], ":4: modules[1].type: Dense works on the sentence embedding: put a Pooling before it"),
    ("modules:\n  - model: x\n", [], ":2: modules[0]: required key 'type' is missing"),
    ("modules: []\n", [], ":1: modules: required: a non-empty list"),
    (HEAD + "seed: abc\n", [], ":4: seed: expected an integer"),
    (HEAD + "seed: 100000000000000000000000\n", [], ":4: seed: must fit in 64 bits"),
    (HEAD + "prompts: {q: 'q: '}\ndefault_prompt: query\n", [], ":5: default_prompt: 'query' is not one of the prompts (q)"),
    (HEAD + "similarity: cosin\n", [], ":4: similarity: must be one of cosine, dot, euclidean, manhattan"),
    (HEAD + "  - type: Pooling\ntruncate_dim: 999\n", [], ":5: truncate_dim: 999 is larger than the embedding dimension 32"),
    ("modules:\n  - type: Transformer\n    model: ${ST_TEST_UNSET_VAR}\n", [], ":3: modules[0].model: environment variable ${ST_TEST_UNSET_VAR} is not set"),
    (HEAD, ["--set", "modules[3].x=1"], ": --set modules[3].x=1: modules[3] does not exist"),
    (HEAD, ["--set", "no equals sign"], ": --set no equals sign: expected key.path=value"),
    (HEAD, ["--set", "modules.x=1"], ": --set modules.x=1: modules.x does not exist"),
    ("", [], ": the recipe is empty"),
]


@pytest.mark.parametrize(("text", "args", "expected"), BAD_RECIPES, ids=[r[2][:40] for r in BAD_RECIPES])
def test_bad_recipe_is_one_line_exit_2(tiny_bert_dir: Path, tmp_path: Path, text: str, args: list[str], expected: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text.replace("{model}", str(tiny_bert_dir)), encoding="utf-8")
    target = tmp_path / "out"
    result = runner.invoke(app, ["build", str(recipe), "-o", str(target), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {recipe}{expected}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]  # no temporary folder left either


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "tei"], "error: --format: expected portable or st6, got 'tei'"),
        (["--output"], "requires an argument"),
    ],
)
def test_bad_invocation_exit_2(tiny_recipe, tmp_path: Path, args: list[str], expected: str) -> None:
    recipe = tiny_recipe("")
    base = ["build", str(recipe)] + ([] if args == ["--output"] else ["-o", str(tmp_path / "out")])
    result = runner.invoke(app, base + args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "out").exists()


def test_missing_recipe_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: recipe file not found"


def test_existing_target_without_force_is_refused_before_any_work(tiny_recipe, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    result = runner.invoke(app, ["build", str(tiny_recipe("")), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'out'}: already exists; pass --force to replace it"


def test_dimensions_inferred_down_the_stack(tiny_recipe) -> None:
    recipe = load_recipe(
        tiny_recipe("  - type: Pooling\n    mode: [cls, mean]\n  - type: Dense\n    out_features: 8\n  - type: Normalize\n")
    )
    pooling, dense = recipe.modules[1], recipe.modules[2]
    assert pooling.kwargs["dimension"] == 32 and pooling.output_dim == 64
    assert dense.kwargs["in_features"] == 64 and dense.output_dim == 8
    assert [m.line for m in recipe.modules] == [3, 5, 7, 9]


def test_set_overrides_and_env_expansion(tiny_recipe, monkeypatch) -> None:
    monkeypatch.setenv("ST_TEST_OUT", "24")
    monkeypatch.setenv("ST_TEST_PROMPT", "search")
    path = tiny_recipe(
        "  - type: Pooling\n  - type: Dense\n    out_features: 8\n",
        extra="prompts:\n  q: '${ST_TEST_PROMPT}: '\n",
    )
    recipe = load_recipe(path, overrides=["modules[2].out_features=12", "modules[1].mode=[max, mean]", "seed=3"])
    assert recipe.modules[2].kwargs["out_features"] == 12
    assert recipe.modules[1].kwargs["mode"] == ["max", "mean"]
    assert recipe.modules[2].kwargs["in_features"] == 64
    assert recipe.seed == 3
    assert recipe.prompts == {"q": "search: "}


def test_override_type_error_names_the_key(tiny_recipe) -> None:
    path = tiny_recipe("  - type: Pooling\n  - type: Dense\n    out_features: 8\n")
    with pytest.raises(RecipeError, match=r"recipe.yaml:7: modules\[2\].out_features: expected an integer"):
        load_recipe(path, overrides=["modules[2].out_features=many"])


def test_relative_model_path_is_relative_to_the_recipe(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(tiny_bert_dir, tmp_path / "models" / "bert")
    (tmp_path / "recipes").mkdir()
    path = tmp_path / "recipes" / "r.yaml"
    path.write_text("modules:\n  - type: Transformer\n    model: ../models/bert\n  - type: Pooling\n")
    recipe = load_recipe(path)
    assert recipe.modules[0].kwargs["model"] == str((tmp_path / "models" / "bert").resolve())
    assert recipe.modules[1].output_dim == 32


def test_a_weight_matrix_larger_than_the_machine_is_refused_before_any_weights(tiny_recipe) -> None:
    """The spec names the matrix (Dense: in_features × out_features); 10^6 × 10^6 float32 is 4 TB."""
    from st_cli.errors import RecipeError
    from st_cli.model.recipe import load_recipe

    recipe = tiny_recipe("  - type: Pooling\n  - type: Dense\n    out_features: 1000000\n"
                         "  - type: Dense\n    out_features: 1000000\n")  # fmt: skip
    with pytest.raises(RecipeError, match=r"recipe\.yaml:\d+: modules\[3\]\.out_features: .*more than half"):
        load_recipe(recipe)
