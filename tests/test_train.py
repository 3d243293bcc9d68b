"""`st train`: distillation and contrastive training of the modules a recipe added, on tiny models."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DENSE_STACK, TINY_VOCAB
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.errors import EXIT_BAD_INPUT, EXIT_OK
from st_cli.format import layout
from st_cli.model.model import build, load_model
from st_cli.training.cache import PrefixCache
from st_cli.training.checkpoints import checkpoint_dir
from st_cli.training.losses import spearman
from st_cli.training.train import KILL_AT_STEP_ENV
from st_cli.verify.verify import verify_model

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
WORDS = [w for w in TINY_VOCAB[5:] if not w.startswith("##") and len(w) > 1]


def _lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(_lines(400)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dense_model(tiny_recipe, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Tiny BERT → mean Pooling → Dense 32→16 (tanh, untrained) → Normalize, as `st build` writes it."""
    build(tiny_recipe(DENSE_STACK), tmp_path / "dense")
    return tmp_path / "dense"


def _train(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["train", *args])
    return result.exit_code, result.stdout, result.stderr


def _weights(folder: Path, sub: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / sub / layout.SAFETENSORS_WEIGHTS))


def test_distill_trains_only_the_untrained_dense_and_records_it(dense_model: Path, texts: Path, tmp_path: Path) -> None:
    out = tmp_path / "trained"
    code, stdout, stderr = _train(str(dense_model), "--data", str(texts), "-o", str(out), "--init", "pca",
                                  "--epochs", "2", "--batch-size", "16", "--json")  # fmt: skip
    assert code == EXIT_OK, stderr
    report = json.loads(stdout)
    assert report["trained_modules"] == ["2:Dense"] and report["objective"] == "similarity"
    assert len(report["per_epoch"]) == 2 and report["steps"] > 0
    # The PCA init alone lifts the agreement with the teacher well above the random Dense's.
    assert report["init"] > report["untrained"] + 0.1, report
    assert report["final"] > report["untrained"] + 0.1, report

    manifest = json.loads((out / layout.MANIFEST).read_text())
    assert manifest["untrained_modules"] == []
    training = manifest["training"]
    assert training["data"] == [{"file": str(texts), "sha256": layout.sha256_file(texts)}]
    assert training["trained_modules"] == [2] and training["loss"] == "distill"
    assert training["metric_per_epoch"] == report["per_epoch"]
    assert training["hyperparameters"]["batch_size"] == 16

    # Frozen modules are untouched, the Dense moved.
    before, after = load_model(dense_model), load_model(out)
    for name, tensor in before.steps[0].state_dict().items():
        assert torch.equal(tensor, after.steps[0].state_dict()[name]), name
    assert not torch.equal(before.steps[2].linear.weight, after.steps[2].linear.weight)  # type: ignore[union-attr]
    assert verify_model(str(out)).ok
    assert not checkpoint_dir(out).exists()


