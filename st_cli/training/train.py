"""`st train`: fine-tune the modules a recipe added (docs/explanation/design.md).

Distillation (the default) teaches the student to reproduce a teacher's embeddings of plain text:
mean-squared error when the widths agree, the teacher's in-batch cosine similarities when the
student is narrower. Contrastive training learns from (anchor, positive[, negative]) pairs with
in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss, scale 20).

The frozen modules in front of the first trained one are run once per text, and their outputs
(and the teacher's embeddings) are cached: training a Dense on top of MiniLM costs one MiniLM pass
over the data, not one per epoch.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from st_cli.errors import StError, WriteError
from st_cli.format import layout
from st_cli.training.cache import EMBED_BATCH, Embedder, PrefixCache, to_device
from st_cli.training.checkpoints import (
    checkpoint_dir,
    job_fingerprint,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
    trained_state,
)
from st_cli.training.data import Pair, chunks, data_record, read_pairs, split_pairs, split_texts
from st_cli.training.losses import (
    CONTRASTIVE_SCALE,
    contrastive_loss,
    cosine_matrix,
    distill_loss,
    distill_objective,
    spearman,
)
from st_cli.training.options import (
    DEFAULT_COLUMNS,
    DEFAULT_LR,
    GRAD_CLIP,
    INITS,
    KEEPS,
    LOSSES,
    MIN_HELD_OUT,
    WARMUP_FRACTION,
    WEIGHT_DECAY,
    Options,
    PairColumns,
    ProgressFn,
    TrainReport,
    rounded,
)
from st_cli.training.pca import describe, pca_init, pca_unsuitable

if TYPE_CHECKING:
    import torch

    from st_cli.model.model import Model

# Test-only: SIGKILL the process after this many optimizer steps (a crash mid-epoch, for --resume tests).
KILL_AT_STEP_ENV = "ST_TRAIN_TEST_KILL_AT_STEP"


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


# ---------------------------------------------------------------- the job


class TrainingJob:
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
        self.train_texts, self.eval_texts, self.eval_pairs = split_texts(texts or [], options)
        self.train_pairs, self.eval_held = split_pairs(pairs or [], options)
        self.objective = "in-batch-negatives"
        self.eval_history: list[dict[str, Any]] = []  # --eval-data: {stage, epoch, results} per evaluation
        self.best: dict[str, Any] | None = None  # --keep best: {epoch, score, modules, results}
        self.kept_results: list[Any] = []  # EvalResults of the epoch that is saved

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
            tokens = to_device(self.model.tokenize(texts, self.cache.prompt), self.device)
            return self.model.forward(tokens)["sentence_embedding"]

    def embed_eval(self, texts: list[str]) -> torch.Tensor:
        import torch

        out = [self.student(list(batch), grad=False) for batch in chunks(texts, EMBED_BATCH)]
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
        scores = cosine_matrix(anchors, self.embed_eval(candidates))
        best = scores.argmax(dim=1).cpu().numpy()
        return float((best == np.arange(len(self.eval_held))).mean())

    def evaluate_data(self, stage: str, epoch: int) -> float | None:
        """--eval-data: `st eval`'s evaluation of the student now; returns the first file's primary metric."""
        if not self.options.eval_data:
            return None
        from st_cli.eval.evaluate import EvalOptions, evaluate

        results = evaluate(self.model, self.options.eval_data, EvalOptions(device=self.device))
        docs = [r.to_json() for r in results]
        self.eval_history.append({"stage": stage, "epoch": epoch, "results": docs})
        if self.progress:
            self.progress("eval", len(self.eval_history), len(self.eval_history), None)
        value = results[0].metrics[results[0].primary]
        return None if value != value else value  # NaN: a constant side

    def consider(self, epoch: int, score: float | None) -> None:
        """--keep best: remember the trained modules of the best epoch so far."""
        if self.options.keep != "best" or score is None:
            return
        if self.best is None or score > self.best["score"]:
            results = self.eval_history[-1]["results"] if self.options.eval_data else []
            modules = trained_state(self.model, self.options.trained)
            self.best = {"epoch": epoch, "score": score, "modules": modules, "results": results}

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


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 10% of the steps, then linear decay to zero (as ST's default)."""
    warmup = max(1, int(total * WARMUP_FRACTION))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


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
    init: str | None = "auto",
    format: layout.Format = "portable",
    force: bool = False,
    resume: bool = False,
    device: str = "cpu",
    field: str = "text",
    column: str = "text",
    columns: PairColumns = DEFAULT_COLUMNS,
    symmetric: bool = False,
    trust_remote_code: bool = False,
    progress: ProgressFn | None = None,
    eval_data: Sequence[str | os.PathLike[str]] = (),
    keep: str = "last",
) -> TrainReport:
    """Fine-tune a model's untrained (or chosen) modules and save the result as a new folder.

    Args:
        model: a folder, a Hub id or a Model; a folder's manifest says which modules are untrained.
        data: text files (distill: any format `st encode` reads) or pair files (contrastive).
        teacher: distillation's target model; default: the model's own stack without its untrained modules.
        train: `untrained`, `all`, or comma-separated module indices.
        eval_fraction: the share of the data held out for the per-epoch evaluation (0: none).
        init: auto (PCA where it applies: a fresh linear Dense narrower than its input, distilled),
            pca, or none (None: none).
        eval_data: labelled data `st eval` reads, evaluated before training and after every epoch;
            the last (kept) epoch's results are recorded in the manifest and the model card.
        keep: last, or best (the epoch whose first --eval-data primary metric, else the held-out
            teacher agreement, is highest).
    """

    from st_cli import fsio
    from st_cli.encode.device import resolve_device
    from st_cli.encode.inputs import ReadOptions, read_texts
    from st_cli.model.model import Model, load_model

    out = Path(output)
    init = "none" if init is None else init
    _check_arguments(loss, init, epochs, batch_size, eval_fraction, max_steps, format, keep)
    _refuse_outputs_among_inputs(out, model, teacher, [*data, *eval_data])
    # --force replaces only what exists now (not what appears later), and only a model folder
    claim = fsio.claim(out, force=force, kind=layout.MODEL_FOLDER)
    device = resolve_device(device)
    texts = read_texts(data, ReadOptions(field=field, column=column)) if loss == "distill" else None
    pairs = read_pairs(data, columns) if loss == "contrastive" else None
    if texts is not None and len(set(texts)) < 2:
        raise StError(f"{', '.join(map(str, data))}: distillation needs at least 2 distinct texts")
    if eval_data:  # read and recognised now: a bad file fails before any training
        from st_cli.eval.data import parse_columns
        from st_cli.eval.tasks import task_for

        for item in eval_data:
            task_for(Path(item), parse_columns(()))

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
    options = Options(
        loss=loss, trained=trained, epochs=epochs, lr=lr or 0.0, batch_size=batch_size, max_steps=max_steps,
        eval_fraction=eval_fraction, seed=seed, init=init, symmetric=symmetric,
        teacher=teacher_name if teacher is not None else None, keep=keep,
        eval_data=tuple(str(p) for p in eval_data),
    )  # fmt: skip
    if teacher is not None and teacher_name is None:
        options = Options(**{**vars(options), "teacher": "<Model>"})

    student.to(device)
    if teacher_model is not None:
        teacher_model.to(device).eval()
    _freeze(student, trained)
    job = TrainingJob(
        student, options, teacher=teacher_model, device=device, texts=texts, pairs=pairs, progress=progress
    )
    if options.loss == "distill" and not job.train_texts or options.loss == "contrastive" and len(job.train_pairs) < 2:
        raise StError(f"{', '.join(map(str, data))}: too little data left to train on after holding out --eval")
    chosen_init, init_reason = choose_init(job, init)
    if epochs == 0 and chosen_init is None:
        raise StError("--epochs 0 without an init (--init pca) would leave the weights as they are")
    chosen_lr = lr if lr is not None else DEFAULT_LR["input" if 0 in trained else "init" if chosen_init else "added"]
    options = Options(**{**vars(options), "init": chosen_init, "lr": chosen_lr})
    job.options = options
    data_files = data_record(data)
    fingerprint = job_fingerprint(options, data_files, str(model) if root is not None else "<Model>")
    checkpoints = checkpoint_dir(out)

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
        init_method=chosen_init or "none",
        init_reason=init_reason,
        read=len(texts) if texts is not None else 0,
        duplicates=len(texts) - len(set(texts)) if texts is not None else 0,
        keep=keep,
    )
    report.warnings += held_out_warnings(job)
    started = time.perf_counter()
    state = load_checkpoint(checkpoints, fingerprint) if resume else None
    if not resume and checkpoints.exists():
        remove_checkpoints(checkpoints)
    try:
        _run(job, report, state, checkpoints, fingerprint)
        report.seconds = time.perf_counter() - started

        student.to("cpu").eval()
        for i, module in enumerate(student.steps):
            module.untrained = i in untrained and i not in trained
        record = _training_record(report, options, data_files, student, job.eval_history)
        student.save(out, format=format, force=force, claim=claim, training=record)
    except WriteError:  # a full disk: leave nothing of this run on it (a kill keeps the checkpoint: --resume)
        remove_checkpoints(checkpoints)
        raise
    remove_checkpoints(checkpoints)
    if job.kept_results:
        from st_cli.eval.record import record as record_results

        record_results(out, job.kept_results)  # the manifest's evaluations and the card's table
    return report


