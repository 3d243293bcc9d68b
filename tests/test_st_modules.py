"""Custom modules written for sentence-transformers itself, run by st with trust, with or without ST installed.

The example files in tests/compat/st_modules/ are the ST docs' DecayMeanPooling(Module), a
CustomTransformer(Transformer) taking a `task` keyword, and a plain torch.nn.Module with save/load
as ST <= 5.3 documented. Folders are saved by sentence-transformers itself (6.2 here, 3.4 in its
compat venv) and compared with its embeddings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.errors import EXIT_BAD_INPUT, ModelFolderError, StError, TrustError
from st_cli.format import layout
from tests.texts import COMPARE_TEXTS

EXAMPLES = Path(__file__).parent / "compat" / "st_modules"
VENVS = Path(os.environ.get("ST_COMPAT_VENVS", Path(__file__).parent.parent / ".venv-compat"))
ATOL = 1e-6
ONE_LINERS = (2, 3, 6, 8, 15)  # COMPARE_TEXTS without a newline, for stdin
runner = CliRunner()
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}
STACKS = {
    "decay": (["Transformer", "DecayMeanPooling", "Normalize"], 32),  # Module (the docs' example)
    "task": (["CustomTransformer", "Pooling", "Normalize"], 32),  # Transformer, with kwargs [task]
    "input": (["HashedWords", "Pooling", "Normalize"], 16),  # InputModule, with weights and its own load()
    # ST 5.0-5.3 style: tokenize(), get_sentence_embedding_dimension(), pytorch_model.bin, load(input_path)
    "st5-style": (["CharTrigrams", "Pooling", "Shift"], 16),
}


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.json"
    path.write_text(json.dumps(COMPARE_TEXTS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def portable_bert(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with a tokenizer config old transformers versions can read."""
    folder = Path(shutil.copytree(tiny_bert_dir, tmp_path_factory.mktemp("bert") / "bert"))
    layout.make_tokenizer_config_portable(folder)
    return folder


