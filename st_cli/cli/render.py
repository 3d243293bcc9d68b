"""Everything the CLI prints: data on stdout, talk (progress, warnings, errors) on stderr."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from rich.tree import Tree

    from st_cli.encode.options import EncodeSummary
    from st_cli.encode.ray import RayEncodeSummary
    from st_cli.encode.shards import MergeSummary
    from st_cli.eval.evaluate import EvalResult
    from st_cli.export.options import ExportReport
    from st_cli.format.exported import ExportedFile
    from st_cli.format.summary import ModelSummary, ModuleSummary
    from st_cli.training.options import TrainReport
    from st_cli.verify.verify import VerifyReport

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def one_line(message: str) -> str:
    """A message as one printable line: a control character from the user's input (a newline, or \\x1e,
    which splitlines() also breaks at) is shown escaped, as repr() shows it."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def error(message: str) -> None:
    err.print(Text.assemble(("error: ", "bold red"), one_line(message)))


def warning(message: str) -> None:
    err.print(Text.assemble(("warning: ", "yellow"), one_line(message)))


def info(message: str) -> None:
    err.print(Text(message))


def talks(quiet: bool) -> bool:
    """Whether status lines and progress bars go to stderr: a terminal, and no -q (never when piped)."""
    return not quiet and err.is_terminal


@contextlib.contextmanager
def status(enabled: bool) -> Iterator[Callable[[str], None] | None]:
    """A status line on stderr (a spinner and what is being done, gone at the end), or None when disabled:
    the callback takes the current step ("loading modules[0]: Transformer")."""
    if not enabled:
        yield None
        return
    with err.status("starting", spinner="dots") as line:
        yield lambda message: line.update(message)


def print_json(document: Any, *, to_stderr: bool = False) -> None:
    """The JSON document on stdout (on stderr where stdout carries the data: `st encode --out -`)."""
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False), err=to_stderr)


# ---------------------------------------------------------------- st inspect

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_STATUS_STYLE = {"yes": "green", "partial": "yellow", "no": "bold red"}


def model_summary(summary: ModelSummary, *, as_json: bool = False, tensors: bool = False) -> None:
    """`st inspect`: one JSON document, or a tree of the model, its modules, findings and loaders."""
    if as_json:
        print_json(summary.to_json(tensors=tensors))
        return
    out.print(summary_tree(summary, tensors=tensors), soft_wrap=False)  # wrap long lines inside the tree


def summary_tree(summary: ModelSummary, *, tensors: bool = False) -> Tree:
    from rich.tree import Tree

    title = Text(summary.path, style="bold")
    if summary.hub_id:
        title.append(f"  ({summary.hub_id}{'@' + summary.revision if summary.revision else ''})", style="dim")
    tree = Tree(title)
    saved = f" · saved by {summary.saved_by}" if summary.saved_by else ""
    tree.add(Text(f"dialect {summary.dialect}{saved}"))
    if summary.kind != "SentenceTransformer":  # a reranker's "embedding dimension" is its hidden size, not an output
        tree.add(Text(f"kind {summary.kind}", style="bold"))
    similarity = summary.similarity or "cosine (default)"
    truncate = f" (truncate_dim {summary.truncate_dim})" if summary.truncate_dim else ""
    tree.add(
        Text(
            f"embedding dimension {_or_unknown(summary.embedding_dimension)}{truncate} · "
            f"max_seq_length {_or_unknown(summary.max_seq_length)} · similarity {similarity}"
        )
    )
    prompts = ", ".join(f"{k}={v!r}" for k, v in summary.prompts.items()) or "none"
    tree.add(Text(f"prompts {prompts} · default prompt {summary.default_prompt or 'none'}"))
    if summary.sparse is not None:
        tree.add(Text(_sparse_line(summary)))
    modules = tree.add(Text("modules", style="bold"))
    for module in summary.modules:
        _module_node(modules.add(_module_label(module)), module, tensors=tensors)
    if summary.exported:
        files = tree.add(Text(f"exported ({len(summary.exported)})", style="bold"))
        for file in summary.exported:
            _exported_node(files, file)
    findings = tree.add(Text(f"findings ({len(summary.findings)})", style="bold"))
    for f in summary.findings:
        severity = (f"{f.severity:<7} ", _SEVERITY_STYLE[f.severity])
        findings.add(Text.assemble(severity, (f.code, "bold"), f" {f.message}"))
    loaders = tree.add(Text("loaders", style="bold"))
    for name, verdict in summary.loaders.items():
        node = loaders.add(Text.assemble(f"{name:<10} ", (verdict.status, _STATUS_STYLE[verdict.status])))
        for reason in verdict.reasons:
            node.add(Text(reason))
    return tree


