"""Custom modules: recipes that name code, folders that carry it, the trust gate, and kwargs passthrough.

The three worked examples in recipes/custom/ are checked on the real all-MiniLM-L6-v2 against
sentence-transformers 6.2; everything else runs on the tiny BERT.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.errors import EXIT_BAD_INPUT, StError, TrustError
from st_cli.model.model import build, load_model
from tests.texts import COMPARE_TEXTS

runner = CliRunner()
CUSTOM_RECIPES = Path(__file__).parent.parent / "recipes" / "custom"
ATOL = 1e-6
# A spread of COMPARE_TEXTS (empty, whitespace, unicode, emoji, code, one over max_seq_length), kept short:
# each example is built, loaded twice and encoded on shared cores.
TEXTS = [COMPARE_TEXTS[i] for i in (0, 2, 3, 6, 8, 11, 15, 17, 22, 25, 28, 30)]

# A token-level layer with weights; records the kwargs its forward received.
GATE = '''
from typing import Any, ClassVar

import torch

from st_cli import Module

SEEN: list[dict] = []


class Gate(Module):
    config_keys: ClassVar[list[str]] = ["in_features", "out_features"]

    def __init__(self, in_features: int, out_features: int = 48) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = torch.nn.Linear(in_features, out_features)

    def forward(self, features, task: str | None = None, **kwargs: Any):
        SEEN.append({"task": task, **kwargs})
        scale = 2.0 if task == "double" else 1.0
        features["token_embeddings"] = self.linear(features["token_embeddings"]) * scale
        return features
'''

# A pooling-side module without weights whose import leaves a marker file behind.
MARKER_MODULE = '''
from pathlib import Path

from st_cli import Module

Path({marker!r}).write_text("imported")


class Scale(Module):
    config_keys = ["factor"]

    def __init__(self, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, features, **kwargs):
        features["sentence_embedding"] = features["sentence_embedding"] * self.factor
        return features
'''

BAD_MODULES = '''
import torch

from st_cli import Module

NOT_A_CLASS = 3


class NotTorch:
    def forward(self, features):
        return features


class PlainTorch(torch.nn.Module):
    def forward(self, features):
        return features


class NoForward(Module):
    pass


class BadConfig(Module):
    config_keys = ["size"]

    def __init__(self, width: int = 3) -> None:
        super().__init__()

    def forward(self, features):
        return features


class BadPlan(Module):
    @classmethod
    def plan(cls, kwargs, input_dim):
        return kwargs, kwargs["width"]

    def forward(self, features):
        return features


class Wide(Module):
    def get_sentence_embedding_dimension(self) -> int:
        return 7

    def forward(self, features):
        return features
'''


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def fake_commit(tmp_path: Path) -> str:
    """A commit hash unique to this test run: transformers caches Hub code by commit, for good."""
    return hashlib.sha1(str(tmp_path).encode()).hexdigest()


def pooling_tail(extra: str = "") -> str:
    return f"  - type: Pooling\n{extra}"


# ---------------------------------------------------------------- the worked examples (real MiniLM)


@pytest.mark.parametrize(
    ("recipe", "dimension", "untrained", "kwargs"),
    [
        ("minilm-linear-512.yaml", 512, [1], {}),
        ("minilm-decay-pooling.yaml", 384, [], {}),
        ("minilm-task.yaml", 384, [], {"task": "clustering"}),
    ],
)
def test_example_matches_sentence_transformers(
    recipe: str, dimension: int, untrained: list[int], kwargs: dict, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    _, folder = build(CUSTOM_RECIPES / recipe, tmp_path / "model")
    source = next(p for p in CUSTOM_RECIPES.glob("*.py") if (folder / p.name).is_file())
    assert (folder / source.name).read_bytes() == source.read_bytes()
    manifest = json.loads((folder / "st_manifest.json").read_text())
    assert manifest["untrained_modules"] == untrained

    loaded = load_model(folder, trust_remote_code=True)
    assert not any(m.untrained for m in loaded.stack)
    ours = loaded.encode(TEXTS, **kwargs)
    reference = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    theirs = reference.encode(TEXTS, batch_size=32, **kwargs)
    assert ours.shape == (len(TEXTS), dimension)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    probes = manifest["probes"]
    np.testing.assert_allclose(  # the reloaded model reproduces what the built one recorded
        loaded.encode(probes["texts"][:3]), np.array(probes["embeddings"][:3]), atol=ATOL, rtol=0
    )
    if kwargs:  # the keyword really reaches the module, on both sides
        plain = reference.encode(TEXTS[:3], batch_size=32)
        np.testing.assert_allclose(loaded.encode(TEXTS[:3]), plain, atol=ATOL, rtol=0)
        assert np.abs(plain - ours[:3]).max() > 1e-3


def test_example_modules_json_and_recipe_record(tmp_path: Path) -> None:
    recipe = st_cli.load_recipe(CUSTOM_RECIPES / "minilm-task.yaml")
    assert recipe.modules[0].forward_kwargs == ("task",)
    assert recipe.to_json()["modules"][0]["kwargs"] == ["task"]
    linear = st_cli.load_recipe(CUSTOM_RECIPES / "minilm-linear-512.yaml")
    assert linear.modules[1].kwargs["in_features"] == 384
    assert linear.modules[2].kwargs["dimension"] == 512  # Pooling follows the linear layer


# ---------------------------------------------------------------- building (tiny BERT)


def test_custom_module_builds_copies_source_and_warns(tiny_recipe, tmp_path: Path) -> None:
    write(tmp_path / "gate.py", GATE)
    recipe = tiny_recipe("  - type: gate.py:Gate\n    kwargs: [task]\n" + pooling_tail())
    result = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    assert "untrained modules (1:Gate)" in result.stderr
    assert json.loads(result.stdout)["dimension"] == 48
    folder = tmp_path / "out"
    entries = json.loads((folder / "modules.json").read_text())
    assert entries[1] == {"idx": 1, "name": "1", "path": "1_Gate", "type": "gate.Gate", "kwargs": ["task"]}
    assert (folder / "gate.py").read_text() == (tmp_path / "gate.py").read_text()
    assert json.loads((folder / "st_manifest.json").read_text())["untrained_modules"] == [1]

    (tmp_path / "gate.py").unlink()  # the folder no longer needs the recipe's copy
    loaded = load_model(folder, trust_remote_code=True)
    assert type(loaded.stack[1]).__name__ == "Gate" and not loaded.stack[1].untrained
    assert loaded.get_sentence_embedding_dimension() == 48


def test_package_module_ref(tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "my_layers_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    write(package / "gates.py", GATE)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    recipe = tiny_recipe("  - type: my_layers_pkg.gates:Gate\n    out_features: 40\n" + pooling_tail())
    model, folder = build(recipe, tmp_path / "out")
    assert model.get_sentence_embedding_dimension() == 40
    assert json.loads((folder / "modules.json").read_text())[1]["type"] == "gates.Gate"
    assert (folder / "gates.py").is_file()


def test_kwargs_reach_only_the_declaring_module(tiny_recipe, tmp_path: Path) -> None:
    write(tmp_path / "gate.py", GATE)
    write(tmp_path / "gate_two.py", GATE)
    recipe = tiny_recipe(
        "  - type: gate.py:Gate\n    kwargs: [task]\n  - type: gate_two.py:Gate\n    out_features: 16\n"
        + pooling_tail()
    )
    _, folder = build(recipe, tmp_path / "out")
    model = load_model(folder, trust_remote_code=True)
    first, second = (__import__(type(m).__module__) for m in model.stack[1:3])
    first.SEEN.clear()
    second.SEEN.clear()
    doubled = model.encode(["hello world"], task="double")
    assert first.SEEN == [{"task": "double"}] and second.SEEN == [{"task": None}]
    assert np.abs(doubled - model.encode(["hello world"])).max() > 1e-4
    with pytest.raises(StError, match=r"keyword argument 'tsk' is not declared by any module \(declared: task\)"):
        model.encode(["hello world"], tsk="double")


def test_subclass_of_a_builtin_keeps_its_own_config(tiny_recipe, tmp_path: Path) -> None:
    write(
        tmp_path / "scaled_pooling.py",
        """
        from typing import ClassVar

        from st_cli.model.modules.pooling import Pooling


        class ScaledPooling(Pooling):
            config_keys: ClassVar[list[str]] = [*Pooling.config_keys, "scale"]

            def __init__(self, dimension: int, mode="mean", include_prompt: bool = True, scale: float = 1.0) -> None:
                super().__init__(dimension, mode, include_prompt)
                self.scale = scale

            def forward(self, features, **kwargs):
                features = super().forward(features)
                features["sentence_embedding"] = features["sentence_embedding"] * self.scale
                return features
        """,
    )
    recipe = tiny_recipe("  - type: scaled_pooling.py:ScaledPooling\n    scale: 3.0\n")
    built, folder = build(recipe, tmp_path / "out")
    entries = json.loads((folder / "modules.json").read_text())
    assert entries[1]["type"] == "scaled_pooling.ScaledPooling"
    config = json.loads((folder / "1_ScaledPooling" / "config.json").read_text())
    assert config == {"dimension": 32, "mode": ["mean"], "include_prompt": True, "scale": 3.0}
    assert json.loads((folder / "st_manifest.json").read_text())["untrained_modules"] == []
    loaded = load_model(folder, trust_remote_code=True)
    assert loaded.stack[1].scale == 3.0
    np.testing.assert_allclose(loaded.encode(["the cat"]), built.encode(["the cat"]), atol=ATOL, rtol=0)


def test_plan_override_wins(tiny_recipe, tmp_path: Path) -> None:
    write(
        tmp_path / "twice.py",
        """
        from st_cli import Module


        class Twice(Module):
            config_keys = ["dimension"]

            def __init__(self, dimension: int) -> None:
                super().__init__()
                self.dimension = dimension

            @classmethod
            def plan(cls, kwargs, input_dim):
                return {**kwargs, "dimension": input_dim}, 2 * input_dim

            def get_sentence_embedding_dimension(self):
                return 2 * self.dimension

            def forward(self, features, **kwargs):
                emb = features["sentence_embedding"]
                features["sentence_embedding"] = __import__("torch").cat([emb, emb], dim=-1)
                return features
        """,
    )
    recipe = tiny_recipe(pooling_tail() + "  - type: twice.py:Twice\n  - type: Dense\n    out_features: 8\n")
    spec = st_cli.load_recipe(recipe).modules
    assert spec[2].output_dim == 64 and spec[3].kwargs["in_features"] == 64
    model, _ = build(recipe, tmp_path / "out")
    assert model.encode(["hello"]).shape == (1, 8)


# ---------------------------------------------------------------- trust


@pytest.fixture
def marker_folder(tiny_recipe, tmp_path: Path) -> tuple[Path, Path]:
    """A built folder whose custom module writes a marker file when imported; the marker is removed."""
    marker = tmp_path / "imported.marker"
    write(tmp_path / "scale.py", MARKER_MODULE.format(marker=str(marker)))
    recipe = tiny_recipe(pooling_tail() + "  - type: scale.py:Scale\n")
    _, folder = build(recipe, tmp_path / "out")
    assert marker.exists()  # the recipe's own code ran at build time, as it should
    marker.unlink()
    (tmp_path / "scale.py").unlink()
    return folder, marker


def test_untrusted_folder_never_runs_its_code(marker_folder: tuple[Path, Path]) -> None:
    folder, marker = marker_folder
    with pytest.raises(TrustError) as info:
        load_model(folder)
    message = str(info.value)
    assert "\n" not in message
    assert "class Scale in" in message and str(folder / "scale.py") in message
    assert "--trust-remote-code" in message and "trust_remote_code=True" in message
    assert not marker.exists()
    load_model(folder, trust_remote_code=True)
    assert marker.exists()


def test_custom_type_naming_a_file_outside_the_folder_is_refused(marker_folder: tuple[Path, Path]) -> None:
    folder, marker = marker_folder
    shutil.copy(folder / "scale.py", folder.parent / "scale.py")
    entries = json.loads((folder / "modules.json").read_text())
    entries[2]["type"] = "../scale.Scale"
    (folder / "modules.json").write_text(json.dumps(entries))
    with pytest.raises(StError, match="not a class path"):
        load_model(folder, trust_remote_code=True)
    assert not marker.exists()


def test_untrusted_folder_cli_exits_2(marker_folder: tuple[Path, Path]) -> None:
    folder, marker = marker_folder
    result = runner.invoke(app, ["inspect", str(folder), "--json"])  # reads JSON only, lists the code
    assert result.exit_code == 0, result.output
    assert "custom-code" in result.stdout and "scale.py" in result.stdout
    result = runner.invoke(app, ["verify", str(folder)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--trust-remote-code" in result.stderr and "scale.py" in result.stderr
    assert not marker.exists()
    result = runner.invoke(app, ["encode", "-", "-m", str(folder), "-o", str(folder.parent / "e.npy")], input="hi\n")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--trust-remote-code" in result.stderr and "scale.py" in result.stderr
    assert not marker.exists() and not (folder.parent / "e.npy").exists()
    result = runner.invoke(app, ["verify", str(folder), "--trust-remote-code"])
    assert result.exit_code == 0, result.output
    assert marker.exists()


def test_cli_encode_passes_kw_to_the_declaring_module(tiny_recipe, tmp_path: Path) -> None:
    write(tmp_path / "gate.py", GATE)
    _, folder = build(tiny_recipe("  - type: gate.py:Gate\n    kwargs: [task]\n" + pooling_tail()), tmp_path / "m")
    texts = ["hello world", "the cat is eating"]
    base = ["encode", "-", "-m", str(folder), "--trust-remote-code", "-q"]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "d.npy"), "--kw", "task=double"], input="\n".join(texts))
    assert result.exit_code == 0, result.output
    expected = load_model(folder, trust_remote_code=True).encode(texts, task="double")
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), expected, atol=ATOL, rtol=0)
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "x.npy"), "--kw", "tsk=double"], input="hi\n")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "'tsk' is not declared by any module" in result.stderr


def test_hub_class_ref_resolves_through_the_cache(
    marker_folder: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    folder, marker = marker_folder
    cache = tmp_path / "hf-cache"
    repo = cache / "models--stcli--custom-modules"
    sha = fake_commit(tmp_path)
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    shutil.move(folder / "scale.py", repo / "snapshots" / sha / "scale.py")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    entries = json.loads((folder / "modules.json").read_text())
    entries[2]["type"] = "stcli/custom-modules--scale.Scale"
    (folder / "modules.json").write_text(json.dumps(entries))

    with pytest.raises(TrustError, match="class Scale in scale.py in Hub repo stcli/custom-modules"):
        load_model(folder)
    assert not marker.exists()
    model = load_model(folder, trust_remote_code=True)
    assert marker.exists() and type(model.stack[2]).__name__ == "Scale"

    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True, cache_folder=str(cache))
    texts = ["hello world", "a man is eating food"]
    np.testing.assert_allclose(model.encode(texts), reference.encode(texts), atol=ATOL, rtol=0)


def test_custom_folder_served_from_the_hub_cache(
    marker_folder: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with custom code pushed to the Hub: loaded by repo id, st and sentence-transformers agree."""
    from huggingface_hub import constants
    from sentence_transformers import SentenceTransformer

    folder, _ = marker_folder
    cache = tmp_path / "hf-cache"
    sha = fake_commit(tmp_path)
    shutil.copytree(folder, cache / "models--stcli--tiny-scaled" / "snapshots" / sha)
    (cache / "models--stcli--tiny-scaled" / "refs").mkdir()
    (cache / "models--stcli--tiny-scaled" / "refs" / "main").write_text(sha)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(TrustError):
        load_model("stcli/tiny-scaled")
    ours = load_model("stcli/tiny-scaled", trust_remote_code=True).encode(["hello world", "the cat"])
    reference = SentenceTransformer("stcli/tiny-scaled", device="cpu", trust_remote_code=True, cache_folder=str(cache))
    np.testing.assert_allclose(ours, reference.encode(["hello world", "the cat"]), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- bad input: one line, exit 2


def test_custom_first_module_must_tokenize(tmp_path: Path) -> None:
    write(tmp_path / "gate.py", GATE)
    recipe = write(tmp_path / "recipe.yaml", "modules:\n  - type: gate.py:Gate\n    in_features: 4\n")
    with pytest.raises(StError, match=r"recipe.yaml:2: modules\[0\].type: gate.py:Gate comes first, so it must"):
        st_cli.load_recipe(recipe)


@pytest.mark.parametrize(
    ("module_yaml", "expected"),
    [
        ("  - type: missing.py:Gate\n", ":5: modules[1].type: no such file 'missing.py'"),
        ("  - type: bad.py:Gone\n", ":5: modules[1].type: bad.py has no class 'Gone' (it defines: BadConfig,"),
        ("  - type: bad.py:NOT_A_CLASS\n", ":5: modules[1].type: bad.py:NOT_A_CLASS is not a class (it is a int"),
        ("  - type: bad.py:NotTorch\n", ":5: modules[1].type: bad.py:NotTorch is not a torch.nn.Module; subclass"),
        ("  - type: bad.py:PlainTorch\n", ":5: modules[1].type: bad.py:PlainTorch is a plain torch.nn.Module"),
        ("  - type: bad.py:NoForward\n", ":5: modules[1].type: bad.py:NoForward does not define forward("),
        ("  - type: bad.py:BadConfig\n", ":5: modules[1].type: bad.py:BadConfig: config_keys names 'size'"),
        ("  - type: no_such_pkg_xyz.layers:Gate\n", ":5: modules[1].type: cannot import 'no_such_pkg_xyz.layers'"),
        ("  - type: broken.py:Gate\n", ":5: modules[1].type: "),
        ("  - type: gate.py\n", ":5: modules[1].type: unknown module type 'gate.py'"),
        ("  - type: gate.py:Gate\n    in_features: 10\n", ":6: modules[1].in_features: is 10 but the module before"),
        ("  - type: gate.py:Gate\n    size: 3\n", ":6: modules[1].size: unknown key 'size' for gate.py:Gate"),
        ("  - type: gate.py:Gate\n    kwargs: task\n", ":6: modules[1].kwargs: expected a list of keyword names"),
        ("  - type: bad.py:BadPlan\n", ":5: modules[1]: BadPlan.plan() failed: KeyError: 'width'"),
        (pooling_tail() + "  - type: bad.py:Wide\n", ":6: modules[2]: Wide reports dimension 7, but the recipe"),
        ("  - type: bad.py:Wide\n    kwargs: [task]\n", ":6: modules[1].kwargs: Wide.forward() does not accept 'task'"),
        (pooling_tail("    kwargs: [task]\n"), ":6: modules[1].kwargs: Pooling takes no encode-time keywords"),
    ],
)
def test_bad_custom_module_is_one_line_exit_2(tiny_recipe, tmp_path: Path, module_yaml: str, expected: str) -> None:
    write(tmp_path / "gate.py", GATE)
    write(tmp_path / "bad.py", BAD_MODULES)
    write(tmp_path / "broken.py", "import torch\nraise RuntimeError('boom at import')\n")
    recipe = tiny_recipe(module_yaml)
    result = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"error: {recipe}{expected}" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    if "broken" in module_yaml:
        assert "importing it failed: RuntimeError: boom at import" in lines[0]


def test_custom_forward_that_raises_at_build_is_one_line_exit_2(tiny_recipe, tmp_path: Path) -> None:
    write(
        tmp_path / "failing.py",
        """
        from st_cli import Module


        class Failing(Module):
            def forward(self, features, **kwargs):
                raise ValueError("bad forward")
        """,
    )
    recipe = tiny_recipe(pooling_tail() + "  - type: failing.py:Failing\n")
    result = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "ValueError: bad forward" in result.stderr
    assert not (tmp_path / "out").exists()
