"""What a training run is given (`Options`, the pair columns) and what it reports (`TrainReport`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOSSES = ("distill", "contrastive")


# auto: pca where it applies (a fresh linear Dense narrower than its input, distilled), else none.
INITS = ("auto", "pca", "none")


# Below this many held-out texts the teacher agreement is too noisy to judge a run by.
MIN_HELD_OUT = 200


KEEPS = ("last", "best")


WARMUP_FRACTION = 0.1


GRAD_CLIP = 1.0


WEIGHT_DECAY = 0.01


# Added layers learn fast from a random init; after --init pca they start near the optimum and only
# need polishing; a pre-trained Transformer is wrecked by anything above ~1e-4.
DEFAULT_LR = {"added": 1e-3, "init": 1e-5, "input": 2e-5}


ProgressFn = Callable[[str, int, int, "float | None"], None]  # (phase, done, total, loss)


@dataclass(frozen=True)
class PairColumns:
    anchor: str = "anchor"
    positive: str = "positive"
    negative: str = "negative"


DEFAULT_COLUMNS = PairColumns()


@dataclass
class TrainReport:
    """What `train` did. `to_json()` keys are the CLI's `--json` API."""

    output: Path
    loss: str
    objective: str  # mse | similarity | in-batch-negatives
    teacher: str | None
    trained_modules: list[str]
    examples: int  # training texts (distill) or pairs (contrastive)
    held_out: int
    metric: str  # spearman | accuracy
    untrained: float | None  # the metric before any training
    init: float | None  # after --init pca
    per_epoch: list[float | None] = field(default_factory=list)
    init_method: str = "none"  # what --init resolved to: pca | none
    init_reason: str = ""  # why (auto's choice, in words)
    read: int = 0  # distill: lines read
    duplicates: int = 0  # distill: repeated lines dropped before the split
    warnings: list[str] = field(default_factory=list)
    eval_per_epoch: list[list[dict[str, Any]]] = field(default_factory=list)  # --eval-data: epoch 0 = before
    keep: str = "last"
    kept_epoch: int | None = None
    epochs: int = 0
    steps: int = 0
    resumed_from_epoch: int = 0
    seconds: float = 0.0  # training steps and evaluations
    cache_seconds: float = 0.0  # embedding the data once with the frozen prefix and the teacher

    @property
    def final(self) -> float | None:
        if self.per_epoch:
            kept = self.kept_epoch if self.kept_epoch else len(self.per_epoch)
            return self.per_epoch[kept - 1]
        return self.init if self.init is not None else self.untrained

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "loss": self.loss,
            "objective": self.objective,
            "teacher": self.teacher,
            "trained_modules": self.trained_modules,
            "examples": self.examples,
            "held_out": self.held_out,
            "metric": self.metric,
            "untrained": rounded(self.untrained),
            "init": rounded(self.init),
            "per_epoch": [rounded(m) for m in self.per_epoch],
            "final": rounded(self.final),
            "init_method": self.init_method,
            "init_reason": self.init_reason,
            "read": self.read,
            "duplicates": self.duplicates,
            "warnings": self.warnings,
            "eval": self.eval_per_epoch,
            "keep": self.keep,
            "kept_epoch": self.kept_epoch,
            "epochs": self.epochs,
            "steps": self.steps,
            "resumed_from_epoch": self.resumed_from_epoch,
            "seconds": round(self.seconds, 3),
            "cache_seconds": round(self.cache_seconds, 3),
        }


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class Options:
    """Everything that changes the trained weights (the checkpoint's fingerprint covers all of it)."""

    loss: str
    trained: tuple[int, ...]
    epochs: int
    lr: float
    batch_size: int
    max_steps: int | None
    eval_fraction: float
    seed: int
    init: str | None
    symmetric: bool
    teacher: str | None
    keep: str = "last"
    eval_data: tuple[str, ...] = ()
