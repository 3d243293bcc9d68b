"""Reference tests: folders st builds load in sentence-transformers 6.2 with the same embeddings,
and st loads folders sentence-transformers wrote (both dialects) with the same embeddings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.models import Dense as STDense
from sentence_transformers.models import Normalize as STNormalize
from sentence_transformers.models import Pooling as STPooling
from sentence_transformers.models import Transformer as STTransformer

import st_cli
from st_cli.format.summary import portability
from tests.texts import COMPARE_TEXTS

RECIPES = Path(__file__).parent.parent / "recipes"
ATOL = 1e-6


def st_encode(folder: Path, texts: list[str], **kwargs) -> np.ndarray:
    return SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=32, **kwargs)


@pytest.fixture(scope="module")
def shipped_embeddings(minilm_dir: Path) -> np.ndarray:
    return st_encode(minilm_dir, COMPARE_TEXTS)


@pytest.mark.parametrize("fmt", ["portable", "st6"])
def test_default_recipe_matches_shipped_model(fmt: str, tmp_path: Path, shipped_embeddings: np.ndarray) -> None:
    _, folder = st_cli.build(RECIPES / "minilm.yaml", tmp_path / "minilm", format=fmt)
    ours = st_cli.load_model(folder).encode(COMPARE_TEXTS)
    theirs = st_encode(folder, COMPARE_TEXTS)
    assert ours.shape == (len(COMPARE_TEXTS), 384)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(theirs, shipped_embeddings, atol=ATOL, rtol=0)
    verdicts = {name: v.status for name, v in portability(folder).items()}
    if fmt == "portable":  # every loader, TEI's parse rules included (docs/reference/st-formats.md §7-8)
        assert verdicts == {"ST<=5.3": "yes", "ST5.4-5.x": "yes", "ST>=6": "yes", "TEI": "yes"}
    else:
        assert verdicts == {"ST<=5.3": "no", "ST5.4-5.x": "no", "ST>=6": "yes", "TEI": "no"}


@pytest.mark.parametrize("fmt", ["portable", "st6"])
def test_dense_prompts_recipe_matches_sentence_transformers(fmt: str, tmp_path: Path) -> None:
    built, folder = st_cli.build(RECIPES / "minilm-dense-prompts.yaml", tmp_path / "m", format=fmt)
    loaded = st_cli.load_model(folder)
    reference = SentenceTransformer(str(folder), device="cpu")
    assert reference.default_prompt_name == "query"
    for prompt_name in (None, "query", "document"):
        ours = loaded.encode(COMPARE_TEXTS, prompt_name=prompt_name)
        theirs = reference.encode(COMPARE_TEXTS, batch_size=32, prompt_name=prompt_name)
        assert ours.shape == (len(COMPARE_TEXTS), 256)
        np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    # The prompt is really applied: with and without it the vectors differ.
    no_prompt = loaded.encode(COMPARE_TEXTS[:5], prompt="")
    assert np.abs(no_prompt - loaded.encode(COMPARE_TEXTS[:5])).max() > 1e-3
    np.testing.assert_allclose(built.encode(COMPARE_TEXTS), loaded.encode(COMPARE_TEXTS), atol=ATOL, rtol=0)


def test_cls_recipe_matches_sentence_transformers(tmp_path: Path) -> None:
    _, folder = st_cli.build(RECIPES / "minilm-cls.yaml", tmp_path / "cls")
    np.testing.assert_allclose(
        st_cli.load_model(folder).encode(COMPARE_TEXTS), st_encode(folder, COMPARE_TEXTS), atol=ATOL, rtol=0
    )


def _st_stack(minilm_dir: Path, *, modes: tuple[str, ...] = ("mean",), include_prompt: bool = True):
    transformer = STTransformer(str(minilm_dir), max_seq_length=128)
    pooling = STPooling(384, pooling_mode=modes[0] if len(modes) == 1 else modes, include_prompt=include_prompt)
    dense = STDense(384 * len(modes), 64)
    return SentenceTransformer(
        modules=[transformer, pooling, dense, STNormalize()],
        device="cpu",
        prompts={"query": "query: "},
        default_prompt_name="query",
    )


@pytest.mark.parametrize(
    ("modes", "include_prompt"),
    [(("mean",), True), (("cls", "max", "mean"), True), (("mean_sqrt_len_tokens", "weightedmean", "lasttoken"), False)],
)
def test_load_folder_saved_by_sentence_transformers_6(minilm_dir: Path, tmp_path: Path, modes, include_prompt) -> None:
    reference = _st_stack(minilm_dir, modes=modes, include_prompt=include_prompt)
    reference.save(str(tmp_path / "st6"))
    assert "sentence_transformers.base" in (tmp_path / "st6" / "modules.json").read_text()
    ours = st_cli.load_model(tmp_path / "st6").encode(COMPARE_TEXTS)
    np.testing.assert_allclose(ours, reference.encode(COMPARE_TEXTS, batch_size=32), atol=ATOL, rtol=0)


def test_load_legacy_dialect_folder(minilm_dir: Path, tmp_path: Path) -> None:
    """The shipped model was saved by ST 2.0 (legacy dialect); a copy with an 8-key pooling config too."""
    folder = Path(shutil.copytree(minilm_dir, tmp_path / "legacy"))
    ours = st_cli.load_model(folder).encode(COMPARE_TEXTS)
    np.testing.assert_allclose(ours, st_encode(folder, COMPARE_TEXTS), atol=ATOL, rtol=0)
