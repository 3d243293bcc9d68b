"""What makes an encode job the same job: its fingerprint (inputs, model files, every option that changes
the output), the batch plan, the journal behind --resume and the `.shard.json` record of a finished shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from st_cli.encode.batching import BatchPlan
from st_cli.encode.device import resolve_device
from st_cli.encode.inputs import Source, resolved_inputs
from st_cli.encode.journal import Journal, JournalBusy
from st_cli.encode.options import EncodeOptions, EncodeSummary
from st_cli.encode.outputs import Sink
from st_cli.encode.shards import (
    VERSIONED,
    ShardInfo,
    ShardPlan,
    damaged_file,
    differences,
    file_sha256,
    fingerprint,
    finished_shard,
    job_id,
    read_sidecar,
)
from st_cli.errors import StError
from st_cli.format import hub
from st_cli.model import runtime, static

if TYPE_CHECKING:
    from st_cli.model.model import Model

    Encoder: TypeAlias = Model | static.StaticEncoder | runtime.RuntimeEncoder


def finished_shard_of_job(target: Path, fp: dict[str, Any], plan: ShardPlan, force: bool) -> ShardInfo | None:
    """A finished, intact shard of this job at `target` with the rows `plan` asks for (nothing to do); else
    None to encode it again, which replaces a finished shard of another job or plan only with --force."""
    info = finished_shard(target, job_id(fp))
    if info is not None and (info.shard, info.of, info.first_row, info.rows) != astuple(plan):
        if force:
            return None
        raise StError(
            f"{target}: a finished shard {info.shard}/{info.of} of this job (rows {info.first_row:,}+{info.rows:,}), "
            f"not the shard {plan.shard}/{plan.of} asked for; pass --force to replace it, or give another --out"
        )
    if info is None and not force:
        raise StError(f"{target}: {_not_finished(target, fp)}; pass --force to replace it")
    return info


def _not_finished(target: Path, fp: dict[str, Any]) -> str:
    """Why the shard at `target` is no finished shard of this job: another job, or files changed since."""
    try:
        recorded = read_sidecar(target)
    except StError as e:
        return f"its sidecar is unusable ({e})"
    changed = differences(recorded.fingerprint, fp)
    if recorded.job != job_id(fp):
        return f"a finished shard of another job (changed: {', '.join(changed) or 'the job'})"
    damaged = damaged_file(target, recorded)
    return f"a finished shard of this job whose file {damaged.name if damaged else ''} no longer matches its sha256"


def open_journal(target: Path, header: dict[str, Any], *, resume: bool, force: bool) -> Journal | None:
    """The run's journal; None when another live run holds it and there is nothing to resume: then two
    runs race as they always did (each in its own temp, the first to publish wins)."""
    try:
        return Journal.open(target, header, resume=resume, force=force)
    except JournalBusy:
        if resume:
            raise
        return None


def journaling(journal: Journal | None, sink: Sink, summary: EncodeSummary) -> Callable[[int], None] | None:
    """After each window: make its rows durable, then note them in the journal, with the threads they ran on."""
    if journal is None:
        return None
    return lambda rows: journal.record(rows, sink.sync(), summary.threads)


def resumed_threads(journal: Journal | None, wanted: int | None) -> tuple[int | None, str | None]:
    """The torch threads to run on: those of the rows a resumed run keeps (a matmul's sums depend on the
    thread count, so rows would differ from an uninterrupted run's in the last bits), else `wanted`;
    and a warning when that overrides a count given."""
    if journal is None or not journal.done or journal.threads is None or journal.threads == wanted:
        return wanted, None
    if wanted is None:
        return journal.threads, None
    return journal.threads, (
        f"{journal.target}: resuming on the {journal.threads} torch threads the interrupted run's rows ran on "
        f"(not {wanted}), so the rows equal an uninterrupted run's"
    )


def job_fingerprint(
    sources: Sequence[Source],
    model: Encoder,
    model_name: str,
    options: EncodeOptions,
    plan: BatchPlan,
    digests: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The job: these inputs, this model (`digests`: its folder's, if already hashed), every option that
    changes the output (after device defaults)."""
    chosen = {
        "field": options.field,
        "column": options.column,
        "precision": options.precision,
        "truncate_dim": options.truncate_dim,
        "normalize": options.normalize,
        "prompt": plan.prompt,
        "kwargs": dict(options.kwargs),
        "skip_empty": options.skip_empty,
        "errors": options.errors,
        "max_batch_tokens": plan.max_tokens,
        "batch_size": plan.max_rows,
        "pad_multiple": plan.pad_multiple,
        "window": options.window,
        "device": options.device,
        "dtype": options.dtype,
    }
    # Only when given: a job's id stays what it was before these options existed.
    given = ("id_field", "input_format", "max_active_dims")
    chosen |= {key: getattr(options, key) for key in given if getattr(options, key) is not None}
    chosen |= {"decode": True} if options.decode else {}
    versioned: tuple[str, ...] = static.VERSIONED if isinstance(model, static.StaticEncoder) else VERSIONED
    if isinstance(model, runtime.RuntimeEncoder):  # the exported file that ran (its bytes are in the digests)
        chosen |= {"backend": model.backend, "backend_file": model.backend_file}
        versioned = (*static.VERSIONED, *runtime.RUNTIMES[model.backend].versioned)
        versioned += VERSIONED if model.torch_tail is not None else ()
    names = [s.name for s in sources]
    if digests is None:
        digests = _model_digests(model, model_name)
    return fingerprint([s.path for s in sources], names, digests, chosen, versioned)


def _model_digests(model: Encoder, name: str) -> dict[str, str]:
    """sha256 of every file of the model's folder; of its weights for a Model given in Python."""
    root = hub.find_local(name) if name else None
    if root is not None:
        from st_cli.format.layout import file_digests

        return file_digests(root)
    if isinstance(model, static.StaticEncoder):
        return {"<weights>": hashlib.sha256(model.table.tobytes()).hexdigest()}
    if isinstance(model, runtime.RuntimeEncoder):
        from st_cli.format.layout import file_digests

        return file_digests(model.root)
    import torch

    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode() + b"\0")
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"<weights>": digest.hexdigest()}


