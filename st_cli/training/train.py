"""`st train`: fine-tune the modules a recipe added (DESIGN.md §10).

Distillation (the default) teaches the student to reproduce a teacher's embeddings of plain text:
mean-squared error when the widths agree, the teacher's in-batch cosine similarities when the
student is narrower. Contrastive training learns from (anchor, positive[, negative]) pairs with
in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss, scale 20).

The frozen modules in front of the first trained one are run once per text, and their outputs
(and the teacher's embeddings) are cached: training a Dense on top of MiniLM costs one MiniLM pass
over the data, not one per epoch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from st_cli.encode.inputs import read_rows
from st_cli.errors import StError
from st_cli.format import layout

if TYPE_CHECKING:
    import torch

    from st_cli.model.model import Model

LOSSES = ("distill", "contrastive")
INITS = ("pca",)
CONTRASTIVE_SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss default
WARMUP_FRACTION = 0.1
GRAD_CLIP = 1.0
WEIGHT_DECAY = 0.01
# Added layers learn fast from a random init; after --init pca they start near the optimum and only
# need polishing; a pre-trained Transformer is wrecked by anything above ~1e-4.
DEFAULT_LR = {"added": 1e-3, "init": 1e-5, "input": 2e-5}
EMBED_BATCH = 32  # rows per batch when the frozen prefix and the teacher embed the data
# Test-only: SIGKILL the process after this many optimizer steps (a crash mid-epoch, for --resume tests).
KILL_AT_STEP_ENV = "ST_TRAIN_TEST_KILL_AT_STEP"

# Modules that read only `sentence_embedding`: after a prefix ending in them, only that is cached.
SENTENCE_LEVEL = {"Dense", "Normalize"}
# Features with a token axis: trimmed to each text's length in the cache, padded again per batch.
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "token_embeddings")
# Dense activations a PCA init suits, with the typical size of a projected input that keeps the
# activation near-linear (tanh(x) ≈ x for small x; a Normalize after it drops the scale again).
# None: leave the projection unscaled.
PCA_ACTIVATIONS: dict[str, float | None] = {
    "torch.nn.modules.linear.Identity": None,
    "torch.nn.modules.activation.Tanh": 0.5,
}

ProgressFn = Callable[[str, int, int, "float | None"], None]  # (phase, done, total, loss)


@dataclass(frozen=True)
class PairColumns:
    anchor: str = "anchor"
    positive: str = "positive"
    negative: str = "negative"


@dataclass(frozen=True)
class Pair:
    anchor: str
    positive: str
    negative: str | None = None


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
    epochs: int = 0
    steps: int = 0
    resumed_from_epoch: int = 0
    seconds: float = 0.0  # training steps and evaluations
    cache_seconds: float = 0.0  # embedding the data once with the frozen prefix and the teacher

    @property
    def final(self) -> float | None:
        if self.per_epoch:
            return self.per_epoch[-1]
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
            "untrained": _rounded(self.untrained),
            "init": _rounded(self.init),
            "per_epoch": [_rounded(m) for m in self.per_epoch],
            "final": _rounded(self.final),
            "epochs": self.epochs,
            "steps": self.steps,
            "resumed_from_epoch": self.resumed_from_epoch,
            "seconds": round(self.seconds, 3),
            "cache_seconds": round(self.cache_seconds, 3),
        }


def _rounded(value: float | None) -> float | None:
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


# ---------------------------------------------------------------- reading data


def read_pairs(inputs: Sequence[str | os.PathLike[str]], columns: PairColumns = PairColumns()) -> list[Pair]:
    """(anchor, positive[, negative]) rows from .jsonl fields or .csv/.tsv columns, through encode's readers."""
    pairs: list[Pair] = []
    for item in inputs:
        rows = read_rows(item, what="contrastive data (anchor, positive columns)")
        pairs.extend(_pairs_from_rows(str(item), rows, columns))
    if not pairs:
        raise StError(f"{', '.join(map(str, inputs))}: no pairs")
    return pairs


