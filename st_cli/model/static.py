"""Static models without torch: tokenize, gather rows, average (an embedding bag in numpy).

A stack that is a StaticEmbedding followed only by Normalize modules is tokenization plus a mean of
table rows. `st encode` runs such a folder through `StaticEncoder`, never importing torch (its import
costs more than encoding thousands of lines), with the results of the torch modules: float32 tables
sum in float32 and divide (within 2.4e-7 of torch's EmbeddingBag); float16 tables follow torch's CPU
kernel exactly: a float32 sum rounded to float16, then divided, then normalised with a float16 norm.

This file must not import torch. The torch module (`modules/static_embedding.py`) shares its readers.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from st_cli import threads
from st_cli.errors import ModelFolderError, StError, first_line
from st_cli.format import layout
from st_cli.model import registry

TOKENIZER_FILE = "tokenizer.json"
ST_KEY = "embedding.weight"  # what sentence-transformers saves
MODEL2VEC_KEYS = ("embeddings", "mapping", "weights")  # what model2vec saves (mapping, weights: optional)
_FLOATS = (np.float16, np.float32, np.float64)
_NORM_EPS = 1e-12  # torch.nn.functional.normalize's
# float16's smallest positive value: a zero row stays zero (model2vec's result), not 0/0 = NaN as in ST 6.2
_HALF_NORM_FLOOR = 2.0**-24
# Texts per task of the worker pool: model2vec's batch. Small enough that a chunk's gathered rows stay
# in cache (averaging 1,024 texts at a time costs about 4/5 of the CPU time of 8,192 at a time).
CHUNK = 1024
# The packages that compute a static model's numbers (a job's fingerprint names their versions).
VERSIONED = ("numpy", "tokenizers")
# tokenizers' switch for its own (rayon) thread pool, read at every encode_batch call.
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"
K = TypeVar("K")


def read_tokenizer(path: Path) -> Any:
    """A `tokenizers.Tokenizer` from tokenizer.json, or one line naming the file."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise ModelFolderError(f"{path}: missing; a static model needs its tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception for any malformed file
        raise ModelFolderError(f"{path}: cannot load the tokenizer: {first_line(e)}") from None


