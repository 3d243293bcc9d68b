"""Ray Data: `st encode --ray` runs st's own shards on an actor pool and merges them (docs/explanation/design.md).

Ray only schedules. The driver reads and counts the inputs with st's readers (Ray's `read_text`
counts lines differently: it drops blank lines and splits on form feeds), plans shards of whole
windows, and hands shard numbers to a pool of actors. Each actor loads the model once and runs
exactly `st encode --shard I/N --resume` into a parts folder beside the output; a part whose
`.shard.json` is valid is not run again, so a rerun of the same command only does what is missing,
and an actor Ray restarts resumes its shard from the last completed window. The parts are then
merged into the output, bit for bit what one `st encode` with the workers' thread count gives.

`Embedder` is the other way in: a callable class for the user's own Ray Data pipelines.

Ray is an optional extra (`pip install 'st-cli[ray]'`): it is imported inside these functions only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import queue
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from st_cli.errors import StError

if TYPE_CHECKING:
    from st_cli.encode.batching import BatchPlan
    from st_cli.encode.options import EncodeOptions
    from st_cli.model.model import Model
    from st_cli.model.runtime import RuntimeEncoder

RAY_MISSING = "Ray is not installed: pip install 'st-cli[ray]'"
# CPUs a local cluster declares beyond the actor pool's: Ray Data's own tasks (reading the shard
# list, handing out results) need CPUs too, and a pool holding every CPU hung silently (docs/explanation/design.md).
SPARE_CPUS = 2
# Times Ray restarts a dead actor, and retries the shard it was running (which then resumes).
# Ray Data's default is forever: a shard that kills every actor that runs it would never end.
RESTARTS = 3
# Test-only: MARKER[@SHARD]; the first actor to enter a second window of a shard (of shard SHARD)
# creates MARKER and dies (os._exit), so tests see Ray restart it and the shard resume. Never set it
# in real use.
KILL_ENV = "ST_TEST_RAY_KILL"
# How long the pool may take to start every actor before the job fails (a cluster without the
# CPUs or GPUs asked for would otherwise wait forever).
ACTOR_START_SECONDS = 300

# A local cluster st starts runs its workers at st's own priority. Ray's default (worker_niceness
# 15) keeps its daemons responsive on shared clusters, but on one machine it hands every core to any
# other process: with a CPU burner beside it, 800 lines took 37-62 s on the actor instead of 19 s.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}

# Ray's autoscaler monitor, a child of the driver on a local cluster. ray.shutdown() stops the GCS
# first and then sends the monitor SIGTERM, which its handler answers by reporting to the GCS that is
# gone: it hangs until SIGKILL a second later, 1.0 s of the 1.1-1.4 s a stop took (and a local
# cluster of fixed size has nothing to autoscale).
AUTOSCALER_MONITOR = "ray/autoscaler/_private/monitor.py"
PROC = Path("/proc")

# Ray Data's scheduling loop in the driver waits this long at most for its running tasks before
# going round again: 0.1 s in Ray 2.60, an internal constant with no DataContext option. Ten rounds a
# second for shards that run for minutes cost the encoding beside them: on 2 cores a plain `st
# encode` next to an idle Ray Data job took ~8% longer than alone, and 2-4% less than that with
# rounds of 1-2 s (10 of 10 alternating pairs; the driver's CPU went from 0.023 to 0.009 CPUs at 1 s).
# A round still ends as soon as every running task has finished; a shard that finishes while others
# run is seen up to SCHEDULING_SECONDS late.
SCHEDULING_LOOP = ("ray.data._internal.execution.streaming_executor_state", "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S")
SCHEDULING_SECONDS = 1.0

# Ray Data's service actors: its stats, its autoscaling coordinator and its actor-location tracker,
# one of each per cluster (detached, found by name). Ray Data creates them as a job's pool comes up
# and its first shard starts, and each one's process start (importing Ray Data, pandas and pyarrow:
# ~1.7 CPU s for the three) then took cores from that shard: on 2 cores a 3,000-line shard took 6-9%
# longer than in a plain Ray actor. Started and waited for with the cluster, they are part of Ray's
# start-up instead, and Ray Data finds them. Internal functions of Ray 2.60; where one is missing,
# Ray Data starts that actor itself, as before.
RAY_DATA_SERVICES = (
    ("ray.data._internal.stats", "get_or_create_stats_actor"),
    ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator", "get_or_create_autoscaling_coordinator"),
    ("ray.data._internal.execution.node_trackers", "get_or_create_actor_location_tracker"),
)
SERVICES_START_SECONDS = 60.0  # then the job goes on, and Ray Data waits for them itself

# How often the progress bar reads the running shards' journals (rows done inside a shard).
PROGRESS_SECONDS = 1.0

ShardProgressFn = Callable[[int, int, int, int], None]  # (shards done, shards, rows done, rows)
T = TypeVar("T")


def check_ray_installed() -> None:
    """One line saying how to install Ray when it is missing, without importing it (that is Ray's start-up)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise StError(RAY_MISSING)


def import_ray() -> Any:
    """The `ray` module with Ray Data, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra must include Ray Data, not just ray core
    except ImportError:
        raise StError(RAY_MISSING) from None
    return ray


# ---------------------------------------------------------------- the cluster


@dataclass
class RayTimes:
    """Ray's own costs around a job: importing and starting it, and stopping a local cluster."""

    start_seconds: float = 0.0
    stop_seconds: float = 0.0


@contextlib.contextmanager
def cluster(address: str | None = None, *, cpus: float | None = None) -> Iterator[RayTimes]:
    """Connected to Ray for the block; yields Ray's times (`stop_seconds` is filled in as the block ends).

    With no `address`, a local cluster starts with `cpus` CPUs declared and stops at the end. With
    "auto" or an address, st joins that cluster and leaves it running. Either way Ray Data's service
    actors are up before the block (see RAY_DATA_SERVICES). If this process is already
    connected (a test, a notebook), that connection is used and left alone.
    """
    started = time.perf_counter()
    ray = import_ray()  # part of the start-up: a plain `st encode` never imports Ray
    # st reports progress and failures itself: Ray's info lines, its own progress bars and its
    # advice at start-up would bury them.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    times = RayTimes()
    if ray.is_initialized():
        yield times
        return
    quiet = {"log_to_driver": False, "logging_level": "error"}
    try:
        if address is None:  # "local": a new cluster even where RAY_ADDRESS names another
            ray.init(
                address="local",
                num_cpus=cpus,
                include_dashboard=False,
                _system_config=LOCAL_SYSTEM_CONFIG,
                **quiet,
            )
        else:
            check_reachable(address)
            ray.init(address=address, **quiet)
    except ConnectionError as e:
        raise StError(f"--ray {address}: cannot reach a Ray cluster there ({e})") from None
    start_ray_data_services()
    times.start_seconds = time.perf_counter() - started
    try:
        yield times
    finally:
        stopping = time.perf_counter()
        if address is None:
            end_autoscaler_monitor(os.getpid())
        ray.shutdown()
        times.stop_seconds = time.perf_counter() - stopping


def start_ray_data_services(seconds: float = SERVICES_START_SECONDS) -> int:
    """Start Ray Data's service actors (see RAY_DATA_SERVICES) and wait up to `seconds` until they are up.

    Returns how many this Ray has; an actor that already runs (a cluster's earlier job) is only found.
    """
    import importlib

    ray = import_ray()
    ready = []
    for module_name, name in RAY_DATA_SERVICES:
        try:
            get_or_create = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            continue  # another Ray: Ray Data starts it with the job
        ready.append(get_or_create().__ray_ready__.remote())
    if ready:
        ray.wait(ready, num_returns=len(ready), timeout=seconds)
    return len(ready)


def end_autoscaler_monitor(driver: int, proc: Path = PROC) -> None:
    """SIGKILL the autoscaler monitor a local cluster started as `driver`'s child: what ray.shutdown() ends with anyway.

    Found by its script in /proc (nothing where there is no /proc, or where Ray moved the script:
    then the stop just takes its second longer). ray.shutdown() then reaps it.
    """
    for entry in proc.glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if parent == driver and any(arg.endswith(AUTOSCALER_MONITOR) for arg in args):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def check_reachable(address: str, seconds: float = 10.0) -> None:
    """Refuse a HOST:PORT (or ray://HOST:PORT) nothing answers on: Ray itself retries for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray knows better: let it judge
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as e:
        raise StError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e})") from None


def local_cpus(workers: int, cpus_per_worker: float) -> float:
    """CPUs a local cluster declares: the pool's share plus SPARE_CPUS, even beyond the cores."""
    return workers * cpus_per_worker + SPARE_CPUS


def default_cpus_per_worker(address: str | None, workers: int | None, gpus_per_worker: float) -> float:
    """CPUs (and torch threads) per actor when --cpus-per-worker is not given.

    `--ray --workers N` on this machine shares its usable CPUs among the N actors, as a plain
    `st encode` uses them all: one actor of one CPU would run at half speed on two cores. On a
    joined cluster, or with GPUs doing the work, 1 (Ray's own default for a task).
    """
    from st_cli.threads import usable_cpus

    if address is not None or workers is None or gpus_per_worker:
        return 1.0
    return float(max(1, usable_cpus() // workers))


def local_workers(cpus_per_worker: float) -> int:
    """Workers the CPUs st may use hold (affinity, a container's quota): what a local cluster is sized for."""
    from st_cli.threads import usable_cpus

    return max(1, int(usable_cpus() // cpus_per_worker))


def default_workers(address: str | None, cpus_per_worker: float, gpus_per_worker: float) -> int:
    """One worker per GPU slice when GPUs are asked for; else per CPU slice (of the cores, locally).

    Needs Ray started: it reads the cluster's resources.
    """
    resources = import_ray().cluster_resources()
    if gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    if address is None:
        return local_workers(cpus_per_worker)
    return max(1, int((resources.get("CPU", 1) - 1) // cpus_per_worker))


# ---------------------------------------------------------------- the plan


def parts_folder(output: Path) -> Path:
    """Where the shards of `output` are written: `OUT.parts/` beside it (shared by every worker)."""
    return output.with_name(output.name + ".parts")


def _claim_parts_folder(parts: Path) -> None:
    """Use OUT.parts/ for the shards, but never a folder holding anything else: it is removed after the merge."""
    if parts.exists() and not parts.is_dir():
        raise StError(f"{parts}: exists and is not a folder; st encode --ray keeps its shards there (move it away)")
    if parts.is_dir():
        foreign = sorted(p.name for p in parts.iterdir() if not p.name.startswith(("part-", ".part-")))
        if foreign:
            raise StError(
                f"{parts}: holds {foreign[0]!r}, which is not a shard of st encode --ray; "
                "it would be removed after the merge (move it away)"
            )
    parts.mkdir(exist_ok=True)


def part_path(parts: Path, index: int, count: int) -> Path:
    """Shard `index` of `count`: a .npy whatever the output's format (the merge writes that)."""
    return parts / f"part-{index:05d}-of-{count:05d}.npy"


def default_shards(rows: int, window: int, workers: int) -> int:
    """Enough shards that a slow or restarted worker holds up little (4 per worker), never more than windows.

    One worker has nobody to share with: one shard. More would only cost (each shard counts the
    inputs again and starts on a window nobody tokenized ahead), and a restarted actor resumes its
    shard from the last completed window anyway.
    """
    windows = max(1, math.ceil(rows / window))
    return max(1, min(windows, 4 * workers if workers > 1 else 1))


@dataclass
class RayEncodeSummary:
    """What `encode_files_ray` did. `to_json()` keys are part of the CLI's `--json` API."""

    output: Path
    rows: int
    dimension: int
    precision: str
    shards: int
    skipped_shards: int  # valid parts found from an earlier run, not run again
    workers: int
    pids: list[int]  # the worker process that wrote each shard run this time, by shard
    resumed_shards: int = 0  # shards that continued a part a dead actor left
    ray_start_seconds: float = 0.0  # importing Ray, starting (or joining) the cluster, Ray Data's services
    ray_stop_seconds: float = 0.0  # stopping the local cluster st started (0 for a joined one)
    count_seconds: float = 0.0  # the driver reading and counting the inputs
    worker_load_seconds: float = 0.0  # the slowest actor's start: importing st and torch, loading the model
    pool_start_seconds: float = 0.0  # handing the shards to Ray Data until the first actor could encode
    shard_seconds: float = 0.0  # encoding the shards run this time, summed over the workers
    merge_seconds: float = 0.0  # joining the parts into the output
    seconds: float = 0.0  # counting, running the shards and merging: everything but Ray's start and stop
    address: str = "local"

    @property
    def texts_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def add_shard(self, result: Mapping[str, Any], handed_at: float) -> None:
        """Count one shard's result row (ShardWorker.run_shard); `handed_at`: when the driver started the pool."""
        first = self.skipped_shards + len(self.pids) == 0  # every result counts as skipped or run
        ready = max(0.0, float(result["ready_at"]) - handed_at)
        self.pool_start_seconds = ready if first else min(self.pool_start_seconds, ready)
        self.skipped_shards += bool(result["skipped"])
        self.resumed_shards += bool(result["resumed"])
        self.shard_seconds += float(result["seconds"])
        self.worker_load_seconds = max(self.worker_load_seconds, float(result["load_seconds"]))
        if not result["skipped"]:
            self.pids.append(int(result["pid"]))

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "rows": self.rows,
            "dimension": self.dimension,
            "precision": self.precision,
            "shards": self.shards,
            "skipped_shards": self.skipped_shards,
            "resumed_shards": self.resumed_shards,
            "workers": self.workers,
            "worker_pids": sorted(set(self.pids)),
            "address": self.address,
            "ray_start_seconds": round(self.ray_start_seconds, 3),
            "ray_stop_seconds": round(self.ray_stop_seconds, 3),
            "count_seconds": round(self.count_seconds, 3),
            "worker_load_seconds": round(self.worker_load_seconds, 3),
            "pool_start_seconds": round(self.pool_start_seconds, 3),
            "shard_seconds": round(self.shard_seconds, 3),
            "merge_seconds": round(self.merge_seconds, 3),
            "seconds": round(self.seconds, 3),
            "texts_per_second": round(self.texts_per_second, 1),
        }


# ---------------------------------------------------------------- embedding a window


def embed_records(
    model: Model | RuntimeEncoder, texts: list[str], options: EncodeOptions, plan: BatchPlan
) -> np.ndarray:
    """Embed `texts` as one window of `st encode` (sorted by length, cut by the batch budget), in order.

    Equal to `st encode` bit for bit when `texts` are exactly one of its windows; otherwise batches
    are cut differently and rows differ by ~2e-7 (float sums in another order).
    """
    from st_cli.encode.batching import prepare_window
    from st_cli.encode.device import inference_linears
    from st_cli.encode.inputs import Record
    from st_cli.encode.run import batch_embedder
    from st_cli.encode.streams import batch_streams
    from st_cli.model.runtime import RuntimeEncoder

    window = prepare_window(model, 0, [Record("", i + 1, t) for i, t in enumerate(texts)], plan)
    if not window.batches:
        dim = model.get_sentence_embedding_dimension() or 0
        return np.empty((0, options.truncate_dim or dim), np.float32)
    embed, join = batch_embedder(model, options)
    linears = (
        contextlib.nullcontext()
        if isinstance(model, RuntimeEncoder)
        else inference_linears(model, options.device, options.dtype)
    )
    with linears, batch_streams(model, options.device) as streams:
        outputs = list(streams.map(embed, window.batches))
    joined: Any = join(outputs)
    rows = model.finish(joined, normalize=options.normalize, truncate_dim=options.truncate_dim)
    block = np.empty(rows.shape, np.float32)
    block[np.concatenate([batch.indices for batch in window.batches])] = rows
    return block


class Embedder:
    """A callable class for your own Ray Data pipelines: adds an embedding column to each batch.

        ds = ray.data.read_parquet("docs/").map_batches(
            Embedder, fn_constructor_kwargs={"model": "/shared/minilm", "normalize": True},
            batch_size=8192, compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)

    Each actor loads the model once. Rows equal `st encode`'s only up to ~2e-7: st sorts each window
    of `window` records by length before batching, so a Ray batch that is not exactly one of st's
    windows is batched differently. For bit-identical files use `st encode --ray`.

    Args:
        model: a model folder every worker can read, or a Hub id.
        column: the text column; output_column: where the float32 vectors go.
        The other keywords are `EncodeOptions` fields (normalize, prompt_name, truncate_dim, device, ...).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        column: str = "text",
        output_column: str = "embedding",
        trust_remote_code: bool = False,
        **options: Any,
    ) -> None:
        from st_cli.encode.job import prepare_job
        from st_cli.encode.options import EncodeOptions
        from st_cli.encode.run import load_exported
        from st_cli.model.model import load_model

        self.column, self.output_column = column, output_column
        # The options and batch plan a `st encode` of this model would use (prompt, device defaults, backend).
        opts = EncodeOptions(trust_remote_code=trust_remote_code, **options)
        opts.check_backend()
        self.model: Model | RuntimeEncoder = load_exported(str(model), opts) or load_model(
            str(model), trust_remote_code=trust_remote_code
        )
        self.options, self.plan = prepare_job(self.model, opts)
        self.model.to(self.options.device)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        from st_cli import threads
        from st_cli.model.runtime import RuntimeEncoder

        if self.column not in batch:
            raise StError(f"Embedder: the batch has no column {self.column!r} (columns: {', '.join(batch)})")
        texts = [str(t) for t in batch[self.column]]
        counted = (
            self.model.thread_count(self.options.threads)
            if isinstance(self.model, RuntimeEncoder)
            else threads.thread_count(self.options.threads)
        )
        with counted:
            vectors = embed_records(self.model, texts, self.options, self.plan)
        return {**batch, self.output_column: vectors}


# ---------------------------------------------------------------- the shards on actors


def _absolute(item: str | os.PathLike[str]) -> str:
    """Workers may start in another folder: give them absolute paths (a Hub id stays as it is)."""
    path = Path(item)
    return str(path.resolve()) if path.exists() else str(item)


class ShardWorker:
    """A Ray actor: loads the model once, then runs `st encode --shard I/N --resume` for each shard it gets.

    A shard whose part is already finished for this job (its `.shard.json` valid) is reported, not
    run; a part a dead actor left half-written is continued from its journal. Each result says how
    long the shard took to encode, and the first one an actor returns how long the actor took to load.
    """

    def __init__(
        self,
        model: str,
        model_name: str,
        inputs: list[str],
        options: EncodeOptions,
        parts: str,
        shards: int,
        cwd: str,
        kill: str | None = None,
    ) -> None:
        started = time.perf_counter()
        from st_cli.encode.run import load_encoder

        # The driver's folder, where it exists here: a relative model name then finds the same folder,
        # so every worker records the same model hashes in its shard's job (and merge accepts them).
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        # Loaded as `st encode` loads it (a static folder runs in numpy), so parts equal a plain run's rows.
        self.model, _ = load_encoder(model, options)
        self.model_name, self.inputs, self.options = model_name, inputs, options
        self.parts, self.shards, self.kill = Path(parts), shards, kill
        self.job: str | None = None
        self.load_seconds = time.perf_counter() - started  # reported once, with the actor's first shard
        self.ready_at = time.time()  # wall clock: the driver compares it with its own (same machine, or synced clocks)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [self.run_shard(int(index)) for index in batch["shard"]]
        return {key: np.array([result[key] for result in results]) for key in results[0]}

    def run_shard(self, index: int) -> dict[str, Any]:
        from st_cli.encode.api import encode_file
        from st_cli.encode.job import job_of
        from st_cli.encode.shards import finished_shard, sidecar_path

        part = part_path(self.parts, index, self.shards)
        result = {"shard": index, "pid": os.getpid(), "skipped": False, "resumed": False, "seconds": 0.0}
        result["load_seconds"], self.load_seconds = self.load_seconds, 0.0
        result["ready_at"] = self.ready_at
        if sidecar_path(part).is_file():  # a finished part, maybe of this job (the job costs a model hash)
            if self.job is None:
                self.job = job_of(self.inputs, self.model, self.model_name, self.options)
            info = finished_shard(part, self.job)
            if info is not None:
                return {**result, "rows": info.rows, "skipped": True}
        summary = encode_file(
            self.inputs,
            part,
            self.options,
            model=self.model,
            model_name=self.model_name,
            shard=(index, self.shards),
            resume=True,
            progress=self._killer(index),
        )
        return {**result, "rows": summary.rows, "resumed": summary.resumed_rows > 0, "seconds": summary.seconds}

    def _killer(self, index: int) -> Callable[[int, int, int], None] | None:
        """Test hook (KILL_ENV=MARKER[@SHARD]): die once, in the second window of a shard (the first is journaled)."""
        if not self.kill:
            return None
        marker, _, only = self.kill.partition("@")
        if only and int(only) != index:
            return None
        window = self.options.window

        def progress(done: int, total: int, tokens: int) -> None:
            if done <= window:
                return
            try:
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                return  # died once already
            os._exit(1)

        return progress


def _worker_options(options: EncodeOptions, cpus_per_worker: float) -> EncodeOptions:
    """The job's options, whole, for the shard code; torch threads default to the worker's CPUs."""
    if options.threads is not None:
        return options
    return dataclasses.replace(options, threads=max(1, round(cpus_per_worker)))


def _shard_error(error: BaseException) -> StError | None:
    """The StError a shard raised inside Ray's wrappers (RayTaskError, UserCodeException), if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, StError):
            return item
        todo += [item.__cause__, item.__context__, getattr(item, "cause", None)]
    return None


@dataclass(frozen=True)
class Pool:
    """The actor pool: how many, and what each asks of Ray."""

    workers: int
    cpus: float
    gpus: float
    restarts: int


def _run_shards(worker_args: dict[str, Any], shards: list[int], pool: Pool) -> Iterator[dict[str, Any]]:
    """One result row per shard (shard, rows, pid, skipped, resumed), as each finishes."""
    ray = import_ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # st draws its own
    # Start every actor before any shard goes out (so the work spreads), and fail, not hang, when
    # the cluster cannot place them.
    context.wait_for_min_actors_s = ACTOR_START_SECONDS
    ds = ray.data.from_items([{"shard": i} for i in shards], override_num_blocks=len(shards))
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing actor options this way but has no other spelling for them yet.
        warnings.simplefilter("ignore")
        ds = ds.map_batches(
            ShardWorker,
            fn_constructor_kwargs=worker_args,
            batch_size=1,
            # One shard in flight per actor: a shard is minutes of work, queueing it gains nothing.
            compute=ray.data.ActorPoolStrategy(size=min(pool.workers, len(shards)), max_tasks_in_flight_per_actor=1),
            num_cpus=pool.cpus,
            num_gpus=pool.gpus or None,
            max_restarts=pool.restarts,
            max_task_retries=pool.restarts,
        )
    try:
        with slower_scheduling_loop(SCHEDULING_SECONDS):
            yield from ds.iter_rows()
    except Exception as e:
        raise _job_error(e, pool) from None


@contextlib.contextmanager
def slower_scheduling_loop(seconds: float) -> Iterator[None]:
    """Ray Data's scheduling loop goes round at most every `seconds` for the block (see SCHEDULING_LOOP).

    Where this Ray has no such constant, nothing changes. The old value is back after the block.
    """
    import importlib

    module_name, name = SCHEDULING_LOOP
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        module = None
    before = getattr(module, name, None)
    if not isinstance(before, (int, float)) or before >= seconds:
        yield
        return
    setattr(module, name, seconds)
    try:
        yield
    finally:
        setattr(module, name, before)


def _job_error(error: Exception, pool: Pool) -> StError:
    """Ray's failure as one line: a shard's own StError, actors that could not start, or a job that died."""
    from st_cli.errors import first_line

    ray = import_ray()
    cause = _shard_error(error)
    if cause is not None:
        return StError(str(cause))
    if isinstance(error, ray.exceptions.GetTimeoutError):
        return StError(
            f"Ray could not start {pool.workers} workers of {pool.cpus:g} CPUs and {pool.gpus:g} GPUs each "
            f"within {ACTOR_START_SECONDS} s: the cluster lacks the resources (see `ray status`)"
        )
    return StError(
        f"the Ray job failed ({first_line(error)}); run the same command again to continue from the shards "
        "that finished"
    )


def with_heartbeat(items: Iterator[T], seconds: float) -> Iterator[T | None]:
    """`items`, drawn in a background thread, with a None whenever `seconds` pass without one.

    The caller redraws progress on each None. Errors come out where the item would have.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue()

    def draw() -> None:
        try:
            for item in items:
                q.put(("item", item))
            q.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            q.put(("error", e))

    threading.Thread(target=draw, name="st-ray-results", daemon=True).start()
    while True:
        try:
            kind, value = q.get(timeout=seconds)
        except queue.Empty:
            yield None
            continue
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value


def _check_local_gpus(pool: Pool) -> None:
    if not pool.gpus:
        return
    have = import_ray().cluster_resources().get("GPU", 0)
    if have < pool.workers * pool.gpus:
        raise StError(
            f"{pool.workers} workers × --gpus-per-worker {pool.gpus:g} need {pool.workers * pool.gpus:g} GPUs; "
            f"this machine has {have:g}"
        )


def encode_files_ray(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    model: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    shards: int | None = None,
    restarts: int = RESTARTS,
    progress: ShardProgressFn | None = None,
    options: EncodeOptions | None = None,
    **fields: Any,
) -> RayEncodeSummary:
    """`st encode` on a Ray cluster: shards of whole windows on an actor pool, merged into `output`.

    Args:
        inputs: text files every worker can read at the same path (no stdin).
        model: a model folder every worker can read, or a Hub id; None: $ST_MODEL, else all-MiniLM-L6-v2.
        address: None starts a local cluster for this call; "auto" or "HOST:PORT" joins a running one.
        workers: actors in the pool (default: one per GPU slice, else per CPU slice).
        cpus_per_worker: CPUs each actor asks for, also its torch threads (default: on a local
            cluster with `workers` given, the machine's usable CPUs / workers; else 1).
        shards: how many shards (default: 4 per worker, one for a single worker, at most one per window).
        restarts: times Ray restarts a dead actor; its shard resumes from its last completed window.
        progress: called as shards finish, and each PROGRESS_SECONDS with the rows the running shards'
            journals record, with (shards done, shards, rows done, rows).
        options: the job's `EncodeOptions`; keywords replace single fields of it (window, precision, ...).
    """
    from st_cli import fsio
    from st_cli.encode import journal
    from st_cli.encode.inputs import STDIN, count_records, resolved_inputs
    from st_cli.encode.options import EncodeOptions
    from st_cli.encode.shards import merge_shards
    from st_cli.format import hub

    started = time.perf_counter()
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if any(str(item) == STDIN for item in items):
        raise StError("--ray: stdin cannot be sharded; save it to a file and give that")
    for name, value in (("--workers", workers), ("--shards", shards), ("--cpus-per-worker", cpus_per_worker)):
        if value is not None and value <= 0:
            raise StError(f"{name} must be positive, got {value}")
    if gpus_per_worker < 0:
        raise StError(f"--gpus-per-worker must be 0 or more, got {gpus_per_worker}")
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise StError("--ray: give the model as a folder or Hub id (each worker loads it), not a loaded Model")
    opts = EncodeOptions.of(options, **fields)
    target = Path(output)
    opts.check(target)
    from st_cli.encode.publish import output_kind

    fsio.claim(target, force=opts.force, kind=output_kind(target))  # refuse an existing output before Ray starts
    check_ray_installed()
    with resolved_inputs(items, None, spool_beside=target, input_format=opts.input_format) as sources:
        tally = count_records(sources, opts.read)  # bad input is reported here, before Ray starts
    counted = time.perf_counter() - started
    rows = tally.records - tally.empty if opts.skip_empty else tally.records
    windows = max(1, -(-rows // opts.window))
    if shards is not None and shards > windows:  # a shard is whole windows; a list of 10**23 parts never ends
        raise StError(
            f"--shards {shards}: more shards than the job has windows ({windows:,} of --window {opts.window} "
            f"records); give at most {windows:,}"
        )
    if cpus_per_worker is None:
        cpus_per_worker = default_cpus_per_worker(address, workers, gpus_per_worker)
    sized_for = workers or local_workers(cpus_per_worker)
    with cluster(address, cpus=local_cpus(sized_for, cpus_per_worker)) as ray_times:
        size = workers or default_workers(address, cpus_per_worker, gpus_per_worker)
        pool = Pool(size, cpus_per_worker, gpus_per_worker, restarts)
        if address is None:
            _check_local_gpus(pool)
        count = shards or default_shards(rows, opts.window, pool.workers)
        parts = parts_folder(target)
        _claim_parts_folder(parts)
        model_name = str(model or os.environ.get("ST_MODEL") or hub.DEFAULT_MODEL)
        worker_args = {
            "model": _absolute(model_name),
            "model_name": model_name,  # as given: it goes into the output's metadata, as in one run
            "inputs": [_absolute(item) for item in items],
            "options": _worker_options(opts, cpus_per_worker),
            "parts": str(parts.resolve()),
            "shards": count,
            "cwd": os.getcwd(),
            "kill": os.environ.get(KILL_ENV) or None,
        }
        summary = RayEncodeSummary(target, rows, 0, opts.precision, count, 0, pool.workers, [])
        summary.ray_start_seconds, summary.address = ray_times.start_seconds, address or "local"
        summary.count_seconds = counted
        paths = [part_path(parts, i, count) for i in range(count)]
        handed_at = time.time()
        results = _run_shards(worker_args, list(range(count)), pool)
        running: dict[int, int] = dict.fromkeys(range(count), 0)  # rows the unfinished shards' journals had
        finished, done_rows = 0, 0
        for result in results if progress is None else with_heartbeat(results, PROGRESS_SECONDS):
            if result is not None:
                running.pop(int(result["shard"]), None)
                finished, done_rows = finished + 1, done_rows + int(result["rows"])
                summary.add_shard(result, handed_at)
            if progress is not None:  # a journal caught mid-rewrite reads as less: keep the most seen
                running = {i: max(seen, journal.rows_done(paths[i])) for i, seen in running.items()}
                progress(finished, count, done_rows + sum(running.values()), rows)
    summary.ray_stop_seconds = ray_times.stop_seconds
    merged = merge_shards(paths, target, precision=opts.precision, force=opts.force)
    summary.rows, summary.dimension = merged.rows, merged.dimension
    summary.merge_seconds = merged.seconds
    fsio.remove(parts)
    summary.seconds = time.perf_counter() - started - ray_times.start_seconds - ray_times.stop_seconds
    return summary

