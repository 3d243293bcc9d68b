"""Where and in what precision batches run: the device policy, autocast, and the allocator setting.

torch is imported inside the functions that need it: `options.py` reads this file's tables, and `st --help`
must stay light.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from st_cli.errors import StError

if TYPE_CHECKING:
    import torch

DEVICES = ("cpu", "cuda", "mps", "auto")

DTYPES = ("auto", "float32", "float16", "bfloat16")

# What "auto" runs per device: GPUs have fast float16 units; on CPUs float32 is exact and a reduced
# dtype is an explicit choice (bfloat16 ~2x where the CPU has it, see docs/explanation/performance.md).
AUTO_DTYPE = {"cuda": "float16"}

# Padded tokens per batch by device when --max-batch-tokens is not given: a GPU needs big batches
# to fill its units, a CPU wants the activations to stay in cache (see batching.py).
DEVICE_MAX_BATCH_TOKENS = {"cuda": 16384, "mps": 4096}

# bfloat16 on a CPU once ran in batches of 2,048 padded tokens; since batches run on streams of one
# thread (streams.py) 512 is faster for it too (1,000 lines of MiniLM on 2 cores, avx512_bf16:
# 512 1.23x 2,048, 1,024 ~ 512), so every dtype shares the device's budget.

# Tokenize ahead in a background thread: on a GPU the CPU is otherwise idle while it runs; on a
# 2-core CPU the thread competes with torch's (measured ~1.0x), so it is off there.
DEVICE_PREFETCH = {"cuda": True}

# Allocations from this size up are served by mmap and unmapped on free (glibc's M_MMAP_THRESHOLD).
# Left dynamic, glibc raises the threshold to the largest block freed so far, after which activations
# of ever-changing sizes fragment the heap and RSS grows with the input (docs/explanation/design.md).
MMAP_THRESHOLD = 4 << 20

_mmap_threshold_pinned = False


def pin_mmap_threshold(size: int = MMAP_THRESHOLD) -> None:
    """Pin glibc's mmap threshold once per process (a no-op elsewhere, or with size 0)."""
    global _mmap_threshold_pinned
    libc = _glibc()
    if _mmap_threshold_pinned or size <= 0 or libc is None:
        return
    libc.mallopt(-3, size)  # -3: M_MMAP_THRESHOLD
    _mmap_threshold_pinned = True


