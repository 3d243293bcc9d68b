"""st build on the tiny BERT: files on disk, both formats, atomicity, --force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from tests.conftest import DENSE_STACK

runner = CliRunner()


def test_portable_layout_is_strict_legacy(tiny_recipe, tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", str(tiny_recipe(DENSE_STACK)), "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    m = tmp_path / "m"
    modules = json.loads((m / "modules.json").read_text())
    assert [e["type"] for e in modules] == [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Dense",
        "sentence_transformers.models.Normalize",
    ]
    assert [e["path"] for e in modules] == ["", "1_Pooling", "2_Dense", "3_Normalize"]
    assert json.loads((m / "sentence_bert_config.json").read_text()) == {"max_seq_length": 64, "do_lower_case": False}
    assert set(json.loads((m / "1_Pooling/config.json").read_text())) == {
        "word_embedding_dimension",
        "pooling_mode_cls_token",
        "pooling_mode_mean_tokens",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
    }
    assert json.loads((m / "2_Dense/config.json").read_text()) == {
        "in_features": 32,
        "out_features": 16,
        "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh",
    }
    assert (m / "2_Dense/model.safetensors").is_file() and (m / "2_Dense/pytorch_model.bin").is_file()
    assert (m / "3_Normalize").is_dir() and not any((m / "3_Normalize").iterdir())
    assert json.loads((m / "tokenizer_config.json").read_text())["model_max_length"] == 64
    manifest = json.loads((m / "st_manifest.json").read_text())
    assert manifest["untrained_modules"] == [2]
    assert set(manifest["files"]) >= {"modules.json", "2_Dense/model.safetensors", "README.md"}
    assert "untrained" in result.stderr


def test_st6_layout(tiny_recipe, tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", str(tiny_recipe(DENSE_STACK)), "-o", str(tmp_path / "m"), "--format", "st6"])
    assert result.exit_code == 0, result.output
    m = tmp_path / "m"
    assert json.loads((m / "1_Pooling/config.json").read_text()) == {
        "embedding_dimension": 32,
        "pooling_mode": "mean",
        "include_prompt": True,
    }
    assert "max_seq_length" not in json.loads((m / "sentence_bert_config.json").read_text())
    assert json.loads((m / "3_Normalize/config.json").read_text())["module_output_name"] == "sentence_embedding"
    assert not (m / "2_Dense/pytorch_model.bin").exists()


@pytest.mark.parametrize("fmt", ["portable", "st6"])
def test_round_trip_gives_identical_embeddings(tiny_recipe, tmp_path: Path, fmt: str) -> None:
    texts = ["hello world", "", "the cat is eating food", "query passage " * 40]
    model, folder = st_cli.build(tiny_recipe(DENSE_STACK), tmp_path / "m", format=fmt)
    np.testing.assert_array_equal(model.encode(texts), st_cli.load_model(folder).encode(texts))


def test_seed_makes_builds_reproducible(tiny_recipe, tmp_path: Path) -> None:
    recipe = tiny_recipe(DENSE_STACK)
    a, _ = st_cli.build(recipe, tmp_path / "a")
    b, _ = st_cli.build(recipe, tmp_path / "b")
    c, _ = st_cli.build(recipe, tmp_path / "c", overrides=["seed=8"])
    texts = ["hello world"]
    np.testing.assert_array_equal(a.encode(texts), b.encode(texts))
    assert np.abs(a.encode(texts) - c.encode(texts)).max() > 1e-4


def test_existing_target_needs_force(tiny_recipe, tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (target / "modules.json").write_text("[]")  # a model folder: --force replaces only one
    recipe = str(tiny_recipe(DENSE_STACK))
    result = runner.invoke(app, ["build", recipe, "-o", str(target)])
    assert result.exit_code == 2
    assert "--force" in result.stderr and (target / "keep.txt").read_text() == "mine"
    result = runner.invoke(app, ["build", recipe, "-o", str(target), "--force"])
    assert result.exit_code == 0, result.output
    assert not (target / "keep.txt").exists() and (target / "modules.json").is_file()


def test_failure_during_save_leaves_target_untouched(tiny_recipe, tmp_path: Path, monkeypatch) -> None:
    from st_cli.model.modules.dense import Dense

    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (target / "modules.json").write_text("[]")  # a model folder: --force replaces only one

    def explode(*args, **kwargs) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Dense, "save", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        st_cli.build(tiny_recipe(DENSE_STACK), target, force=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "recipe.yaml") == ["m"]
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt", "modules.json"]


def test_output_under_a_file_is_one_line_exit_2(tiny_recipe, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    result = runner.invoke(app, ["build", str(tiny_recipe(DENSE_STACK)), "-o", str(tmp_path / "afile" / "m")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {tmp_path / 'afile' / 'm'}: cannot create the output folder")
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(("value", "message"), [('"long"', "must be a positive integer, got 'long'"), ("65", "exceeds the model's 64 position embeddings")])
def test_loaded_folder_with_bad_max_seq_length_is_refused(tiny_recipe, tmp_path: Path, value: str, message: str) -> None:
    _, folder = st_cli.build(tiny_recipe("  - type: Pooling\n"), tmp_path / "m")
    config = folder / "sentence_bert_config.json"
    config.write_text(config.read_text().replace("64", value))
    result = runner.invoke(app, ["verify", str(folder), "--json"])
    with pytest.raises(st_cli.errors.ModelFolderError, match=message):
        st_cli.load_model(folder)
    assert result.exit_code in (1, 2), result.output