def _pairs_from_rows(name: str, rows: Iterator[tuple[int, dict[str, Any]]], columns: PairColumns) -> list[Pair]:
    pairs: list[Pair] = []
    with_negative: bool | None = None  # decided by the first row, then required of every row
    for number, row in rows:
        if with_negative is None:
            with_negative = columns.negative in row
        wanted = [("anchor", columns.anchor), ("positive", columns.positive)]
        if with_negative:
            wanted.append(("negative", columns.negative))
        values = []
        for role, key in wanted:
            value = row.get(key)
            if not isinstance(value, str):
                problem = "missing" if value is None else f"a {type(value).__name__}, not a string"
                raise StError(f"{name}:{number}: {role} column {key!r} is {problem} (set its name with --{role})")
            values.append(value)
        pairs.append(Pair(*values))
    return pairs


def _sha256s(inputs: Sequence[str | os.PathLike[str]]) -> list[dict[str, str]]:
    return [{"file": str(item), "sha256": layout.sha256_file(Path(item))} for item in inputs]


# ---------------------------------------------------------------- choosing what to train


def untrained_modules(model: Model, root: Path | None) -> set[int]:
    """Indices the folder's manifest lists as untrained (a Model in memory: its modules' own flags)."""
    manifest = layout.read_manifest(root) if root is not None else None
    if isinstance(manifest, dict) and isinstance(manifest.get("untrained_modules"), list):
        return {i for i in manifest["untrained_modules"] if isinstance(i, int) and 0 <= i < len(model.steps)}
    return {i for i, m in enumerate(model.steps) if m.untrained}


def modules_to_train(model: Model, which: str, untrained: set[int]) -> tuple[int, ...]:
    """`untrained`, `all` or `INDEX,...` → the indices of modules with weights to train."""
    names = ", ".join(f"{i}:{type(m).__name__}" for i, m in enumerate(model.steps))
    if which == "untrained":
        chosen = sorted(untrained)
        if not chosen:
            raise StError(
                f"nothing to train: the manifest lists no untrained modules ({names}); use --train all or --train INDEX"
            )
    elif which == "all":
        chosen = list(range(len(model.steps)))
    else:
        chosen = []
        for part in which.split(","):
            if not part.strip().isdigit() or int(part) >= len(model.steps):
                raise StError(
                    f"--train: {part.strip()!r} names no module; expected untrained, all or indices of {names}"
                )
            chosen.append(int(part))
    chosen = sorted({i for i in chosen if any(p.numel() for p in model.steps[i].parameters())})
    if not chosen:
        raise StError(f"nothing to train: the chosen modules have no weights ({names})")
    return tuple(chosen)


def default_teacher(model: Model, untrained: set[int], trained: Sequence[int]) -> Model:
    """The model's own stack without its untrained modules; modules that will change are copied."""
    from st_cli.model.model import Model

    kept = [i for i in range(len(model.steps)) if i not in untrained]
    if 0 not in kept:
        raise StError("the input module is untrained, so the model has no teacher of its own; pass --teacher")
    modules = [copy.deepcopy(model.steps[i]) if i in trained else model.steps[i] for i in kept]
    return Model(
        modules,
        prompts=model.prompts,
        default_prompt_name=model.default_prompt_name,
        similarity_fn_name=model.similarity_fn_name,
        module_kwargs=[model.module_kwargs[i] for i in kept],
    )


# ---------------------------------------------------------------- the frozen prefix, cached


