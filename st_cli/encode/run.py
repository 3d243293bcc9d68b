"""The run loop of `st encode`: files of text → embeddings, one row per record, in input order, in bounded memory.

The job (docs/explanation/design.md): `inputs` reads and counts the records, `batching` cuts windows of them into
batches sorted by token length, the model runs each batch under `torch.inference_mode()`, and
`outputs` writes the rows into a file of final size under a temporary name, renamed at the end.
Every option that shapes the job is one field of the frozen `EncodeOptions`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from st_cli import fsio, threads
from st_cli.encode.batching import Batch, Window, chunked, prefetched, windows
from st_cli.encode.device import MMAP_THRESHOLD, autocast, inference_linears, pin_mmap_threshold, to_device
from st_cli.encode.inputs import STDIN, Record, Source, Tally, count_records, iter_records, resolved_inputs, tallied
from st_cli.encode.job import (
    finished_shard_of_job,
    job_fingerprint,
    journaling,
    open_journal,
    prepare_job,
    resumed_threads,
    shard_info,
)
from st_cli.encode.options import EncodeOptions, EncodeSummary, ProgressFn, WarnFn
from st_cli.encode.outputs import (
    CALIBRATED,
    OUTPUT_SUFFIXES,
    Sink,
    side_paths,
    sparse_writer_for,
    write_ids,
    writer_for,
)
from st_cli.encode.publish import claim_outputs, os_error, publish_all
from st_cli.encode.shards import (
    job_id,
    plan_shard,
    side_file_hashes,
    sidecar_path,
    stored_precision,
    valid_shard,
)
from st_cli.encode.sparse_outputs import DENSE_WARNING_BYTES, SparseOutput
from st_cli.encode.streams import batch_streams
from st_cli.errors import StError
from st_cli.format import hub, layout
from st_cli.model import runtime, static

if TYPE_CHECKING:
    import torch

    from st_cli.model.model import Model

    Encoder = Model | static.StaticEncoder | runtime.RuntimeEncoder


def embed_batch(model: Model, batch: Batch, options: EncodeOptions) -> torch.Tensor:
    import torch

    # Modules add their outputs to the dict they get: give them a copy, or every batch's token
    # embeddings would stay referenced by the window until it ends (hundreds of MB).
    features = to_device(dict(batch.features), options.device)
    with torch.inference_mode(), autocast(options.device, options.dtype):
        out = model.forward(features, **options.kwargs)["sentence_embedding"]
    return out.float()


def batch_embedder(
    model: Model | runtime.RuntimeEncoder, options: EncodeOptions
) -> tuple[Callable[[Batch], Any], Callable[[list[Any]], Any]]:
    """How a batch becomes rows, and how a window's rows are joined: torch tensors on the model's device,
    or numpy rows from an exported Transformer (model/runtime.py), which imports no torch."""
    if isinstance(model, runtime.RuntimeEncoder):
        runtime_model = model
        return (
            lambda batch: runtime_model.forward(dict(batch.features), **options.kwargs)["sentence_embedding"]
        ), np.concatenate
    import torch

    return (lambda batch: embed_batch(model, batch, options)), torch.cat


def _encode_stream(
    model: Model | runtime.RuntimeEncoder,
    prepared: Iterable[Window],
    sink: Sink,
    options: EncodeOptions,
    summary: EncodeSummary,
    progress: ProgressFn | None,
    *,
    done: int = 0,
    after_window: Callable[[int], None] | None = None,
) -> int:
    """Run every batch; rows go to the sink one window at a time, in input order.

    A window's embeddings stay on the device until its last batch ran, then come back in one copy:
    on a GPU the batches queue up without waiting for each other (truncation and normalization are
    row by row, so finishing them together changes nothing). An exported Transformer (model/runtime.py)
    gives numpy rows: no torch is imported for it.
    """
    embed, join = batch_embedder(model, options)
    with batch_streams(model, options.device) as streams:
        for win in prepared:
            block = np.empty((win.size, summary.dimension), np.float32)
            outputs, indices = [], []
            for batch, output in zip(win.batches, streams.map(embed, win.batches), strict=True):
                outputs.append(output)
                indices.append(batch.indices)
                done += len(batch.indices)
                summary.tokens += batch.tokens
                summary.padded_tokens += batch.padded_tokens
                if progress is not None:
                    progress(done, summary.rows, summary.tokens)
            if outputs:
                joined: Any = join(outputs)
                rows = model.finish(joined, normalize=options.normalize, truncate_dim=options.truncate_dim)
                block[np.concatenate(indices)] = rows
            summary.truncated += win.truncated
            sink.write(win.start, block)
            if after_window is not None:
                after_window(win.start + win.size)
            fsio.pause_point("encode:window")
        return done


def _encode_static_stream(
    encoder: static.StaticEncoder,
    records: Iterable[Record],
    prompt: str,
    sink: Sink,
    options: EncodeOptions,
    summary: EncodeSummary,
    progress: ProgressFn | None,
    *,
    done: int = 0,
    after_window: Callable[[int], None] | None = None,
) -> int:
    """A static model's rows, a window at a time, in numpy: no padding, so no sorting by length either;
    chunks of the window and the next one run on `summary.threads` threads while this one is written.

    `done` rows were written by an earlier run (--resume); windows count on from there.
    """
    chunks = chunked(records, options.window, start=done)
    windows_of_texts = ((start, [r.text for r in chunk]) for start, chunk in chunks)
    # Closed even when writing fails: the pool stops and tokenizers' setting is back before the error leaves.
    with contextlib.closing(encoder.embed_chunks(windows_of_texts, prompt, workers=summary.threads)) as results:
        for _, parts in results:
            for part in parts:  # written as they come: joining a window's chunks would cost a copy
                sink.write(done, encoder.finish(part, normalize=options.normalize, truncate_dim=options.truncate_dim))
                done += len(part)
            if progress is not None:
                progress(done, summary.rows, summary.tokens)
            if after_window is not None:
                after_window(done)
            fsio.pause_point("encode:window")
    return done


def load_encoder(model: Encoder | str | os.PathLike[str] | None, options: EncodeOptions) -> tuple[Encoder, str]:
    """The model to run: a static folder as a numpy StaticEncoder (torch is never imported), else a Model.

    The numpy path runs on the CPU in the table's dtype; --device cuda/mps or a reduced --dtype asks for torch.
    """
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model, ""
    name = str(model) if model is not None else (os.environ.get("ST_MODEL") or hub.DEFAULT_MODEL)
    numpy_ok = options.device in ("cpu", "auto") and options.dtype in ("auto", "float32")
    root = hub.find_local(name) if numpy_ok else None
    fast = static.static_encoder(root) if root is not None else None
    if fast is not None:
        return fast, name
    exported = load_exported(name, options)
    if exported is not None:
        return exported, name
    from st_cli.model.model import load_model
    from st_cli.model.modules.transformer import inference_only

    with inference_only():  # only run, never saved: a BERT skips importing transformers' modeling code
        return load_model(name, trust_remote_code=options.trust_remote_code), name


def load_exported(name: str, options: EncodeOptions) -> runtime.RuntimeEncoder | None:
    """The folder on --backend onnx/openvino; on its exported file as well when its Transformer has no
    torch weights (a folder that ships only onnx/ or openvino/), noted once; else None (torch runs it)."""
    backend, note = options.backend, None
    if backend == runtime.TORCH:
        root = hub.find_local(name) if options.device in ("cpu", "auto") else None
        backend = (runtime.weightless_backend(root) if root is not None else None) or runtime.TORCH
        if backend == runtime.TORCH:
            return None
        note = f"{name}: no torch weights; running its exported Transformer on --backend {backend}"
    encoder = runtime.load(
        hub.resolve_model(name), backend, options.backend_file, trust_remote_code=options.trust_remote_code
    )
    if getattr(encoder.torch_tail, "is_sparse", False):  # only a dense Transformer is exported and run
        problem = "this model is a SparseEncoder; st runs sparse models on torch only"
        raise StError(f"--backend {encoder.backend}: {problem}")
    encoder.notes = [f"{note} ({encoder.backend_file})"] if note else []
    return encoder


def _load_while_counting(
    model: Encoder | str | os.PathLike[str] | None,
    options: EncodeOptions,
    sources: Sequence[Source],
    *,
    hash_folder: bool = False,
) -> tuple[Encoder, str, Tally, dict[str, str] | None]:
    """Count (and check) the inputs in a thread while torch and the model load: the costs overlap.
    With `hash_folder`, a model given as a local folder is hashed for the job's fingerprint meanwhile
    too (else the fourth item is None and `job_fingerprint` hashes the model).

    Reading and hashing release the GIL and importing torch spends most of its time in C, so on two
    cores the counting pass of a large input comes almost for free (and the 30 ms of hashing a static
    model's table). A bad input is the error reported even when the model fails to load too, as when
    counting came first.
    """
    from concurrent.futures import ThreadPoolExecutor

    folder = Path(model).expanduser() if hash_folder and isinstance(model, (str, os.PathLike)) else None
    root = folder if folder is not None and folder.is_dir() else None  # what hub.find_local gives it, no Hub id
    with ThreadPoolExecutor(2, thread_name_prefix="st-count") as pool:
        counting = pool.submit(count_records, sources, options.read)
        hashing = pool.submit(layout.file_digests, root) if root is not None else None
        try:
            encoder, name = load_encoder(model, options)
        except BaseException:
            counting.result()
            raise
        return encoder, name, counting.result(), hashing.result() if hashing is not None else None


def _embedding_dim(model: Encoder, truncate_dim: int | None) -> int:
    dim = model.get_sentence_embedding_dimension()
    if dim is None:  # a custom last module that does not say: ask it
        dim = int(model.embed([""]).shape[-1])
    if truncate_dim is not None and truncate_dim > dim:
        raise StError(f"--truncate-dim {truncate_dim}: wider than the model's {dim} dimensions")
    limit = truncate_dim or model.truncate_dim
    return min(dim, limit) if limit else dim


def _sparse_output(encoder: Encoder, options: EncodeOptions) -> SparseOutput | None:
    """How a SparseEncoder's rows are written (the vocabulary when --decode names tokens); None for a dense model."""
    if not getattr(encoder, "is_sparse", False):
        return None
    vocab = encoder.output_vocabulary(options.kwargs.get("task")) if options.decode else None  # type: ignore[union-attr]
    return SparseOutput(tuple(vocab) if vocab is not None else None, options.decode)


def _noting_lines(records: Iterator[Record], out: IO[str]) -> Iterator[Record]:
    for record in records:
        out.write(f"{record.line}\n")
        yield record


def _row_ids(
    sources: Sequence[Source], options: EncodeOptions, first_row: int, rows: int
) -> Callable[[int], Iterator[object]]:
    """The ids of this run's rows from its row `start` on, read from the inputs again (--id-field): an
    extra reading pass, in no more memory than one, that a resumed run or a shard starts anywhere."""

    def ids(start: int) -> Iterator[object]:
        every = iter_records(sources, options.read, skip_empty=False)
        kept = (r for r in every if r.text != "") if options.skip_empty else every
        return (r.id for r in itertools.islice(kept, first_row + start, first_row + rows))

    return ids


def _warn(summary: EncodeSummary, warn: WarnFn | None, message: str) -> None:
    summary.warnings.append(message)
    if warn is not None:
        warn(message)


def _check_same_records(counted: Tally, read_again: Tally, done: int, rows: int) -> None:
    """The counting pass sized the output; the encoding pass must have read exactly the same records."""
    if read_again.records != counted.records or done != rows:
        raise StError(
            f"the inputs changed while being read: {counted.records} records counted, then {read_again.records} read"
        )
    if not read_again.same_as(counted):
        raise StError("the inputs changed while being read: the records differ between the two passes")


def encode(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: EncodeOptions,
    *,
    model: Encoder | str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    stdin: IO[bytes] | None = None,
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    model_name: str | None = None,
    warn: WarnFn | None = None,
) -> EncodeSummary:
    """Embed every record of `inputs` into `output` as `options` say; see `encode_file`.

    Publishing is safe (fsio): the output and its side files are written under temp names beside
    them and renamed into place at the end, never over a file that appeared after the run started.
    A run on files keeps a journal (journal.py), so a killed or interrupted run can be continued with
    `resume`: an interrupt (KeyboardInterrupt, fsio.Terminated) after the first journaled window leaves
    the journal and the partial rows, and carries a note saying how many rows were kept.
    """
    started = time.perf_counter()
    threads.open_sample_window()  # what follows (checks, counting, loading) is the window it reads
    target = Path(output)
    if target.is_dir():
        raise StError(f"{target}: is a folder; give a file name ending in {', '.join(OUTPUT_SUFFIXES)}")
    options.check(target)
    if isinstance(model, (str, os.PathLike)) and layout.looks_like_model(model):  # never over its own model files
        fsio.refuse_output_in_folders(target, [str(model)], "--out")
    from_stdin = any(str(item) == STDIN for item in inputs)
    if from_stdin and (shard is not None or resume):
        raise StError("-: stdin cannot be sharded or resumed (it can be read only once); save it to a file first")
    if shard is not None and not valid_shard(shard):
        raise StError(f"--shard {shard[0]}/{shard[1]}: expected I/N with 0 <= I < N")
    stored = stored_precision(options.precision, shard is not None)
    side = side_paths(target, skip_empty=options.skip_empty, precision=stored, ids=options.id_field is not None)
    last = {"shard": sidecar_path(target)} if shard is not None else {}
    names = ["output", *side, *last]
    # --resume on a finished shard: kept if it is of this same job (checked once the model is loaded)
    finished = shard is not None and resume and last["shard"].is_file()
    claimed = claim_outputs([target, *side.values(), *last.values()], inputs, options.force or finished)
    claims = dict(zip(names, claimed, strict=True))
    read = options.read
    with resolved_inputs(inputs, stdin, spool_beside=target, input_format=options.input_format) as sources:
        # The folder hashed while it loads is the one the fingerprint names: the model as given.
        hash_early = not from_stdin and model_name is None
        encoder, loaded_name, counted, digests = _load_while_counting(model, options, sources, hash_folder=hash_early)
        model_name = model_name or loaded_name
        options, plan = prepare_job(encoder, options)
        prompt, fast, device = plan.prompt, isinstance(encoder, static.StaticEncoder), options.device
        if not isinstance(encoder, (static.StaticEncoder, runtime.RuntimeEncoder)):
            encoder.to(device)
        if device == "cpu":
            pin_mmap_threshold(MMAP_THRESHOLD)
        total = counted.records - counted.empty if options.skip_empty else counted.records
        part = plan_shard(total, options.window, shard)
        summary = EncodeSummary(target, part.rows, _embedding_dim(encoder, options.truncate_dim), stored)
        summary.skipped_empty = counted.empty if options.skip_empty else 0
        if isinstance(encoder, runtime.RuntimeEncoder):
            summary.backend, summary.backend_file = encoder.backend, encoder.backend_file
            summary.notes = list(encoder.notes)
        fp = None if from_stdin else job_fingerprint(sources, encoder, model_name, options, plan, digests)
        intact = finished_shard_of_job(target, fp, part, options.force) if finished and fp is not None else None
        if intact is not None:
            summary.shard, summary.resumed_rows = intact, intact.rows
            summary.side_files = [*side.values(), *last.values()]
            return summary
        journal = None
        # A .parquet file is finished by its footer: a killed run's rows cannot be continued, so none are
        # journaled (int8/uint8 stage float32 rows, which can be).
        spec = writer_for(target)
        if resume and spec is not None and not (spec.resumable or stored in CALIBRATED):
            _warn(summary, warn, f"--resume: a {spec.suffix} output cannot be continued; encoding from the start")
        if fp is not None and spec is not None and (spec.resumable or stored in CALIBRATED):
            header = {"job": job_id(fp), "shard": part.shard, "of": part.of, "rows": part.rows}
            header |= {"window": options.window, "suffix": target.suffix.lower(), "fingerprint": fp}
            # The output's own metadata names the model as given: a .safetensors header (and so where its
            # rows start) changes with that spelling, so resuming under another one is another job.
            header |= {"model": model_name}
            journal = open_journal(target, header, resume=resume, force=options.force)
            if journal is not None and journal.note is not None:
                _warn(summary, warn, journal.note)
        summary.resumed_rows = journal.done if journal is not None else 0
        run_threads, overridden = resumed_threads(journal, options.threads)
        if overridden is not None:
            _warn(summary, warn, overridden)
        summary.load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        metadata = {"format": "st_cli.encode", "model": model_name, "precision": stored, "rows": str(part.rows)}
        sparse = _sparse_output(encoder, options)
        if sparse is not None:
            metadata["model_type"] = "SparseEncoder"
            dense_bytes = part.rows * summary.dimension * 4
            no_sparse_form = sparse_writer_for(target, sparse) is None  # .npy, .parquet
            if no_sparse_form and dense_bytes > DENSE_WARNING_BYTES:
                _warn(
                    summary,
                    warn,
                    f"{target.name}: a SparseEncoder's rows written dense take {dense_bytes / 2**30:.1f} GiB, mostly "
                    "zeros; .safetensors (CSR) or .jsonl keep only the non-zeros",
                )
        temps: dict[str, Path] = {}
        sink: Sink | None = None
        keep = publishing = False  # keep: an interrupted run's journal and partial rows stay for --resume
        ids = _row_ids(sources, options, part.first_row, part.rows) if options.id_field is not None else None
        try:
            sink = Sink(
                target,
                part.rows,
                summary.dimension,
                stored,
                metadata,
                partial=journal.data if journal is not None else None,
                resume=(journal.done, journal.state) if journal is not None and journal.done else None,
                ids=ids,
                sparse=sparse,
            )
            if "lines" in side:
                temps["lines"] = fsio.temp_file(side["lines"])
            # A static folder's pool of numpy threads: --threads, else every CPU this process may use.
            torch_threads: contextlib.AbstractContextManager[int]
            if fast:
                torch_threads = contextlib.nullcontext(run_threads or threads.usable_cpus())
            elif isinstance(encoder, runtime.RuntimeEncoder):  # the session opens on the policy's count
                torch_threads = encoder.thread_count(run_threads)
            else:
                torch_threads = threads.thread_count(run_threads)
            with torch_threads as summary.threads, contextlib.ExitStack() as stack:
                read_again = Tally()
                every = tallied(iter_records(sources, read, skip_empty=False), read_again)
                kept = (r for r in every if r.text != "") if options.skip_empty else every
                records: Iterator[Record] = itertools.islice(kept, part.first_row, part.first_row + part.rows)
                if "lines" in temps:
                    records = _noting_lines(records, stack.enter_context(open(temps["lines"], "w", encoding="utf-8")))
                todo = itertools.islice(records, summary.resumed_rows, None)
                after_window = journaling(journal, sink, summary)
                if isinstance(encoder, static.StaticEncoder):
                    done = _encode_static_stream(
                        encoder,
                        todo,
                        prompt,
                        sink,
                        options,
                        summary,
                        progress,
                        done=summary.resumed_rows,
                        after_window=after_window,
                    )
                else:
                    if not isinstance(encoder, runtime.RuntimeEncoder):
                        stack.enter_context(inference_linears(encoder, options.device, options.dtype))
                    prepared = windows(encoder, todo, options.window, plan, start=summary.resumed_rows)
                    done = _encode_stream(
                        encoder,
                        prefetched(prepared) if options.prefetch else prepared,
                        sink,
                        options,
                        summary,
                        progress,
                        done=summary.resumed_rows,
                        after_window=after_window,
                    )
                for _ in every:  # the rest of the inputs: the second pass must see every record too
                    pass
            _check_same_records(counted, read_again, done, part.rows)
            publishing = True  # from here on the partial rows become the output: nothing to keep
            temps["output"] = sink.finish()
            if "calibration" in side:
                temps["calibration"] = fsio.temp_file(side["calibration"])
                temps["calibration"].write_text(json.dumps(sink.calibration(), indent=2) + "\n", encoding="utf-8")
            if "ids" in side and ids is not None:
                temps["ids"] = fsio.temp_file(side["ids"])
                write_ids(temps["ids"], ids(0))
            if fp is not None and shard is not None:
                written = {side[name]: temps[name] for name in side}
                hashes = side_file_hashes(target, written)
                summary.shard = shard_info(part, total, options, summary, model_name, temps["output"], fp, hashes)
                temps["shard"] = fsio.temp_file(last["shard"])
                temps["shard"].write_text(json.dumps(summary.shard.to_json(), indent=2) + "\n", encoding="utf-8")
            fsio.pause_point("encode:publish")
            publish_all(temps, claims, order=[*side, "output", *last])  # the sidecar last: it marks a finished shard
        except OSError as e:
            raise os_error(e, target) from None
        except (KeyboardInterrupt, fsio.Terminated) as e:
            keep = journal is not None and journal.done > 0 and not publishing
            if keep and journal is not None:
                e.add_note(f"{journal.done:,} of {part.rows:,} rows kept; rerun with --resume to continue")
            raise
        finally:
            if sink is not None:
                sink.discard(keep_partial=keep)
            for path in temps.values():
                fsio.remove(path)
            if journal is not None:
                if keep:
                    journal.keep()
                else:
                    journal.close()
    summary.side_files = list(side.values()) + list(last.values())
    summary.seconds = time.perf_counter() - started
    return summary