def save_with_st(python: Path | str, bert: Path, texts_file: Path, out_root: Path, *stacks: str) -> Path:
    """Folders saved by sentence-transformers itself (the venv's version), with its embeddings beside them."""
    script = EXAMPLES / "save_with_st.py"
    run = subprocess.run(
        [str(python), str(script), str(bert), str(texts_file), str(out_root), *stacks],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return out_root


@pytest.fixture(scope="module")
def st62(tiny_bert_dir: Path, texts_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every stack of STACKS as sentence-transformers 6.2 saves it, each with ST's embeddings beside it."""
    root = tmp_path_factory.mktemp("st62")
    return save_with_st(sys.executable, tiny_bert_dir, texts_file, root, *STACKS)


def theirs(root: Path, name: str) -> np.ndarray:
    return np.load(root / f"{name}.npy")


# ---------------------------------------------------------------- ST 6.2's own folders, in this process


@pytest.mark.parametrize("stack", list(STACKS))
def test_folders_saved_by_st62_load_with_trust_and_match(st62: Path, stack: str) -> None:
    import sentence_transformers

    model = st_cli.load_model(st62 / stack, trust_remote_code=True)
    names, dimension = STACKS[stack]
    assert [type(m).__name__ for m in model.steps] == names
    assert model.get_sentence_embedding_dimension() == dimension
    np.testing.assert_allclose(model.encode(COMPARE_TEXTS, batch_size=16), theirs(st62, stack), atol=ATOL, rtol=0)
    if stack == "task":  # the keyword reaches the custom Transformer, as in ST
        clustered = model.encode(COMPARE_TEXTS, batch_size=16, task="clustering")
        np.testing.assert_allclose(clustered, theirs(st62, "task.clustering"), atol=ATOL, rtol=0)
        assert np.abs(clustered - theirs(st62, "task")).max() > 1e-2
    # The stand-in existed only while the file was imported: the real package is back for everyone else.
    assert sys.modules["sentence_transformers"] is sentence_transformers
    assert sys.modules["sentence_transformers"].__file__ == sentence_transformers.__file__


def test_folders_saved_by_st57_load_with_trust_and_match(portable_bert: Path, texts_file: Path, tmp_path: Path) -> None:
    """The same three stacks saved by sentence-transformers 5.7 (its compat venv)."""
    python = VENVS / "st57" / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python} missing: run `make compat-venvs` (make test does)")
    root = save_with_st(python, portable_bert, texts_file, tmp_path, *STACKS)
    for stack, (names, _) in STACKS.items():
        model = st_cli.load_model(root / stack, trust_remote_code=True)
        assert [type(m).__name__ for m in model.steps] == names
        np.testing.assert_allclose(model.encode(COMPARE_TEXTS, batch_size=16), theirs(root, stack), atol=ATOL, rtol=0)
    clustered = st_cli.load_model(root / "task", trust_remote_code=True).encode(COMPARE_TEXTS, task="clustering")
    np.testing.assert_allclose(clustered, theirs(root, "task.clustering"), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "spelling",
    [
        "from sentence_transformers.models import Module",  # ST 5.0-5.3 (the issue's)
        "from sentence_transformers.models.Module import Module",  # ST 5.0-5.3's file
        "from sentence_transformers.base.modules import Module",  # ST >= 5.4
        "from sentence_transformers.base.modules.module import Module",
        "from sentence_transformers.sentence_transformer.modules import Module",  # the docs' since 5.4
        "import sentence_transformers.models as models\nModule = models.Module",
    ],
)
def test_every_import_spelling_of_module(st62: Path, tmp_path: Path, spelling: str) -> None:
    folder = Path(shutil.copytree(st62 / "decay", tmp_path / "decay"))
    source = folder / "decay_pooling.py"
    source.write_text(source.read_text().replace("from sentence_transformers.models import Module", spelling))
    model = st_cli.load_model(folder, trust_remote_code=True)
    np.testing.assert_allclose(model.encode(COMPARE_TEXTS, batch_size=16), theirs(st62, "decay"), atol=ATOL, rtol=0)


def test_st_resave_of_an_st_style_module_loads_in_st62(st62: Path, tmp_path: Path) -> None:
    """st saves the loaded stack (the module's own save, its file copied along); ST 6.2 reads it back."""
    from sentence_transformers import SentenceTransformer

    model = st_cli.load_model(st62 / "task", trust_remote_code=True)
    folder = model.save(tmp_path / "resaved")
    assert (folder / "custom_transformer.py").read_bytes() == (EXAMPLES / "custom_transformer.py").read_bytes()
    assert json.loads((folder / "modules.json").read_text())[0]["kwargs"] == ["task"]
    reference = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    for kwargs in ({}, {"task": "clustering"}):
        ours = model.encode(COMPARE_TEXTS, batch_size=16, **kwargs)
        np.testing.assert_allclose(ours, reference.encode(COMPARE_TEXTS, batch_size=16, **kwargs), atol=ATOL, rtol=0)


def test_the_docs_example_on_the_real_model(minilm_dir: Path, texts_file: Path, tmp_path: Path) -> None:
    """The docs' DecayMeanPooling over all-MiniLM-L6-v2, saved by ST 6.2: st gives ST's embeddings."""
    root = save_with_st(sys.executable, minilm_dir, texts_file, tmp_path, "decay")
    model = st_cli.load_model(root / "decay", trust_remote_code=True)
    assert model.get_sentence_embedding_dimension() == 384
    np.testing.assert_allclose(model.encode(COMPARE_TEXTS, batch_size=16), theirs(root, "decay"), atol=ATOL, rtol=0)


def test_a_recipe_names_a_module_written_for_sentence_transformers(tiny_recipe, tmp_path: Path) -> None:
    """The docs' file in a recipe: st builds with it, and both st and ST 6.2 load the folder alike."""
    from sentence_transformers import SentenceTransformer

    recipe = tiny_recipe(f"  - type: {EXAMPLES / 'decay_pooling.py'}:DecayMeanPooling\n    decay: 0.8\n")
    built, folder = st_cli.build(recipe, tmp_path / "m")
    assert json.loads((folder / "1_DecayMeanPooling" / "config.json").read_text()) == {"dimension": 32, "decay": 0.8}
    assert (folder / "decay_pooling.py").read_bytes() == (EXAMPLES / "decay_pooling.py").read_bytes()
    ours = st_cli.load_model(folder, trust_remote_code=True).encode(COMPARE_TEXTS, batch_size=16)
    np.testing.assert_allclose(ours, built.encode(COMPARE_TEXTS, batch_size=16), atol=ATOL, rtol=0)
    reference = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    np.testing.assert_allclose(ours, reference.encode(COMPARE_TEXTS, batch_size=16), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- sentence-transformers not installed


def test_st62_folders_load_where_sentence_transformers_is_not_importable(st62: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(COMPARE_TEXTS), encoding="utf-8")
    args = [*(str(st62 / stack) for stack in STACKS), f"{st62 / 'task'}:clustering"]
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "encode_without_st.py"), str(texts), str(tmp_path), *args],
        capture_output=True, text=True, env={**ENV, "PYTHONPATH": str(Path(__file__).parent.parent)}, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "sentence_transformers stayed hidden" in run.stdout
    for name in [*STACKS, "task.clustering"]:
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), theirs(st62, name), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- trust