def test_cached_prefix_gives_the_same_embeddings_as_the_whole_stack(tiny_recipe, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The cache trims token axes per text and pads them again: the rest of the stack must not notice."""
    token_stack = f"""  - type: {ROOT / "recipes/custom/token_linear.py"}:TokenLinear
    out_features: 24
  - type: Pooling
    mode: mean
  - type: Normalize
"""
    for name, stack, first in (("dense", DENSE_STACK, 2), ("tokens", token_stack, 1)):
        model, _ = build(tiny_recipe(stack, name=f"{name}.yaml"), tmp_path / name)
        sample = _lines(20, seed=3)
        cache = PrefixCache(model, first, "cpu")
        for start in range(0, 20, 7):
            batch = sample[start : start + 7]
            cache.add(batch, cache.prefix_features(batch))
        with torch.no_grad():
            cached = cache.run_rest(cache.batch(sample[::-1])).numpy()[::-1]
        np.testing.assert_allclose(cached, model.encode(sample), atol=1e-6)


def test_contrastive_training_improves_held_out_ranking(dense_model: Path, tmp_path: Path) -> None:
    rng = random.Random(5)
    rows = []
    for anchor in _lines(300, seed=9):
        words = anchor.split()
        rng.shuffle(words)
        rows.append({"query": anchor, "positive": " ".join(words[:-1] or words)})  # same words, shuffled, one fewer
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    code, stdout, stderr = _train(str(dense_model), "--loss", "contrastive", "--data", str(pairs), "--anchor", "query",
                                  "-o", str(tmp_path / "c"), "--epochs", "4", "--batch-size", "16", "--eval", "0.2",
                                  "--symmetric", "--json")  # fmt: skip
    assert code == EXIT_OK, stderr
    report = json.loads(stdout)
    assert report["metric"] == "accuracy" and report["held_out"] == 60
    assert report["final"] > report["untrained"], report


def test_trained_custom_module_loads_in_sentence_transformers(tiny_recipe, texts: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    stack = f"""  - type: {ROOT / "recipes/custom/token_linear.py"}:TokenLinear
    out_features: 48
  - type: Pooling
    mode: mean
  - type: Normalize
"""
    build(tiny_recipe(stack), tmp_path / "linear")
    out = tmp_path / "trained"
    # 48-d student, 32-d teacher (its own stack without the linear layer): matched by pairwise similarities.
    code, _, stderr = _train(str(tmp_path / "linear"), "--data", str(texts), "-o", str(out), "--trust-remote-code",
                             "--batch-size", "32", "--quiet")  # fmt: skip
    assert code == EXIT_OK, stderr
    assert json.loads((out / layout.MANIFEST).read_text())["untrained_modules"] == []
    sample = _lines(12, seed=11)
    ours = load_model(out, trust_remote_code=True).encode(sample)
    theirs = SentenceTransformer(str(out), trust_remote_code=True, device="cpu").encode(sample, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert verify_model(str(out), trust_remote_code=True).ok


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "st_cli", "train", *args], capture_output=True, text=True,
                          env=environ, timeout=300, check=False)  # fmt: skip


def test_resume_after_a_kill_mid_epoch_ends_with_the_same_weights(dense_model: Path, texts: Path, tmp_path: Path) -> None:
    common = ["--data", str(texts), "--epochs", "3", "--batch-size", "32", "--seed", "4", "--quiet"]
    whole = _cli(str(dense_model), *common, "-o", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    # 360 training texts → 11 steps an epoch: step 16 is in the middle of the second epoch.
    out = tmp_path / "resumed"
    killed = _cli(str(dense_model), *common, "-o", str(out), env={KILL_AT_STEP_ENV: "16"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists() and (checkpoint_dir(out) / "checkpoint.pt").is_file()
    resumed = _cli(str(dense_model), *common, "-o", str(out), "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from_epoch"] == 1
    a, b = _weights(tmp_path / "whole", "2_Dense"), _weights(out, "2_Dense")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not checkpoint_dir(out).exists()


def test_resume_refuses_a_checkpoint_of_other_options(dense_model: Path, texts: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    killed = _cli(str(dense_model), "--data", str(texts), "-o", str(out), "--epochs", "2", "--quiet",
                  env={KILL_AT_STEP_ENV: "7"})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    code, _, stderr = _train(str(dense_model), "--data", str(texts), "-o", str(out), "--epochs", "2", "--lr", "0.5",
                             "--resume")  # fmt: skip
    assert code == EXIT_BAD_INPUT and "other data or options" in stderr and "Traceback" not in stderr


@pytest.fixture
def plain_model(tiny_recipe, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    build(tiny_recipe("  - type: Pooling\n    mode: mean\n  - type: Normalize\n", name="plain.yaml"), tmp_path / "plain")
    return tmp_path / "plain"


@pytest.fixture
def narrow_teacher(tiny_recipe, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    build(tiny_recipe(DENSE_STACK.replace("16", "8"), name="narrow.yaml"), tmp_path / "narrow")
    return tmp_path / "narrow"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-column", "pairs.jsonl:2: positive column 'positive' is missing (set its name with --positive)"),
        ("bad-index", "--train: '7' names no module"),
        ("nothing-untrained", "nothing to train: the manifest lists no untrained modules"),
        ("no-weights", "nothing to train: the chosen modules have no weights"),
        ("output-exists", "already exists; pass --force to replace it"),
        ("narrow-teacher", "--teacher gives 8-d embeddings, narrower than the student's 16"),
        ("pca-not-dense", "--init pca: module 0 (Transformer) is not a narrowing Dense"),
    ],
)
def test_bad_input_is_one_line_exit_2(  # noqa: PLR0913
    case: str, message: str, dense_model: Path, plain_model: Path, narrow_teacher: Path, texts: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "c", "other": "d"}\n', encoding="utf-8")
    args = {
        "missing-column": [str(dense_model), "--loss", "contrastive", "--data", str(pairs)],
        "bad-index": [str(dense_model), "--data", str(texts), "--train", "1,7"],
        "nothing-untrained": [str(plain_model), "--data", str(texts)],
        "no-weights": [str(dense_model), "--data", str(texts), "--train", "1,3"],
        "output-exists": [str(dense_model), "--data", str(texts)],
        "narrow-teacher": [str(dense_model), "--data", str(texts), "--teacher", str(narrow_teacher)],
        "pca-not-dense": [str(dense_model), "--data", str(texts), "--train", "all", "--init", "pca"],
    }[case]
    if case == "output-exists":
        out.mkdir()
    code, _, stderr = _train(*args, "-o", str(out), "--epochs", "1")
    assert code == EXIT_BAD_INPUT, stderr
    assert message in stderr and stderr.count("\n") == 1, stderr
    assert case == "output-exists" or not out.exists()


def test_training_into_its_own_model_folder_is_refused_even_with_force(dense_model: Path, texts: Path) -> None:
    before = {p: p.read_bytes() for p in dense_model.rglob("*") if p.is_file()}
    code, _, stderr = _train(str(dense_model), "--data", str(texts), "-o", str(dense_model), "--force")
    assert code == EXIT_BAD_INPUT, stderr
    assert stderr == f"error: {dense_model}: is also an input of this training; write the output elsewhere\n"
    assert {p: p.read_bytes() for p in dense_model.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("inside", ["model", "teacher"])
def test_an_output_inside_the_model_or_teacher_folder_is_refused(
    inside: str, dense_model: Path, narrow_teacher: Path, texts: Path
) -> None:
    """OUT (and so its checkpoint folder, beside it) may not lie in a folder the run reads, --force or not."""
    folder = narrow_teacher if inside == "teacher" else dense_model
    out = folder / "trained"
    before = {f: layout.file_digests(f) for f in (dense_model, narrow_teacher)}
    code, _, stderr = _train(str(dense_model), "--data", str(texts), "--teacher", str(narrow_teacher),
                             "--train", "2", "-o", str(out), "--force", "--max-steps", "1")  # fmt: skip
    assert code == EXIT_BAD_INPUT, stderr
    assert stderr == f"error: {out}: is inside {folder}, an input of this training; write the output elsewhere\n"
    assert {f: layout.file_digests(f) for f in (dense_model, narrow_teacher)} == before
    assert not out.exists() and not checkpoint_dir(out).exists()


def _code_running_pickle(marker: Path) -> bytes:
    """A pickle that creates `marker` when unpickled without weights_only (builtins.open(marker, "w"))."""
    return f"cbuiltins\nopen\n(S'{marker}'\nS'w'\ntR.".encode()


def test_a_planted_checkpoint_pickle_never_runs_and_is_one_line(dense_model: Path, texts: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    pickle.loads(_code_running_pickle(probe))  # the payload is live: plain unpickling runs it
    assert probe.exists()
    out, marker = tmp_path / "o", tmp_path / "ran"
    checkpoint = checkpoint_dir(out) / "checkpoint.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(_code_running_pickle(marker))
    code, _, stderr = _train(str(dense_model), "--data", str(texts), "-o", str(out), "--resume")
    assert not marker.exists()
    assert code == EXIT_BAD_INPUT, stderr
    assert stderr == (
        f"error: {checkpoint}: refused: it needs more than plain tensors to unpickle (loaded with weights_only=True); "
        "drop --resume to start over\n"
    )
    assert not out.exists()


def test_a_checkpoint_of_plain_data_that_is_not_st_s_is_one_line(dense_model: Path, texts: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    checkpoint = checkpoint_dir(out) / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.save([1, 2, 3], checkpoint)  # loads with weights_only, but is no checkpoint of st train
    code, _, stderr = _train(str(dense_model), "--data", str(texts), "-o", str(out), "--resume")
    assert code == EXIT_BAD_INPUT, stderr
    assert stderr == f"error: {checkpoint}: not a checkpoint of st train; drop --resume to start over\n"


def test_spearman_matches_a_hand_computed_figure() -> None:
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # Ties take their average rank: ranks (0.5, 0.5, 2) against (0, 1, 2) → r = 0.866.
    assert spearman(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(0.8660254)


def test_untrained_folder_copy_is_left_alone(dense_model: Path, texts: Path, tmp_path: Path) -> None:
    """Training reads MODEL and writes only OUT (and its checkpoint, removed at the end)."""
    before = layout.file_digests(dense_model)
    shutil.copy(texts, tmp_path / "copy.txt")
    code, _, stderr = _train(str(dense_model), "--data", str(tmp_path / "copy.txt"), "-o", str(tmp_path / "t"),
                             "--max-steps", "2", "--quiet")  # fmt: skip
    assert code == EXIT_OK, stderr
    assert layout.file_digests(dense_model) == before
    assert json.loads((tmp_path / "t" / layout.MANIFEST).read_text())["training"]["steps"] == 2


# ---------------------------------------------------------------- pairs through encode's readers


def test_pairs_are_read_by_the_encode_readers(tmp_path: Path) -> None:
    """Quoted CSV fields, JSONL objects and TSV rows give the same pairs; other files and bad rows are refused."""
    from st_cli.errors import StError
    from st_cli.training.data import Pair, read_pairs
    from st_cli.training.options import PairColumns

    csv_file = tmp_path / "p.csv"
    csv_file.write_text('anchor,positive\n"a, with comma","b ""quoted"""\nc,d\n', encoding="utf-8")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"anchor": "a, with comma", "positive": "b \\"quoted\\""}\n\n{"anchor": "c", "positive": "d"}\n')
    tsv = tmp_path / "p.tsv"
    tsv.write_text('q\tp\na, with comma\tb "quoted"\nc\td\n', encoding="utf-8")
    expected = [Pair("a, with comma", 'b "quoted"'), Pair("c", "d")]
    assert read_pairs([csv_file]) == expected
    assert read_pairs([jsonl]) == expected
    assert read_pairs([tsv], PairColumns(anchor="q", positive="p")) == expected

    text = tmp_path / "p.txt"
    text.write_text("a\n", encoding="utf-8")
    with pytest.raises(StError, match=r"p\.txt: contrastive data .* must be \.jsonl, \.ndjson, \.json, \.csv, \.tsv, \.parquet"):
        read_pairs([text])
    csv_file.write_text('anchor,positive\n"open quote,b\n', encoding="utf-8")
    with pytest.raises(StError, match=r"p\.csv:2: unterminated quote"):
        read_pairs([csv_file])
    jsonl.write_text('["a", "b"]\n', encoding="utf-8")
    with pytest.raises(StError, match=r"p\.jsonl:1: expected a JSON object"):
        read_pairs([jsonl])


