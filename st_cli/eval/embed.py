"""Texts → embeddings through st encode's fast path: windows sorted by token length, batches cut to a
padded-token budget, run under inference mode. Windows come one at a time, so a caller that scores
them as they come (retrieval) never holds more than one window of embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from st_cli.encode.batching import BatchPlan, Window, windows
from st_cli.encode.device import inference_linears
from st_cli.encode.inputs import Record
from st_cli.encode.options import EncodeOptions
from st_cli.encode.run import embed_batch
from st_cli.encode.streams import batch_streams

if TYPE_CHECKING:
    from st_cli.model.model import Model
    from st_cli.model.runtime import RuntimeEncoder

# (texts done, texts total) of the current side ("queries", "corpus", ...).
EmbedProgress = Callable[[str, int, int], None]


def encode_options(device: str, dtype: str = "float32") -> EncodeOptions:
    """float32 by default whatever the device: the metrics are then the ones sentence-transformers computes."""
    return EncodeOptions(device=device, dtype=dtype).for_device(device)


def prompt_for(model: Model | RuntimeEncoder, task: str | None) -> tuple[str, dict[str, Any]]:
    """The prompt sentence-transformers' encode_query / encode_document / encode would use, and the
    `task` kwarg for a module that takes one (a Router)."""
    declared = set().union(*(model.declared_kwargs(i) for i in range(len(model.steps))))
    kwargs = {"task": task} if task is not None and "task" in declared else {}
    return model.resolve_prompt(task=task), kwargs


def embed_windows(
    model: Model | RuntimeEncoder,
    texts: Sequence[str],
    *,
    task: str | None,
    options: EncodeOptions,
    progress: EmbedProgress | None = None,
    what: str = "texts",
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 block) per window of `texts`, in input order."""
    from st_cli.model.runtime import RuntimeEncoder

    prompt, kwargs = prompt_for(model, task)
    plan = BatchPlan(prompt, int(options.max_batch_tokens or 512), None, 1, kwargs, like_st=model.batch_dependent)
    if isinstance(model, RuntimeEncoder):  # an exported Transformer: numpy rows, no torch modules to set to eval
        exported = model

        def exported_rows(win: Window) -> np.ndarray:
            outputs = [exported.forward(dict(b.features), **kwargs)["sentence_embedding"] for b in win.batches]
            return exported.finish(np.concatenate(outputs))

        yield from _blocks(model, texts, plan, options, exported_rows, progress, what)
        return
    import torch

    run_options = EncodeOptions.of(options, kwargs=kwargs)
    torch_model = model

    def torch_rows(win: Window) -> np.ndarray:  # truncate_dim, as ST's encode does
        outputs = streams.map(lambda b: embed_batch(torch_model, b, run_options), win.batches)
        return torch_model.finish(torch.cat(list(outputs)))

    modes = [m.training for m in model.steps]  # training puts only its trained modules in train mode
    model.eval()
    try:
        with inference_linears(model, options.device, options.dtype), batch_streams(model, options.device) as streams:
            yield from _blocks(model, texts, plan, options, torch_rows, progress, what)
    finally:
        for module, mode in zip(model.steps, modes, strict=True):
            module.train(mode)


def _blocks(
    model: Model | RuntimeEncoder,
    texts: Sequence[str],
    plan: BatchPlan,
    options: EncodeOptions,
    rows_of: Callable[[Window], np.ndarray],
    progress: EmbedProgress | None,
    what: str,
) -> Iterator[tuple[int, np.ndarray]]:
    """Each window's rows (`rows_of`, in the window's sorted order) put back in input order."""
    records = (Record(what, i + 1, text) for i, text in enumerate(texts))
    done = 0
    for win in windows(model, records, options.window, plan):
        rows = rows_of(win)
        block = np.empty_like(rows)
        block[np.concatenate([batch.indices for batch in win.batches])] = rows
        done += win.size
        if progress is not None:
            progress(what, done, len(texts))
        yield win.start, block


def embed_all(
    model: Model | RuntimeEncoder,
    texts: Sequence[str],
    *,
    task: str | None,
    options: EncodeOptions,
    progress: EmbedProgress | None = None,
    what: str = "texts",
) -> np.ndarray:
    parts = embed_windows(model, texts, task=task, options=options, progress=progress, what=what)
    blocks = [block for _, block in parts]
    if not blocks:
        return np.zeros((0, model.get_sentence_embedding_dimension() or 0), np.float32)
    return np.concatenate(blocks)
