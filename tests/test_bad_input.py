"""Bad input, one row per case (issue 10): bad recipes, broken folders, bad encode inputs and bad options.

Every row asserts the exit code, EXACTLY one stderr line (`error: …`) naming the file, line or key at
fault, and that nothing was left at or beside the target (outputs go to an empty folder that must stay
empty). Broken folders run twice: `st encode` refuses them (exit 2, naming the file) and `st verify`
fails a named check (exit 1, never 3).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.errors import EXIT_BAD_INPUT, EXIT_MISMATCH
from st_cli.format import summary
from st_cli.model.model import build as build_folder
from tests.conftest import DENSE_STACK

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Transformer → Pooling → Dense(16) → Normalize over the tiny BERT, portable, built once."""
    root = tmp_path_factory.mktemp("bad-input")
    recipe = root / "recipe.yaml"
    recipe.write_text(f"seed: 7\nmodules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n{DENSE_STACK}")
    _, folder = build_folder(recipe, root / "model")
    return folder


@dataclass
class Ctx:
    """What a row may use: a scratch folder, a copy of the tiny model, and an empty output folder."""

    tmp: Path
    model: Path
    bert: Path
    out: Path

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    def recipe(self, modules: str, extra: str = "") -> Path:
        return self.write("recipe.yaml", f"{extra}modules:\n  - type: Transformer\n    model: {self.bert}\n{modules}")


@pytest.fixture
def ctx(built: Path, tiny_bert_dir: Path, tmp_path: Path) -> Ctx:
    out = tmp_path / "out"
    out.mkdir()
    model = Path(shutil.copytree(built, tmp_path / "model", symlinks=True))
    return Ctx(tmp_path, model, tiny_bert_dir, out)


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in result.output
    return lines[0]


# ---------------------------------------------------------------- bad recipes: `st build`, exit 2

POOL = "  - type: Pooling\n"
DENSE = POOL + "  - type: Dense\n    out_features: {}\n"

# (id, modules YAML after the Transformer, extra top-level YAML before `modules:`, expected text in the line)
RECIPES: list[tuple[str, str, str, str]] = [
    ("unknown-top-key", POOL, "foo: 1\n", "recipe.yaml:1: foo: unknown key"),
    ("unknown-type", "  - type: Poolng\n", "", "recipe.yaml:4: modules[1].type"),
    ("unknown-module-key", POOL + "    pooling_mod: mean\n", "", "recipe.yaml:5: modules[1].pooling_mod"),
    ("dense-out-zero", DENSE.format(0), "", "recipe.yaml:6: modules[2].out_features"),
    ("dense-out-1e12-string", DENSE.format("1e12"), "", "recipe.yaml:6: modules[2].out_features"),
    ("dense-out-10^12", DENSE.format(10**12), "", "recipe.yaml:6: modules[2].out_features"),
    ("dense-out-too-wide", DENSE.format((1 << 20) + 1), "", "recipe.yaml:6: modules[2].out_features"),
    ("dense-weights-beyond-memory", DENSE.format(1 << 20) + "  - type: Dense\n    out_features: 1048576\n", "", "recipe.yaml:8: modules[3].out_features"),
    ("dense-out-float", DENSE.format(1.5), "", "recipe.yaml:6: modules[2].out_features"),
    ("dense-in-wrong", POOL + "  - type: Dense\n    in_features: 7\n    out_features: 4\n", "", "modules[2].in_features"),
    ("dense-activation-os-system", DENSE.format(4) + "    activation: os.system\n", "", "modules[2].activation"),
    ("dense-right-after-transformer", "  - type: Dense\n    out_features: 4\n", "", "recipe.yaml:4: modules[1].type"),
    ("two-transformers", f"  - type: Transformer\n    model: BERT\n{POOL}", "", "recipe.yaml:4: modules[1].type"),
    ("truncate-dim-portable", POOL, "truncate_dim: 8\n", "recipe.yaml:1: truncate_dim"),
    ("truncate-dim-too-wide", POOL, "truncate_dim: 64\n", "recipe.yaml:1: truncate_dim"),
    ("truncate-dim-negative", POOL, "truncate_dim: -1\n", "recipe.yaml:1: truncate_dim"),
    ("similarity-unknown", POOL, "similarity: hamming\n", "recipe.yaml:1: similarity"),
    ("default-prompt-unknown", POOL, "default_prompt: nope\n", "recipe.yaml:1: default_prompt"),
    ("seed-string", POOL, "seed: abc\n", "recipe.yaml:1: seed"),
    ("seed-too-big", POOL, f"seed: {2**70}\n", "recipe.yaml:1: seed"),
    ("prompts-not-strings", POOL, "prompts: {query: [1]}\n", "recipe.yaml:1: prompts"),
    ("pooling-mode-unknown", POOL + "    mode: median\n", "", "modules[1].mode"),
    ("max-seq-length-zero", "    max_seq_length: 0\n" + POOL, "", "modules[0].max_seq_length"),
    ("max-seq-length-past-positions", "    max_seq_length: 1000\n" + POOL, "", "modules[0].max_seq_length"),
    ("max-seq-length-string", "    max_seq_length: abc\n" + POOL, "", "modules[0].max_seq_length"),
    ("env-var-unset", POOL + "    mode: ${ST_TEST_NOT_SET_ANYWHERE}\n", "", "ST_TEST_NOT_SET_ANYWHERE"),
    ("kwargs-on-builtin", POOL + "    kwargs: [task]\n", "", "modules[1].kwargs"),
    ("keep-without-base", POOL, "keep: 1\n", "recipe.yaml:1: keep"),
    ("custom-file-missing", POOL + "  - type: nothere.py:Gate\n", "", "modules[2].type"),
    ("module-not-a-mapping", "  - Pooling\n", "", "modules[1]"),
]


