"""st verify: each check catches what it is for, exit codes, JSON and JUnit reports, --against, --record."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from st_cli.cli import app
from st_cli.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_MISMATCH, EXIT_OK
from st_cli.model.model import build as build_folder
from st_cli.verify.verify import verify_model
from tests.conftest import DENSE_STACK

runner = CliRunner()

POOLING_STACK = """  - type: Pooling
    mode: mean
"""
CHECKS = [
    "layout",
    "integrity",
    "dimensions",
    "reload",
    "reference",
    "batch_invariance",
    "normalization",
    "portability",
    "trained",
]


def build(tiny_recipe, tmp_path: Path, name: str = "m", *, stack: str = DENSE_STACK, **kwargs) -> Path:
    _, folder = build_folder(tiny_recipe(stack, name=f"{name}.yaml"), tmp_path / name, **kwargs)
    return folder


def verify(*args: str):
    """The tiny stacks here end in a freshly built Dense: these tests are about the other checks
    (test_trained_* below hold the trained check itself)."""
    return runner.invoke(app, ["verify", *args, "--allow-untrained"])


def verify_json(*args: str) -> tuple[int, dict]:
    result = verify(*args, "--json")
    assert result.exit_code in (EXIT_OK, EXIT_MISMATCH), result.output
    return result.exit_code, json.loads(result.stdout)


def statuses(report: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


# ---------------------------------------------------------------- clean folders


@pytest.mark.parametrize("fmt", ["portable", "st6"])
def test_clean_folder_passes(tiny_recipe, tmp_path: Path, fmt: str) -> None:
    folder = build(tiny_recipe, tmp_path, format=fmt)
    code, report = verify_json(str(folder))
    assert code == EXIT_OK, report
    assert report["ok"] is True
    assert statuses(report) == dict.fromkeys(CHECKS, "pass")  # portability is a finding: see below
    assert check(report, "reference")["data"]["max_abs_diff"] <= 1e-5
    assert check(report, "dimensions")["figure"] == "32 → 32 → 16 → 16"


def test_require_portable_fails_a_folder_old_loaders_cannot_read(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path, format="st6")
    code, report = verify_json(str(folder))
    assert code == EXIT_OK, report
    assert check(report, "portability")["status"] == "pass"  # a finding, not a failure
    code, report = verify_json(str(folder), "--require-portable")
    assert code == EXIT_MISMATCH, report
    portability = check(report, "portability")
    assert portability["status"] == "fail"
    assert set(portability["data"]["loaders"]) == {"ST<=5.3", "ST5.4-5.x", "ST>=6", "TEI"}
    assert portability["data"]["loaders"]["ST<=5.3"]["status"] == "no"
    assert "ST<=5.3: no" in portability["detail"] and "TEI: no" in portability["detail"]


def test_table_output(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    result = verify(str(folder))
    assert result.exit_code == EXIT_OK, result.output
    for name in CHECKS:
        assert name in result.stdout
    assert "ok: 9 passed, 0 failed, 0 skipped" in result.stdout


# ---------------------------------------------------------------- what each check catches


def test_changed_dense_float_fails_integrity_and_reference(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    weights = folder / "2_Dense" / "model.safetensors"
    state = load_file(str(weights))
    state["linear.weight"][0, 0] += 0.5
    save_file(state, str(weights))

    code, report = verify_json(str(folder))
    assert code == EXIT_MISMATCH, report
    assert report["ok"] is False
    integrity = check(report, "integrity")
    assert integrity["status"] == "fail"
    assert integrity["data"]["changed"] == ["2_Dense/model.safetensors"]
    assert integrity["data"]["modules"] == [2]
    assert "2_Dense/model.safetensors (module 2 (Dense, 2_Dense))" in integrity["detail"]
    reference = check(report, "reference")
    assert reference["status"] == "fail"
    assert reference["data"]["max_abs_diff"] > 1e-5
    assert "changed files in module 2 (Dense, 2_Dense)" in reference["detail"]
    assert check(report, "reload")["status"] == "pass"


def test_pooling_mode_edit_fails_reference(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    config_path = folder / "1_Pooling" / "config.json"
    config = json.loads(config_path.read_text())
    config["pooling_mode_mean_tokens"], config["pooling_mode_cls_token"] = False, True
    config_path.write_text(json.dumps(config))

    code, report = verify_json(str(folder))
    assert code == EXIT_MISMATCH, report
    assert check(report, "reference")["status"] == "fail"
    assert check(report, "integrity")["data"]["changed"] == ["1_Pooling/config.json"]
    assert check(report, "layout")["status"] == "pass"


def test_deleted_module_folder_fails_layout(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    shutil.rmtree(folder / "2_Dense")

    code, report = verify_json(str(folder))
    assert code == EXIT_MISMATCH, report
    layout_check = check(report, "layout")
    assert layout_check["status"] == "fail"
    assert [(p["code"], p["path"]) for p in layout_check["data"]["problems"]] == [("missing-module-folder", "2_Dense")]
    assert "2_Dense" in layout_check["detail"]
    assert check(report, "integrity")["data"]["missing"] == [
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "2_Dense/pytorch_model.bin",
    ]
    for name in ("dimensions", "reload", "reference", "batch_invariance", "normalization"):
        assert check(report, name)["status"] == "skipped", name


def test_manifest_from_another_model_fails_reference(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    other = build(tiny_recipe, tmp_path, "other", overrides=["seed=8"])  # another random Dense
    manifest = json.loads((folder / "st_manifest.json").read_text())
    manifest["probes"] = json.loads((other / "st_manifest.json").read_text())["probes"]
    (folder / "st_manifest.json").write_text(json.dumps(manifest))

    code, report = verify_json(str(folder))
    assert code == EXIT_MISMATCH, report
    assert check(report, "integrity")["status"] == "pass"
    reference = check(report, "reference")
    assert reference["status"] == "fail"
    assert "> atol 1e-05" in reference["detail"] and "worst: probe" in reference["detail"]


def test_dense_config_that_does_not_fit_its_weights_fails_dimensions(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    config_path = folder / "2_Dense" / "config.json"
    config = json.loads(config_path.read_text())
    config["out_features"] = 8
    config_path.write_text(json.dumps(config))

    code, report = verify_json(str(folder))
    assert code == EXIT_MISMATCH, report
    dims = check(report, "dimensions")
    assert dims["status"] == "fail"
    problems = [(p["code"], p["path"]) for p in dims["data"]["problems"]]
    assert ("shape-mismatch", "2_Dense/model.safetensors") in problems
    assert ("dimension-mismatch", "st_manifest.json") in problems  # the stored probes are 16-d
    assert "linear.weight has shape [16, 32]" in dims["detail"]
    assert check(report, "reload")["status"] == "fail"
    assert check(report, "reference")["status"] == "skipped"


def test_stack_whose_widths_do_not_chain_fails_reload_not_exit_3(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    dense = folder / "2_Dense"
    config = json.loads((dense / "config.json").read_text())
    (dense / "config.json").write_text(json.dumps({**config, "in_features": 16}))  # Pooling gives 32
    save_file({"linear.weight": torch.zeros(16, 16), "linear.bias": torch.zeros(16)}, str(dense / "model.safetensors"))

    code, report = verify_json(str(folder))
    assert code == EXIT_MISMATCH, report
    reload = check(report, "reload")
    # Refused before it runs: inspect's dimension-mismatch finding names the file.
    assert (reload["status"], reload["figure"]) == ("fail", "does not load")
    assert "2_Dense/config.json: Dense expects 16 dims but the module before gives 32" in reload["detail"]
    assert check(report, "reference")["status"] == "skipped"


def test_modules_json_with_a_malformed_idx_fails_layout(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    entries = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps([{**entries[0], "idx": "a"}, *entries[1:]]))
    code, report = verify_json(str(folder))
    assert code == EXIT_MISMATCH, report
    assert "idx must be a number" in check(report, "layout")["detail"]


def test_normalization_is_skipped_without_normalize(tiny_recipe, tmp_path: Path) -> None:
    report = verify_model(build(tiny_recipe, tmp_path, stack=POOLING_STACK))
    assert report.ok
    assert report.check("normalization").status == "skipped"


# ---------------------------------------------------------------- trust


DECAY_POOLING = """
from pathlib import Path
Path(__file__).with_name("imported.marker").write_text("code from the folder ran")

