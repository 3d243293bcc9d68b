"""Where and in what precision batches run: the device policy, autocast, and the allocator setting.

torch is imported inside the functions that need it: `options.py` reads this file's tables, and `st --help`
must stay light.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from st_cli.errors import StError

if TYPE_CHECKING:
    from st_cli.model.model import Model

DEVICES = ("cpu", "cuda", "mps", "auto")

DTYPES = ("auto", "float32", "float16", "bfloat16")

# What "auto" runs per device: GPUs have fast float16 units; on CPUs float32 is exact and a reduced
# dtype is an explicit choice (bfloat16 ~2x where the CPU has it, see docs/explanation/performance.md).
AUTO_DTYPE = {"cuda": "float16"}

# Padded tokens per batch by device when --max-batch-tokens is not given: a GPU needs big batches
# to fill its units, a CPU wants the activations to stay in cache (see batching.py).
DEVICE_MAX_BATCH_TOKENS = {"cuda": 16384, "mps": 4096}

# ...and by device and dtype where that differs: a CPU's bfloat16 matmul kernels (AMX, avx512_bf16)
# want more rows per call, float32's do not (1,000 lines of MiniLM on 2 cores: bfloat16 1.48x float32
# at 512 tokens, 2.18x at 1,024, 2.24x at 2,048; float32 itself 1.02x at 1,024).
DTYPE_MAX_BATCH_TOKENS = {("cpu", "bfloat16"): 2048}

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
    if _mmap_threshold_pinned or size <= 0 or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, size)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        return
    _mmap_threshold_pinned = True


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


@contextlib.contextmanager
def reduced_linears(model: Model, dtype: str) -> Iterator[None]:
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
