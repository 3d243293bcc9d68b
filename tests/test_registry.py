"""The registry: short names to classes, did-you-mean, duplicates, and both dialects' type strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from st_cli.errors import StError, TrustError
from st_cli.format import layout
from st_cli.model import registry
from st_cli.model.modules.base import Module


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
    cls = registry.class_for_type_string(type_string, tmp_path)
    assert cls is registry.get(layout.KNOWN_TYPES[type_string])


def test_known_but_unsupported_and_custom_types(tmp_path: Path) -> None:
    with pytest.raises(StError, match=r"'sentence_transformers.models.Frobnicate' is not supported by st \(st runs: "):
        registry.class_for_type_string("sentence_transformers.models.Frobnicate", tmp_path)
    (tmp_path / "gate.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(TrustError, match="--trust-remote-code"):
        registry.class_for_type_string("gate.Gate", tmp_path)