class PrefixCache:
    """Per text, the features after the student's frozen prefix (modules before the first trained one)."""

    def __init__(self, model: Model, first_trained: int, device: str) -> None:
        self.model, self.device = model, device
        self.prefix = model.steps[:first_trained]
        self.rest = model.steps[first_trained:]
        self.prompt = model.resolve_prompt()
        sentence_level = all(getattr(m, "type_name", None) in SENTENCE_LEVEL for m in self.rest)
        self.keys: tuple[str, ...] | None = ("sentence_embedding",) if sentence_level else None
        self.rows: dict[str, dict[str, torch.Tensor]] = {}
        self.constants: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        """Without a frozen prefix, or with left padding (the trimming assumes right), run the whole stack."""
        tokenizer = getattr(self.model.input_module, "tokenizer", None)
        return bool(self.prefix) and getattr(tokenizer, "padding_side", "right") == "right"

    def prefix_features(self, texts: list[str]) -> dict[str, Any]:
        import torch

        features = _to_device(self.model.tokenize(texts, self.prompt), self.device)
        with torch.inference_mode():
            for module in self.prefix:
                features = module(features)
        return features

    def add(self, texts: list[str], features: dict[str, Any]) -> None:
        """Keep each text's slice of a prefix batch (token axes trimmed to its own length)."""
        import torch

        lengths = features["attention_mask"].sum(dim=1).tolist() if "attention_mask" in features else None
        for key, value in features.items():
            if self.keys is not None and key not in self.keys:
                continue
            if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != len(texts):
                self.constants[key] = value
        for row, text in enumerate(texts):
            if text in self.rows:
                continue
            kept = {}
            for key, value in features.items():
                if key in self.constants or (self.keys is not None and key not in self.keys):
                    continue
                piece = value[row]
                if key in TOKEN_KEYS and lengths is not None:
                    piece = piece[: int(lengths[row])]
                kept[key] = piece.detach().to("cpu").clone()
            self.rows[text] = kept

    def batch(self, texts: list[str]) -> dict[str, Any]:
        """Padded features for these texts, as the prefix would have given them together."""
        import torch

        features: dict[str, Any] = dict(self.constants)
        for key in self.rows[texts[0]]:
            pieces = [self.rows[t][key] for t in texts]
            if key in TOKEN_KEYS:
                features[key] = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
            else:
                features[key] = torch.stack(pieces)
        return _to_device(features, self.device)

    def run_rest(self, features: dict[str, Any]) -> torch.Tensor:
        for module in self.rest:
            features = module(features)
        return features["sentence_embedding"]


def _to_device(features: dict[str, Any], device: str) -> dict[str, Any]:
    if device == "cpu":
        return features
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def _length_batches(texts: Sequence[str], size: int = EMBED_BATCH) -> Iterator[list[str]]:
    """Distinct texts, longest first, in batches: little padding when embedding the data once."""
    ordered = sorted(dict.fromkeys(texts), key=len, reverse=True)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


class Embedder:
    """Runs the cache pass: the student's prefix and the teacher over every text, each once."""

    def __init__(self, cache: PrefixCache, teacher: Model | None, device: str) -> None:
        self.cache, self.teacher, self.device = cache, teacher, device
        self.targets: dict[str, torch.Tensor] = {}
        self.shared = teacher is not None and cache.enabled and _shares_prefix(teacher, cache)

    def run(self, texts: Sequence[str], progress: ProgressFn | None) -> None:
        import torch

        batches = list(_length_batches(texts))
        total, done = sum(map(len, batches)), 0
        for batch in batches:
            with torch.inference_mode():
                prefix_out = self.cache.prefix_features(batch) if self.cache.enabled else None
                if prefix_out is not None:
                    self.cache.add(batch, dict(prefix_out))
                if self.teacher is not None:
                    self.targets.update(zip(batch, self._teacher_embed(batch, prefix_out), strict=True))
            done += len(batch)
            if progress:
                progress("embedding", done, total, None)

    def _teacher_embed(self, batch: list[str], prefix_out: dict[str, Any] | None) -> torch.Tensor:
        assert self.teacher is not None
        if self.shared and prefix_out is not None:
            features = dict(prefix_out)
            for module in self.teacher.steps[len(self.cache.prefix) :]:
                features = module(features)
        else:
            tokens = _to_device(self.teacher.tokenize(batch, self.teacher.resolve_prompt()), self.device)
            features = self.teacher.forward(tokens)
        return features["sentence_embedding"].float().detach().to("cpu").clone()


def _shares_prefix(teacher: Model, cache: PrefixCache) -> bool:
    """The teacher starts with the very modules of the student's frozen prefix (the default teacher)."""
    steps = teacher.steps
    same = len(steps) >= len(cache.prefix) and all(a is b for a, b in zip(steps, cache.prefix, strict=False))
    return same and teacher.resolve_prompt() == cache.prompt


# ---------------------------------------------------------------- losses and metrics


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


def distill_objective(student_dim: int, teacher_dim: int, *, explicit_teacher: bool) -> str:
    """mse when the widths agree; the teacher's pairwise similarities when the student is narrower."""
    if student_dim == teacher_dim:
        return "mse"
    if student_dim > teacher_dim and explicit_teacher:
        raise StError(
            f"--teacher gives {teacher_dim}-d embeddings, narrower than the student's {student_dim}: "
            "a narrower teacher cannot describe the student's space; choose a teacher at least as wide"
        )
    return "similarity"


