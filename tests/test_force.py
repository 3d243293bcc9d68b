"""--force replaces only its own kind: a model folder by a model folder, an output file by a file of its
format; never a folder by a file or the reverse, never a folder that is not a model's, never an input.
Each refusal is one line, exit 2, and leaves what was there untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from st_cli import fsio
from st_cli.cli import app
from st_cli.errors import OutputExistsError
from st_cli.format import layout
from st_cli.model.model import build

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("force")
    recipe = root / "recipe.yaml"
    recipe.write_text(f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n")
    return build(recipe, root / "model")[1]


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _refused(args: list[str], target: Path, message: str) -> None:
    before = _snapshot(target)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {target}: {message}"], result.stderr
    assert _snapshot(target) == before
    assert not [p for p in target.parent.iterdir() if fsio.TEMP_MARK in p.name]


def _recipe(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n")
    return recipe


def test_build_force_never_replaces_a_data_file(tmp_path: Path, tiny_bert_dir: Path) -> None:
    data = tmp_path / "small.txt"
    data.write_text("precious data\n")
    _refused(["build", str(_recipe(tmp_path, tiny_bert_dir)), "-o", str(data), "--force"], data,
             "is a file, not a model folder; --force replaces only a model folder")


def test_build_force_never_replaces_a_folder_that_is_not_a_model(tmp_path: Path, tiny_bert_dir: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\xff\xd8")
    _refused(["build", str(_recipe(tmp_path, tiny_bert_dir)), "-o", str(photos), "--force"], photos,
             "is a folder, not a model folder; --force replaces only a model folder")


def test_build_force_replaces_a_model_folder(tmp_path: Path, tiny_bert_dir: Path, model_dir: Path) -> None:
    import shutil

    out = tmp_path / "m"
    shutil.copytree(model_dir, out)
    (out / "extra.txt").write_text("old")
    result = runner.invoke(app, ["build", str(_recipe(tmp_path, tiny_bert_dir)), "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert not (out / "extra.txt").exists() and layout.looks_like_model(out)


def test_train_and_save_refuse_the_same_way() -> None:
    # st train claims its --out with the same Kind as build; Model.save too.
    assert layout.MODEL_FOLDER.folder and layout.MODEL_FOLDER.what == "a model folder"


def test_encode_force_never_replaces_a_file_of_another_format(tmp_path: Path, model_dir: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    out = tmp_path / "emb.npy"
    out.write_text("id,score\n1,2\n")  # a CSV someone named .npy
    _refused(["encode", str(src), "-m", str(model_dir), "-o", str(out), "--force"], out,
             "is a file, not a .npy file; --force replaces only a .npy file")
    out.unlink()
    runner.invoke(app, ["encode", str(src), "-m", str(model_dir), "-o", str(out)])
    out.write_bytes(out.read_bytes())  # a real .npy: replaced
    result = runner.invoke(app, ["encode", str(src), "-m", str(model_dir), "-o", str(out), "--force", "-q"])
    assert result.exit_code == 0 and np.load(out).shape == (2, 32)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".safetensors"])
def test_encode_force_checks_every_writers_format(tmp_path: Path, model_dir: Path, suffix: str) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    out = tmp_path / f"emb{suffix}"
    out.write_bytes(b"\x00\x01 binary junk")
    _refused(["encode", str(src), "-m", str(model_dir), "-o", str(out), "--force"], out,
             f"is a file, not a {suffix} file; --force replaces only a {suffix} file")


def test_encode_force_never_replaces_a_folder_or_an_input(tmp_path: Path, model_dir: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n')
    _refused(["encode", str(src), "-m", str(model_dir), "-o", str(src), "--force"], src,
             "is also an input; write the output to another file")
    folder = tmp_path / "emb.npy"
    folder.mkdir()
    _refused(["encode", str(src), "-m", str(model_dir), "-o", str(folder), "--force"], folder,
             "is a folder; give a file name ending in .npy, .safetensors, .jsonl, .parquet")


def test_merge_force_never_replaces_a_file_of_another_format(tmp_path: Path, model_dir: Path) -> None:
    from st_cli.encode.api import encode_file

    src = tmp_path / "in.txt"
    src.write_text("a\nb\nc\n")
    parts = [tmp_path / f"p{i}.npy" for i in range(2)]
    for i, part in enumerate(parts):
        encode_file(src, part, model=model_dir, shard=(i, 2), window=2)
    out = tmp_path / "m.safetensors"
    out.write_text("not safetensors")
    _refused(["merge", *map(str, parts), "-o", str(out), "--force"], out,
             "is a file, not a .safetensors file; --force replaces only a .safetensors file")


def test_verify_junit_force_replaces_only_a_junit_report(tmp_path: Path, model_dir: Path) -> None:
    report = tmp_path / "notes.xml"
    report.write_text("my notes, not XML\n")
    _refused(["verify", str(model_dir), "--junit", str(report), "--force"], report,
             "is a file, not a JUnit XML report; --force replaces only a JUnit XML report")


def test_claim_refuses_a_folder_for_a_file_and_a_file_for_a_folder(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match=r"dir: is a folder, not a file; --force replaces only a file"):
        fsio.claim(tmp_path / "dir", force=True)
    with pytest.raises(OutputExistsError, match=r"file: is a file, not a folder; --force replaces only a folder"):
        fsio.claim(tmp_path / "file", force=True, kind=fsio.ANY_FOLDER)
    assert fsio.claim(tmp_path / "file", force=True).existed is not None