from st_cli.model.modules.base import Module


class DecayMeanPooling(Module):
    config_keys = ["decay"]

    def __init__(self, decay: float = 1.0):
        super().__init__()
        self.decay = decay

    def forward(self, features, **kwargs):
        mask = features["attention_mask"].unsqueeze(-1).float()
        features["sentence_embedding"] = (features["token_embeddings"] * mask).sum(1) / mask.sum(1)
        return features
"""


def make_custom(tiny_recipe, tmp_path: Path) -> Path:
    folder = build(tiny_recipe, tmp_path, stack=POOLING_STACK)
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["type"] = "decay_pooling.DecayMeanPooling"
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "decay_pooling.py").write_text(DECAY_POOLING)
    (folder / "1_Pooling" / "config.json").write_text('{"decay": 1.0}')
    (folder / "st_manifest.json").unlink()
    return folder


def test_custom_module_without_trust_is_exit_2_and_runs_nothing(tiny_recipe, tmp_path: Path) -> None:
    folder = make_custom(tiny_recipe, tmp_path)
    result = verify(str(folder), "--json")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "decay_pooling.DecayMeanPooling" in result.stderr
    assert "--trust-remote-code" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert not (folder / "imported.marker").exists()


def test_custom_module_with_trust_runs_and_records(tiny_recipe, tmp_path: Path) -> None:
    folder = make_custom(tiny_recipe, tmp_path)
    code, report = verify_json(str(folder), "--trust-remote-code", "--record")
    assert code == EXIT_OK, report
    assert (folder / "imported.marker").exists()
    assert report["recorded"] == str(folder / "st_manifest.json")
    # The next run compares with the recorded manifest; loading the code left no files behind.
    code, report = verify_json(str(folder), "--trust-remote-code")
    assert code == EXIT_OK, report
    assert check(report, "integrity")["status"] == "pass"
    assert check(report, "reference")["status"] == "pass"


def test_transformers_auto_map_code_never_runs_even_if_stdin_says_yes(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    marker = tmp_path / "auto_map.marker"
    config = json.loads((folder / "config.json").read_text())
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "evilbert", "auto_map": auto_map}))
    (folder / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig, BertModel\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evilbert'\n"
        "class EvilModel(BertModel):\n    config_class = EvilConfig\n"
    )
    # Left to itself, transformers asks "run the custom code? [y/N]" on stdin and runs it on "y".
    result = runner.invoke(app, ["verify", str(folder), "--json"], input="y\n")
    assert result.exit_code == EXIT_MISMATCH, result.output
    assert check(json.loads(result.stdout), "reload")["status"] == "fail"
    assert not marker.exists()


# ---------------------------------------------------------------- --against


def test_against_names_the_first_divergent_module(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    other = build(tiny_recipe, tmp_path, "other", overrides=["seed=8"])  # the same stack but the Dense init
    code, report = verify_json(str(folder), "--against", str(other))
    assert code == EXIT_MISMATCH, report
    against = check(report, "against")
    assert against["status"] == "fail"
    divergence = against["data"]["first_divergence"]
    assert (divergence["index"], divergence["type"], divergence["path"]) == (2, "Dense", "2_Dense")
    assert "first divergence: module 2 (Dense, 2_Dense)" in against["detail"]
    assert all(c["status"] == "pass" for c in report["checks"] if c["name"] != "against")


def test_against_a_shorter_stack_names_the_missing_module(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    shorter = build(tiny_recipe, tmp_path, "short", stack=POOLING_STACK)
    against = verify_model(folder, against=str(shorter)).check("against")
    assert against.status == "fail"
    assert against.figure == "shape [10, 16] vs [10, 32]"
    assert against.data["first_divergence"]["index"] == 2
    assert "has no module 2" in against.detail


def test_against_an_identical_folder_passes(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    code, report = verify_json(str(folder), "--against", str(copy))
    assert code == EXIT_OK, report
    assert check(report, "against")["data"]["max_abs_diff"] == 0.0


@pytest.mark.parametrize("fmt", ["portable", "st6"])
def test_against_sentence_transformers_passes(tiny_recipe, tmp_path: Path, fmt: str) -> None:
    folder = build(tiny_recipe, tmp_path, format=fmt)
    code, report = verify_json(str(folder), "--against", "sentence-transformers")
    assert code == EXIT_OK, report
    against = check(report, "against")
    assert against["status"] == "pass"
    assert against["data"]["against"].startswith("sentence-transformers 6.")


# ---------------------------------------------------------------- --record on the shipped model


def test_record_on_shipped_model_then_verify_passes(minilm_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(minilm_dir, tmp_path / "minilm"))
    assert not (folder / "st_manifest.json").exists()

    code, report = verify_json(str(folder), "--record")
    assert code == EXIT_OK, report
    unrecorded = {"integrity": "-", "reference": "-", "trained": "-"}  # what needs a manifest
    assert statuses(report) | unrecorded == dict.fromkeys(CHECKS, "pass") | unrecorded
    assert check(report, "integrity")["status"] == check(report, "reference")["status"] == "skipped"
    assert check(report, "trained")["status"] == "skipped"
    assert report["recorded"] == str(folder / "st_manifest.json")
    manifest = json.loads((folder / "st_manifest.json").read_text())
    assert len(manifest["probes"]["embeddings"][0]) == 384
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]

    code, report = verify_json(str(folder), "--require-portable")
    assert code == EXIT_OK, report
    assert statuses(report) == dict.fromkeys(CHECKS, "pass")
    assert check(report, "portability")["figure"] == "4/4 loaders"

    result = verify(str(folder), "--record")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "already exists" in result.stderr
    result = verify("sentence-transformers/all-MiniLM-L6-v2", "--record")  # resolves to the package's copy
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--record needs a local folder" in result.stderr
    assert not (minilm_dir / "st_manifest.json").exists()


# ---------------------------------------------------------------- reports and exit codes


def test_json_schema_and_junit(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    (folder / "notes.txt").write_text("added after the build")
    junit = tmp_path / "reports" / "verify.xml"
    result = verify(str(folder), "--json", "--junit", str(junit))
    assert result.exit_code == EXIT_MISMATCH, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == 1
    keys = {"schema", "st_cli", "model", "path", "ok", "atol", "manifest", "recorded", "counts", "checks"}
    assert set(report) == keys
    assert report["counts"] == {"pass": 8, "fail": 1, "skipped": 0}
    for item in report["checks"]:
        assert set(item) == {"name", "status", "figure", "detail", "data"}
        assert item["status"] in ("pass", "fail", "skipped")
    assert check(report, "integrity")["data"]["added"] == ["notes.txt"]

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("9", "1", "0")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == CHECKS
    failure = cases["integrity"].find("failure")
    assert failure is not None and "notes.txt" in (failure.text or "")


def test_unreadable_input_is_exit_2(tmp_path: Path) -> None:
    result = verify(str(tmp_path / "missing"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "no such model folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = verify(str(tmp_path / "empty"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "no modules.json" in result.stderr


def test_unparsable_modules_json_fails_layout(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("[{")
    code, report = verify_json(str(tmp_path))
    assert code == EXIT_MISMATCH, report
    assert check(report, "layout")["status"] == "fail"
    assert "not valid JSON" in check(report, "layout")["detail"]
    assert [c["status"] for c in report["checks"][1:]] == ["skipped"] * 8


def test_internal_error_is_exit_3(tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("st_cli.verify.verify.verify_model", broken)
    result = verify(str(tmp_path))
    assert result.exit_code == EXIT_INTERNAL
    assert "internal error: RuntimeError: boom" in result.stderr


# ---------------------------------------------------------------- trained


def test_trained_fails_a_freshly_built_dense_and_allow_untrained_passes_it(tiny_recipe, tmp_path: Path) -> None:
    folder = build(tiny_recipe, tmp_path)
    result = runner.invoke(app, ["verify", str(folder), "--json"])
    assert result.exit_code == EXIT_MISMATCH, result.output
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["trained"]
    trained = check(report, "trained")
    assert trained["data"]["untrained_modules"] == [2]
    assert trained["detail"].startswith("module 2 (Dense, 2_Dense): st_manifest.json records 2 as freshly initialised")
    assert "--allow-untrained" in trained["detail"]
    code, report = verify_json(str(folder))  # the helper passes --allow-untrained
    assert code == EXIT_OK and check(report, "trained")["figure"] == "1 untrained (allowed)"


def test_trained_fails_weights_that_still_equal_the_seeded_init(tiny_recipe, tmp_path: Path) -> None:
    """A manifest that no longer lists the Dense: its weights are still what the recipe's seed gives."""
    folder = build(tiny_recipe, tmp_path)
    manifest = json.loads((folder / "st_manifest.json").read_text())
    manifest["untrained_modules"] = []
    (folder / "st_manifest.json").write_text(json.dumps(manifest))
    report = verify_model(folder)
    trained = report.check("trained")
    assert trained.status == "fail" and trained.data["seeded_init"] == [2]
    assert "still equal the recipe seed's initialisation" in trained.detail
    # Any change to the weights (as training makes) and the check passes.
    weights = load_file(folder / "2_Dense" / "model.safetensors")
    weights["linear.bias"] = weights["linear.bias"] + 1e-3
    save_file(weights, folder / "2_Dense" / "model.safetensors")
    assert verify_model(folder).check("trained").status == "pass"