def distill_loss(objective: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mse: the embeddings themselves. similarity: 1 − the Pearson correlation of the in-batch
    cosine similarities (each pair once), so the student keeps the teacher's order of pairs without
    having to reproduce its scale. Measured on MiniLM → Dense 128 from a PCA init (1,000 held-out
    pairs): the MSE of the similarity values pulled Spearman from 0.9828 to 0.978 in 5 epochs (a
    projection inflates every cosine, and undoing that costs the order); the correlation kept 0.983.
    """
    import torch

    if objective == "mse":
        return torch.nn.functional.mse_loss(student, teacher)
    upper = torch.triu_indices(len(student), len(student), offset=1, device=student.device)
    ours = _cosine_matrix(student, student)[upper[0], upper[1]]
    theirs = _cosine_matrix(teacher, teacher)[upper[0], upper[1]]
    ours, theirs = ours - ours.mean(), theirs - theirs.mean()
    return 1 - (ours * theirs).sum() / (ours.norm() * theirs.norm() + 1e-12)


def contrastive_loss(anchors: torch.Tensor, candidates: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """In-batch negatives: row i's positive is candidate i; every other candidate is a negative."""
    import torch

    scores = _cosine_matrix(anchors, candidates) * CONTRASTIVE_SCALE
    labels = torch.arange(len(anchors), device=anchors.device)
    loss = torch.nn.functional.cross_entropy(scores, labels)
    if symmetric:  # and each positive must pick its own anchor among the batch's anchors
        loss = (loss + torch.nn.functional.cross_entropy(scores[:, : len(anchors)].T, labels)) / 2
    return loss


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    values = x[order]
    start = 0
    for end in range(1, len(x) + 1):  # ties share their average rank
        if end == len(x) or values[end] != values[start]:
            if end - start > 1:
                ranks[order[start:end]] = (start + end - 1) / 2
            start = end
    return ranks


# ---------------------------------------------------------------- the job


class _Job:
    """One training run: the student, its cache, the data split, the optimizer and the checkpoint."""

    def __init__(
        self,
        model: Model,
        options: Options,
        *,
        teacher: Model | None,
        device: str,
        texts: list[str] | None,
        pairs: list[Pair] | None,
        progress: ProgressFn | None,
    ) -> None:
        self.model, self.options, self.teacher, self.device, self.progress = model, options, teacher, device, progress
        self.cache = PrefixCache(model, options.trained[0], device)
        self.embedder = Embedder(self.cache, teacher, device)
        self.train_texts, self.eval_texts, self.eval_pairs = _split_texts(texts or [], options)
        self.train_pairs, self.eval_held = _split_pairs(pairs or [], options)
        self.objective = "in-batch-negatives"

    # ------------------------------------------------------------ embedding

    def all_texts(self) -> list[str]:
        if self.options.loss == "distill":
            return self.train_texts + self.eval_texts
        return [
            t for p in self.train_pairs + self.eval_held for t in (p.anchor, p.positive, p.negative) if t is not None
        ]

    def prepare(self) -> None:
        self.embedder.run(self.all_texts(), self.progress)
        if self.options.loss == "distill":
            student_dim = int(self.student([self.train_texts[0]], grad=False).shape[-1])
            teacher_dim = int(next(iter(self.embedder.targets.values())).shape[-1])
            self.objective = distill_objective(
                student_dim, teacher_dim, explicit_teacher=self.options.teacher is not None
            )

    def student(self, texts: list[str], *, grad: bool) -> torch.Tensor:
        import torch

        with torch.set_grad_enabled(grad):
            if self.cache.enabled:
                return self.cache.run_rest(self.cache.batch(texts))
            tokens = _to_device(self.model.tokenize(texts, self.cache.prompt), self.device)
            return self.model.forward(tokens)["sentence_embedding"]

    def embed_eval(self, texts: list[str]) -> torch.Tensor:
        import torch

        out = [self.student(list(batch), grad=False) for batch in _chunks(texts, EMBED_BATCH)]
        return torch.cat(out) if out else torch.zeros(0)

    # ------------------------------------------------------------ evaluation

    def evaluate(self) -> float | None:
        """Spearman of student vs teacher cosines on held-out pairs; for pairs, ranking accuracy."""
        import torch

        was_training = [m.training for m in self.model.steps]
        self.model.eval()
        try:
            with torch.no_grad():
                return self._spearman() if self.options.loss == "distill" else self._accuracy()
        finally:
            for module, mode in zip(self.model.steps, was_training, strict=True):
                module.train(mode)

    def _spearman(self) -> float | None:
        import torch

        if not self.eval_pairs:
            return None
        student = self.embed_eval(self.eval_texts)
        teacher = torch.stack([self.embedder.targets[t] for t in self.eval_texts]).to(student.device)
        i, j = (torch.tensor(col) for col in zip(*self.eval_pairs, strict=True))
        cos_s = torch.nn.functional.cosine_similarity(student[i], student[j]).cpu().numpy()
        cos_t = torch.nn.functional.cosine_similarity(teacher[i], teacher[j]).cpu().numpy()
        return spearman(cos_s.astype(np.float64), cos_t.astype(np.float64))

    def _accuracy(self) -> float | None:
        if len(self.eval_held) < 2:
            return None
        anchors = self.embed_eval([p.anchor for p in self.eval_held])
        candidates = [p.positive for p in self.eval_held] + [p.negative for p in self.eval_held if p.negative]
        scores = _cosine_matrix(anchors, self.embed_eval(candidates))
        best = scores.argmax(dim=1).cpu().numpy()
        return float((best == np.arange(len(self.eval_held))).mean())

    # ------------------------------------------------------------ training

    def batches(self, epoch: int) -> list[list[int]]:
        """Seeded shuffling: epoch e's order depends on (seed, e) alone, so a resumed run repeats it."""
        import torch

        n = len(self.train_texts) if self.options.loss == "distill" else len(self.train_pairs)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.options.seed * 1_000_003 + epoch))
        cut = [order[s : s + self.options.batch_size].tolist() for s in range(0, n, self.options.batch_size)]
        return [b for b in cut if len(b) >= 2]  # one row has no in-batch similarities or negatives

    def loss(self, rows: list[int]) -> torch.Tensor:
        import torch

        if self.options.loss == "distill":
            texts = [self.train_texts[i] for i in rows]
            target = torch.stack([self.embedder.targets[t] for t in texts]).to(self.device)
            return distill_loss(self.objective, self.student(texts, grad=True), target)
        pairs = [self.train_pairs[i] for i in rows]
        anchors = self.student([p.anchor for p in pairs], grad=True)
        candidates = [p.positive for p in pairs] + [p.negative for p in pairs if p.negative is not None]
        return contrastive_loss(anchors, self.student(candidates, grad=True), self.options.symmetric)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _held_out_count(n: int, fraction: float) -> int:
    return min(n - 2, round(n * fraction)) if fraction > 0 and n >= 4 else 0


