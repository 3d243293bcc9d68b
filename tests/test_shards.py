"""Shards, merge and resume: merged shards and resumed runs equal a single run, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from st_cli import fsio
from st_cli.cli import app
from st_cli.encode.api import encode_file
from st_cli.encode.batching import DEFAULT_WINDOW
from st_cli.encode.journal import KILL_ENV, journal_path, partial_path
from st_cli.encode.shards import merge_shards, plan_shards, sidecar_path
from st_cli.errors import StError
from st_cli.model.model import Model, build, load_model

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
WINDOW = 4  # small windows: 45 rows are 12 windows
WORDS = "the a man woman is eating food playing horse cat dog movie new great text vector model".split()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_folder(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n    mode: mean\n",
        encoding="utf-8",
    )
    _, folder = build(recipe, root / "tiny")
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_folder: Path) -> Model:
    return load_model(tiny_folder)


def corpus(path: Path, n: int = 45, seed: int = 0) -> Path:
    """Texts of 0 to 30 words (some empty), so windows sort and batch differently."""
    rng = np.random.default_rng(seed)
    path.write_text("".join(" ".join(rng.choice(WORDS, size=int(rng.integers(0, 30)))) + "\n" for _ in range(n)))
    return path


def outputs_of(out: Path) -> dict[str, bytes]:
    """The output and its side files (not the shard sidecar), by suffix after the output's name."""
    found = {p.name[len(out.name) :]: p.read_bytes() for p in out.parent.glob(out.name + "*")}
    found.pop(".shard.json", None)
    assert "" in found, out
    return found


# ---------------------------------------------------------------- planning


@pytest.mark.parametrize(("rows", "count"), [(45, 1), (45, 2), (45, 3), (45, 7), (45, 13), (0, 3), (4, 2)])
def test_plan_covers_every_row_once_in_whole_windows(rows: int, count: int) -> None:
    plans = plan_shards(rows, WINDOW, count)
    assert [p.shard for p in plans] == list(range(count))
    assert sum(p.rows for p in plans) == rows
    row = 0
    for plan in plans:
        assert plan.first_row == row and plan.first_row % WINDOW == 0
        row += plan.rows
    assert all(p.rows % WINDOW == 0 for p in plans if p.first_row + p.rows < rows)


def test_cli_window_default_is_the_library_default() -> None:
    result = runner.invoke(app, ["encode", "--help"])
    assert result.exit_code == 0
    from st_cli.cli import encode as cli

    assert cli.encode.__kwdefaults__["window"] == DEFAULT_WINDOW


# ---------------------------------------------------------------- merged shards == a single run


JOBS = {
    "npy": (".npy", {}),
    "safetensors": (".safetensors", {}),
    "jsonl": (".jsonl", {}),
    "int8": (".npy", {"precision": "int8"}),
    "int8-safetensors": (".safetensors", {"precision": "int8"}),
    "skip-empty": (".npy", {"skip_empty": True, "normalize": True}),
    "binary-jsonl": (".jsonl", {"precision": "ubinary", "skip_empty": True}),
}


@pytest.mark.parametrize("count", [1, 2, 3, 7, 13])  # 13 > the 12 windows: some shards are empty
@pytest.mark.parametrize("job", list(JOBS))
def test_merged_shards_equal_a_single_run_byte_for_byte(tiny: Model, tmp_path: Path, job: str, count: int) -> None:
    suffix, options = JOBS[job]
    src = corpus(tmp_path / "in.txt")
    single = tmp_path / f"single{suffix}"
    encode_file(src, single, model=tiny, window=WINDOW, **options, threads=1)
    parts = []
    for i in range(count):
        part = tmp_path / "parts" / f"part{i}{suffix}"
        part.parent.mkdir(exist_ok=True)
        summary = encode_file(src, part, model=tiny, window=WINDOW, shard=(i, count), **options, threads=1)
        assert summary.shard is not None and summary.shard.rows == summary.rows
        assert sidecar_path(part) in summary.side_files
        parts.append(part)
    merged = tmp_path / f"merged{suffix}"
    summary = merge_shards(list(reversed(parts)), merged)  # any order
    assert summary.shards == count
    assert outputs_of(merged) == outputs_of(single)


