"""The labeller on Ray Data (`scripts/label.py --engine ray`): one plan, reader tasks, model replicas, one writer.

The run is the default engine's with Ray as the executor. `plan_run` plans the pages (and what the outputs hold) in
the driver, exactly as for one process; the page jobs become a Ray dataset, and

- `read_pages` runs `PageReader` (read, OCR, encode) as Ray tasks on CPU workers (`num_cpus_per_reader` each),
  several pages a task (`read_tasks`: a task costs Ray about what reading a text-layer page costs); a task whose
  worker dies is run again (Ray Data's `max_retries` of -1: without limit), and so is one whose output was lost with
  its node (lineage reconstruction); a task whose worker died READ_ATTEMPTS - 1 times reads each page in a process of
  its own, so that a page that crashes its reader is a failure record rather than a task retried without end;
- `LabelReplica` is an actor pool of `num_replicas` model replicas (`num_gpus_per_replica` each), each a
  `PageLabeller` that batches the windows of the pages it is given (`road_layoutlm_roialign.group_pages`), as the
  engine does, and draws them under `png_dir`; Ray Data restarts a replica that dies and retries its batches
  (`max_restarts` and `max_task_retries` of -1, its defaults for actor pools), and a batch lost LABEL_ATTEMPTS - 1
  times is labelled page by page, so that a page that ends its replica every time becomes a failure record. A
  replica loads the checkpoint itself where every node runs on the driver's machine (`models_for_replicas`), else
  gets the weights through the object store; on the CPU it computes on its node's cores (`replica_threads`), not on
  the one thread Ray gives an actor;
- the driver streams the records back and writes them with `LabelRun.write_records` into the same two files, under
  the plan's lock: a page whose record arrives again is dropped, so every page is written once, and a killed driver
  resumes when the same command is run again, as the default engine does. `--merge` is never needed.

Every read and label attempt reports its batch to `PageAttempts`, a small actor on the driver's node; the summary's
`retried` counts the pages whose reading or labelling was started again (a worker, replica or node lost mid-run).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pickle
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..configuration_layoutlm_roialign import label_names
from ..road_layoutlm_roialign import group_pages
from .jsonl import JsonlWriter, record_key
from .pipeline import LabelRun, check_run_arguments, draw_page
from .reading import PageReader, read_in_child
from .runner import PageLabeller
from .sources import PageJob

__all__ = [
    "RayOptions",
    "RAY_ONLY_FLAGS",
    "LOCAL_ONLY_FLAGS",
    "check_engine_flags",
    "connect",
    "label_on_ray",
    "ray_session",
]

RAY_EXTRA = '--engine ray needs Ray Data: pip install "layoutlm-roialign[ray]"'
RAY_ONLY_FLAGS = ("--ray_address", "--num_cpus_per_reader", "--num_replicas", "--num_gpus_per_replica")
# what Ray does itself there: it reads with its own workers, and one driver writes one output
LOCAL_ONLY_FLAGS = {
    "--merge": "Ray writes one output, there are no shards to merge",
    "--num_workers": "Ray reads on its CPU workers: use --num_cpus_per_reader",
    "--device": "each replica runs on the device Ray gives it: use --num_gpus_per_replica",
}
# A reader worker process is replaced after this many tasks: it bounds what a long-lived PDF / OCR worker accumulates,
# and (the replicas having no such limit) keeps Ray Data from fusing the reading into the model replicas.
READER_MAX_CALLS = 1000
# A batch of pages whose reader worker died in each of READ_ATTEMPTS - 1 attempts (a page that crashes PDFium, say, or
# exhausts memory) is read the next time one page per forked process, so that the page that ends its process becomes
# a failure record and the run goes on: Ray alone would retry that batch without end.
READ_ATTEMPTS = 3
# A batch whose model replica was lost in each of LABEL_ATTEMPTS - 1 attempts is labelled the next time page by page,
# and a page whose replica was lost LOST_ALONE times while it was labelled alone becomes a failure record (a replica
# cannot fork a process per page as a reader does: its OpenMP threads do not survive a fork).
LABEL_ATTEMPTS = 3
LOST_ALONE = 2
# Pages per reader task: at most READ_TASK_PAGES (a task's Ray overhead is about what reading a text-layer PDF page
# costs), fewer where that would leave some CPUs of the cluster without a task (READ_TASKS_PER_CPU each).
READ_TASK_PAGES = 8
READ_TASKS_PER_CPU = 4
MAX_BLOCKS = 20_000  # and at most this many tasks (Ray blocks), however many pages
# A CPU replica's threads share their node's cores with the readers there: OpenMP threads that wait for work sleep
# rather than spin, so that the readers get the cores meanwhile (label_bench.py, 360 text-PDF pages on 2 cores: 8 %
# faster).
CPU_REPLICA_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
ATTEMPTS_ACTOR = "layoutlm_roialign-page_attempts"  # the name prefix of a run's `PageAttempts`


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray run is: `address` (None: `RAY_ADDRESS`, else a Ray running on this machine, else a
    local Ray started here), CPUs per reader task, model replicas, and GPUs per replica (None: 1 on a cluster with
    GPUs, else 0)."""

    address: str | None = None
    num_cpus_per_reader: float = 1.0
    num_replicas: int = 1
    num_gpus_per_replica: float | None = None

    def check(self) -> None:
        """Raises `ValueError` naming the flag, for a value Ray cannot schedule."""
        if not isinstance(self.num_replicas, int) or isinstance(self.num_replicas, bool) or self.num_replicas < 1:
            raise ValueError(f"--num_replicas must be a positive int (model replicas), got {self.num_replicas!r}.")
        if not self.num_cpus_per_reader > 0:
            raise ValueError(f"--num_cpus_per_reader must be above 0, got {self.num_cpus_per_reader!r}.")
        if self.num_gpus_per_replica is not None and not self.num_gpus_per_replica >= 0:
            raise ValueError(f"--num_gpus_per_replica must be 0 or more, got {self.num_gpus_per_replica!r}.")


