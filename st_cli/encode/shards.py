"""Past one machine (docs/explanation/design.md): shards of whole windows, their sidecars, and merging them.

A job's output rows (the records as `st encode` counts them, after --skip-empty) are cut into
windows of `window` rows. Shard I of N is a contiguous run of whole windows, so every window is read,
sorted and batched exactly as in a single run and the merged shards equal that run bit for bit.
Each finished shard `PART` has a sidecar `PART.shard.json` (`ShardInfo`): where its rows go, the
sha256 of PART, and the job's fingerprint, so `merge_shards` can refuse a missing, duplicated,
damaged or foreign shard by name. Torch-free: `st merge` never loads a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from st_cli import fsio
from st_cli._version import __version__
from st_cli.encode.outputs import (
    CALIBRATED,
    OUTPUT_SUFFIXES,
    PRECISIONS,
    Sink,
    ids_path,
    read_ids,
    read_rows,
    side_paths,
    write_ids,
)
from st_cli.encode.sparse_outputs import SparseOutput, is_sparse_output
from st_cli.errors import StError

SIDECAR_SUFFIX = ".shard.json"
SIDECAR_FORMAT = "st_cli.shard"
SIDECAR_VERSION = 2  # 2: `side_files`, the sha256 of each side file a merge reads
VERSIONED = ("torch", "transformers")  # besides st_cli itself: their versions can change the numbers


# ---------------------------------------------------------------- planning


@dataclass(frozen=True)
class ShardPlan:
    """Rows [first_row, first_row + rows) of the job's output: whole windows (the last may be short)."""

    shard: int
    of: int
    first_row: int
    rows: int


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (0-based I) → (I, N); a one-line error otherwise."""
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (-1, 0)
    if not sep or not valid_shard(shard):
        raise StError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 for the first of four shards")
    return shard


def valid_shard(shard: tuple[int, int]) -> bool:
    index, count = shard
    return count >= 1 and 0 <= index < count


def plan_shards(total_rows: int, window: int, count: int) -> list[ShardPlan]:
    """N contiguous runs of whole windows, as even as windows allow; with N > windows some are empty."""
    return [_plan(total_rows, window, (shard, count)) for shard in range(count)]


def plan_shard(total_rows: int, window: int, shard: tuple[int, int] | None) -> ShardPlan:
    """The rows one run encodes: the whole job, or its shard (computed alone: `--shard 0/10**23` is instant)."""
    if shard is None:
        return ShardPlan(0, 1, 0, total_rows)
    return _plan(total_rows, window, shard)


def _plan(total_rows: int, window: int, shard: tuple[int, int]) -> ShardPlan:
    index, count = shard
    windows = -(-total_rows // window)
    first = min(index * windows // count * window, total_rows)
    end = min((index + 1) * windows // count * window, total_rows)
    return ShardPlan(index, count, first, end - first)


def stored_precision(precision: str, sharded: bool) -> str:
    """int8/uint8 are calibrated over all rows: a shard stores float32 and the merge quantizes."""
    return "float32" if sharded and precision in CALIBRATED else precision


# ---------------------------------------------------------------- the job's fingerprint


def fingerprint(
    inputs: Sequence[Path],
    input_names: Sequence[str],
    model: Mapping[str, str],
    options: Mapping[str, Any],
    versioned: Sequence[str] = VERSIONED,
) -> dict[str, Any]:
    """What makes two runs one job: inputs (name, size, mtime), the model's file hashes, every
    option that changes the output, and the versions of st_cli and of `versioned`, the packages that
    compute it."""
    files = []
    for name, path in zip(input_names, inputs, strict=True):
        st = path.stat()
        files.append({"name": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {
        "inputs": files,
        "model": dict(model),
        "options": json.loads(json.dumps(dict(options), sort_keys=True, default=str)),  # as a journal reads it back
        "versions": {"st_cli": __version__, **{name: _version(name) for name in versioned}},
    }


def _version(package: str) -> str:
    """A package's version: an imported one's own `__version__` (importlib.metadata scans every folder on
    sys.path, 35 ms of a static model's start-up), else its installed metadata."""
    loaded = getattr(sys.modules.get(package), "__version__", None)
    if loaded is not None:
        return str(loaded)
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def job_id(fp: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Which parts of two fingerprints differ, for messages: `inputs`, `model`, `option truncate_dim`, …"""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key in ("options", "versions"):
            changed += [f"{key[:-1]} {k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    return changed


# ---------------------------------------------------------------- the sidecar


@dataclass(frozen=True)
class ShardInfo:
    """`PART.shard.json`: a finished shard. `to_json()` keys are the file format (docs/reference/st-formats.md)."""

    shard: int
    of: int
    first_row: int
    rows: int
    total_rows: int
    window: int
    dimension: int
    precision: str  # what PART stores (float32 for an int8/uint8 job)
    job_precision: str  # what the job asked for: the merge's default
    model: str  # the model as named on the command line (it goes into .safetensors metadata)
    sha256: str  # of PART
    lines: bool  # --skip-empty: PART.lines.txt holds the kept records' global line numbers
    side_files: Mapping[str, str]  # sha256 of each side file (PART.lines.txt, PART.ids.jsonl) by its suffix
    job: str  # sha256 of the fingerprint
    fingerprint: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, raw: Any, where: Path) -> ShardInfo:
        if not isinstance(raw, dict) or raw.get("format") != SIDECAR_FORMAT:
            raise StError(f'{where}: not a shard sidecar (no "format": "{SIDECAR_FORMAT}")')
        if raw.get("version") != SIDECAR_VERSION:
            raise StError(
                f"{where}: a shard sidecar of version {raw.get('version')!r}; this st reads version "
                f"{SIDECAR_VERSION}: run that shard again"
            )
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                raise StError(f"{where}: no key {f.name!r}; the sidecar is damaged")
            values[f.name] = raw[f.name]
        try:
            info = cls(**values)
        except TypeError as e:
            raise StError(f"{where}: {e}") from None
        if not isinstance(info.side_files, dict) or not all(isinstance(v, str) for v in info.side_files.values()):
            raise StError(f"{where}: side_files: expected {{suffix: sha256}}; the sidecar is damaged")
        if not valid_shard((info.shard, info.of)) or info.first_row < 0 or info.rows < 0:
            raise StError(
                f"{where}: shard {info.shard}/{info.of}, rows {info.first_row}+{info.rows}: not a valid shard"
            )
        return info


def sidecar_path(part: Path) -> Path:
    return part.with_name(part.name + SIDECAR_SUFFIX)


def lines_path(part: Path) -> Path:
    return part.with_name(part.name + ".lines.txt")


def read_sidecar(part: Path) -> ShardInfo:
    path = sidecar_path(part)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StError(f"{part}: no {path.name} beside it; not a finished shard (run st encode --shard I/N)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StError(f"{path}: unreadable: {e}") from None
    return ShardInfo.from_json(raw, path)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def side_file_hashes(part: Path, written: Mapping[Path, Path]) -> dict[str, str]:
    """`side_files` of a sidecar: {suffix after PART's name: sha256} of `written` (final path → file holding it)."""
    return {path.name[len(part.name) :]: file_sha256(temp) for path, temp in written.items()}


def damaged_file(part: Path, info: ShardInfo) -> Path | None:
    """The first of PART and its side files whose contents no longer match the sidecar's sha256 (None: intact).

    Every file a merge reads is checked: an edited PART.lines.txt would otherwise give a merged
    OUT.lines.txt that disagrees with the rows."""
    expected = {path.name[len(part.name) :] for path in side_paths_of(part, info).values()}
    if set(info.side_files) != expected:
        return sidecar_path(part)
    for path, digest in [(part, info.sha256)] + [(_beside(part, s), d) for s, d in sorted(info.side_files.items())]:
        if not path.is_file() or file_sha256(path) != digest:
            return path
    return None


def side_paths_of(part: Path, info: ShardInfo) -> dict[str, Path]:
    """The side files a shard has, as a merge reads them (--skip-empty's lines, --id-field's ids)."""
    with_ids = info.fingerprint.get("options", {}).get("id_field") is not None
    return side_paths(part, skip_empty=info.lines, precision=info.precision, ids=with_ids)


def _beside(part: Path, suffix: str) -> Path:
    return part.with_name(part.name + suffix)


def finished_shard(part: Path, job: str) -> ShardInfo | None:
    """The sidecar of `part` if it is a finished shard of `job` whose files still match it, else None."""
    try:
        info = read_sidecar(part)
    except StError:
        return None
    if info.job != job or damaged_file(part, info) is not None:
        return None
    return info


# ---------------------------------------------------------------- merging


@dataclass
class MergeSummary:
    """What `merge_shards` did. `to_json()` keys are part of the CLI's `--json` API."""

    output: Path
    shards: int
    rows: int
    dimension: int
    precision: str
    seconds: float = 0.0
    side_files: list[Path] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "shards": self.shards,
            "rows": self.rows,
            "dimension": self.dimension,
            "precision": self.precision,
            "seconds": round(self.seconds, 3),
            "side_files": [str(p) for p in self.side_files],
        }


def check_shards(parts: Sequence[Path], infos: Sequence[ShardInfo]) -> list[tuple[Path, ShardInfo]]:
    """Shards 0..N-1 each exactly once, of one job, with contiguous rows; returns them in order."""
    if not parts:
        raise StError("no shards: give the PART files written by st encode --shard I/N")
    first_part, first = parts[0], infos[0]
    by_index: dict[int, Path] = {}
    for part, info in zip(parts, infos, strict=True):
        if info.job != first.job or info.of != first.of:
            changed = ", ".join(differences(first.fingerprint, info.fingerprint)) or f"{info.of} shards"
            raise StError(f"{part}: a shard of another job than {first_part} (differs in: {changed})")
        if info.shard in by_index:
            raise StError(f"{part}: shard {info.shard}/{info.of} given twice (also {by_index[info.shard]})")
        by_index[info.shard] = part
    if len(by_index) != first.of:  # the first missing index is at most len(parts): never a loop over N
        missing = next(i for i in range(len(by_index) + 1) if i not in by_index)
        raise StError(f"shard {missing}/{first.of} is missing ({first.of - len(by_index)} of {first.of} missing)")
    ordered = [(by_index[i], infos[parts.index(by_index[i])]) for i in range(first.of)]
    row = 0
    for part, info in ordered:
        if info.first_row != row:
            raise StError(f"{part}: shard {info.shard} starts at row {info.first_row}, expected {row}")
        row += info.rows
    if row != first.total_rows:
        raise StError(f"{ordered[-1][0]}: the shards end at row {row}, the job has {first.total_rows}")
    return ordered


def merge_shards(
    parts: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    precision: str | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> MergeSummary:
    """Check the shards of one `st encode --shard I/N` job and write their rows, in order, to `out`
    (any output format), under a temp name published at the end: equal to a single run of the job.

    Args:
        precision: the output precision; default the job's. From float32 shards any precision works.
        progress: called with (rows written, rows total).
    """
    from st_cli.encode.publish import claim_outputs, publish_all

    started = time.perf_counter()
    paths = [Path(p) for p in parts]
    target = Path(out)
    if target.suffix.lower() not in OUTPUT_SUFFIXES:
        raise StError(f"{target}: unknown output type {target.suffix!r}; use {', '.join(OUTPUT_SUFFIXES)}")
    ordered = check_shards(paths, [read_sidecar(p) for p in paths])
    first = ordered[0][1]
    chosen = precision or first.job_precision
    _check_precision(chosen, first.precision)
    for part, info in ordered:
        damaged = damaged_file(part, info)
        if damaged == sidecar_path(part):
            raise StError(f"{damaged}: its side_files do not match the job's options; re-run that shard")
        if damaged is not None and not damaged.exists():
            raise StError(f"{damaged}: missing ({sidecar_path(part).name} lists it); re-run that shard")
        if damaged is not None:
            raise StError(
                f"{damaged}: its contents do not match the sha256 in {sidecar_path(part).name}; re-run that shard"
            )
    with_ids = first.fingerprint.get("options", {}).get("id_field") is not None
    side = side_paths(target, skip_empty=first.lines, precision=chosen, ids=with_ids)
    inputs = [str(p) for p in paths] + [str(lines_path(p)) for p in paths if first.lines]
    inputs += [str(ids_path(p)) for p in paths if with_ids]
    claims = dict(zip(["output", *side], claim_outputs([target, *side.values()], inputs, force), strict=True))
    metadata = {"format": "st_cli.encode", "model": first.model, "precision": chosen, "rows": str(first.total_rows)}
    summary = MergeSummary(target, first.of, first.total_rows, first.dimension, chosen)
    temps: dict[str, Path] = {}
    def ids(start: int) -> Iterator[Any]:  # the parts' ids, in order (inside them, or in PART.ids.jsonl)
        return itertools.islice(itertools.chain.from_iterable(read_ids(part) for part, _ in ordered), start, None)

    sparse = SparseOutput() if is_sparse_output(ordered[0][0]) else None  # a SparseEncoder's parts stay sparse
    if sparse is not None:
        metadata["model_type"] = "SparseEncoder"
    sink = Sink(target, first.total_rows, first.dimension, chosen, metadata, ids=ids if with_ids else None,
                sparse=sparse)  # fmt: skip
    try:
        for part, info in ordered:
            _copy_rows(part, info, sink, progress, first.total_rows)
        if "lines" in side:
            temps["lines"] = _concatenate([lines_path(part) for part, _ in ordered], side["lines"])
        if "ids" in side:
            temps["ids"] = fsio.temp_file(side["ids"])
            write_ids(temps["ids"], ids(0))
        temps["output"] = sink.finish()
        if "calibration" in side:
            temps["calibration"] = fsio.temp_file(side["calibration"])
            temps["calibration"].write_text(json.dumps(sink.calibration(), indent=2) + "\n", encoding="utf-8")
        publish_all(temps, claims, order=[*side, "output"])
    except OSError as e:
        raise fsio.write_error(e, target) from None
    finally:
        sink.discard()
        for path in temps.values():
            fsio.remove(path)
    summary.side_files = list(side.values())
    summary.seconds = time.perf_counter() - started
    return summary


def _check_precision(chosen: str, stored: str) -> None:
    if chosen not in PRECISIONS:
        raise StError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {chosen!r}")
    if stored != "float32" and chosen != stored:
        raise StError(
            f"--precision {chosen}: the shards store {stored}, so only {stored} can be written "
            "(encode the shards with --precision float32 to choose at merge time)"
        )


def _copy_rows(
    part: Path, info: ShardInfo, sink: Sink, progress: Callable[[int, int], None] | None, total: int
) -> None:
    row = info.first_row
    for block in read_rows(part, info.precision, info.dimension):
        if row + len(block) > info.first_row + info.rows:
            raise StError(f"{part}: holds more than the {info.rows} rows its sidecar says")
        if info.precision == "float32":
            sink.write(row, block)
        else:
            sink.write_stored(row, block)
        row += len(block)
        if progress is not None:
            progress(row, total)
    if row != info.first_row + info.rows:
        raise StError(f"{part}: holds {row - info.first_row} rows, its sidecar says {info.rows}")


def _concatenate(sources: Sequence[Path], target: Path) -> Path:
    tmp = fsio.temp_file(target)
    with open(tmp, "wb") as out:
        for source in sources:
            try:
                with open(source, "rb") as f:
                    while block := f.read(1 << 20):
                        out.write(block)
            except FileNotFoundError:
                raise StError(f"{source}: missing; a --skip-empty shard keeps its line numbers there") from None
    return tmp
