"""The one typed options object of an encode job (`EncodeOptions`), its report (`EncodeSummary`), and
`--kw` parsing. The CLI builds an `EncodeOptions`; `encode_file`, the worker processes and Ray's actors
take it whole, so an option is spelled once here and once as a typer option.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_cli.encode.batching import DEFAULT_MAX_BATCH_TOKENS, DEFAULT_WINDOW, PAD_MULTIPLE
from st_cli.encode.device import (
    AUTO_DTYPE,
    DEVICE_MAX_BATCH_TOKENS,
    DEVICE_PREFETCH,
    DEVICES,
    DTYPES,
)
from st_cli.encode.inputs import ReadOptions
from st_cli.encode.outputs import OUTPUT_SUFFIXES, PRECISIONS, writer_for
from st_cli.errors import StError

if TYPE_CHECKING:
    from st_cli.encode.shards import ShardInfo

ERRORS = ("strict", "replace")

ProgressFn = Callable[[int, int, int], None]  # (rows done, rows total, tokens done)
WarnFn = Callable[[str], None]  # told at once what a run does otherwise than asked (--resume with nothing to resume)


@dataclass(frozen=True)
class EncodeOptions:
    """Everything that shapes an encode job except its inputs, output and model.

    Attributes:
        field: the field holding the text in .jsonl/.json/.parquet inputs.
        column: the column holding the text in .csv/.tsv inputs.
        id_field: the field (or column) holding each record's id, carried into the output in input order.
        input_format: read every input as this (`jsonl`, `csv.gz`; see inputs.INPUT_FORMATS), not by suffix.
        kwargs: encode-time keyword arguments for the modules that declare them in modules.json.
        skip_empty: drop empty records and write the kept line numbers to OUTPUT.lines.txt.
        errors: "strict" (invalid UTF-8 is an error naming file and line) or "replace".
        max_batch_tokens: padded tokens per batch; `batch_size` also caps the rows.
        window: records sorted together; memory grows with it, not with the input.
        prefetch: tokenize the next window in a background thread while the model runs.
        backend: "torch", or run the Transformer's exported file in "onnx" (ONNX Runtime) or "openvino";
            the modules after it run as on torch (model/runtime.py). A folder with exported files and no
            torch weights runs on its exported file whatever this says.
        backend_file: the exported file to run, relative to the folder (onnx/model_qint8_avx512_vnni.onnx);
            default sentence-transformers' choice (onnx/model.onnx, openvino/openvino_model.xml).
        max_active_dims: a SparseEncoder keeps this many largest values per row (ST's max_active_dims).
        decode: a SparseEncoder's .jsonl rows name tokens ({token: weight}) instead of dimensions.
    """

    field: str = "text"
    column: str = "text"
    id_field: str | None = None
    input_format: str | None = None
    precision: str = "float32"
    truncate_dim: int | None = None
    normalize: bool = False
    prompt_name: str | None = None
    prompt: str | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    skip_empty: bool = False
    errors: str = "strict"
    max_batch_tokens: int | None = None  # None: by device (DEVICE_MAX_BATCH_TOKENS, else 512)
    batch_size: int | None = None
    device: str = "cpu"
    dtype: str = "auto"
    threads: int | None = None
    force: bool = False
    trust_remote_code: bool = False
    window: int = DEFAULT_WINDOW
    prefetch: bool | None = None  # None: by device (DEVICE_PREFETCH)
    pad_multiple: int = PAD_MULTIPLE
    backend: str = "torch"
    backend_file: str | None = None
    max_active_dims: int | None = None
    decode: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", dict(self.kwargs or {}))  # None or any mapping: a plain dict of its own

    @classmethod
    def of(cls, options: EncodeOptions | None = None, **fields: Any) -> EncodeOptions:
        """`options` (default: every default) with single `fields` replaced; an unknown field is a TypeError."""
        return dataclasses.replace(options or cls(), **fields)

    @property
    def read(self) -> ReadOptions:
        return ReadOptions(field=self.field, column=self.column, errors=self.errors, id_field=self.id_field)

    def for_device(self, device: str) -> EncodeOptions:
        """These options with the device-dependent defaults (dtype, batch budget, prefetch) filled in."""
        dtype = AUTO_DTYPE.get(device, "float32") if self.dtype == "auto" else self.dtype
        budget = DEVICE_MAX_BATCH_TOKENS.get(device, DEFAULT_MAX_BATCH_TOKENS)
        return dataclasses.replace(
            self,
            device=device,
            dtype=dtype,
            max_batch_tokens=self.max_batch_tokens or budget,
            prefetch=DEVICE_PREFETCH.get(device, False) if self.prefetch is None else self.prefetch,
        )

    def check(self, output: Path) -> None:
        """Refuse bad values with one line naming the option, before anything is read."""
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise StError(f"{output}: unknown output type {output.suffix!r}; use {', '.join(OUTPUT_SUFFIXES)}")
        spec = writer_for(output)
        if spec is not None:
            spec.check_installed()
        for name, allowed in (("precision", PRECISIONS), ("dtype", DTYPES), ("errors", ERRORS), ("device", DEVICES)):
            value = getattr(self, name)
            if value not in allowed:
                raise StError(f"--{name}: expected one of {', '.join(allowed)}, got {value!r}")
        if (self.max_batch_tokens is not None and self.max_batch_tokens < 1) or self.window < 1:
            raise StError("--max-batch-tokens and the window size must be positive")
        if self.truncate_dim is not None and self.truncate_dim <= 0:
            raise StError(f"--truncate-dim must be positive, got {self.truncate_dim}")
        if self.max_active_dims is not None and self.max_active_dims <= 0:
            raise StError(f"--max-active-dims must be positive, got {self.max_active_dims}")
        if self.decode and output.suffix.lower() != ".jsonl":
            raise StError(f"--decode writes {{token: weight}} rows, which only .jsonl holds; got {output.name}")
        self.check_backend()

    def check_backend(self) -> None:
        """An exported file runs on the CPU in its own precision: no torch device or dtype applies."""
        from st_cli.model.runtime import BACKENDS, TORCH

        if self.backend not in BACKENDS:
            raise StError(f"--backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == TORCH:
            if self.backend_file is not None:
                raise StError("--backend-file: give --backend onnx or --backend openvino with it")
            return
        if self.device not in ("cpu", "auto"):
            raise StError(f"--backend {self.backend} runs on the CPU; --device {self.device} is for --backend torch")
        if self.dtype not in ("auto", "float32"):
            raise StError(
                f"--backend {self.backend}: the exported file sets its own precision (an int8 file: "
                f"--backend-file onnx/model_qint8_avx512_vnni.onnx); --dtype {self.dtype} is for --backend torch"
            )


@dataclass
class EncodeSummary:
    """What `encode_file` did. `to_json()` keys are part of the CLI's `--json` API."""

    output: Path
    rows: int
    dimension: int
    precision: str
    skipped_empty: int = 0
    truncated: int = 0
    tokens: int = 0  # real tokens, after truncation
    padded_tokens: int = 0  # tokens the model ran, padding included
    seconds: float = 0.0  # encoding, from the loaded model to the renamed output
    load_seconds: float = 0.0  # reading the inputs once and loading the model
    threads: int = 0  # threads the batches ran with (torch: st's policy unless --threads; static: the pool)
    side_files: list[Path] = dataclasses.field(default_factory=list)
    resumed_rows: int = 0  # rows a killed run had finished (--resume): not encoded again
    shard: ShardInfo | None = None  # what --shard I/N wrote to OUTPUT.shard.json
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. --resume found nothing to resume
    backend: str = "torch"  # what ran the Transformer (model/runtime.py)
    backend_file: str | None = None  # the exported file it ran, relative to the model folder
    notes: list[str] = dataclasses.field(default_factory=list)  # for stderr: a choice st made that the user did not

    @property
    def texts_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_fraction(self) -> float:
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "rows": self.rows,
            "dimension": self.dimension,
            "precision": self.precision,
            "skipped_empty": self.skipped_empty,
            "truncated": self.truncated,
            "tokens": self.tokens,
            "padding_fraction": round(self.padding_fraction, 4),
            "seconds": round(self.seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
            "threads": self.threads,
            "texts_per_second": round(self.texts_per_second, 1),
            "side_files": [str(p) for p in self.side_files],
            "resumed_rows": self.resumed_rows,
            "shard": _shard_json(self.shard),
            "warnings": list(self.warnings),
            "backend": self.backend,
            "backend_file": self.backend_file,
        }


def _shard_json(info: ShardInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    keys = ("shard", "of", "first_row", "rows", "total_rows", "window", "precision", "sha256", "job")
    return {key: getattr(info, key) for key in keys}


def parse_kwargs(pairs: Iterable[str]) -> dict[str, Any]:
    """`key=value` strings to a dict; a value that parses as JSON (1, true, [..]) is decoded, else kept as text."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise StError(f"--kw {pair!r}: expected key=value")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value
    return kwargs