def _exported_node(parent: Tree, file: ExportedFile) -> None:
    opset = f"opset {file.opset}" if file.opset is not None else "opset ?"
    node = parent.add(Text.assemble((file.path, "bold"), f"  {file.format} · {opset} · {_size(file.bytes)}"))

    def tensors(specs: list[Any]) -> str:
        return ", ".join(
            f"{t.name} {t.dtype or '?'}[{', '.join(map(str, t.shape)) if t.shape is not None else '?'}]" for t in specs
        )

    node.add(Text(f"{tensors(file.inputs)} → {tensors(file.outputs)}"))


def _sparse_line(summary: ModelSummary) -> str:
    """A SparseEncoder's vectors: what a dimension stands for, SPLADE's pooling and activation, active dims."""
    sparse = summary.sparse
    assert sparse is not None
    what = "vocabulary" if sparse.dimensions == "vocabulary" else "latents"
    parts = [f"sparse ({summary.model_type or 'SparseEncoder'}) · {what} {_or_unknown(sparse.size)}"]
    if sparse.pooling:
        parts.append(f"pooling {sparse.pooling} · activation {sparse.activation}")
    parts.append(f"max_active_dims {sparse.max_active_dims or 'all'}")
    return " · ".join(parts)


def _module_label(module: ModuleSummary) -> Text:
    name = module.short_type or "custom"
    label = Text.assemble((f"{module.idx} ", "bold"), (name, "bold magenta"), f"  {module.type}")
    label.append(f"  {module.path or '.'}", style="dim")
    if not module.exists:
        label.append("  (folder missing)", style="red")
    return label