def test_without_trust_nothing_from_the_folder_runs(st62: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(st62 / "decay", tmp_path / "decay"))
    marker = tmp_path / "ran.marker"
    source = folder / "decay_pooling.py"
    source.write_text(source.read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(TrustError, match="class DecayMeanPooling in .*decay_pooling.py.*--trust-remote-code"):
        st_cli.load_model(folder)
    out = tmp_path / "e.npy"
    result = runner.invoke(app, ["encode", "-", "-m", str(folder), "-o", str(out)], input="hello\n")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "--trust-remote-code" in result.stderr
    assert not marker.exists() and not out.exists()

    result = runner.invoke(app, ["encode", "-", "-m", str(folder), "-o", str(out), "--trust-remote-code", "-q"],
                           input="\n".join(COMPARE_TEXTS[i] for i in ONE_LINERS))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert marker.exists()
    np.testing.assert_allclose(np.load(out), theirs(st62, "decay")[list(ONE_LINERS)], atol=ATOL, rtol=0)


def test_a_name_st_does_not_supply_is_one_line(st62: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(st62 / "decay", tmp_path / "decay"))
    source = folder / "decay_pooling.py"
    source.write_text("from sentence_transformers.losses import MSELoss\n" + source.read_text())
    with pytest.raises(StError) as info:
        st_cli.load_model(folder, trust_remote_code=True)
    message = str(info.value)
    assert "\n" not in message and str(source) in message
    assert "No module named 'sentence_transformers.losses'" in message
    assert "st supplies from sentence_transformers only: InputModule, Module, Transformer" in message


# ---------------------------------------------------------------- ST <= 5.3: a plain torch.nn.Module with save/load


@pytest.mark.parametrize("version", ["st34", "st41"])
def test_plain_modules_saved_by_an_old_st_load_and_match(
    version: str, portable_bert: Path, texts_file: Path, tmp_path: Path
) -> None:
    python = VENVS / version / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python} missing: run `make compat-venvs` (make test does)")
    root = save_with_st(python, portable_bert, texts_file, tmp_path, "old-style", "old-input")
    stacks = {  # the classes, the file they come from, and where their weights are saved
        "old-style": (["Transformer", "ScaledMeanPooling", "Normalize"], "old_style_pooling.py", "1_ScaledMeanPooling"),
        "old-input": (["OldHashedWords", "Pooling", "Normalize"], "old_style_input.py", "0_OldHashedWords"),
    }
    for stack, (names, source, module_dir) in stacks.items():
        folder = root / stack
        with pytest.raises(TrustError):
            st_cli.load_model(folder)
        model = st_cli.load_model(folder, trust_remote_code=True)
        assert [type(m).__name__ for m in model.steps] == names
        ours = model.encode(COMPARE_TEXTS, batch_size=16)
        np.testing.assert_allclose(ours, theirs(root, stack), atol=ATOL, rtol=0)

        # st saves it through the module's own save(path), where ST put it, carrying the file; it loads back the same.
        resaved = model.save(tmp_path / f"{stack}-resaved")
        assert sorted(p.name for p in (resaved / module_dir).iterdir()) == sorted(
            p.name for p in (folder / module_dir).iterdir()
        )
        assert (resaved / source).read_bytes() == (EXAMPLES / source).read_bytes()
        again = st_cli.load_model(resaved, trust_remote_code=True).encode(COMPARE_TEXTS, batch_size=16)
        np.testing.assert_allclose(again, ours, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- plugins from an installed package's entry point

PLUGIN = '''
from typing import ClassVar

import torch

from st_cli import Module


class DemoScale(Module):
    """Scales the sentence embedding by a learned factor; registered by this package's entry point."""

    config_keys: ClassVar[list[str]] = ["factor"]

    def __init__(self, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = factor
        self.weight = torch.nn.Parameter(torch.full((1,), factor))

    def forward(self, features, **kwargs):
        features["sentence_embedding"] = features["sentence_embedding"] * self.weight
        return features
'''


def install_plugin_package(site: Path) -> None:
    """An installed distribution `st-plugin-demo` whose entry point registers DemoScale with st."""
    (site / "st_plugin_demo").mkdir(parents=True)
    (site / "st_plugin_demo" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    dist = site / "st_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: st-plugin-demo\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[st_cli.modules]\nDemoScale = st_plugin_demo:DemoScale\n", encoding="utf-8")


def st_process(*args: str, site: Path | None) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(Path(__file__).parent.parent), *([str(site)] if site else [])])
    return subprocess.run(
        [sys.executable, "-m", "st_cli", *args],
        capture_output=True, text=True, env={**ENV, "PYTHONPATH": path}, timeout=600,
    )  # fmt: skip