def given_flags(argv: list[str]) -> set[str]:
    """The `--flags` written on a command line (`--flag value` or `--flag=value`)."""
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}


def check_engine_flags(engine: str, argv: list[str], world_size: int = 1) -> None:
    """Refuse flags that the chosen engine has no use for, before anything is read.

    Raises:
        ValueError: naming the flag (and `--engine`).
    """
    given = given_flags(argv)
    if engine == "ray":
        for flag, why in LOCAL_ONLY_FLAGS.items():
            if flag in given:
                raise ValueError(f"{flag} does not go with --engine ray ({why}).")
        if world_size > 1:
            raise ValueError(
                f"--engine ray runs one driver; it was started as one of {world_size} processes (accelerate launch, "
                "torchrun): run it once with python, and let Ray spread the work."
            )
    else:
        for flag in RAY_ONLY_FLAGS:
            if flag in given:
                raise ValueError(f"{flag} is an option of --engine ray; add --engine ray or leave it out.")


def import_ray() -> Any:
    """The `ray` module with Ray Data; `ImportError` naming the extra when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(RAY_EXTRA) from err
    return ray


def _check_reachable(address: str) -> None:
    """A TCP connection to `host:port` (of `ray://host:port` too), so that a wrong address fails in seconds."""
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray_address {address!r}: give host:port of a Ray head (ray start --head prints it).")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise ValueError(
            f"--ray_address {address!r}: no Ray cluster answers there ({err.strerror or err}). Start one with "
            "`ray start --head`, or leave --ray_address out to start a local Ray."
        ) from err


def connect(options: RayOptions, quiet: bool = False) -> bool:
    """Join the Ray cluster at `options.address` (else `RAY_ADDRESS`, else a Ray running on this machine, as
    `ray.init()` finds it, else start a local Ray); returns whether this call connected (and so the run disconnects at
    its end). A connection this process holds already is used.

    Raises:
        ImportError: naming the `ray` extra, when Ray Data is not installed.
        ValueError: naming `--ray_address`, when no cluster answers there.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("auto", "local"):
        _check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=not quiet, configure_logging=not quiet)
    except (ConnectionError, RuntimeError) as err:
        raise ValueError(f"--ray_address {address!r}: cannot join the Ray cluster ({err}).") from err
    return True


@contextlib.contextmanager
def ray_session(options: RayOptions, quiet: bool = False) -> Iterator[None]:
    """Connected to Ray (`connect`) for the block, and disconnected after it if this connected."""
    started = connect(options, quiet)
    try:
        yield
    finally:
        if started:
            import_ray().shutdown()