def test_a_folder_st_train_wrote_passes_trained(tiny_recipe, tmp_path: Path) -> None:
    from st_cli.training.train import train

    folder = build(tiny_recipe, tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"the cat {i} is eating food {i % 7}" for i in range(40)) + "\n")
    train(folder, [texts], output=tmp_path / "trained", epochs=1, batch_size=8)
    report = verify_model(tmp_path / "trained")
    assert report.ok, [c for c in report.checks if c.status == "fail"]
    assert report.check("trained").status == "pass" and report.check("trained").figure == "no untrained module"


WIDE_DENSE_STACK = """  - type: Pooling
    mode: mean
  - type: Dense
    out_features: 64
  - type: Normalize
"""


def test_trained_without_a_manifest_reads_the_weights(tiny_recipe, tmp_path: Path) -> None:
    """No manifest (a folder saved by sentence-transformers, say): a Dense whose weights still have
    torch's default-init signature fails; --record with --allow-untrained records it as untrained."""
    folder = build(tiny_recipe, tmp_path, stack=WIDE_DENSE_STACK)
    (folder / "st_manifest.json").unlink()
    trained = verify_model(folder).check("trained")
    assert trained.status == "fail" and trained.data["default_init"] == [2]
    assert "uniform in ±1/√in_features" in trained.detail
    result = runner.invoke(app, ["verify", str(folder), "--record", "--allow-untrained"])
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads((folder / "st_manifest.json").read_text())["untrained_modules"] == [2]
    assert verify_model(folder).check("trained").data["untrained_modules"] == [2]
    # Trained weights leave the init's bound: nothing says a module is untrained, so it is skipped.
    weights = load_file(folder / "2_Dense" / "model.safetensors")
    weights["linear.weight"] = weights["linear.weight"] * 3
    save_file(weights, folder / "2_Dense" / "model.safetensors")
    (folder / "st_manifest.json").unlink()
    assert verify_model(folder).check("trained").status == "skipped"