@functools.cache
def _glibc() -> Any:
    """glibc through ctypes, with the two calls st makes of it, or None (not Linux, or another libc)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere).

    Batches on streams allocate from each thread's malloc arena, and glibc returns an arena's free
    memory only now and then: without this st eval's peak RSS grew 1.19x from 10,000 to 100,000
    documents instead of 1.09x (a tiny BERT, tests/bench/bench_eval.py). One call per window.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def resolve_device(device: str) -> str:
    import torch

    if device not in DEVICES:
        raise StError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise StError("--device cuda: no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise StError("--device mps: no MPS device is available")
    return device


def autocast(device: str, dtype: str) -> contextlib.AbstractContextManager[Any]:
    import torch

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=getattr(torch, dtype))


# CPUs where float32 Linear layers run through oneDNN's matmul instead of the BLAS behind aten::linear
# (MKL in torch's x86 wheels). On this project's machine (AMD EPYC, AVX-512) oneDNN gave 1.1-1.3x
# MKL's GFLOP/s at a transformer's shapes (rows x 384 @ 384 x 1536), and steadier; other
# architectures were not measured, so they keep aten's kernel. ST_CPU_LINEAR=aten turns it off.
ONEDNN_MACHINES = {"x86_64", "AMD64"}


@contextlib.contextmanager
def inference_linears(model: torch.nn.Module, device: str, dtype: str) -> Iterator[None]:
    """`model`'s Linear layers set up for an inference run on `device` in `dtype`, as they were after.

    A reduced dtype: weights cast once (reduced_linears). float32 on a CPU: oneDNN's kernel (onednn_linears).
    """
    if dtype != "float32":
        with reduced_linears(model, dtype):
            yield
    elif device == "cpu" and _onednn_linear() is not None:
        with onednn_linears(model):
            yield
    else:
        yield


@contextlib.contextmanager
def onednn_linears(model: torch.nn.Module) -> Iterator[None]:
    """Every plain float32 CPU `torch.nn.Linear` of `model` computed by oneDNN's matmul while inside.

    The outputs differ from aten's by float rounding (~1e-6 relative: sums in another order). Outside
    inference mode a layer runs its own forward (oneDNN's op has no backward). The weights are packed
    once, on entry, into oneDNN's blocked layout (7% less time on MiniLM than repacking them at every
    call), up to PACKED_WEIGHTS_LIMIT bytes: weights changed inside are seen only on the next entry,
    which is why each run (an encode, one evaluation of `st train --eval-data`) enters anew.
    """
    import torch

    op = _onednn_linear()
    found = [(m, then) for m in model.modules() if "forward" not in m.__dict__ and (then := _onednn_kind(m))]
    denses = [_dense(module, then) for module, then in found]
    pack = sum(d.weight.numel() * d.weight.element_size() for d in denses) <= PACKED_WEIGHTS_LIMIT
    patched: list[torch.nn.Module] = []
    for (module, then), dense in zip(found, denses, strict=True):
        weight = torch.ops.mkldnn._reorder_linear_weight(dense.weight.detach(), None) if pack else dense.weight
        forward = functools.partial(_onednn_forward, module, op, weight, dense.bias, then)
        if then == "gelu" and not _same_outputs(module, forward, dense):
            continue
        module.forward = forward  # type: ignore[method-assign]
        patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


# Packed copies of the weights are made only while their sum stays under this (a CPU-sized model such
# as MiniLM needs ~40 MB); beyond it oneDNN reads the weights as they are, and memory does not double.
PACKED_WEIGHTS_LIMIT = 512 << 20

# A block whose forward is act(dense(x)) with these two children, the activation an exact GELU: the
# Intermediate block of BERT, RoBERTa, MPNet and kin in transformers (st's own BERT has only `dense` and
# says `linear_then_gelu`). One oneDNN call computes both, the GELU inside the matmul (alone it was ~6% of
# MiniLM's time, torch.profiler, one thread).
FUSED_GELU_BLOCK = ("dense", "intermediate_act_fn")


def _onednn_kind(module: torch.nn.Module) -> str:
    """"none" for a plain float32 CPU Linear, "gelu" for a Linear-then-GELU block, "" for anything else."""
    import torch

    if type(module) is torch.nn.Linear:
        return "none" if _float32_cpu(module) else ""
    children = dict(module.named_children())
    if getattr(type(module), "linear_then_gelu", False):  # says so itself (st's own BERT, model/bert.py)
        exact_gelu = tuple(children) == FUSED_GELU_BLOCK[:1]
    else:
        exact_gelu = tuple(children) == FUSED_GELU_BLOCK and getattr(
            children[FUSED_GELU_BLOCK[1]], "act", None
        ) is torch.nn.functional.gelu  # transformers' GELUActivation
    dense = children.get(FUSED_GELU_BLOCK[0])
    return "gelu" if exact_gelu and type(dense) is torch.nn.Linear and _float32_cpu(dense) else ""


def _dense(module: torch.nn.Module, then: str) -> torch.nn.Linear:
    return module if then == "none" else module.get_submodule(FUSED_GELU_BLOCK[0])  # type: ignore[return-value]


def _float32_cpu(linear: torch.nn.Module) -> bool:
    import torch

    weight = getattr(linear, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dtype == torch.float32 and weight.device.type == "cpu"


def _same_outputs(module: torch.nn.Module, fused: Any, dense: torch.nn.Linear) -> bool:
    """The block's own forward and the fused call agree on a probe: a forward that does more than
    act(dense(x)) keeps its own code."""
    import torch

    probe = torch.randn(2, 3, dense.in_features, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return torch.allclose(module(probe), fused(probe), rtol=1e-4, atol=1e-5)


def _onednn_forward(
    module: torch.nn.Module, op: Any, weight: torch.Tensor, bias: torch.Tensor | None, then: str, x: torch.Tensor
) -> Any:
    """`module`'s output by oneDNN: x @ weight.T + bias, then `then` ("none" or "gelu") in the same call."""
    import torch

    if x.dtype != torch.float32 or not torch.is_inference_mode_enabled():
        return type(module).forward(module, x)
    return op(x, weight, bias, then, [], "none" if then == "gelu" else "")


@functools.cache
def _onednn_linear() -> Any:
    """oneDNN's linear op where this CPU and torch build have it and it computes a known product, else None."""
    import torch

    if platform.machine() not in ONEDNN_MACHINES or os.environ.get("ST_CPU_LINEAR", "onednn") == "aten":
        return None
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        with torch.inference_mode():
            packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(4, 3), None)
            out = op(torch.ones(2, 3), packed, torch.ones(4), "none", [], "")
    except (AttributeError, RuntimeError):  # a torch without the op, or a build whose oneDNN refuses it
        return None
    return op if torch.equal(out, torch.full((2, 4), 4.0)) else None


@contextlib.contextmanager
def reduced_linears(model: torch.nn.Module, dtype: str) -> Iterator[None]:
    """Run `model`'s Linear layers with `dtype` weights and biases, the float32 ones put back after.

    Under autocast a float32 Linear's weight and bias are cast again at every call: with bf16 on a
    CPU those copies took a quarter of the time (torch.profiler, MiniLM). Cast once here, they are
    the very values autocast would make, so the embeddings are bit-identical and bf16 ran ~1.2x faster.
    Only plain `torch.nn.Linear` (not subclasses, which may read their weight in their own code).
    """
    import torch

    target = getattr(torch, dtype)
    if target == torch.float32:
        yield
        return
    saved = []
    for module in model.modules():
        if type(module) is not torch.nn.Linear:
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype == torch.float32:
                saved.append((module, name, param))
                module._parameters[name] = torch.nn.Parameter(param.detach().to(target), requires_grad=False)
    try:
        yield
    finally:
        for module, name, param in reversed(saved):
            module._parameters[name] = param


def to_device(features: dict[str, Any], device: str) -> dict[str, Any]:
    """Tensors to `device`; to CUDA through pinned memory without waiting, so copies overlap compute."""
    if device == "cpu":
        return features
    if device == "cuda":
        pinned = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in features.items()}
        return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in pinned.items()}
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
