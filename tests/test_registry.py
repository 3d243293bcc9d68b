"""The registry: short names to classes, did-you-mean, duplicates, and both dialects' type strings;
and the two homes of a built-in type (its spec file and its torch file, of the same name)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import st_cli.format.specs
import st_cli.model.modules
from st_cli.errors import StError, TrustError
from st_cli.format import layout
from st_cli.format.specs import SPECS
from st_cli.model import registry, resolve
from st_cli.model.modules.base import Module

SPEC_FILES = Path(st_cli.format.specs.__file__).parent
TORCH_FILES = Path(st_cli.model.modules.__file__).parent


def file_stems(folder: Path, *not_types: str) -> set[str]:
    return {p.stem for p in folder.glob("*.py")} - {"__init__", *not_types}


def test_every_builtin_type_has_a_spec_file_and_a_torch_file_of_the_same_name() -> None:
    assert file_stems(SPEC_FILES) == file_stems(TORCH_FILES, "base")


def test_every_builtin_spec_names_the_file_it_is_in() -> None:
    rows = {stem: importlib.import_module(f"st_cli.format.specs.{stem}").SPEC for stem in file_stems(SPEC_FILES)}
    assert {stem: spec.module_file for stem, spec in rows.items()} == {stem: stem for stem in rows}
    assert sorted(spec.name for spec in rows.values()) == sorted(SPECS)  # one row per file, and no other rows


def test_the_table_keeps_its_order() -> None:
    # Lookups that take the first match depend on it: find_sbert_config must try Transformer's
    # config names before BoW's config.json (a transformers folder has one too).
    assert list(SPECS) == [
        "Transformer", "Pooling", "Dense", "Normalize", "WeightedLayerPooling", "LayerNorm", "Dropout", "CNN",
        "LSTM", "WordEmbeddings", "WordWeights", "BoW", "StaticEmbedding", "Router", "CLIPModel",
        "MLMTransformer", "SpladePooling", "SparseStaticEmbedding", "SparseAutoEncoder",
    ]  # fmt: skip


def test_builtins_are_registered_lazily_under_short_names() -> None:
    assert {"Transformer", "Pooling", "Dense", "Normalize"} <= set(registry.names())
    assert registry.get("Pooling").__name__ == "Pooling"


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(registry.UnknownModuleType, match=r"unknown module type 'Denes' \(did you mean 'Dense'\?\)"):
        registry.get("Denes")


def test_register_a_plugin_refuses_duplicates_and_unregisters() -> None:
    class Gate(Module):
        pass

    try:
        registry.register("TestGate")(Gate)
        assert registry.get("TestGate") is Gate and registry.is_registered(Gate)
        with pytest.raises(ValueError, match="already registered"):
            registry.register("TestGate")(type("Other", (Module,), {}))
    finally:
        registry.unregister("TestGate")
    with pytest.raises(registry.UnknownModuleType):
        registry.get("TestGate")


@pytest.mark.parametrize("type_string", sorted(layout.TYPE_STRINGS["portable"].values()) + sorted(layout.TYPE_STRINGS["st6"].values()) + ["sentence_transformers.sentence_transformer.modules.normalize.Normalize"])
def test_every_dialect_spelling_resolves_to_the_builtin(type_string: str, tmp_path: Path) -> None:
    cls = resolve.class_for_type_string(type_string, tmp_path)
    assert cls is registry.get(layout.KNOWN_TYPES[type_string])


def test_known_but_unsupported_and_custom_types(tmp_path: Path) -> None:
    unsupported = r"'sentence_transformers.models.Frobnicate' of this SentenceTransformer is not supported by st; "
    with pytest.raises(StError, match=unsupported + r"st would need a module type for it \(st runs: "):
        resolve.class_for_type_string("sentence_transformers.models.Frobnicate", tmp_path)
    # The model kind comes from config_sentence_transformers.json (a SparseEncoder's future module, say).
    (tmp_path / "config_sentence_transformers.json").write_text('{"model_type": "SparseEncoder"}')
    with pytest.raises(StError, match=r"'sentence_transformers.sparse_encoder.modules.x.X' of this SparseEncoder is"):
        resolve.class_for_type_string("sentence_transformers.sparse_encoder.modules.x.X", tmp_path)
    (tmp_path / "config_sentence_transformers.json").unlink()
    (tmp_path / "gate.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(TrustError, match="--trust-remote-code"):
        resolve.class_for_type_string("gate.Gate", tmp_path)
