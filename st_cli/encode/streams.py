"""A window's batches on a CPU run as several streams of one torch thread each, not one stream of many.

Why: a transformer batch is a few hundred small ops, and an op run on n threads is a parallel region
whose threads meet at its end; st's OpenMP threads also sleep between regions (threads.py), so every
region wakes them first. Streams of one thread never meet: while one stream is in Python between ops
the other computes, and a core taken by another process slows only the stream on it. Measured with
all-MiniLM-L6-v2 on 2 cores (AMD EPYC, AVX-512, float32), 1,500 short texts, 3 interleaved rounds:
two streams of one thread 1.11x the speed of one stream of two threads, at 0.88x the CPU time.

Each batch's rows depend only on the batch (a one-thread matmul sums in a fixed order), so the output
is the same whichever stream ran a batch. Only a stack of st's own modules runs on streams: custom
code may keep state between calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from st_cli.encode.device import release_free_memory

if TYPE_CHECKING:
    from st_cli.model.model import Model
    from st_cli.model.runtime import RuntimeEncoder

T = TypeVar("T")
R = TypeVar("R")

# Streams at most, the rest of the threads shared among them: each stream holds the GIL for its ops'
# Python (~5% of a MiniLM batch), so many more streams would queue on it. Measured at 2; 4 is a guess.
MAX_STREAMS = 4


class BatchStreams:
    """`map(fn, batches)`: fn over the batches on the streams, results in input order.

    torch runs `per_stream` threads while a map is under way and `threads` again after it; a window of
    fewer batches than streams runs them one after the other on all the threads (one small input
    would otherwise run on one thread).
    """

    def __init__(
        self, pool: ThreadPoolExecutor | None = None, count: int = 1, threads: int = 1, per_stream: int = 1
    ) -> None:
        self.pool, self.count, self.threads, self.per_stream = pool, count, threads, per_stream

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        batches = list(items)
        if self.pool is None or len(batches) < self.count:
            yield from map(fn, batches)
            return
        import torch

        torch.set_num_threads(self.per_stream)
        try:
            yield from self.pool.map(fn, batches)
        finally:
            torch.set_num_threads(self.threads)
            release_free_memory()  # what the streams' arenas hold after a window


def on_streams(model: Model | RuntimeEncoder, device: str) -> bool:
    """A torch stack of st's own modules on a CPU (a GPU queues its work itself; ONNX Runtime and OpenVINO
    run their own threads: an exported model has no `runs_concurrently`, and no torch is imported for it)."""
    return device == "cpu" and bool(getattr(model, "runs_concurrently", False))


@contextlib.contextmanager
def batch_streams(model: Model | RuntimeEncoder, device: str) -> Iterator[BatchStreams]:
    """Streams for `model`'s batches while inside: one per torch thread (at most MAX_STREAMS), torch's
    threads split among them."""
    if not on_streams(model, device):
        yield BatchStreams()
        return
    import torch

    threads = torch.get_num_threads()
    count = min(threads, MAX_STREAMS)
    if count <= 1:
        yield BatchStreams()
        return
    pool = ThreadPoolExecutor(count, thread_name_prefix="st-stream")
    try:
        yield BatchStreams(pool, count, threads, max(1, threads // count))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a failed or interrupted window: no batch left running