def choose_init(job: TrainingJob, init: str) -> tuple[str | None, str]:
    """--init auto|pca|none → the init to run (pca or None), and why, in words, for the report."""
    if init == "none":
        return None, "--init none: training starts from the random init"
    if init == "pca":
        return "pca", f"--init pca: {describe(job)} starts at the top principal directions of its inputs"
    problem = pca_unsuitable(job) if job.options.loss == "distill" else "contrastive training has no teacher to project"
    if problem is None:
        return "pca", (
            f"auto: {describe(job)} is a fresh linear layer narrower than its input, so it starts at the top "
            "principal directions of its inputs (--init none keeps the random init)"
        )
    return None, f"auto: no PCA init ({problem}); training starts from the random init"


def held_out_warnings(job: TrainingJob) -> list[str]:
    if job.options.loss != "distill" or job.options.eval_fraction == 0:
        return []
    held = len(job.eval_texts)
    if held < MIN_HELD_OUT:
        return [
            f"only {held} texts held out: the teacher agreement is noise below ~{MIN_HELD_OUT} "
            "(add data or raise --eval; --eval-data measures on data of your own)"
        ]
    return []


def _check_arguments(  # noqa: PLR0913
    loss: str,
    init: str,
    epochs: int,
    batch_size: int,
    eval_fraction: float,
    max_steps: int | None,
    fmt: str,
    keep: str,
) -> None:
    checks = [
        (loss in LOSSES, f"--loss: expected {' or '.join(LOSSES)}, got {loss!r}"),
        (init in INITS, f"--init: expected {', '.join(INITS)}, got {init!r}"),
        (keep in KEEPS, f"--keep: expected {' or '.join(KEEPS)}, got {keep!r}"),
        (epochs >= 0, f"--epochs: expected 0 or more, got {epochs}"),
        (epochs > 0 or init == "pca", "--epochs 0 without --init pca would leave the weights as they are"),
        (batch_size >= 2, f"--batch-size: expected 2 or more (in-batch similarities), got {batch_size}"),
        (0 <= eval_fraction < 1, f"--eval: expected a fraction in [0, 1), got {eval_fraction}"),
        (max_steps is None or max_steps >= 1, f"--max-steps: expected 1 or more, got {max_steps}"),
        (fmt in layout.FORMATS, f"--format: expected {' or '.join(layout.FORMATS)}, got {fmt!r}"),
        (init != "pca" or loss == "distill", "--init pca needs --loss distill (it projects the teacher's embeddings)"),
    ]
    for ok, message in checks:
        if not ok:
            raise StError(message)