def test_int8_shards_store_float32_and_merge_can_pick_another_precision(tiny: Model, tmp_path: Path) -> None:
    src = corpus(tmp_path / "in.txt")
    parts = [tmp_path / f"p{i}.npy" for i in range(3)]
    for i, part in enumerate(parts):
        encode_file(src, part, model=tiny, window=WINDOW, shard=(i, 3), precision="int8", threads=1)
        assert np.load(part).dtype == np.float32
        assert not part.with_name(part.name + ".calibration.json").exists()
    for precision in ("int8", "float16"):
        single = tmp_path / f"single-{precision}.npy"
        encode_file(src, single, model=tiny, window=WINDOW, precision=precision, threads=1)
        merged = tmp_path / f"merged-{precision}.npy"
        merge_shards(parts, merged, precision=None if precision == "int8" else precision)
        assert outputs_of(merged) == outputs_of(single)


def test_skip_empty_shards_note_global_line_numbers(tiny: Model, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a\n\nb\nc\n\n\nd\ne\nf\n")
    part = tmp_path / "p1.npy"
    encode_file(src, part, model=tiny, window=2, shard=(1, 3), skip_empty=True, threads=1)
    assert part.with_name("p1.npy.lines.txt").read_text() == "4\n7\n"  # rows 2-3: c and d


# ---------------------------------------------------------------- merge refuses what is not one whole job


@pytest.fixture
def three_parts(tiny_folder: Path, tmp_path: Path) -> list[Path]:
    src = corpus(tmp_path / "in.txt")
    parts = [tmp_path / f"p{i}.npy" for i in range(3)]
    for i, part in enumerate(parts):
        encode_file(src, part, model=tiny_folder, window=WINDOW, shard=(i, 3), threads=1)
    return parts


def merge_cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["merge", *map(str, args)])
    return result.exit_code, result.output


def test_cli_merge_writes_a_single_runs_output(tiny_folder: Path, three_parts: list[Path], tmp_path: Path) -> None:
    single = tmp_path / "single.safetensors"
    encode_file(tmp_path / "in.txt", single, model=tiny_folder, window=WINDOW, threads=1)
    code, output = merge_cli(*three_parts, "--out", tmp_path / "m.safetensors", "--json")
    assert code == 0, output
    assert json.loads(output)["rows"] == 45
    assert (tmp_path / "m.safetensors").read_bytes() == single.read_bytes()


def test_merge_errors_are_one_line_exit_2_naming_the_shard(three_parts: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "m.npy"
    p0, p1, p2 = three_parts
    cases = [
        ([p0, p2], "shard 1/3 is missing"),
        ([p0, p1, p2, p1], f"{p1}: shard 1/3 given twice"),
        ([p0, p1, tmp_path / "in.txt"], f"{tmp_path / 'in.txt'}: no in.txt.shard.json beside it"),
    ]
    for parts, message in cases:
        code, output = merge_cli(*parts, "--out", out)
        assert code == 2 and output.count("\n") == 1 and message in output, output
    assert not out.exists()


def test_merge_refuses_a_shard_of_another_job_or_a_changed_part(
    tiny_folder: Path, three_parts: list[Path], tmp_path: Path
) -> None:
    p0, p1, p2 = three_parts
    other = tmp_path / "other.npy"
    encode_file(tmp_path / "in.txt", other, model=tiny_folder, window=WINDOW, shard=(1, 3), normalize=True, threads=1)
    code, output = merge_cli(p0, other, p2, "--out", tmp_path / "m.npy")
    assert code == 2 and f"{other}: a shard of another job than {p0} (differs in: option normalize)" in output, output

    data = bytearray(p1.read_bytes())
    data[-1] ^= 1
    p1.write_bytes(bytes(data))
    code, output = merge_cli(p0, p1, p2, "--out", tmp_path / "m.npy")
    assert code == 2 and f"{p1}: its contents do not match the sha256" in output, output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("m.")) == []


def test_stdin_cannot_be_sharded_or_resumed(tiny_folder: Path, tmp_path: Path) -> None:
    for extra in (["--shard", "0/2"], ["--resume"]):
        result = runner.invoke(
            app, ["encode", "-", "--out", str(tmp_path / "o.npy"), "-m", str(tiny_folder), "-q", *extra], input="a\n"
        )
        assert result.exit_code == 2 and "stdin cannot be sharded or resumed" in result.output, result.output
    result = runner.invoke(app, ["encode", "x.txt", "--out", str(tmp_path / "o.npy"), "--shard", "3/3"])
    assert result.exit_code == 2 and "--shard '3/3': expected I/N" in result.output