def test_an_installed_packages_entry_point_plugin_builds_saves_and_loads_without_trust(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from st_cli.model import registry

    site = tmp_path / "site"
    install_plugin_package(site)
    recipe = tiny_recipe("  - type: Pooling\n  - type: DemoScale\n    factor: 3.0\n")
    folder, texts = tmp_path / "m", tmp_path / "texts.txt"
    texts.write_text("\n".join(COMPARE_TEXTS[i] for i in ONE_LINERS) + "\n", encoding="utf-8")

    run = st_process("build", str(recipe), "-o", str(folder), site=site)  # a fresh process: only the entry point
    assert run.returncode == 0, run.stderr
    assert json.loads((folder / "modules.json").read_text())[-1]["type"] == "st_plugin_demo.DemoScale"
    assert not (folder / "st_plugin_demo.py").exists()  # a plugin is installed code, not the folder's
    run = st_process("encode", str(texts), "-m", str(folder), "-o", str(tmp_path / "e.npy"), "-q", site=site)
    assert run.returncode == 0, run.stderr  # no --trust-remote-code needed

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr("st_cli.format.spec._entry_points_loaded", False)
    try:
        model = st_cli.load_model(folder)  # trust_remote_code=False
        assert type(model.steps[-1]).__name__ == "DemoScale" and model.steps[-1].factor == 3.0
        expected = model.encode([COMPARE_TEXTS[i] for i in ONE_LINERS])
    finally:
        registry.unregister("DemoScale")
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=ATOL, rtol=0)

    # Without the package, the folder names code nobody has: one line, exit 2, nothing written.
    run = st_process("encode", str(texts), "-m", str(folder), "-o", str(tmp_path / "x.npy"), site=None)
    assert run.returncode == EXIT_BAD_INPUT, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "'st_plugin_demo.DemoScale' is not built in, no installed plugin registers it" in run.stderr
    assert "install the package that provides it" in run.stderr and not (tmp_path / "x.npy").exists()


# ---------------------------------------------------------------- Hub cache, offline


def test_module_load_by_hub_id_is_served_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sentence-transformers calls a module's load() with a Hub id; offline, the cache must answer.

    huggingface_hub 1.x (seen on 1.33) raises OfflineModeIsEnabled from a plain snapshot_download under
    HF_HUB_OFFLINE=1 (it lists the repo tree after falling back to the cached commit): simulated here.
    """
    import huggingface_hub
    from huggingface_hub.errors import OfflineModeIsEnabled

    from st_cli.model.modules.base import local_folder

    sha = "c" * 40
    repo = tmp_path / "cache" / "models--stcli--cached"
    (repo / "snapshots" / sha / "1_Pooling").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    real = huggingface_hub.snapshot_download

    def strict_offline(repo_id: str, **kwargs: object) -> str:
        if not kwargs.get("local_files_only"):
            raise OfflineModeIsEnabled("Cannot reach the Hub: offline mode is enabled.")
        return real(repo_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", strict_offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = str(tmp_path / "cache")
    found = local_folder("stcli/cached", "1_Pooling", cache_folder=cache)
    assert found == repo / "snapshots" / sha / "1_Pooling"
    with pytest.raises(
        ModelFolderError, match=r"stcli/absent: not in the Hugging Face cache \(HF_HUB_OFFLINE is set\)"
    ):
        local_folder("stcli/absent", "", cache_folder=cache)