def shard_info(
    part: ShardPlan,
    total: int,
    options: EncodeOptions,
    summary: EncodeSummary,
    model_name: str,
    written: Path,
    fp: dict[str, Any],
    side_files: dict[str, str],
) -> ShardInfo:
    return ShardInfo(
        shard=part.shard,
        of=part.of,
        first_row=part.first_row,
        rows=part.rows,
        total_rows=total,
        window=options.window,
        dimension=summary.dimension,
        precision=summary.precision,
        job_precision=options.precision,
        model=model_name,
        sha256=file_sha256(written),
        lines=options.skip_empty,
        side_files=side_files,
        job=job_id(fp),
        fingerprint=fp,
    )


def prepare_job(encoder: Encoder, options: EncodeOptions) -> tuple[EncodeOptions, BatchPlan]:
    """The options with the device's defaults filled in, and the batch plan, as a run of `encoder` uses them.

    One place for both, so `job_of` and Ray's `Embedder` batch and fingerprint exactly as `encode` does.
    """
    encoder.check_kwargs(dict(options.kwargs))
    options = sparse_job(encoder, options)
    prompt = encoder.resolve_prompt(options.prompt, options.prompt_name, options.kwargs.get("task"))
    # A static folder runs in numpy on the CPU (no torch: device, dtype and threads do not apply); an
    # exported Transformer on the CPU in its runtime.
    fast = isinstance(encoder, (static.StaticEncoder, runtime.RuntimeEncoder))
    options = options.for_device("cpu" if fast else resolve_device(options.device))
    assert options.max_batch_tokens is not None  # filled in by for_device
    plan = BatchPlan(
        prompt,
        options.max_batch_tokens,
        options.batch_size,
        options.pad_multiple if options.device == "cpu" else 1,
        kwargs=dict(options.kwargs),
        like_st=encoder.batch_dependent,
    )
    return options, plan


def sparse_job(encoder: Encoder, options: EncodeOptions) -> EncodeOptions:
    """A SparseEncoder's options: its max_active_dims set on the model, windows small enough that a window's
    dense rows stay ~64 MB wide of a vocabulary; the sparse-only options refused on a dense model, and the
    dense-only ones on a sparse model, each in one line naming what st would need."""
    if not getattr(encoder, "is_sparse", False):
        for given, flag in ((options.max_active_dims is not None, "--max-active-dims"), (options.decode, "--decode")):
            if given:
                kind = "this model is a SentenceTransformer (dense vectors)"
                raise StError(f"{flag}: {kind}; it applies to a SparseEncoder")
        return options
    if options.precision != "float32":
        raise StError(
            f"--precision {options.precision}: this model is a SparseEncoder; its rows are written as float32 "
            "non-zeros (st would need a quantized sparse format)"
        )
    if options.truncate_dim is not None:
        problem = "its dimensions are tokens or latents, not a Matryoshka prefix"
        raise StError(f"--truncate-dim: this model is a SparseEncoder; {problem}")
    assert not isinstance(encoder, (static.StaticEncoder, runtime.RuntimeEncoder))  # never sparse (run.load_exported)
    if options.decode and encoder.output_vocabulary(options.kwargs.get("task")) is None:
        raise StError("--decode: this SparseEncoder's dimensions are latents (SparseAutoEncoder), not tokens to name")
    if options.max_active_dims is not None:
        encoder.max_active_dims = options.max_active_dims
    dim = encoder.get_sentence_embedding_dimension() or 1
    return dataclasses.replace(options, window=min(options.window, max(SPARSE_MIN_WINDOW, SPARSE_WINDOW_VALUES // dim)))


# A SparseEncoder's window: rows × vocabulary float32 values held dense at once (2^24: 64 MB, ~550 rows of 30k).
SPARSE_WINDOW_VALUES = 1 << 24
SPARSE_MIN_WINDOW = 64


def job_of(
    inputs: Sequence[str | os.PathLike[str]],
    model: Encoder,
    model_name: str = "",
    options: EncodeOptions | None = None,
    **fields: Any,
) -> str:
    """The job id `encode_file(inputs, ..., options, model=model, model_name=model_name, **fields)` records
    in its journal and `.shard.json`, without running it: whether a finished shard belongs to this job."""
    opts, plan = prepare_job(model, EncodeOptions.of(options, **fields))
    with resolved_inputs(inputs, None, spool_beside=Path("."), input_format=opts.input_format) as sources:
        return job_id(job_fingerprint(sources, model, model_name, opts, plan))