# ---------------------------------------------------------------- resume after SIGKILL


def killed_run(src: Path, out: Path, model: Path, after: int, *extra: str) -> None:
    """`st encode` in a subprocess that SIGKILLs itself after `after` windows (before journaling the last).

    One torch thread here, and `threads=1` in every run these tests compare bytes with: rows are
    bit-identical across runs only at the same thread count (small matmuls split differently)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", KILL_ENV: str(after)}
    args = ["encode", str(src), "--out", str(out), "-m", str(model), "-q", "--window", str(WINDOW), *extra]
    proc = subprocess.run([sys.executable, "-m", "st_cli", *args], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()


@pytest.mark.parametrize(
    ("suffix", "extra"),
    [(".npy", []), (".jsonl", ["--skip-empty"]), (".safetensors", ["--precision", "int8", "--shard", "1/2"])],
)
def test_a_killed_run_resumes_to_the_same_bytes_recomputing_one_window(
    tiny_folder: Path, tmp_path: Path, suffix: str, extra: list[str]
) -> None:
    src = corpus(tmp_path / "in.txt")
    options: dict[str, Any] = {"skip_empty": "--skip-empty" in extra}
    if "--precision" in extra:
        options |= {"precision": "int8", "shard": (1, 2)}
    single = tmp_path / "single" / f"o{suffix}"
    single.parent.mkdir()
    encode_file(src, single, model=tiny_folder, window=WINDOW, **options, threads=1)

    out = tmp_path / f"o{suffix}"
    killed_run(src, out, tiny_folder, 3, *extra)
    assert partial_path(out).exists() and journal_path(out).exists()
    assert not [p for p in fsio.stale_temps(out) if "st-partial" in p.name]  # the partial run is not litter

    with pytest.raises(StError, match="an interrupted run of this same job left 8 of .* rows; continue it with --resume"):
        encode_file(src, out, model=tiny_folder, window=WINDOW, **options, threads=1)
    windows_done = 2  # the third window's rows were written, not journaled: redone
    if suffix == ".npy":  # a resumed run killed again
        killed_run(src, out, tiny_folder, 5, "--resume", *extra)
        windows_done = 4
    summary = encode_file(src, out, model=tiny_folder, window=WINDOW, resume=True, **options, threads=1)
    assert summary.resumed_rows == windows_done * WINDOW
    assert outputs_of(out) == outputs_of(single)
    assert not partial_path(out).exists() and not journal_path(out).exists()


def test_resume_refuses_a_changed_model_or_option_and_force_starts_over(
    tiny_folder: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    src = corpus(tmp_path / "in.txt")
    out = tmp_path / "o.npy"
    # One torch thread in every run: the rows compared at the end are bit-identical only at the same count.
    killed_run(src, out, tiny_folder, 2, "--threads", "1")
    with pytest.raises(StError, match=r"cannot resume: .*another job \(changed: option normalize\)"):
        encode_file(src, out, model=tiny_folder, window=WINDOW, resume=True, normalize=True, threads=1)
    other = tmp_path / "other"
    build_other = tmp_path / "r.yaml"
    build_other.write_text(
        f"modules:\n  - type: Transformer\n    model: {tiny_bert_dir}\n  - type: Pooling\n    mode: max\n"
    )
    build(build_other, other)
    with pytest.raises(StError, match=r"cannot resume: .*changed: model"):
        encode_file(src, out, model=other, window=WINDOW, resume=True, threads=1)
    code = runner.invoke(
        app, ["encode", str(src), "--out", str(out), "-m", str(tiny_folder), "--window", "4", "--resume", "--json", "--threads", "1"]
    )
    assert code.exit_code == 0, code.output
    assert json.loads(code.stdout)["resumed_rows"] == WINDOW

    killed_run(src, tmp_path / "again.npy", tiny_folder, 2, "--threads", "1")
    summary = encode_file(src, tmp_path / "again.npy", model=tiny_folder, window=WINDOW, force=True, threads=1)
    assert summary.resumed_rows == 0
    assert np.array_equal(np.load(tmp_path / "again.npy"), np.load(out))


def test_resume_under_another_spelling_of_the_model_is_another_job(tiny_folder: Path, tmp_path: Path) -> None:
    """The .safetensors header names the model as given, so its rows would start elsewhere: refused, not garbled."""
    src = corpus(tmp_path / "in.txt")
    out = tmp_path / "o.safetensors"
    (tmp_path / "link").symlink_to(tiny_folder)
    killed_run(src, out, tmp_path / "link", 2)
    with pytest.raises(StError, match=r"cannot resume: .*changed: model"):
        encode_file(src, out, model=tiny_folder, window=WINDOW, resume=True, threads=1)
    summary = encode_file(src, out, model=tmp_path / "link", window=WINDOW, resume=True, threads=1)
    assert summary.resumed_rows == 2 * WINDOW - WINDOW  # the second window was written, not journaled


# ---------------------------------------------------------------- --workers


def test_workers_on_cpu_equal_a_single_run_and_leave_nothing_behind(tiny_folder: Path, tmp_path: Path) -> None:
    src = corpus(tmp_path / "in.txt")
    single = tmp_path / "single" / "o.npy"
    single.parent.mkdir()
    encode_file(src, single, model=tiny_folder, window=WINDOW, precision="int8", skip_empty=True, threads=1)
    out = tmp_path / "o.npy"
    result = runner.invoke(
        app,
        ["encode", str(src), "--out", str(out), "-m", str(tiny_folder), "--window", "4", "--workers", "2"]
        + ["--precision", "int8", "--skip-empty", "--threads", "1", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == np.load(single).shape[0]
    assert outputs_of(out) == outputs_of(single)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.txt",
        "o.npy",
        "o.npy.calibration.json",
        "o.npy.lines.txt",
        "single",
    ]


def test_resume_keeps_a_finished_shard_of_the_same_job_only(tiny_folder: Path, tmp_path: Path) -> None:
    src = corpus(tmp_path / "in.txt")
    part = tmp_path / "p1.npy"
    first = encode_file(src, part, model=tiny_folder, window=WINDOW, shard=(1, 3), threads=1)
    before = part.stat().st_mtime_ns
    again = encode_file(src, part, model=tiny_folder, window=WINDOW, shard=(1, 3), resume=True, threads=1)
    assert (again.resumed_rows, again.shard) == (first.rows, first.shard)
    assert part.stat().st_mtime_ns == before  # not written again
    with pytest.raises(StError, match=r"p1.npy: a finished shard of another job \(changed: option normalize\)"):
        encode_file(src, part, model=tiny_folder, window=WINDOW, shard=(1, 3), resume=True, normalize=True, threads=1)
    encode_file(src, part, model=tiny_folder, window=WINDOW, shard=(1, 3), resume=True, normalize=True, force=True, threads=1)
    assert part.stat().st_mtime_ns != before


def test_a_worker_error_is_one_line_exit_2_and_leaves_nothing(tiny_folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"fine\nbad \xff byte\n")
    out = tmp_path / "o.npy"
    args = ["encode", str(src), "--out", str(out), "-m", str(tiny_folder), "--workers", "2", "--threads", "1"]
    result = runner.invoke(app, args)
    assert (
        result.exit_code == 2
        and result.output == f"error: {src}:2: invalid UTF-8 at byte 4; pass --errors replace to substitute U+FFFD\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_workers_progress_sums_the_rows_the_parts_journaled(tmp_path: Path) -> None:
    from st_cli.encode.journal import Journal
    from st_cli.encode.options import EncodeOptions
    from st_cli.encode.workers import _reporter

    src = tmp_path / "in.txt"
    src.write_text("a\n\nb\nc\n")
    parts = [tmp_path / "p0.npy", tmp_path / "p1.npy"]
    journal = Journal.open(parts[0], {"job": "x"}, resume=False, force=False)
    journal.record(2, {})
    seen: list[tuple[int, int, int]] = []
    report = _reporter([src], tmp_path / "o.npy", EncodeOptions(skip_empty=True), parts, lambda *a: seen.append(a))
    assert report is not None
    report()
    journal.close()
    assert seen == [(2, 3, 0)]


# ---------------------------------------------------------------- ids (--id-field) through shards, merge, resume


def id_corpus(path: Path, n: int = 45) -> Path:
    """corpus() as JSON lines with string ids that are not row numbers."""
    texts = corpus(path.with_suffix(".txt"), n).read_text().splitlines()
    path.write_text("".join(json.dumps({"id": f"doc-{97 * i % 1000}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def expected_ids(src: Path) -> list[str]:
    return [json.loads(line)["id"] for line in src.read_text().splitlines()]


@pytest.mark.parametrize(("part_suffix", "out_suffix"), [(".npy", ".parquet"), (".jsonl", ".npy"), (".parquet", ".jsonl")])
def test_ids_go_through_shards_and_merge_in_order(
    tiny_folder: Path, tmp_path: Path, part_suffix: str, out_suffix: str
) -> None:
    from st_cli.encode.outputs import read_ids

    src = id_corpus(tmp_path / "in.jsonl")
    single = tmp_path / f"single{out_suffix}"
    encode_file(src, single, model=tiny_folder, window=WINDOW, id_field="id", threads=1)
    parts = [tmp_path / f"p{i}{part_suffix}" for i in range(3)]
    for i, part in enumerate(parts):
        encode_file(src, part, model=tiny_folder, window=WINDOW, id_field="id", shard=(i, 3), threads=1)
    assert [v for p in parts for v in read_ids(p)] == expected_ids(src)
    merged = tmp_path / f"m{out_suffix}"
    summary = merge_shards(list(reversed(parts)), merged)
    assert list(read_ids(merged)) == expected_ids(src)
    assert outputs_of(merged) == outputs_of(single)
    if out_suffix == ".npy":
        assert merged.with_name("m.npy.ids.jsonl") in summary.side_files


def test_a_killed_run_with_ids_resumes_to_the_same_bytes(tiny_folder: Path, tmp_path: Path) -> None:
    src = id_corpus(tmp_path / "in.jsonl")
    single = tmp_path / "single" / "o.jsonl"
    single.parent.mkdir()
    encode_file(src, single, model=tiny_folder, window=WINDOW, id_field="id", skip_empty=True, threads=1)
    out = tmp_path / "o.jsonl"
    killed_run(src, out, tiny_folder, 3, "--id-field", "id", "--skip-empty")
    summary = encode_file(src, out, model=tiny_folder, window=WINDOW, resume=True, id_field="id", skip_empty=True, threads=1)
    assert summary.resumed_rows == 2 * WINDOW
    assert outputs_of(out) == outputs_of(single)
    kept = [json.loads(line) for line in src.read_text().splitlines() if json.loads(line)["text"]]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [r["id"] for r in kept]


def assert_no_journal(out: Path) -> None:
    assert not journal_path(out).exists()  # a Parquet file is finished by its footer: nothing to continue


def test_a_parquet_run_keeps_no_journal_and_resume_runs_it_whole(tiny_folder: Path, tmp_path: Path) -> None:
    src = id_corpus(tmp_path / "in.jsonl")
    single = tmp_path / "single" / "o.parquet"
    single.parent.mkdir()
    progress = lambda *_: assert_no_journal(single)  # noqa: E731
    encode_file(src, single, model=tiny_folder, window=WINDOW, id_field="id", progress=progress, threads=1)
    out = tmp_path / "o.parquet"
    summary = encode_file(src, out, model=tiny_folder, window=WINDOW, resume=True, id_field="id", threads=1)
    assert summary.resumed_rows == 0
    assert outputs_of(out) == outputs_of(single)
    assert summary.warnings == ["--resume: a .parquet output cannot be continued; encoding from the start"]


# ---------------------------------------------------------------- robustness round 3 (issue #24)


def encode_cli(*args: str | Path) -> Any:
    return runner.invoke(app, ["encode", *map(str, args)])


def rewrite_journal_rows(out: Path, rows: int) -> None:
    """Make the journal claim `rows` rows done: what a journal ahead of its data looks like."""
    header, entry = journal_path(out).read_bytes().split(b"\n")[:2]
    value = json.loads(entry)
    value["rows"] = rows
    journal_path(out).write_bytes(header + b"\n" + json.dumps(value).encode() + b"\n")


@pytest.mark.parametrize(
    ("suffix", "damage", "message"),
    [
        (".npy", "truncate", "cut short"),
        (".jsonl", "truncate", "cut short"),
        (".npy", "zero", "its rows do not match the checksum"),
        (".npy", "overclaim", "the journal names 12 rows, its checksum covers 8"),
        (".jsonl", "overclaim", "the journal names 12 rows, its checksum covers 8"),
    ],
)
def test_a_damaged_partial_run_is_refused_not_resumed_into_zero_rows(
    tiny_folder: Path, tmp_path: Path, suffix: str, damage: str, message: str
) -> None:
    """Resuming over a partial file cut short (an in-place writer extends it with zeros) or a journal ahead of
    its rows used to publish all-zero rows with exit 0. The journal's CRC-32 and sizes catch both."""
    src = corpus(tmp_path / "in.txt")
    out = tmp_path / f"o{suffix}"
    killed_run(src, out, tiny_folder, 3, "--threads", "1")  # 2 windows (8 rows) journaled
    partial = partial_path(out)
    if damage == "truncate":
        os.truncate(partial, partial.stat().st_size // 3 if suffix == ".npy" else 40)
    elif damage == "zero":
        data = bytearray(partial.read_bytes())
        data[200:260] = bytes(60)
        partial.write_bytes(bytes(data))
    else:
        rewrite_journal_rows(out, 12)
    before = partial.read_bytes()
    result = encode_cli(src, "--out", out, "-m", tiny_folder, "--window", WINDOW, "--resume", "--threads", "1")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and f"{out}: cannot resume: {partial.name}: {message}" in result.output
    assert result.output.rstrip().endswith("pass --force to start over")
    assert not out.exists() and partial.read_bytes() == before  # the damaged run is left as it was
    # --force with --resume starts over, saying so; the output equals an uninterrupted run
    single = tmp_path / "single" / f"o{suffix}"
    single.parent.mkdir()
    encode_file(src, single, model=tiny_folder, window=WINDOW, threads=1)
    summary = encode_file(src, out, model=tiny_folder, window=WINDOW, resume=True, force=True, threads=1)
    assert summary.resumed_rows == 0 and "starting over" in summary.warnings[0]
    assert outputs_of(out) == outputs_of(single)


def test_resume_of_a_finished_shard_under_another_shard_plan_is_refused(tiny_folder: Path, tmp_path: Path) -> None:
    """Shard 1/3 finished at PART, then `--shard 1/4 --resume` used to report success with shard 1/3's rows."""
    src = corpus(tmp_path / "in.txt")
    part = tmp_path / "p1.npy"
    encode_file(src, part, model=tiny_folder, window=WINDOW, shard=(1, 3), threads=1)
    before = part.read_bytes()
    result = encode_cli(src, "--out", part, "-m", tiny_folder, "--window", WINDOW, "--shard", "1/4", "--resume", "-q")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"{part}: a finished shard 1/3 of this job" in result.output and "not the shard 1/4 asked for" in result.output
    assert part.read_bytes() == before
    summary = encode_file(src, part, model=tiny_folder, window=WINDOW, shard=(1, 4), resume=True, force=True, threads=1)
    assert summary.shard is not None and (summary.shard.shard, summary.shard.of) == (1, 4)
    fresh = tmp_path / "fresh.npy"
    encode_file(src, fresh, model=tiny_folder, window=WINDOW, shard=(1, 4), threads=1)
    assert part.read_bytes() == fresh.read_bytes()


@pytest.mark.parametrize("side", [".lines.txt", ".ids.jsonl"])
def test_merge_refuses_an_edited_or_missing_side_file(tiny_folder: Path, tmp_path: Path, side: str) -> None:
    """An edited PART.lines.txt used to give an OUT.lines.txt that disagrees with the rows, exit 0."""
    src = id_corpus(tmp_path / "in.jsonl")
    options: dict[str, Any] = {"skip_empty": True} if side == ".lines.txt" else {"id_field": "id"}
    parts = [tmp_path / f"p{i}.npy" for i in range(3)]
    for i, part in enumerate(parts):
        encode_file(src, part, model=tiny_folder, window=WINDOW, shard=(i, 3), threads=1, **options)
    edited = parts[1].with_name(parts[1].name + side)
    original = edited.read_text()
    first, second, *rest = original.splitlines(keepends=True)
    edited.write_text("".join([second, first, *rest]))  # two ids (or line numbers) swapped: still well-formed
    code, output = merge_cli(*parts, "--out", tmp_path / "m.npy")
    assert code == 2 and output.count("\n") == 1, output
    assert f"{edited}: its contents do not match the sha256 in p1.npy.shard.json" in output
    edited.unlink()
    code, output = merge_cli(*parts, "--out", tmp_path / "m.npy")
    assert code == 2 and f"{edited}: missing (p1.npy.shard.json lists it)" in output, output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("m.")]
    # and --resume does not take the damaged shard for a finished one
    with pytest.raises(StError, match=f"a finished shard of this job whose file {edited.name} no longer matches"):
        encode_file(src, parts[1], model=tiny_folder, window=WINDOW, shard=(1, 3), resume=True, threads=1, **options)