def _attempts_actor(ray: Any) -> Any:
    """`PageAttempts`, pinned to this (the driver's) node, where it lives as long as the run."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    class PageAttempts:
        """Counts the starts of each batch (a batch: its stage and first page), and the pages of batches started more
        than once."""

        def __init__(self) -> None:
            self.started: dict[tuple, int] = {}
            self.unfinished: dict[tuple, int] = {}  # pages labelled alone: starts without a finish
            self.retried = 0

        def start(self, stage: str, first: tuple, pages: int) -> int:
            """Record a start of the batch; returns how many times it was started before."""
            key = (stage, *first)
            before = self.started.get(key, 0)
            if before:
                self.retried += pages
            self.started[key] = before + 1
            return before

        def alone(self, page: tuple) -> int:
            """Record that a replica labels `page` alone now; returns how many earlier times it did and did not
            finish (its replica was lost meanwhile)."""
            lost = self.unfinished.get(page, 0)
            self.unfinished[page] = lost + 1
            return lost

        def finished_alone(self, page: tuple) -> None:
            self.unfinished[page] -= 1

        def count(self) -> int:
            return self.retried

        def pages_started(self, stage: str) -> list[tuple]:
            """The first pages of the batches of `stage` started so far (to watch a run)."""
            return [key[1:] for key in self.started if key[0] == stage]

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    name = f"{ATTEMPTS_ACTOR}-{os.getpid()}-{time.time_ns()}"  # found by its name prefix to watch a run
    return PageAttempts.options(name=name, scheduling_strategy=here).remote()


def _ask(call: Any, default: Any = None) -> Any:
    """The answer of a `PageAttempts` call (`default` if it does not come within a minute)."""
    import ray

    try:
        return ray.get(call, timeout=60)
    except Exception:  # noqa: BLE001 (the counts steer retries; without them the pages are still labelled)
        return default


def _report(attempts: Any, stage: str, first: tuple, pages: int) -> int:
    """Tell `PageAttempts` a batch starts, and wait until it knows (a worker killed next must not lose the report);
    returns how many times the batch was started before (0 if `PageAttempts` did not answer)."""
    return _ask(attempts.start.remote(stage, first, pages), 0)


def read_pages(batch: dict, reader: PageReader, attempts: Any) -> dict:
    """A Ray task: `PageReader` on a batch of page jobs; each item pickled whole (tensors and all). The attempt
    READ_ATTEMPTS of a batch reads each page in a process of its own (`read_in_child`)."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # Tesseract: one thread per reader, as `reading.worker_init`
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread for the tokenizer too, as `reader_loader`
    columns = (batch[f.name] for f in fields(PageJob))
    jobs = [PageJob(str(s), int(p), int(n), str(k)) for s, p, n, k in zip(*columns, strict=True)]
    before = _report(attempts, "read", jobs[0].key, len(jobs))
    reader = copy.copy(reader)  # the worker's copy of the reader, with this task's jobs
    reader.jobs = jobs
    if before >= READ_ATTEMPTS - 1:  # its worker died in each attempt so far: one process a page, crashes recorded
        lost = f", here and in the {before} attempts before (each lost its worker)"
        return {"item": [pickle.dumps(read_in_child(reader, i, lost), protocol=pickle.HIGHEST_PROTOCOL)
                         for i in range(len(jobs))]}  # fmt: skip
    return {"item": [pickle.dumps(reader[i], protocol=pickle.HIGHEST_PROTOCOL) for i in range(len(jobs))]}


def replica_model(model: Any) -> Any:
    """What the replicas rebuild the model from, put once in Ray's object store: a registered PyTorch head as its
    class name, config and weights (pickling the module tree of the default LayoutLM-base + ResNet-101 exceeds
    Python's recursion limit), anything else (an ONNX export pickles as its folder) as it is."""
    from ..heads_layoutlm_roialign import HEADS

    if not isinstance(model, torch.nn.Module) or type(model).__name__ not in HEADS:
        return model
    return {"head": type(model).__name__, "config": model.config.to_dict(), "weights": model.state_dict()}


def rebuilt_model(payload: Any) -> Any:
    """The model `replica_model` gave `payload` for, in eval mode (the package's class of that head)."""
    if not isinstance(payload, dict):
        return payload
    from ..configuration_layoutlm_roialign import LayoutLMRoIAlignConfig
    from ..model_factory import head_class

    model = head_class(payload["head"])(LayoutLMRoIAlignConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["weights"])
    return model.eval()


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint the replicas load themselves, with the loader's arguments (`loader.load_model_and_processor`)."""

    model: str
    trust_remote_code: bool = False
    runtime: str = "torch"

    def load_model_and_processor(self) -> tuple[Any, Any]:
        from ..loader import load_model_and_processor

        return load_model_and_processor(self.model, self.trust_remote_code, runtime=self.runtime)


def _one_host(ray: Any) -> bool:
    """Whether every node of the cluster runs on the driver's machine (a local Ray, or `Cluster` nodes)."""
    hosts = {node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}
    return hosts == {ray.util.get_node_ip_address()}


