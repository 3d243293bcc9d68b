"""Every registered module type, through its spec: build → save (both formats) → load → same vectors.

Parametrized over `registry.names()`, so a new built-in is covered as soon as it is registered;
its spec must carry an `example` stack or these tests fail for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import yaml

import st_cli
from st_cli.format import layout
from st_cli.format.spec import ENTRY_POINT_GROUP, TypeSpec, Widths
from st_cli.format.specs import SPECS
from st_cli.model import registry, resolve
from st_cli.model.modules.base import Features, Module
from st_cli.model.recipe import load_recipe
from tests.texts import COMPARE_TEXTS

NAMES = registry.names()


def _example_recipe(name: str, tiny_bert: Path, folder: Path) -> Path:
    spec = registry.spec(name)
    assert spec.example, f"{name}: its spec (st_cli/format/specs/) has no `example` stack"
    used = [m.get("type") for m in spec.example]
    used += [r.get("type") for m in spec.example for route in (m.get("routes") or {}).values() for r in route]
    assert name in used, f"{name}: its example stack does not use it (nor a Router's route in it)"
    missing = [m["type"] for m in spec.example if m["type"] not in NAMES]
    if missing:  # e.g. LSTM's example needs WordEmbeddings, another branch's type
        pytest.skip(f"{name}: its example needs {', '.join(missing)}, which is not registered")
    text = json.dumps({"seed": 3, "modules": list(spec.example)}).replace("{tiny_bert}", str(tiny_bert))
    if "{tiny_clip}" in text:
        from tests.compat.tiny_clip import make_tiny_clip

        text = text.replace("{tiny_clip}", str(make_tiny_clip(folder / "tiny_clip")))
    if "{tiny_bert_mlm}" in text:
        from tests.compat.tiny_mlm import make_tiny_bert_mlm

        text = text.replace("{tiny_bert_mlm}", str(make_tiny_bert_mlm(folder / "tiny_bert_mlm")))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(json.loads(text)), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", NAMES)
def test_every_type_has_one_spec(name: str) -> None:
    cls, spec = registry.get(name), registry.spec(name)
    assert cls.spec is spec and cls.type_name == name
    assert spec is SPECS[name], "a built-in's spec is its row in st_cli/format/specs/"
    for type_string in spec.type_strings:
        assert registry.spec_for_type_string(type_string) is spec
        assert resolve.class_for_type_string(type_string, Path(".")) is cls
    assert spec.input_module == (spec.reads == "text")


@pytest.mark.parametrize("fmt", layout.FORMATS)
@pytest.mark.parametrize("name", NAMES)
def test_every_type_round_trips(name: str, fmt: layout.Format, tiny_bert_dir: Path, tmp_path: Path) -> None:
    recipe_path = _example_recipe(name, tiny_bert_dir, tmp_path)
    model, folder = st_cli.build(recipe_path, tmp_path / "m", format=fmt)
    loaded = st_cli.load_model(folder)  # no trust: every type string maps to a class
    np.testing.assert_allclose(model.encode(COMPARE_TEXTS), loaded.encode(COMPARE_TEXTS), atol=1e-6, rtol=0)

    entries = layout.read_modules_json(folder)
    planned = load_recipe(recipe_path).modules
    assert [e.type for e in entries] == [registry.spec(p.type).type_string(fmt) for p in planned]
    summary = st_cli.summarize(folder)  # JSON and safetensors headers only
    assert not summary.errors, summary.errors
    assert [m.short_type for m in summary.modules] == [p.type for p in planned]
    assert [m.output_dim for m in summary.modules] == [p.output_dim for p in planned]
    assert summary.embedding_dimension == model.get_sentence_embedding_dimension() == planned[-1].output_dim


@pytest.mark.parametrize("fmt", layout.FORMATS)
@pytest.mark.parametrize("name", NAMES)
def test_sentence_transformers_reads_every_type(name: str, fmt: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer, SparseEncoder

    model, folder = st_cli.build(_example_recipe(name, tiny_bert_dir, tmp_path), tmp_path / "m", format=fmt)
    if model.model_type == "SparseEncoder":  # its own class in sentence-transformers; dense vectors to compare
        sparse = SparseEncoder(str(folder), device="cpu")
        reference = sparse.encode(COMPARE_TEXTS, convert_to_sparse_tensor=False).numpy()
    else:
        reference = SentenceTransformer(str(folder), device="cpu").encode(COMPARE_TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(model.encode(COMPARE_TEXTS), reference, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- plugins


class Scale(Module):
    """A plugin: multiplies the sentence embedding by a learned factor."""

    config_keys: ClassVar[list[str]] = ["factor"]

    def __init__(self, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = factor
        self.weight = torch.nn.Parameter(torch.full((1,), factor) + torch.rand(1))

    def forward(self, features: Features, **kwargs: Any) -> Features:
        features["sentence_embedding"] = features["sentence_embedding"] * self.weight
        return features


@pytest.mark.parametrize("fmt", layout.FORMATS)
def test_a_registered_plugin_round_trips_without_trust(fmt: layout.Format, tiny_recipe, tmp_path: Path) -> None:
    registry.register("TestScale")(Scale)
    try:
        spec = registry.spec("TestScale")
        assert spec.type_strings[0] == f"{Scale.__module__}.Scale" and spec.config_files == ("config.json",)
        model, folder = st_cli.build(
            tiny_recipe("  - type: Pooling\n  - type: TestScale\n    factor: 3.0\n"), tmp_path / "m", format=fmt
        )
        assert layout.read_modules_json(folder)[-1].type == spec.legacy_type
        assert json.loads((folder / "2_Scale/config.json").read_text()) == {"factor": 3.0}
        assert not (folder / f"{Scale.__module__}.py").exists()  # a plugin is not custom code
        loaded = st_cli.load_model(folder)  # trust_remote_code=False
        assert type(loaded.steps[-1]) is Scale
        np.testing.assert_allclose(model.encode(COMPARE_TEXTS), loaded.encode(COMPARE_TEXTS), atol=1e-6, rtol=0)
        summary = st_cli.summarize(folder)
        assert summary.modules[-1].short_type == "TestScale" and summary.modules[-1].config == {"factor": 3.0}
        assert not summary.errors and "custom-code" not in {f.code for f in summary.findings}
    finally:
        registry.unregister("TestScale")
    assert registry.spec_for_type_string(f"{Scale.__module__}.Scale") is None


def test_a_plugin_cannot_take_a_builtin_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("Dense")(Scale)


def test_an_entry_point_registers_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    class FakeEntryPoint:
        name, value = "TestEpScale", "tests.test_module_types:Scale"

        def load(self) -> type:
            return type("EpScale", (Scale,), {})

    monkeypatch.setattr("st_cli.format.spec._entry_points_loaded", False)
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: [FakeEntryPoint()] if group == ENTRY_POINT_GROUP else [],
    )
    try:
        cls = registry.spec_for_type_string(f"{__name__}.EpScale")  # an unknown type string loads the entry points
        assert cls is not None and cls.name == "TestEpScale"
        assert registry.get("TestEpScale").__name__ == "EpScale"
    finally:
        registry.unregister("TestEpScale")


def test_a_plugin_with_its_own_spec_gets_widths_and_file_checks(tiny_recipe, tmp_path: Path) -> None:
    spec = TypeSpec(
        name="TestVocabScale",
        legacy_type="st_plugins.VocabScale",
        st6_type="st_plugins.VocabScale",
        width=lambda ctx: Widths(ctx.incoming, ctx.incoming),
        required_files=("vocab.txt",),
        since="3.2",
    )
    registry.register(spec)(Scale)
    try:
        _, folder = st_cli.build(tiny_recipe("  - type: Pooling\n  - type: TestVocabScale\n"), tmp_path / "m")
        assert layout.read_modules_json(folder)[-1].type == "st_plugins.VocabScale"
        summary = st_cli.summarize(folder)
        assert summary.embedding_dimension == 32  # the plugin's width rule, no torch
        missing = [f for f in summary.errors if f.code == "missing-config"]
        assert len(missing) == 1 and missing[0].path == "2_Scale/vocab.txt"
        (folder / "2_Scale/vocab.txt").write_text("a\n", encoding="utf-8")
        summary = st_cli.summarize(folder)
        assert not summary.errors
        # Loader verdicts come from the spec: `since` and `tei`.
        assert summary.loaders["ST<=5.3"].status == "partial"
        assert "modules.json: st_plugins.VocabScale exists only in ST >= 3.2" in summary.loaders["ST<=5.3"].reasons
        assert summary.loaders["TEI"].status == "no" and summary.loaders["ST>=6"].status == "yes"
    finally:
        registry.unregister("TestVocabScale")
    with pytest.raises(ValueError, match="belongs to a built-in"):
        registry.register(TypeSpec("TestFake", SPECS["Dense"].legacy_type, "x.Y"))(Scale)
    registry.unregister("TestFake")