def _refuse_outputs_among_inputs(
    out: Path,
    model: Model | str | os.PathLike[str],
    teacher: Model | str | os.PathLike[str] | None,
    files: Sequence[str | os.PathLike[str]],
) -> None:
    """OUT and its checkpoint folder stay outside every input (--force or not): neither may be or hold
    one, nor lie inside the model's or the teacher's folder (the copy a Hub id or package: names too)."""
    from st_cli import fsio
    from st_cli.format import hub

    inputs = [Path(p) for p in files if str(p) != "-"]
    for name in (model, teacher):
        if isinstance(name, (str, os.PathLike)):
            inputs.append(Path(name))
            with contextlib.suppress(StError):  # not a model at all: loading it says so
                inputs += [found] if (found := hub.find_local(name)) is not None else []
    for target in (out, checkpoint_dir(out)):
        fsio.refuse_inputs_inside(target, inputs, "training")


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


def _run(
    job: TrainingJob, report: TrainReport, state: dict[str, Any] | None, checkpoints: Path, fingerprint: str
) -> None:
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
        job.eval_history, job.best = list(state.get("eval_history") or []), state.get("best")
    else:
        report.untrained = job.evaluate()
        job.evaluate_data("untrained", 0)
        if options.init == "pca":
            pca_init(job)
            report.init = job.evaluate()
            job.evaluate_data("init", 0)
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
        score = job.evaluate_data(f"epoch {epoch + 1}", epoch + 1)
        job.consider(epoch + 1, score if options.eval_data else metric)
        save_checkpoint(
            checkpoints,
            {
                "fingerprint": fingerprint,
                "epoch": epoch + 1,
                "step": step,
                "modules": trained_state(model, options.trained),
                "optimizer": optimizer.state_dict(),
                "untrained": report.untrained,
                "init": report.init,
                "per_epoch": report.per_epoch,
                "eval_history": job.eval_history,
                "best": job.best,
            },
        )
    report.steps = step
    report.epochs = max(report.epochs, report.resumed_from_epoch)
    _keep(job, report)


