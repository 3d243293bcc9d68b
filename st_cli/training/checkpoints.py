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


CHECKPOINT = "checkpoint.pt"
# What a checkpoint of this version holds; a file without them was not written by `st train`.
_CHECKPOINT_KEYS = ("fingerprint", "epoch", "step", "modules", "optimizer", "untrained", "init", "per_epoch")


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write `folder`/checkpoint.pt under a temp name, then rename it over the last one: a reader (the
    next --resume) sees the previous checkpoint or this one, never half of one. A full disk is a
    one-line WriteError; the temp is removed (the caller removes the folder)."""
    import torch

    from st_cli import fsio

    target = folder / CHECKPOINT
    with fsio.writing(target):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = fsio.temp_file(target)
        try:
            # Into a file object, not a path: a failed write then carries its OSError (ENOSPC), where
            # torch's own file writer only says "unexpected pos".
            with open(tmp, "wb") as f:
                torch.save(state, f)
            os.replace(tmp, target)
        except BaseException:
            fsio.remove(tmp)
            raise


def load_checkpoint(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    from st_cli.model.modules.base import load_pickle

    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    state = load_pickle(path, advice="drop --resume to start over")  # weights only: a planted pickle runs nothing
    if not isinstance(state, dict) or any(key not in state for key in _CHECKPOINT_KEYS):
        raise StError(f"{path}: not a checkpoint of st train; drop --resume to start over")
    if state.get("fingerprint") != fingerprint:
        raise StError(f"{path}: made by a run with other data or options; drop --resume to start over")
    return state


def trained_state(model: Model, trained: Sequence[int]) -> dict[str, Any]:
    return {str(i): {k: v.detach().cpu().clone() for k, v in model.steps[i].state_dict().items()} for i in trained}


def remove_checkpoints(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
