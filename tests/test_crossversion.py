"""What `st build --format portable` writes loads in old sentence-transformers versions with the same vectors.

The venvs (ST 2.2.2, 2.7.0, 3.4.1, 4.1.0, 5.7.0; see docs/reference/st-formats.md) are made by `make compat-venvs`,
which `make test` runs first; a bare `pytest` without them skips these tests and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import st_cli
from tests.texts import COMPARE_TEXTS

RECIPES = Path(__file__).parent.parent / "recipes"
VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
VERSIONS = ["st22", "st27", "st34", "st41", "st57"]
# Across transformers versions the low bits differ (docs/reference/st-formats.md §4: 3.5e-7 between groups).
ATOL = 1e-6


def _python(version: str) -> Path:
    python = VENVS / version / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python} missing: run `make compat-venvs` (make test does)")
    return python


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("portable")
    return {name: st_cli.build(RECIPES / f"{name}.yaml", root / name)[1] for name in ("minilm", "minilm-dense-prompts")}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("recipe", ["minilm", "minilm-dense-prompts"])
def test_portable_folder_loads_with_same_embeddings(built: dict[str, Path], tmp_path: Path, version: str, recipe: str) -> None:
    python = _python(version)
    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(COMPARE_TEXTS), encoding="utf-8")
    out = tmp_path / "emb.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [str(python), str(Path(__file__).parent / "compat" / "crossload.py"), str(built[recipe]), str(texts_file), str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = np.load(out)
    model = st_cli.load_model(built[recipe])
    # ST 2.2 has no prompts: it silently embeds without the default prompt (docs/reference/st-formats.md §4).
    ours = model.encode(COMPARE_TEXTS, prompt="" if version == "st22" else None)
    np.testing.assert_allclose(theirs, ours, atol=ATOL, rtol=0)


TINY_STACKS = {
    # 5-key pooling, Dense with .bin for ST <= 3.0, a generic fast tokenizer (not BertTokenizer).
    "cls-max-mean": "  - type: Pooling\n    mode: [cls, max, mean]\n  - type: Dense\n    out_features: 8\n  - type: Normalize\n",
    # Needs the newer pooling keys, so ST 2.2 is out by design (docs/reference/st-formats.md §7.3).
    "weightedmean-no-prompt": "  - type: Pooling\n    mode: weightedmean\n    include_prompt: false\n",
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stack", list(TINY_STACKS))
def test_tiny_portable_folders_load(tiny_recipe, tmp_path: Path, version: str, stack: str) -> None:
    if version == "st22" and stack == "weightedmean-no-prompt":
        pytest.skip("ST 2.2 cannot read the weightedmean/lasttoken/include_prompt pooling keys")
    python = _python(version)
    extra = "prompts: {q: 'query: '}\ndefault_prompt: q\n" if "no-prompt" in stack else ""
    _, folder = st_cli.build(tiny_recipe(TINY_STACKS[stack], extra=extra), tmp_path / "m")
    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(COMPARE_TEXTS), encoding="utf-8")
    out = tmp_path / "emb.npy"
    run = subprocess.run(
        [str(python), str(Path(__file__).parent / "compat" / "crossload.py"), str(folder), str(texts_file), str(out)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), st_cli.load_model(folder).encode(COMPARE_TEXTS), atol=ATOL, rtol=0)
