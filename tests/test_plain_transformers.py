"""Plain transformers folders (config.json + weights + tokenizer, no modules.json): Transformer + mean Pooling, as ST."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.format import layout
from st_cli.format.specs import SPECS, plain_stack
from tests.texts import COMPARE_TEXTS

runner = CliRunner()
# What a plain folder keeps of a sentence-transformers folder: the transformers files only.
_ST_FILES = {"modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "README.md"}


def _st62(folder: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(COMPARE_TEXTS, convert_to_numpy=True)


@pytest.fixture(scope="module")
def plain_minilm(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plain") / "minilm"
    folder.mkdir()
    for path in minilm_dir.iterdir():
        if path.is_file() and path.name not in _ST_FILES:
            shutil.copy(path, folder / path.name)
    return folder


def test_tiny_bert_matches_sentence_transformers(tiny_bert_dir: Path) -> None:
    model = st_cli.load_model(tiny_bert_dir)
    assert [type(m).type_name for m in model.steps] == ["Transformer", "Pooling"]
    assert model.steps[1].mode == ["mean"] and model.prompts == {}
    np.testing.assert_allclose(model.encode(COMPARE_TEXTS), _st62(tiny_bert_dir), atol=1e-6, rtol=0)


def test_real_minilm_without_modules_json_matches_sentence_transformers(plain_minilm: Path) -> None:
    model = st_cli.load_model(plain_minilm)
    assert model.get_max_seq_length() == 512  # the tokenizer's limit, not sentence_bert_config's 256
    np.testing.assert_allclose(model.encode(COMPARE_TEXTS), _st62(plain_minilm), atol=1e-6, rtol=0)


def test_inspect_says_plain_and_gives_widths(plain_minilm: Path) -> None:
    summary = st_cli.summarize(plain_minilm)
    assert not summary.errors, summary.errors
    plain = [f for f in summary.findings if f.code == "plain-transformers"]
    assert len(plain) == 1 and plain[0].severity == "info" and "Transformer + Pooling (mean)" in plain[0].message
    assert [(m.short_type, m.input_dim, m.output_dim) for m in summary.modules] == [
        ("Transformer", None, 384),
        ("Pooling", 384, 384),
    ]
    assert summary.embedding_dimension == 384 and summary.max_seq_length == 512
    assert summary.loaders["ST>=6"].ok and summary.loaders["ST<=5.3"].ok
    result = runner.invoke(app, ["inspect", str(plain_minilm)])
    assert result.exit_code == 0, result.output


def test_causal_lm_pools_the_last_token_as_st_does() -> None:
    stack = plain_stack({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8})
    assert [(spec.name, (config or {}).get("mode")) for spec, config in stack] == [
        ("Transformer", None),
        ("Pooling", ["lasttoken"]),
    ]
    bidirectional = plain_stack({"architectures": ["Qwen2ForCausalLM"], "is_causal": False, "hidden_size": 8})
    assert bidirectional[1][1] == {"dimension": 8, "mode": ["mean"], "include_prompt": True}


def test_verify_and_encode_work(tiny_bert_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(tiny_bert_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {c["name"]: c["status"] for c in report["checks"]}["layout"] == "pass"
    texts = tmp_path / "texts.txt"
    texts.write_text("hello world\nthe cat is eating food\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = runner.invoke(app, ["encode", str(texts), "-m", str(tiny_bert_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(
        np.load(out), st_cli.load_model(tiny_bert_dir).encode(["hello world", "the cat is eating food"]), atol=1e-6
    )


def test_recipe_base_accepts_a_plain_folder(tiny_bert_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: {tiny_bert_dir}\nmodules:\n  - type: Dense\n    out_features: 8\n", encoding="utf-8")
    model, folder = st_cli.build(recipe, tmp_path / "m")
    assert [e.type for e in layout.read_modules_json(folder)][:2] == [
        SPECS["Transformer"].legacy_type,
        SPECS["Pooling"].legacy_type,
    ]
    np.testing.assert_allclose(st_cli.load_model(folder).encode(COMPARE_TEXTS), model.encode(COMPARE_TEXTS), atol=1e-6)


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_a_folder_without_modules_json_or_transformers_config_is_refused(tmp_path: Path, command: str) -> None:
    """Exit 2 needs both missing (the docs' promise): a config.json that names no model_type or
    architectures is no transformers folder, and the line says what was looked for."""
    (tmp_path / "config.json").write_text('{"foo": 1}', encoding="utf-8")
    result = runner.invoke(app, [command, str(tmp_path)])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {tmp_path}: no modules.json, and no transformers config.json (one naming model_type or "
        "architectures); not a model folder\n",
    )


def test_a_plain_folder_with_only_pickled_weights_loads_the_same(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """pytorch_model.bin of plain tensors (torch's zip format, memory-mapped by st's pickle check) is read
    first by st, accepted, then loaded by transformers: the same vectors as the safetensors copy."""
    import torch
    from safetensors.torch import load_file

    folder = Path(shutil.copytree(tiny_bert_dir, tmp_path / "pickled"))
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    expected = st_cli.load_model(tiny_bert_dir).encode(COMPARE_TEXTS)
    np.testing.assert_array_equal(st_cli.load_model(folder).encode(COMPARE_TEXTS), expected)