def _split_texts(texts: list[str], options: Options) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """Seeded split into training and held-out texts, and as many random held-out pairs as texts."""
    distinct = list(dict.fromkeys(texts))
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(len(distinct))
    held = _held_out_count(len(distinct), options.eval_fraction)
    eval_texts = [distinct[i] for i in order[:held]]
    train_texts = [distinct[i] for i in order[held:]]
    pairs = []
    if held >= 2:
        first = rng.integers(0, held, size=held)
        second = (first + rng.integers(1, held, size=held)) % held  # never a text with itself
        pairs = list(zip(first.tolist(), second.tolist(), strict=True))
    return train_texts, eval_texts, pairs


def _split_pairs(pairs: list[Pair], options: Options) -> tuple[list[Pair], list[Pair]]:
    order = np.random.default_rng(options.seed).permutation(len(pairs))
    held = _held_out_count(len(pairs), options.eval_fraction)
    return [pairs[i] for i in order[held:]], [pairs[i] for i in order[:held]]


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 10% of the steps, then linear decay to zero (as ST's default)."""
    warmup = max(1, int(total * WARMUP_FRACTION))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# ---------------------------------------------------------------- PCA initialisation


def pca_init(job: _Job) -> int:
    """Set the first trained module, a narrowing Dense, to the top principal directions of its inputs.

    Uncentred: the directions of largest mean square, so cosines between embeddings survive the
    projection (centring first measured 0.84 Spearman against 0.98 on MiniLM → 128). Rows are
    L2-normalised so every text counts the same. Returns the module's index.
    """
    import torch

    index = job.options.trained[0]
    dense = job.model.steps[index]
    activation = getattr(dense, "activation", None)
    linear = getattr(dense, "linear", None)
    narrowing = isinstance(linear, torch.nn.Linear) and linear.out_features < linear.in_features
    if getattr(dense, "type_name", None) != "Dense" or not narrowing or not job.cache.enabled:
        raise StError(
            f"--init pca: module {index} ({type(dense).__name__}) is not a narrowing Dense after frozen modules"
        )
    if activation not in PCA_ACTIVATIONS:
        raise StError(f"--init pca: module {index} uses activation {activation}; PCA suits identity or tanh")
    assert isinstance(linear, torch.nn.Linear)
    texts = job.train_texts if job.options.loss == "distill" else [p.anchor for p in job.train_pairs]
    raw = torch.stack([job.cache.rows[t]["sentence_embedding"] for t in texts]).double()
    inputs = torch.nn.functional.normalize(raw, dim=-1)
    _, vectors = torch.linalg.eigh(inputs.T @ inputs)  # ascending eigenvalues
    top = vectors[:, -linear.out_features :].flip(1).T
    size = PCA_ACTIVATIONS[activation]
    scale = 1.0 if size is None else size / float(raw.norm(dim=-1).median())
    with torch.no_grad():
        linear.weight.copy_((top * scale).to(linear.weight.dtype))
        if linear.bias is not None:
            linear.bias.zero_()
    return index


# ---------------------------------------------------------------- checkpoints


def checkpoint_dir(output: Path) -> Path:
    """Beside OUT, hidden and named after it, so the next run on OUT finds (or removes) it."""
    return output.parent / f".{output.name}.st-train-checkpoint"


def _fingerprint(options: Options, data: list[dict[str, str]], model_name: str) -> str:
    document = json.dumps({"options": vars(options), "data": data, "model": model_name}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


def _save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / "checkpoint.pt")


def _load_checkpoint(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    import torch

    path = folder / "checkpoint.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        raise StError(f"{path}: made by a run with other data or options; drop --resume to start over")
    return state


def _trained_state(model: Model, trained: Sequence[int]) -> dict[str, Any]:
    return {str(i): {k: v.detach().cpu().clone() for k, v in model.steps[i].state_dict().items()} for i in trained}


# ---------------------------------------------------------------- the public function


def train(
    model: Model | str | os.PathLike[str],
    data: Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str],
    teacher: Model | str | os.PathLike[str] | None = None,
    loss: str = "distill",
    train: str = "untrained",
    epochs: int = 1,
    lr: float | None = None,
    batch_size: int = 64,
    max_steps: int | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
    init: str | None = None,
    format: layout.Format = "portable",
    force: bool = False,
    resume: bool = False,
    device: str = "cpu",
    field: str = "text",
    column: str = "text",
    columns: PairColumns = PairColumns(),
    symmetric: bool = False,
    trust_remote_code: bool = False,
    progress: ProgressFn | None = None,
) -> TrainReport:
    """Fine-tune a model's untrained (or chosen) modules and save the result as a new folder.

    Args:
        model: a folder, a Hub id or a Model; a folder's manifest says which modules are untrained.
        data: text files (distill: any format `st encode` reads) or pair files (contrastive).
        teacher: distillation's target model; default: the model's own stack without its untrained modules.
        train: `untrained`, `all`, or comma-separated module indices.
        eval_fraction: the share of the data held out for the per-epoch evaluation (0: none).
    """

    from st_cli import fsio
    from st_cli.encode.device import resolve_device
    from st_cli.encode.inputs import ReadOptions, read_texts
    from st_cli.model.model import Model, load_model

    out = Path(output)
    _check_arguments(loss, init, epochs, batch_size, eval_fraction, max_steps, format)
    read = [m for m in (model, teacher) if isinstance(m, (str, os.PathLike))] + list(data)
    fsio.refuse_inputs_inside(out, [Path(p) for p in read if str(p) != "-"], "training")
    claim = fsio.claim(out, force=force)  # --force replaces only what exists now, not what appears later
    device = resolve_device(device)
    texts = read_texts(data, ReadOptions(field=field, column=column)) if loss == "distill" else None
    pairs = read_pairs(data, columns) if loss == "contrastive" else None
    if texts is not None and len(set(texts)) < 2:
        raise StError(f"{', '.join(map(str, data))}: distillation needs at least 2 distinct texts")

    root = None if isinstance(model, Model) else _local_root(model)
    student = model if isinstance(model, Model) else load_model(model, trust_remote_code=trust_remote_code)
    untrained = untrained_modules(student, root)
    trained = modules_to_train(student, train, untrained)
    teacher_name = None if teacher is None or isinstance(teacher, Model) else str(teacher)
    teacher_model = None
    if loss == "distill":
        if teacher is None:
            teacher_model = default_teacher(student, untrained, trained)
        elif isinstance(teacher, Model):
            teacher_model = teacher
        else:
            teacher_model = load_model(teacher, trust_remote_code=trust_remote_code)
    chosen_lr = lr if lr is not None else DEFAULT_LR["input" if 0 in trained else "init" if init else "added"]
    options = Options(
        loss=loss, trained=trained, epochs=epochs, lr=chosen_lr, batch_size=batch_size, max_steps=max_steps,
        eval_fraction=eval_fraction, seed=seed, init=init, symmetric=symmetric,
        teacher=teacher_name if teacher is not None else None,
    )  # fmt: skip
    if teacher is not None and teacher_name is None:
        options = Options(**{**vars(options), "teacher": "<Model>"})
    data_record = _sha256s(data)
    fingerprint = _fingerprint(options, data_record, str(model) if root is not None else "<Model>")
    checkpoints = checkpoint_dir(out)

    student.to(device)
    if teacher_model is not None:
        teacher_model.to(device).eval()
    _freeze(student, trained)
    job = _Job(student, options, teacher=teacher_model, device=device, texts=texts, pairs=pairs, progress=progress)
    if options.loss == "distill" and not job.train_texts or options.loss == "contrastive" and len(job.train_pairs) < 2:
        raise StError(f"{', '.join(map(str, data))}: too little data left to train on after holding out --eval")

    started = time.perf_counter()
    job.prepare()
    report = TrainReport(
        output=out,
        loss=loss,
        objective=job.objective,
        teacher=teacher_name if teacher is not None else ("own stack" if loss == "distill" else None),
        trained_modules=[f"{i}:{type(student.steps[i]).__name__}" for i in trained],
        examples=len(job.train_texts) if loss == "distill" else len(job.train_pairs),
        held_out=len(job.eval_texts) if loss == "distill" else len(job.eval_held),
        metric="spearman" if loss == "distill" else "accuracy",
        untrained=None,
        init=None,
        cache_seconds=time.perf_counter() - started,
    )
    started = time.perf_counter()
    state = _load_checkpoint(checkpoints, fingerprint) if resume else None
    if not resume and checkpoints.exists():
        _remove_checkpoints(checkpoints)
    _run(job, report, state, checkpoints, fingerprint)
    report.seconds = time.perf_counter() - started

    student.to("cpu").eval()
    for i, module in enumerate(student.steps):
        module.untrained = i in untrained and i not in trained
    record = _training_record(report, options, data_record, student)
    student.save(out, format=format, force=force, claim=claim, training=record)
    _remove_checkpoints(checkpoints)
    return report


def _check_arguments(
    loss: str, init: str | None, epochs: int, batch_size: int, eval_fraction: float, max_steps: int | None, fmt: str
) -> None:
    checks = [
        (loss in LOSSES, f"--loss: expected {' or '.join(LOSSES)}, got {loss!r}"),
        (init is None or init in INITS, f"--init: expected {', '.join(INITS)}, got {init!r}"),
        (epochs >= 0, f"--epochs: expected 0 or more, got {epochs}"),
        (epochs > 0 or init is not None, "--epochs 0 without --init pca would leave the weights as they are"),
        (batch_size >= 2, f"--batch-size: expected 2 or more (in-batch similarities), got {batch_size}"),
        (0 <= eval_fraction < 1, f"--eval: expected a fraction in [0, 1), got {eval_fraction}"),
        (max_steps is None or max_steps >= 1, f"--max-steps: expected 1 or more, got {max_steps}"),
        (fmt in layout.FORMATS, f"--format: expected {' or '.join(layout.FORMATS)}, got {fmt!r}"),
        (init is None or loss == "distill", "--init pca needs --loss distill (it projects the teacher's embeddings)"),
    ]
    for ok, message in checks:
        if not ok:
            raise StError(message)


def _local_root(model: str | os.PathLike[str]) -> Path | None:
    from st_cli.format import hub

    try:
        return hub.resolve_model(model)
    except StError:
        return None


def _freeze(model: Model, trained: Sequence[int]) -> None:
    """Gradients and dropout only in the trained modules; the rest frozen and in eval mode."""
    model.eval()
    for i, module in enumerate(model.steps):
        module.requires_grad_(i in trained)
        module.train(i in trained)


def _remove_checkpoints(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _run(job: _Job, report: TrainReport, state: dict[str, Any] | None, checkpoints: Path, fingerprint: str) -> None:
    """Evaluate, optionally PCA-initialise, then the epochs, with a checkpoint after each."""
    import torch

    options, model = job.options, job.model
    params = [p for i in options.trained for p in model.steps[i].parameters()]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = len(job.batches(0))
    total = min(options.epochs * steps_per_epoch, options.max_steps or math.inf)
    step, start_epoch = 0, 0
    if state is not None:
        for key, weights in state["modules"].items():
            model.steps[int(key)].load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        step, start_epoch = int(state["step"]), int(state["epoch"])
        report.untrained, report.init = state["untrained"], state["init"]
        report.per_epoch = list(state["per_epoch"])
        report.resumed_from_epoch = start_epoch
    else:
        report.untrained = job.evaluate()
        if options.init == "pca":
            pca_init(job)
            report.init = job.evaluate()
    kill_at = int(os.environ.get(KILL_AT_STEP_ENV, "0") or 0)
    for epoch in range(start_epoch, options.epochs):
        if step >= total:
            break
        torch.manual_seed(options.seed * 1_000_003 + epoch)  # dropout in trained modules, resumable
        for rows in job.batches(epoch):
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = options.lr * _lr_factor(step, int(total))
            loss = job.loss(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            optimizer.step()
            step += 1
            if job.progress:
                job.progress("training", step, int(total), float(loss))
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        metric = job.evaluate()
        report.per_epoch.append(metric)
        report.epochs = epoch + 1
        _save_checkpoint(
            checkpoints,
            {
                "fingerprint": fingerprint,
                "epoch": epoch + 1,
                "step": step,
                "modules": _trained_state(model, options.trained),
                "optimizer": optimizer.state_dict(),
                "untrained": report.untrained,
                "init": report.init,
                "per_epoch": report.per_epoch,
            },
        )
    report.steps = step
    report.epochs = max(report.epochs, report.resumed_from_epoch)


def _training_record(report: TrainReport, options: Options, data: list[dict[str, str]], model: Model) -> dict[str, Any]:
    """What the manifest keeps: enough to tell how the weights were fitted, and on what."""
    return {
        "data": data,
        "loss": options.loss,
        "objective": report.objective,
        "teacher": report.teacher,
        "trained_modules": list(options.trained),
        "trained_types": [type(model.steps[i]).__name__ for i in options.trained],
        "hyperparameters": {
            "epochs": options.epochs,
            "lr": options.lr,
            "batch_size": options.batch_size,
            "max_steps": options.max_steps,
            "eval_fraction": options.eval_fraction,
            "seed": options.seed,
            "init": options.init,
            "symmetric": options.symmetric,
            "optimizer": "AdamW",
            "weight_decay": WEIGHT_DECAY,
            "warmup_fraction": WARMUP_FRACTION,
            "grad_clip": GRAD_CLIP,
            "scale": CONTRASTIVE_SCALE if options.loss == "contrastive" else None,
        },
        "steps": report.steps,
        "metric": report.metric,
        "metric_untrained": _rounded(report.untrained),
        "metric_init": _rounded(report.init),
        "metric_per_epoch": [_rounded(m) for m in report.per_epoch],
    }