def token_ids(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All texts' token ids end to end, and where each text starts (no special tokens, as ST)."""
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets nobody here reads: the same ids, ~2x faster.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encodings = encode(list(texts), add_special_tokens=False)
    id_lists = [e.ids for e in encodings]  # each .ids builds a new list: read it once
    lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    ids = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
    offsets = np.zeros(len(encodings), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return ids, offsets


def read_table(path: Path, vocab_size: int) -> np.ndarray:
    """The (vocab, dim) table of a static model's model.safetensors, in either writer's layout."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, MemoryError, TypeError, ValueError) as e:
        raise ModelFolderError(f"{path}: unreadable safetensors file ({first_line(e)})") from None
    return fold_table(state, path, vocab_size)


def fold_table(state: Mapping[str, np.ndarray], path: Path, vocab_size: int) -> np.ndarray:
    """One row per token id: ST's `embedding.weight`, or model2vec's `embeddings[mapping] * weights`
    (folded as sentence-transformers 6.2 folds them, keeping the table's dtype)."""
    if ST_KEY in state:
        table = state[ST_KEY]
    elif "embeddings" in state:
        table = state["embeddings"]
        if table.ndim == 2 and "mapping" in state:
            table = table[state["mapping"].astype(np.int64)]
        if table.ndim == 2 and "weights" in state:
            dtype = table.dtype
            table = (table.astype(np.promote_types(dtype, np.float32)) * state["weights"][:, None]).astype(dtype)
    else:
        raise ModelFolderError(f"{path}: no tensor {ST_KEY!r} (sentence-transformers) or 'embeddings' (model2vec)")
    if table.ndim != 2 or table.dtype.type not in _FLOATS:
        problem = f"shape {list(table.shape)} of {table.dtype}"
        raise ModelFolderError(f"{path}: the embedding table has {problem}; expected a 2-D float16/32/64 table")
    if table.shape[0] < vocab_size:
        raise ModelFolderError(f"{path}: the table has {table.shape[0]} rows, the tokenizer {vocab_size} tokens")
    return np.ascontiguousarray(table)


def mean_rows(table: np.ndarray, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """torch.nn.EmbeddingBag(mode="mean") on the CPU: each bag's rows summed in order in float32, then
    divided; an empty bag gives zeros. float16 tables round the sum to float16 before dividing, as torch.

    Bags of equal length are summed together as one (bags, length, dim) block: numpy adds along the
    middle axis in order, which is torch's order (np.add.reduceat is not: up to 1.5e-5 off on 600 tokens).
    """
    counts = np.diff(np.append(offsets, len(ids)))
    wide = np.float64 if table.dtype == np.float64 else np.float32
    sums = np.zeros((len(offsets), table.shape[1]), wide)
    # Bags sorted by length, then one slice per length: ~110 lengths in 1,024 texts, so few numpy calls
    # per length (np.unique would also import numpy.ma: 15 ms of start-up).
    order = np.argsort(counts, kind="stable")
    lengths = counts[order]
    edges = [0, *(np.flatnonzero(np.diff(lengths)) + 1).tolist(), len(order)] if len(order) else []
    for start, end in itertools.pairwise(edges):
        bags, length = order[start:end], int(lengths[start])
        if length:
            sums[bags] = table[ids[offsets[bags, None] + np.arange(length)]].sum(axis=1, dtype=wide)
    divisor: np.ndarray = np.maximum(counts, 1)[:, None].astype(wide)
    if table.dtype == np.float16:
        return np.divide(sums.astype(np.float16).astype(np.float32), divisor).astype(np.float16)
    return np.divide(sums, divisor)


def finish_rows(embeddings: np.ndarray, dim: int | None, normalize: bool) -> np.ndarray:
    """Model.finish in numpy (the static and exported encoders'): truncate after the stack, then optionally
    L2-normalise; float32 out."""
    out = embeddings[:, :dim] if dim else embeddings
    if normalize:
        out = normalize_rows(out)
    return out.astype(np.float32, copy=False)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """torch.nn.functional.normalize(x, p=2, dim=-1) in x's dtype (float16: a float16 norm, as torch)."""
    half = x.dtype == np.float16
    wide = x.astype(np.float32) if half else x
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))[:, None]
    if half:  # torch keeps the norm in float16; its floor 1e-12 would be 0 there (modules/normalize.py)
        norms = norms.astype(np.float16).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (wide / np.maximum(norms, _HALF_NORM_FLOOR if half else _NORM_EPS)).astype(x.dtype)


class StaticEncoder:
    """A static folder's stack in numpy: what `st encode` needs of a Model, nothing of torch."""

    def __init__(self, tokenizer: Any, table: np.ndarray, normalizations: int, config: layout.ModelConfig) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.table = table
        self.normalizations = normalizations  # Normalize modules after the embedding (one or more)
        self.prompts = dict(config.prompts)
        self.default_prompt_name = config.default_prompt_name
        self.truncate_dim = config.truncate_dim

    # A row's vector never depends on the rows batched with it (no padding), unlike a CNN's.
    batch_dependent = False

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.table.shape[1])

    def check_kwargs(self, kwargs: Mapping[str, Any]) -> None:
        unknown = sorted(set(kwargs) - {"task"})  # a task only picks a prompt here
        if unknown:
            raise StError(f"keyword argument {unknown[0]!r} is not declared by any module (declared: none)")

    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None, task: str | None = None) -> str:
        return layout.resolve_prompt(self.prompts, self.default_prompt_name, prompt, prompt_name, task)

    def embed(self, texts: Sequence[str], prompt: str = "") -> np.ndarray:
        """One batch of texts to the stack's sentence embeddings, in the table's dtype."""
        return self._pool(*self._tokenize(texts, prompt))

    def embed_chunks(
        self, batches: Iterable[tuple[K, Sequence[str]]], prompt: str = "", workers: int | None = None
    ) -> Generator[tuple[K, list[np.ndarray]], None, None]:
        """embed() of each (key, texts) batch as its chunks' rows (joining them would cost a copy), in order;
        `batches` is read in this thread.

        Each batch is cut into chunks of CHUNK texts that run end to end (tokenize, then average) on a
        pool of `workers` threads (default: the CPUs this process may use), as model2vec does:
        tokenizers and numpy release the GIL, and tokenizers' own thread pool is off meanwhile.
        Batches are read ahead until `workers` chunks wait behind the oldest one, so memory is the
        oldest batch and what was read behind it (with `st encode`'s windows: two windows), whatever
        the input's size. Close the generator (or exhaust it) to stop the pool: its threads are
        joined before tokenizers' setting is put back.
        """
        workers = workers or threads.usable_cpus()
        pending: collections.deque[tuple[K, list[Future[np.ndarray]]]] = collections.deque()
        with _tokenizers_serial():
            pool = ThreadPoolExecutor(workers, thread_name_prefix="st-static")
            try:
                for key, texts in batches:
                    starts = range(0, max(len(texts), 1), CHUNK)  # an empty batch is one empty chunk
                    pending.append((key, [pool.submit(self.embed, texts[i : i + CHUNK], prompt) for i in starts]))
                    while len(pending) > 1 and _chunks_behind_oldest(pending) >= workers:
                        yield _results(pending.popleft())
                while pending:
                    yield _results(pending.popleft())
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _tokenize(self, texts: Sequence[str], prompt: str) -> tuple[np.ndarray, np.ndarray]:
        return token_ids(self.tokenizer, [prompt + t for t in texts] if prompt else texts)

    def _pool(self, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = mean_rows(self.table, ids, offsets)
        for _ in range(self.normalizations):
            out = normalize_rows(out)
        return out

    def finish(self, embeddings: np.ndarray, *, normalize: bool = False, truncate_dim: int | None = None) -> np.ndarray:
        return finish_rows(embeddings, truncate_dim or self.truncate_dim, normalize)

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 1024,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize: bool = False,
        truncate_dim: int | None = None,
    ) -> np.ndarray:
        """Texts to a float32 array (n, dim), in input order; Model.encode's results."""
        items = [texts] if isinstance(texts, str) else list(texts)
        prefix = self.resolve_prompt(prompt, prompt_name)
        if len(items) <= CHUNK:  # one chunk (a query, say): no pool, and tokenizers' setting left alone
            joined = self.embed(items, prefix)
        else:
            batches = ((i, items[i : i + batch_size]) for i in range(0, len(items), batch_size))
            with contextlib.closing(self.embed_chunks(batches, prefix)) as results:
                joined = np.concatenate([part for _, chunks in results for part in chunks])
        result = self.finish(joined, normalize=normalize, truncate_dim=truncate_dim)
        return result[0] if isinstance(texts, str) else result


