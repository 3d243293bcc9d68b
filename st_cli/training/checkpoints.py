"""Checkpoints beside the output, so `st train --resume` continues a killed run of the same job."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_cli.errors import StError
from st_cli.training.options import Options

if TYPE_CHECKING:
    from st_cli.model.model import Model


def checkpoint_dir(output: Path) -> Path:
    """Beside OUT, hidden and named after it, so the next run on OUT finds (or removes) it."""
    return output.parent / f".{output.name}.st-train-checkpoint"


def job_fingerprint(options: Options, data: list[dict[str, str]], model_name: str) -> str:
    document = json.dumps({"options": vars(options), "data": data, "model": model_name}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / "checkpoint.pt")


def load_checkpoint(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    import torch

    path = folder / "checkpoint.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        raise StError(f"{path}: made by a run with other data or options; drop --resume to start over")
    return state


def trained_state(model: Model, trained: Sequence[int]) -> dict[str, Any]:
    return {str(i): {k: v.detach().cpu().clone() for k, v in model.steps[i].state_dict().items()} for i in trained}


def remove_checkpoints(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
