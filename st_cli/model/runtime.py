"""Running a folder's exported Transformer (`onnx/`, `openvino/`) in ONNX Runtime or OpenVINO.

The Transformer module is replaced by a session over its exported graph (`input_ids`,
`attention_mask`, `token_type_ids` → `last_hidden_state`); the modules after it run as they do on
torch. When they are only Pooling (cls, mean, max, mean_sqrt_len_tokens) and Normalize, they run
in numpy here and a BERT-family tokenizer runs on `tokenizers` alone (model/fast_tokenizer.py), so
the whole encode imports neither torch nor transformers (as model/static.py does for static
folders). Any other module after the Transformer loads its torch class and runs on torch tensors
made from the session's output.

File names and the order in which a file is looked for are sentence-transformers' (its
backend/utils.py `backend_should_export`): `file_name` as given relative to the folder, else under
the backend's subfolder; by default `onnx/model.onnx` and `openvino/openvino_model.xml`.

This file must not import torch at module level.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from st_cli import threads
from st_cli.errors import ModelFolderError, StError, first_line
from st_cli.format import layout
from st_cli.format.specs import SPECS
from st_cli.model.static import finish_rows, normalize_rows

TORCH = "torch"
# What the exported graph is fed, as ST's exporters name the inputs.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"


@dataclass(frozen=True)
class Runtime:
    """A backend: where sentence-transformers keeps its files, and the package that runs them."""

    name: str  # the --backend value
    title: str  # for messages
    subfolder: str
    default_file: str
    pattern: str  # glob of its files inside `subfolder`
    package: str  # the import that runs it
    extra: str  # pip install 'st-cli[extra]'
    versioned: tuple[str, ...]  # packages whose versions change its numbers (a job's fingerprint)


RUNTIMES: dict[str, Runtime] = {
    "onnx": Runtime("onnx", "ONNX Runtime", "onnx", "model.onnx", "*.onnx", "onnxruntime", "onnx", ("onnxruntime",)),
    "openvino": Runtime(
        "openvino", "OpenVINO", "openvino", "openvino_model.xml", "openvino*.xml", "openvino", "openvino", ("openvino",)
    ),
}
BACKENDS = (TORCH, *RUNTIMES)


def require(backend: str) -> Any:
    """The runtime's package, or one line naming the extra that installs it."""
    runtime = RUNTIMES[backend]
    try:
        return importlib.import_module(runtime.package)
    except ImportError:
        raise StError(
            f"--backend {backend} needs {runtime.package}, which is not installed: "
            f"pip install 'st-cli[{runtime.extra}]'"
        ) from None


def exported_files(root: Path) -> list[tuple[str, str]]:
    """(backend, path relative to the folder) of every exported file, as sentence-transformers names them."""
    found = []
    for runtime in RUNTIMES.values():
        sub = root / runtime.subfolder
        if sub.is_dir():
            found += [(runtime.name, p.relative_to(root).as_posix()) for p in sorted(sub.glob(runtime.pattern))]
    return [(b, rel) for b, rel in found if (root / rel).is_file()]


def backend_file(root: Path, backend: str, file_name: str | None = None) -> Path:
    """The file `backend` runs: `file_name` (default the backend's own) relative to the folder, else inside
    the backend's subfolder (sentence-transformers' order). A name that leaves the folder is refused."""
    runtime = RUNTIMES[backend]
    name = file_name or runtime.default_file
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise StError(f"--backend-file {name}: give a path inside the model folder (e.g. onnx/model_O3.onnx)")
    for candidate in (root / rel, root / runtime.subfolder / rel):
        if candidate.is_file():
            return candidate
    there = [rel for b, rel in exported_files(root) if b == backend]
    hint = f"; it has: {', '.join(there)} (pass one as --backend-file)" if there else "; export it first (st export)"
    raise StError(f"{root}: no {runtime.subfolder}/{rel} for --backend {backend}{hint}")


def weightless_backend(root: Path) -> str | None:
    """The backend that must run a folder whose Transformer ships no torch weights but exported files
    (as sentence-transformers pushes some to the Hub): onnx/model.onnx first, then openvino; else None."""
    try:
        entries = layout.read_modules_json(root)
        first = layout.module_folder(root, entries[0].path) if entries else None
    except ModelFolderError:
        return None
    if first is None or entries[0].short_type != "Transformer" or _has_torch_weights(first):
        return None
    for runtime in RUNTIMES.values():
        if (root / runtime.subfolder / runtime.default_file).is_file():
            return runtime.name
    return None