@pytest.mark.parametrize(("modules", "extra", "expected"), [r[1:] for r in RECIPES], ids=[r[0] for r in RECIPES])
def test_bad_recipe(ctx: Ctx, modules: str, extra: str, expected: str) -> None:
    recipe = ctx.recipe(modules.replace("BERT", str(ctx.bert)), extra)
    result = runner.invoke(app, ["build", str(recipe), "-o", str(ctx.out / "m")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    line = one_error_line(result)
    assert str(recipe) in line and expected in line, line
    assert list(ctx.out.iterdir()) == []


# Whole recipe files and overrides that are wrong before any module is read.
RECIPE_FILES: list[tuple[str, str | None, list[str], str]] = [
    ("invalid-yaml", "modules: [\n", [], "recipe.yaml:"),
    ("empty", "", [], "recipe.yaml: the recipe is empty"),
    ("duplicate-key", "seed: 1\nseed: 2\nmodules: []\n", [], "recipe.yaml:2: seed: duplicate key"),
    ("not-a-mapping", "- 1\n- 2\n", [], "recipe.yaml:1:"),
    ("no-modules", "seed: 1\n", [], "recipe.yaml:1: modules"),
    ("missing-file", None, [], "recipe.yaml: recipe file not found"),
    ("yaml-billion-laughs", "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)) + "modules: *h\n", [], "more than 100000 values"),
    ("yaml-recursive-alias", "a: &a [*a]\nmodules: []\n", [], "recipe.yaml:1: a[0][0][0][0][0]…: more than"),
    ("yaml-nested-5000", "modules: " + "[" * 5000 + "]" * 5000 + "\n", [], "recipe.yaml: invalid YAML: nested too deeply"),
    ("yaml-complex-key", "modules: []\n? [a]\n: 1\n", [], "recipe.yaml:2: a key must be a plain name"),
    ("set-bad-path", "modules: []\n", ["--set", "modules[9].x=1"], "--set modules[9].x=1"),
    ("set-no-equals", "modules: []\n", ["--set", "seed"], "--set seed"),
]


@pytest.mark.parametrize(
    ("text", "args", "expected"), [r[1:] for r in RECIPE_FILES], ids=[r[0] for r in RECIPE_FILES]
)
def test_bad_recipe_file(ctx: Ctx, text: str | None, args: list[str], expected: str) -> None:
    recipe = ctx.tmp / "recipe.yaml"
    if text is not None:
        recipe.write_text(text)
    result = runner.invoke(app, ["build", str(recipe), "-o", str(ctx.out / "m"), *args])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert expected in one_error_line(result)
    assert list(ctx.out.iterdir()) == []


@pytest.mark.parametrize(
    ("output", "expected"),
    [("bert", "is also an input of this build"), ("recipe.yaml", "is also an input of this build"),
     (".", "holds TMP/recipe.yaml, an input of this build"),
     ("bert/sub", "is inside TMP/bert, an input of this build")],
)  # fmt: skip
def test_build_refuses_an_output_that_holds_its_inputs_even_with_force(ctx: Ctx, output: str, expected: str) -> None:
    bert = Path(shutil.copytree(ctx.bert, ctx.tmp / "bert"))
    recipe = ctx.write("recipe.yaml", f"modules:\n  - type: Transformer\n    model: {bert}\n{POOL}")
    before = {p: p.read_bytes() for p in ctx.tmp.rglob("*") if p.is_file()}
    target = ctx.tmp / output
    result = runner.invoke(app, ["build", str(recipe), "-o", str(target), "--force"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert one_error_line(result) == f"error: {target}: {expected.replace('TMP', str(ctx.tmp))}; write the output elsewhere"
    assert {p: p.read_bytes() for p in ctx.tmp.rglob("*") if p.is_file()} == before


CUSTOM_FAILING = """from st_cli import Module


class Broken(Module):
    def forward(self, features, **kwargs):
        raise ValueError("boom\\nand a second line")
"""


def test_custom_forward_failure_names_module_class_and_file(ctx: Ctx) -> None:
    source = ctx.write("broken.py", CUSTOM_FAILING)
    recipe = ctx.recipe(POOL + "  - type: broken.py:Broken\n")
    result = runner.invoke(app, ["build", str(recipe), "-o", str(ctx.out / "m")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    line = one_error_line(result)
    assert f"{recipe}:5: modules[2]: Broken in {source}: forward failed: ValueError: boom" in line, line
    assert list(ctx.out.iterdir()) == []


# ---------------------------------------------------------------- broken folders


def _json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _modules(folder: Path, change: Callable[[list[dict]], list[dict]]) -> None:
    path = folder / "modules.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _header(path: Path, header: dict) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(64))


def _truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _symlink_out(folder: Path, rel: str) -> None:
    outside = folder.parent / f"outside-{rel.replace('/', '-')}"
    shutil.copy(folder / rel, outside)
    (folder / rel).unlink()
    (folder / rel).symlink_to(outside)


def _pickle_only(folder: Path, payload: bytes) -> None:
    (folder / "2_Dense/model.safetensors").unlink()
    (folder / "2_Dense/pytorch_model.bin").write_bytes(payload)


def _root_pickle_only(folder: Path, payload: bytes, *, sharded: bool = False) -> None:
    """The Transformer's weights (read by transformers' from_pretrained) as a pickle only, or its shards."""
    (folder / "model.safetensors").unlink()
    if not sharded:
        (folder / "pytorch_model.bin").write_bytes(payload)
        return
    shard = "pytorch_model-00001-of-00001.bin"
    (folder / shard).write_bytes(payload)
    index = {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": shard}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))


ABSURD = {"dtype": "F32", "shape": [10**12, 10**12], "data_offsets": [0, 64]}
EVIL_PICKLE = b"\x80\x04cos\nsystem\n(S'echo planted'\ntR."
NESTED = "[" * 100_000 + "]" * 100_000

# (id, damage, file the encode error names, verify check that fails)
DAMAGES: list[tuple[str, Callable[[Path], object], str, str]] = [
    ("dense-weights-truncated", lambda m: _truncate(m / "2_Dense/model.safetensors", 100), "2_Dense/model.safetensors", "layout"),
    ("root-weights-truncated", lambda m: _truncate(m / "model.safetensors", 5000), "model.safetensors", "layout"),
    ("weights-garbage", lambda m: (m / "model.safetensors").write_bytes(os.urandom(3000)), "model.safetensors", "layout"),
    ("header-length-2^63", lambda m: (m / "model.safetensors").write_bytes((2**63).to_bytes(8, "little") + b"{}"), "model.safetensors", "layout"),
    ("header-absurd-shape", lambda m: _header(m / "2_Dense/model.safetensors", {"linear.weight": ABSURD}), "2_Dense/model.safetensors", "layout"),
    ("header-not-json", lambda m: (m / "2_Dense/model.safetensors").write_bytes((4).to_bytes(8, "little") + b"{{{{"), "2_Dense/model.safetensors", "layout"),
    ("header-empty-file", lambda m: (m / "2_Dense/model.safetensors").write_bytes(b""), "2_Dense/model.safetensors", "layout"),
    ("pickle-refused", lambda m: _pickle_only(m, EVIL_PICKLE), "2_Dense/pytorch_model.bin", "reload"),
    ("pickle-garbage", lambda m: _pickle_only(m, b"not a pickle at all"), "2_Dense/pytorch_model.bin", "reload"),
    ("root-pickle-refused", lambda m: _root_pickle_only(m, EVIL_PICKLE), "/pytorch_model.bin: refused", "reload"),
    ("root-pickle-shard-refused", lambda m: _root_pickle_only(m, EVIL_PICKLE, sharded=True), "/pytorch_model-00001-of-00001.bin: refused", "reload"),
    ("hidden-size-mismatch", lambda m: _json(m / "config.json", hidden_size=48), "config.json: hidden_size", "dimensions"),
    ("intermediate-size-10^9", lambda m: _json(m / "config.json", intermediate_size=10**9), "model.safetensors: encoder.layer.0.intermediate.dense.bias has shape [37], config.json makes it [1000000000]", "reload"),
    ("vocab-size-mismatch", lambda m: _json(m / "config.json", vocab_size=5), "config.json: vocab_size", "dimensions"),
    ("layers-missing-from-weights", lambda m: _json(m / "config.json", num_hidden_layers=4), "config.json: config has 4 layers, the weights hold 2", "dimensions"),
    ("layers-10^5", lambda m: _json(m / "config.json", num_hidden_layers=10**5), "config.json: config has 100000 layers", "dimensions"),
    ("nested-json-config", lambda m: (m / "1_Pooling/config.json").write_text(NESTED), "1_Pooling/config.json", "layout"),
    ("nested-json-modules", lambda m: (m / "modules.json").write_text(NESTED), "modules.json", "layout"),
    ("no-tokenizer", lambda m: [(m / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")], "no tokenizer files", "layout"),
    ("tokenizer-config-a-list", lambda m: (m / "tokenizer_config.json").write_text("[]"), "tokenizer_config.json: expected a JSON object", "layout"),
    ("tokenizer-garbage", lambda m: (m / "tokenizer.json").write_text("{garbage"), "cannot load the tokenizer", "reload"),
    ("config-symlink-outside", lambda m: _symlink_out(m, "1_Pooling/config.json"), "1_Pooling/config.json", "layout"),
    ("weights-symlink-outside", lambda m: _symlink_out(m, "2_Dense/model.safetensors"), "2_Dense/model.safetensors", "layout"),
    ("duplicate-idx", lambda m: _modules(m, lambda e: [dict(x, idx=0) for x in e]), "modules.json", "layout"),
    ("duplicate-name", lambda m: _modules(m, lambda e: [dict(x, name="same") for x in e]), "modules.json", "layout"),
    ("stack-dense-before-pooling", lambda m: _modules(m, lambda e: [e[0], e[2], e[1], e[3]]), "modules.json: entry [1] Dense reads sentence_embedding", "layout"),
    ("stack-transformer-second", lambda m: _modules(m, lambda e: [e[1], e[0], *e[2:]]), "modules.json: entry [0] Pooling reads token_embeddings", "layout"),
    ("path-dotdot", lambda m: _modules(m, lambda e: [e[0], dict(e[1], path="../x"), *e[2:]]), "modules.json", "layout"),
    ("missing-module-folder", lambda m: shutil.rmtree(m / "2_Dense"), "2_Dense", "layout"),
    ("max-seq-length-zero", lambda m: _json(m / "sentence_bert_config.json", max_seq_length=0), "sentence_bert_config.json", "layout"),
    ("max-seq-length-abc", lambda m: _json(m / "sentence_bert_config.json", max_seq_length="abc"), "sentence_bert_config.json", "layout"),
    ("max-seq-length-past-positions", lambda m: _json(m / "sentence_bert_config.json", max_seq_length=4096), "sentence_bert_config.json", "layout"),
    ("dense-out-features-abc", lambda m: _json(m / "2_Dense/config.json", out_features="abc"), "2_Dense/config.json: key 'out_features' must be a positive integer, got 'abc'", "layout"),
    ("dense-bias-string", lambda m: _json(m / "2_Dense/config.json", bias="yes"), "2_Dense/config.json: key 'bias' must be true or false", "layout"),
    ("load-args-trust-remote-code", lambda m: _json(m / "sentence_bert_config.json", model_args={"trust_remote_code": True}), "sentence_bert_config.json: key 'model_args': trust_remote_code=True is not supported by st", "layout"),
    ("load-args-not-a-mapping", lambda m: _json(m / "sentence_bert_config.json", tokenizer_args=[16]), "sentence_bert_config.json: key 'tokenizer_args' must be a JSON object", "layout"),
    ("load-args-model-kwarg-unknown", lambda m: _json(m / "sentence_bert_config.json", model_args={"hidden_act": "relu"}), "sentence_bert_config.json: model_args: BertModel.__init__() got an unexpected keyword argument 'hidden_act'", "reload"),
    ("dense-in-features-wrong", lambda m: _json(m / "2_Dense/config.json", in_features=16), "2_Dense/config.json", "dimensions"),
    ("pooling-dimension-abc", lambda m: _json(m / "1_Pooling/config.json", word_embedding_dimension="x"), "1_Pooling/config.json", "layout"),
    ("hf-config-a-list", lambda m: (m / "config.json").write_text("[]"), "config.json", "layout"),
    ("hf-config-empty", lambda m: (m / "config.json").write_text(""), "config.json", "layout"),
    ("hf-model-type-unknown", lambda m: _json(m / "config.json", model_type="nonexistent"), "cannot load the transformers model", "reload"),
    ("unknown-st-type", lambda m: _modules(m, lambda e: [*e[:3], dict(e[3], type="sentence_transformers.models.Nope")]), "modules.json", "layout"),
    ("prompts-not-strings", lambda m: _json(m / "config_sentence_transformers.json", prompts={"q": 1}), "config_sentence_transformers.json", "layout"),
    ("truncate-dim-zero", lambda m: _json(m / "config_sentence_transformers.json", truncate_dim=0), "config_sentence_transformers.json", "layout"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "names"), [(d[1], d[2]) for d in DAMAGES], ids=[d[0] for d in DAMAGES])
def test_broken_folder_encode_is_one_line_exit_2(ctx: Ctx, damage, names: str) -> None:
    damage(ctx.model)
    texts = ctx.write("in.txt", "hello world\nthe cat\n")
    target = ctx.out / "emb.npy"
    result = runner.invoke(app, ["encode", str(texts), "--out", str(target), "-m", str(ctx.model), "-q"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    line = one_error_line(result)
    assert str(ctx.model) in line and names in line, line
    assert list(ctx.out.iterdir()) == []


@pytest.mark.parametrize(("damage", "check"), [(d[1], d[3]) for d in DAMAGES], ids=[d[0] for d in DAMAGES])
def test_broken_folder_verify_fails_a_check(ctx: Ctx, damage, check: str) -> None:
    damage(ctx.model)
    result = runner.invoke(app, ["verify", str(ctx.model), "--json"])
    assert result.exit_code == EXIT_MISMATCH, result.output
    assert "Traceback" not in result.output and result.stderr.strip() == "", result.stderr
    report = json.loads(result.stdout)
    failed = {c["name"] for c in report["checks"] if c["status"] == "fail"}
    assert check in failed, report


@pytest.mark.parametrize("content", ["{oops", "[1, 2]", ""], ids=["not-json", "a-list", "empty"])
def test_plain_folder_with_a_broken_config_names_config_json(ctx: Ctx, content: str) -> None:
    """A transformers folder (no modules.json) whose config.json does not read: the line names config.json."""
    plain = Path(shutil.copytree(ctx.bert, ctx.tmp / "plain"))
    (plain / "config.json").write_text(content)
    texts = ctx.write("in.txt", "hello\n")
    for argv in (["encode", str(texts), "--out", str(ctx.out / "e.npy"), "-m", str(plain)], ["inspect", str(plain)]):
        result = runner.invoke(app, argv)
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        line = one_error_line(result)
        assert f"{plain / 'config.json'}:" in line and "modules.json" not in line, line
    assert list(ctx.out.iterdir()) == []


def test_broken_folder_record_is_refused_without_writing(ctx: Ctx) -> None:
    (ctx.model / "st_manifest.json").unlink()
    _json(ctx.model / "config.json", hidden_size=48)
    result = runner.invoke(app, ["verify", str(ctx.model), "--record"])
    assert result.exit_code == EXIT_MISMATCH, result.output
    assert not (ctx.model / "st_manifest.json").exists()
    assert not [p for p in ctx.model.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_record_into_a_read_only_folder_is_one_line(ctx: Ctx) -> None:
    (ctx.model / "st_manifest.json").unlink()
    ctx.model.chmod(0o555)
    try:
        result = runner.invoke(app, ["verify", str(ctx.model), "--record"])
    finally:
        ctx.model.chmod(0o755)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert str(ctx.model) in one_error_line(result)
    assert not (ctx.model / "st_manifest.json").exists()


# ---------------------------------------------------------------- bad encode inputs and bad options

# (id, files to write {name: bytes}, argv with IN/OUT/MODEL placeholders, expected text in the line)
COMMANDS: list[tuple[str, dict[str, bytes], list[str], str]] = [
    ("input-missing", {}, ["encode", "TMP/nope.txt", "--out", "OUT/e.npy", "-m", "MODEL"], "nope.txt"),
    ("input-a-folder", {}, ["encode", "TMP", "--out", "OUT/e.npy", "-m", "MODEL"], "TMP"),
    ("jsonl-bad-json", {"in.jsonl": b'{"text": "a"}\n{oops\n'}, ["encode", "TMP/in.jsonl", "--out", "OUT/e.npy", "-m", "MODEL"], "in.jsonl:2"),
    ("jsonl-missing-field", {"in.jsonl": b'{"body": "a"}\n'}, ["encode", "TMP/in.jsonl", "--out", "OUT/e.npy", "-m", "MODEL"], "in.jsonl:1"),
    ("csv-missing-column", {"in.csv": b"body\na\n"}, ["encode", "TMP/in.csv", "--out", "OUT/e.npy", "-m", "MODEL"], "in.csv"),
    ("invalid-utf8", {"in.txt": b"ok\n\xff\xfe\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "MODEL"], "in.txt:2"),
    ("model-not-a-model-folder", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "TMP"], "TMP: no modules.json"),
    ("stdin-twice", {}, ["encode", "-", "-", "--out", "OUT/e.npy", "-m", "MODEL"], "- (stdin) is given twice"),
    ("output-suffix", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.xyz", "-m", "MODEL"], "e.xyz"),
    ("output-parent-missing", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/no/e.npy", "-m", "MODEL"], "OUT/no"),
    ("truncate-dim-wider", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "MODEL", "--truncate-dim", "999"], "--truncate-dim 999"),
    ("prompt-name-unknown", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "MODEL", "--prompt-name", "nope"], "'nope'"),
    ("prompt-invalid-utf8", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "MODEL", "--prompt", "q\udcff"], "--prompt: not valid text"),
    ("kw-undeclared", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "MODEL", "--kw", "lang=en"], "'lang'"),
    ("model-missing", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "TMP/nomodel"], "nomodel"),
    ("precision-unknown", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "MODEL", "--precision", "float64"], "float64"),
    ("dtype-unknown", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "MODEL", "--dtype", "int4"], "int4"),
    ("errors-unknown", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "-m", "MODEL", "--errors", "bogus"], "bogus"),
    # typer's own usage errors: one line too
    ("batch-size-zero", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "--batch-size", "0"], "'--batch-size'"),
    ("threads-abc", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "--threads", "abc"], "'--threads'"),
    ("max-batch-tokens-zero", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "--max-batch-tokens", "0"], "'--max-batch-tokens'"),
    ("truncate-dim-zero", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "--truncate-dim", "0"], "'--truncate-dim'"),
    ("out-missing", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt"], "'--out'"),
    ("encode-unknown-option", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "OUT/e.npy", "--bogus"], "--bogus"),
    ("verify-atol-negative", {}, ["verify", "MODEL", "--atol", "-1"], "'--atol'"),
    ("verify-atol-abc", {}, ["verify", "MODEL", "--atol", "abc"], "'--atol'"),
    ("verify-no-model", {}, ["verify"], "missing argument 'MOD"),  # 'MODEL' (fill would expand it)
    ("build-format-unknown", {"r.yaml": b"modules: []\n"}, ["build", "TMP/r.yaml", "-o", "OUT/m", "--format", "st5"], "--format"),
    ("build-output-missing", {"r.yaml": b"modules: []\n"}, ["build", "TMP/r.yaml"], "'--output'"),
    ("inspect-revision-on-folder", {}, ["inspect", "MODEL", "--revision", "v1"], "--revision"),
    ("unknown-command", {}, ["emcode"], "'emcode'"),
    ("encode-over-its-model", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "MODEL/model.safetensors", "-m", "MODEL", "--force"], "MODEL/model.safetensors: --out is inside MODEL"),
    ("encode-into-its-model", {"in.txt": b"a\n"}, ["encode", "TMP/in.txt", "--out", "MODEL/e.npy", "-m", "MODEL"], "MODEL/e.npy: --out is inside MODEL"),
    ("verify-junit-over-its-model", {}, ["verify", "MODEL", "--junit", "MODEL/modules.json", "--force"], "MODEL/modules.json: --junit is inside MODEL"),
    ("verify-junit-into-its-model", {}, ["verify", "MODEL", "--junit", "MODEL/v.xml"], "MODEL/v.xml: --junit is inside MODEL"),
]  # fmt: skip


@pytest.mark.parametrize(("files", "argv", "expected"), [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_bad_command(ctx: Ctx, files: dict[str, bytes], argv: list[str], expected: str) -> None:
    for name, content in files.items():
        ctx.write(name, content)

    def fill(arg: str) -> str:
        return arg.replace("TMP", str(ctx.tmp)).replace("OUT", str(ctx.out)).replace("MODEL", str(ctx.model))

    result = runner.invoke(app, [fill(a) for a in argv])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    line = one_error_line(result)
    assert fill(expected) in line, line
    assert list(ctx.out.iterdir()) == []


def test_junit_is_not_replaced_without_force(ctx: Ctx) -> None:
    junit = ctx.out / "verify.xml"
    junit.write_text("<mine/>")  # an XML file: --force replaces only a JUnit report
    result = runner.invoke(app, ["verify", str(ctx.model), "--junit", str(junit)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert f"{junit}: already exists; pass --force" in one_error_line(result)
    assert junit.read_text() == "<mine/>" and [p.name for p in ctx.out.iterdir()] == ["verify.xml"]
    # the stack's Dense is freshly built: allowed, so only the report decides the exit code
    result = runner.invoke(app, ["verify", str(ctx.model), "--junit", str(junit), "--force", "--allow-untrained"])
    assert result.exit_code == 0, result.output
    assert junit.read_text().startswith("<?xml")


# ---------------------------------------------------------------- every finding fails a verify check


def _emitted_codes() -> set[str]:
    """Every finding code summary.py can emit: string literals given to `add(severity, code, …)` or `Finding(…)`."""
    tree = ast.parse(Path(summary.__file__).read_text())
    codes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and len(node.args) >= 2:
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("add", "Finding"):
                codes |= _literals(node.args[1])
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "code" for t in node.targets):
            codes |= _literals(node.value)
    return codes


def _literals(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _literals(node.body) | _literals(node.orelse)
    return set()


def test_every_finding_code_maps_to_a_verify_check() -> None:
    emitted = _emitted_codes()
    assert len(emitted) >= 25 and "missing-tokenizer" in emitted and "st-unsupported" in emitted, emitted
    assert emitted <= set(summary.FINDING_CHECKS), sorted(emitted - set(summary.FINDING_CHECKS))
    assert set(summary.FINDING_CHECKS.values()) <= {"layout", "dimensions", "portability", "trained", None}
    assert summary.finding_check("a-code-nobody-mapped") == "layout"  # fails safe


def test_a_builtin_missing_its_input_feature_names_itself(tiny_bert_dir: Path) -> None:
    """Behind custom code inspect cannot see through, a stack in the wrong order fails in forward: one line, exit 2."""
    from st_cli.errors import StError
    from st_cli.model.model import Model
    from st_cli.model.modules.dense import Dense
    from st_cli.model.modules.transformer import Transformer

    model = Model([Transformer(str(tiny_bert_dir)), Dense(32, 4)])
    with pytest.raises(StError, match=r"^modules\[1\] Dense: needs features\['sentence_embedding'\], which no module"):
        model.embed(["hello world"])


def test_a_nul_character_in_a_module_path_is_a_finding_and_one_line_refusals(tiny_recipe, tmp_path: Path) -> None:
    """No file system path holds NUL (os calls raise ValueError): it must never become an internal error."""
    _, folder = build_folder(tiny_recipe("  - type: Pooling\n"), tmp_path / "m")
    entries = json.loads((folder / "modules.json").read_text())
    entries[1]["path"] = "\x00"
    (folder / "modules.json").write_text(json.dumps(entries))
    texts = tmp_path / "t.txt"
    texts.write_text("a\n", encoding="utf-8")

    found = runner.invoke(app, ["inspect", str(folder), "--json"])
    assert found.exit_code == 0 and "contains a NUL character" in found.stdout
    for args, code in ((["verify", str(folder)], EXIT_MISMATCH), (["encode", str(texts), "-m", str(folder),
                       "--out", str(tmp_path / "e.npy")], EXIT_BAD_INPUT)):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == code, result.output
        assert "internal error" not in result.output and "NUL character" in result.output
    assert not (tmp_path / "e.npy").exists()


def test_a_control_character_in_the_input_stays_on_one_escaped_line(tmp_path: Path) -> None:
    """str.splitlines() breaks at \\x1e too: an error quoting the user's value must show it escaped."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text('base: "\\x1e\\n"\nmodules:\n  - type: Pooling\n', encoding="utf-8")
    result = runner.invoke(app, ["build", str(recipe), "-o", str(tmp_path / "out")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "\\x1e" in result.stderr and not (tmp_path / "out").exists()


def test_a_plain_transformers_folder_with_a_refused_pickle_is_one_line(ctx: Ctx) -> None:
    """No modules.json, weights only in a pickle that needs code: the same one line as an ST folder's,
    from encode and train (exit 2), and a failed reload check from verify (exit 1), never exit 3."""
    plain = Path(shutil.copytree(ctx.bert, ctx.tmp / "plain"))
    _root_pickle_only(plain, EVIL_PICKLE)
    expected = (
        f"error: {plain / 'pytorch_model.bin'}: refused: it needs more than plain tensors to unpickle "
        "(loaded with weights_only=True); convert it to safetensors"
    )
    texts = ctx.write("in.txt", "hello world\nthe cat\n")
    encoded = runner.invoke(app, ["encode", str(texts), "--out", str(ctx.out / "emb.npy"), "-m", str(plain), "-q"])
    trained = runner.invoke(app, ["train", str(plain), "--data", str(texts), "--train", "all", "-o", str(ctx.out / "t")])
    for result in (encoded, trained):
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert one_error_line(result) == expected
    verified = runner.invoke(app, ["verify", str(plain), "--json"])
    assert verified.exit_code == EXIT_MISMATCH, verified.output
    reload = next(c for c in json.loads(verified.stdout)["checks"] if c["name"] == "reload")
    assert reload["status"] == "fail" and "pytorch_model.bin: refused" in reload["detail"], reload
    assert list(ctx.out.iterdir()) == []


@pytest.mark.parametrize(
    ("prompts", "asked", "expected"),
    [
        ({"query": "q\udcff"}, {"task": "query"}, "prompt 'query': not valid text"),
        ({"q": "q\udcff"}, {"prompt_name": "q"}, "prompt 'q': not valid text"),
        ({}, {"prompt": "q\udcff"}, "--prompt: not valid text"),
    ],
    ids=["by-task", "by-name", "given"],
)
def test_every_way_to_a_prompt_refuses_one_that_is_not_text(prompts: dict, asked: dict, expected: str) -> None:
    """Torch, static and exported encoders share one resolve_prompt: a prompt a task picks is checked too."""
    from st_cli.errors import StError
    from st_cli.format import layout

    with pytest.raises(StError, match=expected):
        layout.resolve_prompt(prompts, None, **asked)
    assert layout.resolve_prompt({"query": "query: "}, None, task="query") == "query: "