def test_a_shard_count_beyond_any_loop_answers_at_once(tiny_folder: Path, tmp_path: Path) -> None:
    """`--shard 0/100000000000000000000000` on a 3-line input used to hang (a loop over every shard)."""
    from st_cli.encode.shards import check_shards, plan_shard, read_sidecar

    huge = 100000000000000000000000
    assert plan_shard(3, 8192, (0, huge)).rows == 0 and plan_shard(3, 8192, (huge - 1, huge)).rows == 3
    src = tmp_path / "in.txt"
    src.write_text("a\nb\nc\n")
    result = encode_cli(src, "--out", tmp_path / "p.npy", "-m", tiny_folder, "--shard", f"0/{huge}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 0
    part = tmp_path / "p.npy"
    with pytest.raises(StError, match=f"shard 1/{huge} is missing \\({huge - 1} of {huge} missing\\)"):
        check_shards([part], [read_sidecar(part)])


def test_resume_with_nothing_to_resume_says_so(tiny_folder: Path, tmp_path: Path) -> None:
    src = corpus(tmp_path / "in.txt", n=5)
    out = tmp_path / "o.npy"
    result = encode_cli(src, "--out", out, "-m", tiny_folder, "--resume", "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    said = f"--resume: nothing to resume for {out}; encoding from the start"
    assert json.loads(result.stdout)["warnings"] == [said]
    assert f"warning: {said}" in result.stderr
    out.unlink()
    result = encode_cli(src, "--out", out, "-m", tiny_folder, "--workers", "2", "--resume", "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == [said]


def test_resume_added_to_a_killed_force_run_continues_it(tiny_folder: Path, tmp_path: Path) -> None:
    """README: "the same command with --resume" goes on; a --force run over an existing output used to start over."""
    src = corpus(tmp_path / "in.txt")
    single = tmp_path / "single" / "o.npy"
    single.parent.mkdir()
    encode_file(src, single, model=tiny_folder, window=WINDOW, threads=1)
    out = tmp_path / "o.npy"
    out.write_bytes(single.read_bytes()[:200])  # an older output, replaced with --force
    killed_run(src, out, tiny_folder, 3, "--force", "--threads", "1")
    result = encode_cli(src, "--out", out, "-m", tiny_folder, "--window", WINDOW, "--force", "--resume", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed_rows"] == 2 * WINDOW
    assert out.read_bytes() == single.read_bytes()


def test_a_resumed_run_goes_on_with_the_thread_count_its_journal_recorded(tiny_folder: Path, tmp_path: Path) -> None:
    """Rows are bit-identical only at one thread count, and the default count follows the machine's load:
    the journal records the count and a resumed run keeps it (a --threads that differs gets a warning)."""
    src = corpus(tmp_path / "in.txt")
    single = tmp_path / "single" / "o.npy"
    single.parent.mkdir()
    encode_file(src, single, model=tiny_folder, window=WINDOW, threads=1)
    out = tmp_path / "o.npy"
    killed_run(src, out, tiny_folder, 3, "--threads", "1")
    assert json.loads(journal_path(out).read_bytes().split(b"\n")[1])["threads"] == 1
    summary = encode_file(src, out, model=tiny_folder, window=WINDOW, resume=True, threads=2)
    assert summary.threads == 1 and summary.resumed_rows == 2 * WINDOW
    assert summary.warnings == [f"{out}: resuming on the 1 torch threads the interrupted run's rows ran on (not 2), "
                                "so the rows equal an uninterrupted run's"]  # fmt: skip
    assert out.read_bytes() == single.read_bytes()
    out.unlink()
    killed_run(src, out, tiny_folder, 3, "--threads", "1")
    summary = encode_file(src, out, model=tiny_folder, window=WINDOW, resume=True)  # the default: no warning
    assert (summary.threads, summary.warnings) == (1, [])
    assert out.read_bytes() == single.read_bytes()