# ---------------------------------------------------------------- issue 21: defaults, reporting, --eval-data, --keep


def test_default_init_is_pca_for_a_narrowing_dense_and_says_so(dense_model: Path, tmp_path: Path) -> None:
    """400 lines with 100 repeated: duplicates are counted, and 30 held-out texts draw a warning."""
    data = tmp_path / "dup.txt"
    lines = _lines(300)
    data.write_text("\n".join(lines + lines[:100]) + "\n", encoding="utf-8")
    distinct = len(set(lines))
    code, _, stderr = _train(str(dense_model), "--data", str(data), "-o", str(tmp_path / "a"), "--batch-size", "16")
    assert code == EXIT_OK, stderr
    assert "init: auto: module 2 (Dense 32→16) is a fresh linear layer narrower than its input" in stderr
    assert f"dropped {400 - distinct:,} duplicate lines (400 read, {distinct:,} distinct)" in stderr
    assert "teacher agreement (Spearman of student vs teacher cosines" in stderr
    assert f"warning: only {round(distinct * 0.1)} texts held out: the teacher agreement is noise below ~200" in stderr
    code, stdout, stderr = _train(
        str(dense_model), "--data", str(data), "-o", str(tmp_path / "b"), "--init", "none", "--json"
    )
    report = json.loads(stdout)
    assert report["init_method"] == "none" and report["init"] is None and report["duplicates"] == 400 - distinct
    assert report["init_reason"].startswith("--init none")
    training = json.loads((tmp_path / "b" / layout.MANIFEST).read_text())["training"]
    assert training["init_method"] == "none" and training["hyperparameters"]["lr"] == 1e-3  # the random-init rate
    assert "not quality on a task" in training["metric_meaning"]