def _keep(job: TrainingJob, report: TrainReport) -> None:
    """Put the kept epoch's weights in place (--keep best), and note its evaluation for the record."""
    from st_cli.eval.evaluate import EvalResult

    report.eval_per_epoch = [entry["results"] for entry in job.eval_history]
    last = job.eval_history[-1]["results"] if job.eval_history else []
    if job.best is not None:
        for key, weights in job.best["modules"].items():
            job.model.steps[int(key)].load_state_dict(weights)
        report.kept_epoch, kept = int(job.best["epoch"]), job.best["results"]
    else:
        report.kept_epoch, kept = (report.epochs or None), last
    job.kept_results = [EvalResult.from_json(doc) for doc in kept]


def _training_record(
    report: TrainReport, options: Options, data: list[dict[str, str]], model: Model, job_history: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the manifest keeps: enough to tell how the weights were fitted, and on what."""
    from st_cli.eval.data import data_sha256

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
        "metric_untrained": rounded(report.untrained),
        "metric_init": rounded(report.init),
        "metric_per_epoch": [rounded(m) for m in report.per_epoch],
        "metric_meaning": TEACHER_AGREEMENT if options.loss == "distill" else PAIR_ACCURACY,
        "init_method": report.init_method,
        "duplicates_dropped": report.duplicates,
        "keep": options.keep,
        "kept_epoch": report.kept_epoch,
        "eval_data": [{"file": str(p), "sha256": data_sha256(Path(p))} for p in options.eval_data],
        "eval": [
            {"stage": e["stage"], "epoch": e["epoch"], "metrics": {r["data"]: r["metrics"] for r in e["results"]}}
            for e in job_history
        ],
    }


TEACHER_AGREEMENT = (
    "Spearman correlation between the student's and the teacher's cosine similarities on random pairs of texts "
    "held out of the training data (agreement with the teacher, not quality on a task)"
)
PAIR_ACCURACY = "share of held-out anchors whose own positive ranks first among the held-out candidates"