def _chunks_behind_oldest(pending: Sequence[tuple[Any, list[Future[np.ndarray]]]]) -> int:
    return sum(len(chunks) for _, chunks in pending) - len(pending[0][1])


def _results(batch: tuple[K, list[Future[np.ndarray]]]) -> tuple[K, list[np.ndarray]]:
    key, chunks = batch
    return key, [chunk.result() for chunk in chunks]


@contextlib.contextmanager
def _tokenizers_serial() -> Iterator[None]:
    """tokenizers' own thread pool off while ours runs (two pools on the same CPUs only fight, and
    --threads 1 means one CPU), then the environment as it was; tokenizers reads the variable at each
    call. A value the user set is kept."""
    if TOKENIZERS_PARALLELISM in os.environ:
        yield
        return
    os.environ[TOKENIZERS_PARALLELISM] = "false"
    try:
        yield
    finally:
        os.environ.pop(TOKENIZERS_PARALLELISM, None)


def static_encoder(root: Path) -> StaticEncoder | None:
    """A StaticEncoder for a folder whose stack is StaticEmbedding then only Normalize; None for any other."""
    try:
        entries = layout.read_modules_json(root)
    except ModelFolderError:
        return None  # the full loader reports it
    names = [spec.name if (spec := registry.spec_for_type_string(e.type)) else None for e in entries]
    if names[0] != "StaticEmbedding" or any(n != "Normalize" for n in names[1:]) or entries[0].kwargs:
        return None
    folder = layout.module_folder(root, entries[0].path)
    weights = folder / layout.SAFETENSORS_WEIGHTS
    if not weights.is_file():
        return None  # pickled weights: the torch loader reads them (weights only)
    tokenizer = read_tokenizer(folder / TOKENIZER_FILE)
    table = read_table(weights, tokenizer.get_vocab_size())
    return StaticEncoder(tokenizer, table, len(entries) - 1, layout.read_model_config(root))