def _has_torch_weights(folder: Path) -> bool:
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return any((folder / n).is_file() for n in names)


# ---------------------------------------------------------------- sessions


class OnnxSession:
    """An ONNX Runtime session on `threads` intra-op threads whose idle threads sleep instead of spinning.

    ORT's default lets each idle pool thread spin-wait for work (session.intra_op.allow_spinning=1): on a
    machine whose cores are shared, that spinning is CPU time taken from the neighbours and from st's own
    tokenizing thread (docs/explanation/performance.md measures it).
    """

    def __init__(self, path: Path, threads: int, *, spinning: bool = False) -> None:
        ort = require("onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's concern
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise ModelFolderError(f"{path}: ONNX Runtime cannot load it: {first_line(e)}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = OUTPUT if OUTPUT in outputs else outputs[0]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run([self.output], _feeds(self.inputs, feeds))[0])


class OpenVinoSession:
    """An OpenVINO model compiled for the CPU on `threads` threads, in float32.

    OpenVINO's CPU plugin runs float32 graphs in bfloat16 where the CPU has bf16 instructions (its
    default INFERENCE_PRECISION_HINT); st asks for float32 so that a float32 file gives torch's numbers.
    """

    def __init__(self, path: Path, threads: int, **_: Any) -> None:
        ov = require("openvino")
        try:
            core = ov.Core()
            model = core.read_model(str(path))
            config = {
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
            }
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # openvino raises RuntimeError subclasses of its own
            raise ModelFolderError(f"{path}: OpenVINO cannot load it: {first_line(e)}") from None
        self.inputs = [next(iter(port.get_names())) for port in self.compiled.inputs]
        outputs = [port.get_names() for port in self.compiled.outputs]
        self.output = next((i for i, names in enumerate(outputs) if OUTPUT in names), 0)
        self.request = self.compiled.create_infer_request()

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        result = self.request.infer(_feeds(self.inputs, feeds))
        return np.array(result[self.compiled.outputs[self.output]])


def _feeds(names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the graph takes, as int64; token type ids of zeros when it takes them and the tokenizer gave none."""
    out = {}
    for name in names:
        if name in feeds:
            out[name] = np.ascontiguousarray(feeds[name], dtype=np.int64)
        elif name == "token_type_ids":
            out[name] = np.zeros_like(feeds["input_ids"], dtype=np.int64)
        else:
            raise StError(
                f"the exported graph takes an input {name!r} that st does not make (it gives {', '.join(feeds)})"
            )
    return out


SESSIONS: dict[str, Callable[..., Any]] = {"onnx": OnnxSession, "openvino": OpenVinoSession}


# ---------------------------------------------------------------- the input module


class RuntimeTransformer:
    """The Transformer module's place in the stack: its tokenizer, and a session over the exported graph.

    The session opens at the first call of `open(threads)` (its thread count is fixed when it opens)."""

    def __init__(self, folder: Path, backend: str, path: Path, *, spinning: bool = False) -> None:
        config = layout.read_module_config(SPECS["Transformer"], folder)
        self.backend, self.path, self.spinning = backend, path, spinning
        self.tokenizer = _load_tokenizer(folder, lowercase=bool(config.get("do_lower_case")))
        self.max_seq_length = _max_seq_length(folder, self.tokenizer, config.get("max_seq_length"))
        self.hidden_size = _hidden_size(folder)
        self._session: Any = None
        self._threads = 0

    def open(self, count: int) -> None:
        if self._session is None or count != self._threads:
            self._session = SESSIONS[self.backend](self.path, count, spinning=self.spinning)
            self._threads = count

    def tokenize(self, texts: list[str], **kwargs: Any) -> dict[str, np.ndarray]:
        encoded = self.tokenizer(
            texts, padding=True, truncation="longest_first", max_length=self.max_seq_length, return_tensors="np"
        )
        return {k: np.asarray(v, dtype=np.int64) for k, v in dict(encoded).items()}

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self.open(threads.policy_count())
        features["token_embeddings"] = self._session({k: features[k] for k in MODEL_INPUTS if k in features})
        return features

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt adds at the front (as the torch Transformer counts)."""
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        specials = set(getattr(self.tokenizer, "all_special_ids", ()))
        return len(ids) - 1 if ids and ids[-1] in specials else len(ids)


def _load_tokenizer(folder: Path, *, lowercase: bool) -> Any:
    """st's torch-free BERT tokenizer where it gives transformers' ids; else transformers' fast tokenizer."""
    from st_cli.model import fast_tokenizer

    light = None if lowercase else fast_tokenizer.load_tokenizer(folder)
    if light is not None:
        return light
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds on a damaged folder
        raise ModelFolderError(f"{folder}: cannot load the tokenizer: {first_line(e)}") from None
    if lowercase:
        from tokenizers import normalizers

        backend = tokenizer.backend_tokenizer
        steps = [normalizers.Lowercase()] + ([backend.normalizer] if backend.normalizer is not None else [])
        backend.normalizer = normalizers.Sequence(steps)
    return tokenizer


def _config_json(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFolderError(
            f"{path}: unreadable ({first_line(e)}); the exported model needs its config.json"
        ) from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path}: expected a JSON object")
    return config


def _hidden_size(folder: Path) -> int | None:
    from st_cli.format.spec import hidden_size

    return hidden_size(_config_json(folder))


def _max_seq_length(folder: Path, tokenizer: Any, configured: Any) -> int:
    """ST's rule (as the torch Transformer): sentence_bert_config's value, else the tokenizer's limit
    capped by the position embeddings."""
    if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
        return configured
    limits = [_config_json(folder).get("max_position_embeddings"), getattr(tokenizer, "model_max_length", None)]
    usable = [x for x in limits if isinstance(x, int) and x > 0]
    if not usable:
        raise ModelFolderError(f"{folder}: no max_seq_length, and no limit in config.json or the tokenizer")
    return min(usable)


# ---------------------------------------------------------------- the modules after it


def _numpy_pooling(config: Mapping[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """Pooling in numpy (as modules/pooling.py computes it), or None for modes it leaves to torch."""
    from st_cli.format.specs.pooling import POOLING_MODES

    mode = config.get("mode", "mean")
    modes = [mode] if isinstance(mode, str) else list(mode)
    modes = ["mean_sqrt_len_tokens" if m == "mean_sqrt_len" else m for m in modes]
    if not modes or any(m not in POOLING_MODES or m not in _POOLERS for m in modes):
        return None
    include_prompt = config.get("include_prompt", True)

    def pool(features: dict[str, Any]) -> dict[str, Any]:
        tokens = features["token_embeddings"]
        mask = features.get("attention_mask")
        mask = np.ones(tokens.shape[:2], np.int64) if mask is None else mask
        if not include_prompt and features.get("prompt_length"):
            mask = mask.copy()
            mask[:, : int(features["prompt_length"])] = 0
        features["sentence_embedding"] = np.concatenate([_POOLERS[m](tokens, mask) for m in modes], axis=-1)
        return features

    pool.modes = modes  # type: ignore[attr-defined]  # the width: hidden size × modes
    return pool


def _pool_cls(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return tokens[np.arange(tokens.shape[0]), mask.astype(np.int32).argmax(axis=1)]


def _pool_max(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[:, :, None] == 0, -np.inf, tokens).max(axis=1).astype(tokens.dtype)


def _masked_sum(tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    weights = mask[:, :, None].astype(tokens.dtype)
    return (tokens * weights).sum(axis=1), np.maximum(weights.sum(axis=1), 1e-9)


def _pool_mean(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    total, count = _masked_sum(tokens, mask)
    return total / count


def _pool_mean_sqrt(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    total, count = _masked_sum(tokens, mask)
    return total / np.sqrt(count)


_POOLERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cls": _pool_cls,
    "max": _pool_max,
    "mean": _pool_mean,
    "mean_sqrt_len_tokens": _pool_mean_sqrt,
}


def _normalize(features: dict[str, Any]) -> dict[str, Any]:
    features["sentence_embedding"] = normalize_rows(features["sentence_embedding"])
    return features


def numpy_tail(root: Path, entries: Sequence[layout.ModuleEntry]) -> list[Callable[[dict[str, Any]], Any]] | None:
    """The modules after the Transformer as numpy steps, when they are Pooling and Normalize only; else None."""
    steps: list[Callable[[dict[str, Any]], Any]] = []
    for entry in entries:
        if entry.kwargs:
            return None
        name = entry.short_type
        if name == "Normalize":
            steps.append(_normalize)
            continue
        if name != "Pooling":
            return None
        folder = layout.module_folder(root, entry.path)
        config = dict(entry.config) if entry.config is not None else layout.read_module_config(SPECS["Pooling"], folder)
        pool = _numpy_pooling(config)
        if pool is None:
            return None
        steps.append(pool)
    return steps if any(e.short_type == "Pooling" for e in entries) else None


# ---------------------------------------------------------------- the encoder


class RuntimeEncoder:
    """A folder's stack with its Transformer on an exported graph: what `st encode` needs of a Model.

    `tail` holds the modules after the Transformer: numpy steps (no torch), or a torch Model of them
    (`torch_tail`), which is given the session's output as torch tensors.
    """

    def __init__(
        self,
        root: Path,
        transformer: RuntimeTransformer,
        config: layout.ModelConfig,
        *,
        numpy_steps: list[Callable[[dict[str, Any]], Any]] | None,
        torch_tail: Any = None,
        module_kwargs: Sequence[Sequence[str]] = (),
    ) -> None:
        self.root = root
        self.input_module = transformer
        self.numpy_steps = numpy_steps
        self.torch_tail = torch_tail
        self.prompts = dict(config.prompts)
        self.default_prompt_name = config.default_prompt_name
        self.truncate_dim = config.truncate_dim
        self.similarity_fn_name = config.similarity_fn_name or "cosine"
        self.module_kwargs = [tuple(k) for k in module_kwargs]
        self._dimension: int | None = None
        self.notes: list[str] = []  # a choice st made that the user did not (run.load_exported)

    @property
    def backend(self) -> str:
        return self.input_module.backend

    @property
    def backend_file(self) -> str:
        return self.input_module.path.relative_to(self.root).as_posix()

    @property
    def batch_dependent(self) -> bool:
        return bool(self.torch_tail is not None and self.torch_tail.batch_dependent)

    def get_max_seq_length(self) -> int:
        return self.input_module.max_seq_length

    def get_sentence_embedding_dimension(self) -> int | None:
        if self.torch_tail is not None:
            dim = self.torch_tail.get_sentence_embedding_dimension()
            if dim is not None:
                return int(dim)
        if self._dimension is None:
            self._dimension = self._pooled_width()
        if self._dimension is None:  # no width in the configs: ask the stack
            self._dimension = int(self.embed([""]).shape[-1])
        return self._dimension

    def _pooled_width(self) -> int | None:
        """A numpy tail's width from the configs (no session opened for it): hidden size × pooling modes."""
        hidden = self.input_module.hidden_size
        pools = [getattr(step, "modes", None) for step in self.numpy_steps or ()]
        modes = next((m for m in reversed(pools) if m), None)
        return hidden * len(modes) if hidden and modes else None

    def check_kwargs(self, kwargs: Mapping[str, Any]) -> None:
        declared = set().union(*(set(k) for k in self.module_kwargs)) if self.module_kwargs else set()
        if self.torch_tail is not None:
            declared |= {k for i in range(len(self.torch_tail.stack)) for k in self.torch_tail.declared_kwargs(i)}
        unknown = sorted(set(kwargs) - declared - {"task"})
        if unknown:
            known = ", ".join(sorted(declared)) or "none"
            raise StError(f"keyword argument {unknown[0]!r} is not declared by any module (declared: {known})")

    def probe_kwargs(self) -> dict[str, Any]:
        return self.torch_tail.probe_kwargs() if self.torch_tail is not None else {}

    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None, task: str | None = None) -> str:
        return layout.resolve_prompt(self.prompts, self.default_prompt_name, prompt, prompt_name, task)

    @contextlib.contextmanager
    def thread_count(self, count: int | None = None) -> Iterator[int]:
        """Open the session on st's thread policy's count (or `count`); a torch tail runs on as many."""
        chosen = count or threads.policy_count()
        self.input_module.open(chosen)
        if self.torch_tail is None:
            yield chosen
            return
        with threads.thread_count(chosen) as n:
            yield n

    def tokenize(self, texts: list[str], prompt: str = "", **kwargs: Any) -> dict[str, Any]:
        features: dict[str, Any] = self.input_module.tokenize([prompt + t for t in texts] if prompt else texts)
        if prompt:
            features["prompt_length"] = self.input_module.prompt_length(prompt)
        return features

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The stack on one tokenized batch; `sentence_embedding` comes back as float32 numpy rows."""
        features = self.input_module.forward(dict(features))
        if self.numpy_steps is not None:
            for step in self.numpy_steps:
                features = step(features)
            features["sentence_embedding"] = np.asarray(features["sentence_embedding"], dtype=np.float32)
            return features
        import torch

        tensors = {
            k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in features.items()
        }
        with torch.inference_mode():
            out = self.torch_tail.forward(tensors, **kwargs)
        features["sentence_embedding"] = out["sentence_embedding"].float().numpy()
        return features

    def embed(self, texts: list[str], prompt: str = "", **kwargs: Any) -> np.ndarray:
        return self.forward(self.tokenize(texts, prompt, **kwargs), **kwargs)["sentence_embedding"]

    def finish(self, embeddings: np.ndarray, *, normalize: bool = False, truncate_dim: int | None = None) -> np.ndarray:
        return finish_rows(np.asarray(embeddings, dtype=np.float32), truncate_dim or self.truncate_dim, normalize)

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize: bool = False,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Texts to a float32 array (n, dim), in input order, batched as Model.encode (longest first)."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        self.check_kwargs(kwargs)
        prefix = self.resolve_prompt(prompt, prompt_name, kwargs.get("task"))
        if not items:
            return np.zeros((0, self.get_sentence_embedding_dimension() or 0), dtype=np.float32)
        order = np.argsort([-len(t) for t in items])
        rows: list[np.ndarray] = [np.empty(0)] * len(items)
        for start in range(0, len(items), batch_size):
            batch = order[start : start + batch_size]
            out = self.embed([items[i] for i in batch], prefix, **kwargs)
            for i, row in zip(batch, out, strict=True):
                rows[i] = row
        result = self.finish(np.stack(rows), normalize=normalize, truncate_dim=truncate_dim)
        return result[0] if single else result

    def to(self, device: str) -> RuntimeEncoder:
        return self

    @property
    def steps(self) -> list[Any]:
        """No module here takes encode-time kwargs of its own (what Model.steps is read for)."""
        return []

    def declared_kwargs(self, index: int) -> set[str]:
        return set()


def load(
    root: Path,
    backend: str,
    file_name: str | None = None,
    *,
    trust_remote_code: bool = False,
    spinning: bool = False,
) -> RuntimeEncoder:
    """The folder at `root` with its Transformer on `backend`'s exported file (`file_name`, default
    sentence-transformers' choice). Torch is imported only for modules numpy does not run here."""
    if backend not in RUNTIMES:
        raise StError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    entries = layout.read_modules_json(root)
    if not entries or entries[0].short_type != "Transformer":
        first = entries[0].type if entries else "nothing"
        raise StError(f"--backend {backend}: the stack starts with {first}; only a Transformer is exported")
    path = backend_file(root, backend, file_name)
    require(backend)
    config = layout.ModelConfig() if layout.is_plain_folder(root) else layout.read_model_config(root)
    transformer = RuntimeTransformer(layout.module_folder(root, entries[0].path), backend, path, spinning=spinning)
    rest = entries[1:]
    steps = numpy_tail(root, rest)
    tail = None if steps is not None else _torch_tail(root, rest, trust_remote_code=trust_remote_code)
    return RuntimeEncoder(
        root, transformer, config, numpy_steps=steps, torch_tail=tail, module_kwargs=[e.kwargs for e in entries]
    )


def _torch_tail(root: Path, entries: Sequence[layout.ModuleEntry], *, trust_remote_code: bool) -> Any:
    """The modules after the Transformer as a torch stack fed the session's token embeddings."""
    from st_cli.model.model import Model, load_modules

    modules = load_modules(root, entries, trust_remote_code=trust_remote_code)
    return Model(modules, module_kwargs=[e.kwargs for e in entries], tail=True)