def _module_node(node: Tree, module: ModuleSummary, *, tensors: bool) -> None:
    if module.raw_config is not None:
        items = ", ".join(f"{k}={_short_json(v)}" for k, v in module.raw_config.items())
        node.add(Text(f"config {module.config_file}: {items or '{}'}"))
    if module.input_dim is not None or module.output_dim is not None:
        source = "text" if module.spec is not None and module.spec.input_module else _or_unknown(module.input_dim)
        node.add(Text(f"dims {source} → {_or_unknown(module.output_dim)}"))
    if module.transformer is not None:
        t = module.transformer
        node.add(
            Text(
                f"{t.architecture or '?'} ({t.model_type or '?'}) · {_or_unknown(t.layers)} layers · "
                f"hidden {_or_unknown(t.hidden_size)} · vocab {_or_unknown(t.vocab_size)} · "
                f"tokenizer {t.tokenizer_class or '?'}{'' if t.tokenizer_json else ' (no tokenizer.json)'}"
            )
        )
        for key, value in t.load_args.items():
            node.add(Text(f"{key} (to transformers): {_short_json(value)}"))
    for route, inner in module.routes.items():
        branch = node.add(Text(f"route {route}", style="bold"))
        for sub in inner:
            _module_node(branch.add(_module_label(sub)), sub, tensors=tensors)
    if module.custom_code:
        node.add(Text(f"custom code {module.custom_code} (not run)", style="yellow"))
    weights = module.weights
    if weights is not None:
        dtypes = ", ".join(f"{d}×{n}" if len(weights.dtypes) > 1 else d for d, n in weights.dtypes.items())
        files = ", ".join(weights.files + weights.pickled)
        branch = node.add(
            Text(
                f"weights {files} · {len(weights.tensors)} tensors · {_count(weights.parameters)} params · "
                f"{dtypes or '-'} · {_size(weights.nbytes)}"
            )
        )
        if tensors:
            for tensor in weights.tensors:
                branch.add(Text.assemble(tensor.name, (f"  {tensor.dtype}  {list(tensor.shape)}", "dim")))


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _size(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- st verify

_CHECK_STYLE = {"pass": ("pass", "green"), "fail": ("FAIL", "bold red"), "skipped": ("skipped", "dim")}


def verify_report(report: VerifyReport, *, as_json: bool = False) -> None:
    """`st verify`: one JSON document, or a table of the checks with a verdict line."""
    if report.recorded:
        info(f"recorded {report.recorded}")
    if as_json:
        print_json(report.to_json())
        return
    out.print(verify_table(report), soft_wrap=False)


def verify_table(report: VerifyReport) -> Any:
    from rich.table import Table

    counts = report.counts()
    verdict = "ok" if report.ok else "FAILED"
    caption = f"{verdict}: {counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped"
    table = Table(title=report.path, caption=caption, caption_justify="left", title_justify="left")
    table.add_column("check", style="bold")
    table.add_column("status")
    table.add_column("figure")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        label, style = _CHECK_STYLE[check.status]
        table.add_row(check.name, Text(label, style=style), check.figure, check.detail)
    return table


# ---------------------------------------------------------------- st encode


@contextlib.contextmanager
def encode_progress(enabled: bool) -> Iterator[Callable[[int, int, int], None] | None]:
    """A progress callback drawing a bar on stderr (texts/s, tokens/s, ETA), or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        # Until the first batch: reading the inputs and loading the model (not a stalled "0/?").
        task = bar.add_task("reading the inputs, loading the model", total=None, rates="")
        started: list[float] = []  # the first batch's end: rates leave out loading the model

        def update(done: int, total: int, tokens: int) -> None:
            if not started:
                started.extend([time.perf_counter(), done, tokens])
                bar.update(task, description="encoding")
            seconds = max(time.perf_counter() - started[0], 1e-9)
            texts_rate, tokens_rate = (done - started[1]) / seconds, (tokens - started[2]) / seconds
            rates = f"{texts_rate:,.0f} texts/s, {tokens_rate:,.0f} tokens/s"
            bar.update(task, completed=done, total=total, rates=rates)

        yield update


def encode_summary(summary: EncodeSummary, *, as_json: bool, to_stderr: bool = False) -> None:
    """One line on stderr (or the JSON document on stdout; on stderr with `to_stderr`)."""
    if as_json:
        print_json(summary.to_json(), to_stderr=to_stderr)
        return
    parts = [
        f"encoded {summary.rows:,} rows × {summary.dimension} ({summary.precision}) → {summary.output}",
        f"{summary.seconds:.1f} s, {summary.texts_per_second:,.0f} texts/s (+{summary.load_seconds:.1f} s loading)",
        f"{summary.truncated:,} truncated",
    ]
    if summary.skipped_empty:
        parts.append(f"{summary.skipped_empty:,} empty skipped")
    if summary.resumed_rows:
        parts.append(f"resumed after {summary.resumed_rows:,} rows")
    if summary.shard is not None:
        shard = summary.shard
        parts.append(f"shard {shard.shard}/{shard.of}: rows {shard.first_row:,}+{shard.rows:,} of {shard.total_rows:,}")
    info("; ".join(parts))


@contextlib.contextmanager
def merge_progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback for `st merge` on stderr (rows written of the total), or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("merging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:  # fmt: skip
        task = bar.add_task("merge", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def merge_summary(summary: MergeSummary, *, as_json: bool) -> None:
    """One line on stderr (or the JSON document on stdout)."""
    if as_json:
        print_json(summary.to_json())
        return
    info(
        f"merged {summary.shards} shards: {summary.rows:,} rows × {summary.dimension} ({summary.precision}) "
        f"→ {summary.output}; {summary.seconds:.1f} s"
    )


@contextlib.contextmanager
def ray_progress(enabled: bool) -> Iterator[Callable[[int, int, int, int], None] | None]:
    """A progress callback for `st encode --ray`: rows done (finished and running shards), and shards done."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("encoding on Ray"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows, {task.fields[shards]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("ray", total=None, shards="")

        def update(shards_done: int, shards: int, rows_done: int, rows: int) -> None:
            bar.update(task, completed=rows_done, total=rows, shards=f"{shards_done}/{shards} shards")

        yield update


def ray_summary(summary: RayEncodeSummary, *, as_json: bool) -> None:
    """One line on stderr (or the JSON document on stdout)."""
    if as_json:
        print_json(summary.to_json())
        return
    ran = summary.shards - summary.skipped_shards
    parts = [
        f"encoded {summary.rows:,} rows × {summary.dimension} ({summary.precision}) → {summary.output}",
        f"{ran} of {summary.shards} shards on {len(set(summary.pids))} Ray workers ({summary.address})",
        f"{summary.seconds:.1f} s (+{summary.ray_start_seconds:.1f} s starting Ray, "
        f"{summary.ray_stop_seconds:.1f} s stopping it)",
    ]
    if summary.skipped_shards:
        parts.append(f"{summary.skipped_shards} shards already done")
    if summary.resumed_shards:
        parts.append(f"{summary.resumed_shards} resumed")
    info("; ".join(parts))


@contextlib.contextmanager
def train_progress(enabled: bool) -> Iterator[Callable[[str, int, int, float | None], None] | None]:
    """A progress callback for `st train` on stderr: one bar per phase (steps, loss, rows/s, ETA)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        # Until the first phase reports: loading the models and reading the data (seconds on a large model).
        starting = bar.add_task("starting", total=None, rates="loading the models, reading the data")
        tasks: dict[str, Any] = {}
        started: dict[str, tuple[float, int]] = {}  # each phase's first report: rates are measured from it

        def update(phase: str, done: int, total: int, loss: float | None) -> None:
            if bar.tasks and not tasks:
                bar.remove_task(starting)
            if phase not in tasks:
                tasks[phase], started[phase] = bar.add_task(phase, total=total, rates=""), (time.perf_counter(), done)
            since, first = started[phase]
            elapsed = time.perf_counter() - since
            # The first report may come after work done at once (a cache read): no rate until time has passed.
            rate = f"{(done - first) / elapsed:,.1f} " if elapsed > 0.2 and done > first else ""
            unit = "texts/s" if phase == "embedding" else "steps/s"
            rates = (f"{rate}{unit}" if rate else "") + (f", loss {loss:.4g}" if loss is not None else "")
            bar.update(tasks[phase], completed=done, total=total, rates=rates.lstrip(", "))

        yield update


def train_report(report: TrainReport, *, as_json: bool) -> None:
    """The metric before, after the init and per epoch, on stderr (or the JSON document on stdout)."""
    if as_json:
        print_json(report.to_json())
        return

    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    info(f"init: {report.init_reason}" if report.init_reason else f"init: {report.init_method}")
    if report.duplicates:
        distinct = report.read - report.duplicates
        info(f"dropped {report.duplicates:,} duplicate lines ({report.read:,} read, {distinct:,} distinct)")
    steps = [f"untrained {figure(report.untrained)}"]
    if report.init is not None:
        steps.append(f"pca init {figure(report.init)}")
    steps += [f"epoch {i} {figure(m)}" for i, m in enumerate(report.per_epoch, 1)]
    if report.metric == "spearman":
        what = (
            f"teacher agreement (Spearman of student vs teacher cosines, {report.held_out:,} texts held out of the "
            "training data; not quality on a task)"
        )
    else:
        what = f"held-out {report.metric} ({report.held_out:,} held out)"
    info(f"{what}: " + " → ".join(steps))
    for warn in report.warnings:
        warning(warn)
    _eval_progress_lines(report)
    trained = ", ".join(report.trained_modules)
    info(
        f"trained {trained} on {report.examples:,} examples ({report.loss}, {report.objective}), "
        f"{report.steps:,} steps in {report.seconds:.1f} s (+{report.cache_seconds:.1f} s embedding the data once) "
        f"→ {report.output}"
    )


def _eval_progress_lines(report: TrainReport) -> None:
    """--eval-data: each file's main metric at each stage, and which epoch was kept."""
    if not report.eval_per_epoch:
        return
    stages = ["untrained", *(["pca init"] if report.init is not None else [])]
    stages += [f"epoch {i}" for i in range(1, len(report.eval_per_epoch) - len(stages) + 1)]
    for index, first in enumerate(report.eval_per_epoch[0]):
        primary = first["primary"]
        values = [stage[index]["metrics"].get(primary) for stage in report.eval_per_epoch]
        pairs = zip(stages, values, strict=True)
        shown = " → ".join(f"{name} {'n/a' if v is None else f'{v:.4f}'}" for name, v in pairs)
        info(f"eval {first['data']} ({first['task']}) {primary}: {shown}")
    if report.kept_epoch is not None:
        info(f"kept epoch {report.kept_epoch} (--keep {report.keep}); its evaluation is recorded in the model folder")


def _short_json(value: object, limit: int = 8) -> str:
    """A config value as JSON, with long lists and mappings (a word vocabulary) cut to their first items."""
    if isinstance(value, (list, dict)) and len(value) > limit:
        items = list(value.items())[:limit] if isinstance(value, dict) else value[:limit]
        head = json.dumps(dict(items) if isinstance(value, dict) else items, ensure_ascii=False)
        return f"{head[:-1]}, … ({len(value)} in all){head[-1]}"
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------- st eval


@contextlib.contextmanager
def eval_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress callback for `st eval` on stderr: one bar per side encoded (queries, corpus, ...)."""
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield update


def eval_results(results: list[EvalResult], *, as_json: bool) -> None:
    """One JSON object per data path (a list when there are several), or one table each."""
    if as_json:
        documents = [r.to_json() for r in results]
        print_json(documents[0] if len(documents) == 1 else documents)
        return
    from rich.table import Table

    for result in results:
        split = f", split {result.split}" if result.split else ""
        dtype = f", {result.dtype}" if result.dtype != "float32" else ""
        title = f"{result.data}: {result.task}, n={result.n:,}{split}{dtype} ({result.seconds:.1f} s)"
        table = Table(title=title, title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in result.metrics.items():
            shown = "n/a" if value != value else f"{value:.4f}"  # NaN: a constant side
            table.add_row(f"[bold]{name}[/bold]" if name == result.primary else name, shown)
        out.print(table)


# ---------------------------------------------------------------- st export


def export_report(report: ExportReport, *, as_json: bool) -> None:
    """The JSON document on stdout, or one line per file written and a summary line on stderr."""
    if as_json:
        print_json(report.to_json())
        return
    for file in report.files:
        info(f"wrote {file.path} ({_size(file.bytes)}, sha256 {file.sha256[:12]}…)")
    for note in report.notes:
        info(note)
    recorded = f", sha256 recorded in {report.folder}/st_manifest.json" if report.manifest else ""
    info(f"exported {len(report.variants)} variant(s) to {report.folder} in {report.seconds:.1f} s{recorded}")
