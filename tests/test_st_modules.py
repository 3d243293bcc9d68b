"""Custom modules written for sentence-transformers itself, run by st with trust, with or without ST installed.

The example files in tests/compat/st_modules/ are the ST docs' DecayMeanPooling(Module), a
CustomTransformer(Transformer) taking a `task` keyword, and a plain torch.nn.Module with save/load
as ST <= 5.3 documented. Folders are saved by sentence-transformers itself (6.2 here, 3.4 in its
compat venv) and compared with its embeddings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from st_cli.errors import ModelFolderError

EXAMPLES = Path(__file__).parent / "compat" / "st_modules"
ATOL = 1e-6


# ---------------------------------------------------------------- Hub cache, offline


def test_module_load_by_hub_id_is_served_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sentence-transformers calls a module's load() with a Hub id; offline, the cache must answer.

    Some huggingface_hub releases raise OfflineModeIsEnabled from a plain snapshot_download under
    HF_HUB_OFFLINE=1 rather than falling back to the cache: that is simulated here.
    """
    import huggingface_hub
    from huggingface_hub.errors import OfflineModeIsEnabled

    from st_cli.modules.base import local_folder

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
