"""Recipes that start from an existing model folder (`base:` + `keep:`) and append modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from tests.texts import COMPARE_TEXTS

runner = CliRunner()


@pytest.fixture
def tiny_base(tiny_recipe, tmp_path: Path) -> Path:
    recipe = tiny_recipe(
        "  - type: Pooling\n    mode: [cls, mean]\n  - type: Dense\n    out_features: 16\n  - type: Normalize\n",
        extra="prompts: {q: 'query: '}\ndefault_prompt: q\nsimilarity: dot\n",
        name="base.yaml",
    )
    return st_cli.build(recipe, tmp_path / "base")[1]


def test_keep_a_prefix_and_append(tiny_base: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: base\nkeep: 2\nmodules:\n  - type: Dense\n    out_features: 4\n    activation: identity\n")
    parsed = st_cli.load_recipe(recipe)
    assert (parsed.base, parsed.keep) == (str(tiny_base.resolve()), 2)
    assert parsed.modules[0].kwargs["in_features"] == 64  # cls + mean of the base's 32-wide tokens
    assert parsed.prompts == {"q": "query: "} and parsed.default_prompt == "q" and parsed.similarity == "dot"
    model, folder = st_cli.build(recipe, tmp_path / "out")
    assert [type(m).__name__ for m in model.steps] == ["Transformer", "Pooling", "Dense"]
    assert [m.untrained for m in model.steps] == [False, False, True]

    base = st_cli.load_model(tiny_base)
    texts = ["hello world", "the cat", ""]
    with torch.inference_mode():
        features = base.tokenize(texts, "query: ")
        for module in base.steps[:2]:
            features = module(features)
        expected = model.steps[2](features)["sentence_embedding"].numpy()
    np.testing.assert_allclose(st_cli.load_model(folder).encode(texts), expected, atol=1e-6, rtol=0)


def test_base_on_the_real_model_loads_in_sentence_transformers(minilm_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"base: {minilm_dir}\nkeep: 2\nseed: 1\nmodules:\n  - type: Dense\n    out_features: 128\n  - type: Normalize\n"
    )
    _, folder = st_cli.build(recipe, tmp_path / "m128")
    ours = st_cli.load_model(folder).encode(COMPARE_TEXTS)
    theirs = SentenceTransformer(str(folder), device="cpu").encode(COMPARE_TEXTS, batch_size=32)
    assert ours.shape == (len(COMPARE_TEXTS), 128)
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("base: base\nkeep: 9\n", ":2: keep: must be between 1 and 4 (the modules of the base), got 9"),
        ("keep: 2\nmodules: []\n", ":1: keep: needs 'base'"),
        ("base: ./nowhere\n", ":1: base: ./nowhere: no such model folder"),
        ("base: base\nkeep: 2\nmodules:\n  - type: Dense\n    in_features: 32\n    out_features: 4\n",
         ":5: modules[0].in_features: is 32 but the module before gives 64"),
    ],
)
def test_bad_base_recipes(tiny_base: Path, tmp_path: Path, text: str, expected: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    result = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {recipe}{expected}"), result.stderr
    assert not (tmp_path / "out").exists()