def test_eval_data_each_epoch_and_keep_best_saves_the_best_epoch(dense_model: Path, texts: Path, tmp_path: Path) -> None:
    rng = random.Random(4)
    pairs = tmp_path / "sts.csv"
    rows = ["sentence1,sentence2,score"] + [
        f"{' '.join(rng.choices(WORDS, k=4))},{' '.join(rng.choices(WORDS, k=5))},{rng.uniform(0, 5):.2f}"
        for _ in range(60)
    ]
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "best"
    args = [str(dense_model), "--data", str(texts), "--eval-data", str(pairs), "-o", str(out), "--init", "none"]
    code, stdout, stderr = _train(*args, "--epochs", "3", "--keep", "best", "--lr", "0.05", "--json")
    assert code == EXIT_OK, stderr
    report = json.loads(stdout)
    per_stage = [stage[0]["metrics"]["spearman_cosine"] for stage in report["eval"]]
    assert len(per_stage) == 4  # untrained, then each epoch (no init)
    best = max(range(1, 4), key=lambda e: per_stage[e])
    assert report["kept_epoch"] == best and report["keep"] == "best"
    # What was saved is the kept epoch: st eval on the folder gives its figure, and the record holds it.
    result = runner.invoke(app, ["eval", str(out), "--data", str(pairs), "--json"])
    assert json.loads(result.stdout)["metrics"]["spearman_cosine"] == pytest.approx(per_stage[best], abs=1e-6)
    manifest = json.loads((out / layout.MANIFEST).read_text())
    assert manifest["evaluations"][0]["metrics"]["spearman_cosine"] == pytest.approx(per_stage[best], abs=1e-9)
    assert manifest["training"]["kept_epoch"] == best
    assert [e["stage"] for e in manifest["training"]["eval"]] == ["untrained", "epoch 1", "epoch 2", "epoch 3"]


def test_bad_eval_data_fails_before_training(dense_model: Path, texts: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\nx,y\n", encoding="utf-8")
    code, _, stderr = _train(str(dense_model), "--data", str(texts), "--eval-data", str(bad), "-o", str(tmp_path / "o"))
    assert code == EXIT_BAD_INPUT and "not evaluation data I recognise" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()
    code, _, stderr = _train(str(dense_model), "--data", str(texts), "--keep", "worst", "-o", str(tmp_path / "o"))
    assert code == EXIT_BAD_INPUT and "--keep: expected last or best" in stderr