def models_for_replicas(ray: Any, model: Any, source: CheckpointSource | None) -> Any:
    """How the replicas get the model: where every node runs on this machine, the checkpoint itself (`source`: a
    folder, by its absolute path, or a Hub id from the cache the driver filled), which skips pickling the weights
    through the object store and rebuilding the module; else (or without `source`) the model, put once in the object
    store (`replica_model`)."""
    if source is not None and _one_host(ray):
        folder = Path(source.model).expanduser()
        return CheckpointSource(str(folder.resolve()) if folder.exists() else source.model, source.trust_remote_code,
                                source.runtime)  # fmt: skip
    return ray.put(replica_model(model))


def replica_threads(gpus: float, replicas_per_node: int) -> int:
    """Threads for a replica's PyTorch: on the CPU, its node's cores shared by the replicas there (the default
    engine's model, too, computes on every core while its readers read); with a GPU, what Ray set (its CPUs)."""
    if gpus:
        return torch.get_num_threads()
    return max(1, len(os.sched_getaffinity(0)) // max(1, replicas_per_node))


class LabelReplica:
    """A Ray actor: one model replica (`PageLabeller`) labelling batches of encoded pages into JSON records."""

    def __init__(self, model: Any, processor: Any, batch_size: int, dtype: str, compile: bool, gpus: float,
                 replicas_per_node: int, png_dir: str | None, attempts: Any) -> None:  # fmt: skip
        import ray

        self.threads = replica_threads(gpus, replicas_per_node)
        torch.set_num_threads(self.threads)
        model, processor = (ray.get(x) if isinstance(x, ray.ObjectRef) else x for x in (model, processor))
        model = model.load_model_and_processor()[0] if isinstance(model, CheckpointSource) else rebuilt_model(model)
        self.labeller = PageLabeller(model, processor, batch_size, "cuda" if gpus else "cpu", dtype, compile)
        self.batch_size, self.png_dir, self.attempts = batch_size, png_dir, attempts
        self.labels = label_names(model.config)

    def __call__(self, batch: dict) -> dict:
        # Ray Data calls the replica on a thread of its own, not the one that built it; in a worker started with
        # OMP_NUM_THREADS=1 (exported before `ray start`), a thread count set in another thread does not reach the
        # oneDNN and MKL kernels (convolutions, matrix products) there. So it is set in the thread that computes.
        torch.set_num_threads(self.threads)
        pages = [pickle.loads(item) for item in batch["item"]]
        before = _report(self.attempts, "label", (pages[0]["source"], pages[0]["page"]), len(pages))
        if before >= LABEL_ATTEMPTS - 1:  # its replica was lost in each attempt so far: page by page
            records = [record for page in pages for record in self._alone(page, before)]
        else:
            records = self._label(pages)
        return {"record": [json.dumps(r, ensure_ascii=False) for r in records]}

    def _alone(self, page: dict, before: int) -> list[dict]:
        """`page` labelled alone, its start and finish told to `PageAttempts`; the page's failure record instead if
        its replica was lost LOST_ALONE times while labelling it alone."""
        key = (page["source"], page["page"])
        lost = _ask(self.attempts.alone.remote(key), 0)
        if lost >= LOST_ALONE:
            error = (f"labelling the page ended its model replica's process {lost} times while it was labelled alone "
                     f"(and its batch's {before} times before): the page is left out")  # fmt: skip
            return [{**{k: page[k] for k in ("source", "page", "num_pages")}, "error": error}]
        records = self._label([page])
        _ask(self.attempts.finished_alone.remote(key))
        return records

    def _label(self, pages: list[dict]) -> list[dict]:
        """Records of `pages`, batched by windows (`group_pages`) and drawn under `png_dir`."""
        records = []
        for group in group_pages(iter(pages), self.batch_size):
            done = self.labeller(group)
            if self.png_dir:
                images = {(p["source"], p["page"]): p.get("image") for p in group}
                for record in done:
                    if "error" not in record:
                        record["png"] = draw_page(self.png_dir, images[record_key(record)], record, self.labels)
            records += done
        return records


def read_tasks(pages: int, cpus: float) -> int:
    """How many reader tasks `pages` pages become: READ_TASK_PAGES pages each, or more tasks (of fewer pages) where
    that would not give every CPU READ_TASKS_PER_CPU of them; at most MAX_BLOCKS."""
    return max(1, min(pages, MAX_BLOCKS, max(-(-pages // READ_TASK_PAGES), int(cpus * READ_TASKS_PER_CPU))))


def _dataset(ray: Any, plan: LabelRun, model: Any, processor: Any, options: RayOptions, batch_size: int,
             dtype: str, compile: bool, attempts: Any, source: CheckpointSource | None) -> Any:  # fmt: skip
    """The pipeline: page jobs -> `read_pages` tasks -> `LabelReplica` actors -> JSON records."""
    from ray.data import ActorPoolStrategy

    windows = plan.windows.resolve(model.config)
    reader = PageReader([], processor, plan.read, windows, plan.dataset, keep_image=bool(plan.png_dir))
    gpus = options.num_gpus_per_replica
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
    nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node["Resources"].get("CPU", 0) > 0)
    rows = [{f.name: getattr(job, f.name) for f in fields(PageJob)} for job in plan.jobs]
    pages = ray.data.from_items(rows, override_num_blocks=read_tasks(len(rows), ray.cluster_resources().get("CPU", 1)))
    read = pages.map_batches(
        read_pages, batch_size=None, fn_kwargs={"reader": reader, "attempts": attempts},
        num_cpus=options.num_cpus_per_reader, max_calls=READER_MAX_CALLS,
    )  # fmt: skip
    return read.map_batches(
        LabelReplica, batch_size=batch_size, compute=ActorPoolStrategy(size=options.num_replicas),
        fn_constructor_kwargs={"model": models_for_replicas(ray, model, source), "processor": ray.put(processor),
                               "batch_size": batch_size, "dtype": dtype, "compile": compile, "gpus": gpus,
                               "replicas_per_node": -(-options.num_replicas // max(1, nodes)),
                               "png_dir": plan.png_dir, "attempts": attempts},
        num_gpus=gpus, num_cpus=0 if gpus else 1,  # Ray Data spreads an actor pool over the nodes itself
        **({} if gpus else {"runtime_env": {"env_vars": CPU_REPLICA_ENV}}),
    )  # fmt: skip


def label_on_ray(plan: LabelRun, model: Any, processor: Any, options: RayOptions, batch_size: int = 8,
                 dtype: str = "auto", compile: bool = False, quiet: bool = False,
                 source: CheckpointSource | None = None) -> dict:  # fmt: skip
    """Label the planned pages on Ray (module docstring) and return `LabelRun.run`'s summary, plus `retried` (pages
    read or labelled again after a loss), `duplicates` (records that arrived again and were dropped) and `dtype` (what
    the replicas computed in). Runs in a `ray_session` (this process's connection, if it has one); the plan's lock is
    released at the end.

    Raises:
        ValueError: naming the flag, for bad options or an unreachable `--ray_address`.
    """
    try:
        check_run_arguments(batch_size, 0)
        options.check()
        with ray_session(options, quiet):
            return _drive(import_ray(), plan, model, processor, options, batch_size, dtype, compile, quiet, source)
    finally:
        if plan.lock is not None:
            plan.lock.release()


def _drive(ray, plan, model, processor, options, batch_size, dtype, compile, quiet, source) -> dict:
    """Stream the records from the Ray pipeline into the outputs, each page once."""
    ray.data.DataContext.get_current().enable_progress_bars = not quiet
    summary = {"pages": 0, "failed": 0, "skipped": plan.skipped, "words": 0, "entities": 0}
    written: set = set()  # the pages this run wrote (those of earlier runs are not in the plan)
    duplicates, dtypes = 0, set()  # dtypes: what the replicas computed in (in their records)
    start, waited = time.perf_counter(), 0.0
    attempts = _attempts_actor(ray)
    try:
        with JsonlWriter(plan.output) as records, JsonlWriter(plan.failures_output, truncate=True) as failures:
            LabelRun.write_records(plan.failures, records, failures, summary)
            stream = iter(())  # nothing left to label: the rerun of a finished run
            if plan.jobs:
                pipeline = _dataset(ray, plan, model, processor, options, batch_size, dtype, compile, attempts, source)
                stream = iter(pipeline.iter_batches(batch_size=None, batch_format="numpy"))
            while True:
                tick = time.perf_counter()
                batch = next(stream, None)
                waited += time.perf_counter() - tick
                if batch is None:
                    break
                done = [json.loads(line) for line in batch["record"]]
                fresh = [r for r in done if record_key(r) not in written]
                duplicates += len(done) - len(fresh)
                written.update(record_key(r) for r in fresh)
                LabelRun.write_records(fresh, records, failures, summary)
                dtypes.update(r["dtype"] for r in fresh if "dtype" in r)
        retried = ray.get(attempts.count.remote())
    finally:
        ray.kill(attempts)
    summary = plan.finish_summary(summary, time.perf_counter() - start, waited)
    summary.update(retried=retried, duplicates=duplicates, engine="ray", **({"dtype": dtypes.pop()} if dtypes else {}))
    return summary
