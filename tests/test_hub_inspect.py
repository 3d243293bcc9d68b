"""`st inspect` on a Hub id that is not cached: JSON files and safetensors headers only, never weights.

huggingface_hub's network functions are replaced by fakes serving a folder built here (offline).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import st_cli
from st_cli.cli import app
from st_cli.format import layout
from tests.conftest import DENSE_STACK

runner = CliRunner()
REPO = "stcli/remote-tiny"


@pytest.fixture
def remote(tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake Hub serving one st-built folder; records what was asked for."""
    import huggingface_hub
    import huggingface_hub.constants

    _, folder = st_cli.build(tiny_recipe(DENSE_STACK), tmp_path / "served")
    for empty in [p for p in folder.iterdir() if p.is_dir() and not any(p.iterdir())]:
        empty.rmdir()  # git, so the Hub, has no empty folders
    asked: dict[str, list[str]] = {"downloads": [], "headers": []}

    def list_repo_files(repo_id: str, *, revision: str | None = None, **_: Any) -> list[str]:
        assert repo_id == REPO
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    def hf_hub_download(repo_id: str, filename: str, *, revision: str | None = None, local_dir: str, **_: Any) -> str:
        asked["downloads"].append(filename)
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / filename, target)
        return str(target)

    def parse_safetensors_file_metadata(repo_id: str, filename: str, **_: Any) -> SimpleNamespace:
        asked["headers"].append(filename)
        header = layout.read_safetensors_header(folder / filename)
        tensors = {
            name: SimpleNamespace(dtype=info["dtype"], shape=info["shape"], data_offsets=tuple(info["data_offsets"]))
            for name, info in header.items()
            if name != "__metadata__"
        }
        return SimpleNamespace(tensors=tensors, metadata=header.get("__metadata__") or {})

    def no_snapshot(*args: Any, **kwargs: Any) -> str:
        if not kwargs.get("local_files_only"):
            raise AssertionError("inspect must not download the whole repository")
        raise FileNotFoundError("not cached")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "parse_safetensors_file_metadata", parse_safetensors_file_metadata)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_snapshot)
    return {"folder": folder, "asked": asked}


def test_uncached_hub_id_is_inspected_from_json_and_headers(remote: dict[str, Any]) -> None:
    local = st_cli.summarize(remote["folder"])
    summary = st_cli.summarize(REPO)
    assert summary.hub_id == REPO and summary.path == f"hf://{REPO}"
    assert summary.embedding_dimension == local.embedding_dimension == 16
    assert [m.to_json(tensors=True) for m in summary.modules] == [m.to_json(tensors=True) for m in local.modules]
    assert [(f.code, f.message) for f in summary.findings] == [(f.code, f.message) for f in local.findings]
    assert {k: v.status for k, v in summary.loaders.items()} == {k: v.status for k, v in local.loaders.items()}
    downloads = remote["asked"]["downloads"]
    assert not [name for name in downloads if name.endswith((".safetensors", ".bin"))], downloads
    assert "modules.json" in downloads and "2_Dense/config.json" in downloads
    assert sorted(remote["asked"]["headers"]) == ["2_Dense/model.safetensors", "model.safetensors"]


def test_cli_inspect_of_uncached_hub_id(remote: dict[str, Any]) -> None:
    result = runner.invoke(app, ["inspect", REPO, "--json"])
    assert result.exit_code == 0, result.output
    assert '"embedding_dimension": 16' in result.stdout
