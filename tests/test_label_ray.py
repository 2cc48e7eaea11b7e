"""The labeller on Ray Data (`scripts/label.py --engine ray`): the default engine's records and failures from a local
Ray; every page once after a model worker, the driver or a node is killed mid-run; bad flags refused before anything
is read. The Ray tests are slow (a Ray start costs seconds): they share one local Ray of 2 CPUs per module."""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO_ROOT
from helpers import (
    TEXT_PAGES,
    VOCAB,
    make_archive,
    requires_tesseract,
    save_tiny_checkpoint,
    write_text_pdf,
)

from layoutlm_roialign.labelling import read_complete
from layoutlm_roialign.labelling.ray_run import ATTEMPTS_ACTOR

pytest.importorskip("pypdfium2", reason="the labeller's PDF inputs need pypdfium2 (the `pdf` extra)")

RAY_ARGS = dict(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "final")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for the module (its address, for drivers in other processes); shut down after it."""
    ray = pytest.importorskip("ray")
    ray.init(**RAY_ARGS)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def label(checkpoint: str, *argv: str, capsys=None) -> tuple[int, dict | None]:
    """scripts/label.py's `main` in this process: (exit status, the summary)."""
    main = runpy.run_path(str(REPO_ROOT / "scripts" / "label.py"), run_name="script")["main"]
    try:
        return 0, main(["--model", checkpoint, "--quiet", *argv])
    except SystemExit as exit:
        summary = None
        if capsys is not None:  # the JSON summary is the command's last line; Ray may log after it
            lines = capsys.readouterr().out.strip().splitlines()
            summary = next((json.loads(line) for line in reversed(lines) if line.startswith('{"pages"')), None)
        return exit.code, summary


def text_pdfs(folder, pages: dict[str, int]) -> set[tuple[str, int]]:
    """PDFs with a text layer (`name: page count`) in `folder`; returns their (file name, page) keys."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, count) in enumerate(pages.items()):
        write_text_pdf(folder / name, [TEXT_PAGES[(i + p) % 2] + VOCAB[: (i + p) % 5] for p in range(count)])
    return {(name, p) for name, count in pages.items() for p in range(1, count + 1)}


def keys_of(path) -> list[tuple[str, int]]:
    return sorted((os.path.basename(r["source"]), r["page"]) for r in read_complete(path))


def without_timing(failures: list[dict]) -> dict:
    return {(r["source"], r["page"]): r for r in failures}


# The quick tests come first: none of them may meet the module's local Ray (it would be joined instead).


@pytest.mark.parametrize(
    "argv, env, flag",
    [
        (["--engine", "ray", "--merge"], {}, "--merge does not go with --engine ray"),
        (["--engine", "ray", "--num_workers", "4"], {}, "--num_workers does not go with --engine ray"),
        (["--engine", "ray", "--device=cuda"], {}, "--device does not go with --engine ray"),
        (["--engine", "ray"], {"WORLD_SIZE": "2"}, "--engine ray runs one driver"),
        (["--ray_address", "head:6379"], {}, "--ray_address is an option of --engine ray"),
        (["--num_replicas", "2"], {}, "--num_replicas is an option of --engine ray"),
        (["--engine", "ray", "--num_replicas", "0"], {}, "--num_replicas must be a positive int"),
        (["--engine", "ray", "--num_cpus_per_reader", "0"], {}, "--num_cpus_per_reader must be above 0"),
    ],
)
def test_flags_that_make_no_sense_with_the_engine_are_refused_naming_the_flag(argv, env, flag, tmp_path, capsys,
                                                                              monkeypatch):  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status, _ = label("no-model-needed", "--inputs", str(tmp_path), "--output", str(tmp_path / "labels.jsonl"), *argv)
    assert status == 2 and flag in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # nothing written


def test_without_ray_installed_one_line_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    make_archive(tmp_path / "in")
    output = tmp_path / "labels.jsonl"
    status, _ = label("no-model-needed", "--inputs", str(tmp_path / "in"), "--output", str(output), "--engine", "ray")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err[-1].endswith('--engine ray needs Ray Data: pip install "layoutlm-roialign[ray]"')
    assert not output.exists()


def test_an_unreachable_ray_address_stops_before_anything_is_read_or_written(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    import ray

    assert not ray.is_initialized()
    read = []
    monkeypatch.setattr("layoutlm_roialign.labelling.reading.PageReader.__getitem__", lambda *a: read.append(a))
    make_archive(tmp_path / "in")
    output = tmp_path / "labels.jsonl"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nothing listens on
    address = f"127.0.0.1:{closed.getsockname()[1]}"
    start = time.monotonic()
    status, _ = label("no-model-needed", "--inputs", str(tmp_path / "in"), "--output", str(output), "--engine", "ray",
                      "--ray_address", address)  # fmt: skip
    closed.close()
    err = capsys.readouterr().err
    assert status == 2 and f"--ray_address {address!r}: no Ray cluster answers there" in err
    assert "ray start --head" in err and time.monotonic() - start < 30
    assert not output.exists() and not (tmp_path / "labels.failures.jsonl").exists() and read == []
    assert not ray.is_initialized()


@pytest.mark.slow
@requires_tesseract
def test_ray_gives_the_default_engines_records_and_failures(checkpoint, local_ray, tmp_path, capsys):
    """12 pages: images, a text PDF, a scan, a 3-frame TIFF, a corrupt PNG, an empty PDF (and a 2-page text PDF)."""
    from helpers import assert_same_records

    make_archive(tmp_path / "in")
    text_pdfs(tmp_path / "in", {"h_more.pdf": 2})
    inputs = ["--inputs", str(tmp_path / "in"), "--batch_size", "4", "--png_dir", str(tmp_path / "png")]
    status, local = label(checkpoint, *inputs, "--output", str(tmp_path / "local.jsonl"), capsys=capsys)
    assert status == 1 and (local["pages"], local["failed"]) == (10, 2)
    status, on_ray = label(checkpoint, *inputs, "--output", str(tmp_path / "ray.jsonl"), "--engine", "ray",
                           capsys=capsys)  # fmt: skip
    assert status == 1 and (on_ray["pages"], on_ray["failed"], on_ray["retried"]) == (10, 2, 0)
    assert on_ray["dtype"] == local["dtype"] == "float32"  # what the replicas computed in (auto: float32 in tests)
    assert_same_records(read_complete(tmp_path / "ray.jsonl"), read_complete(tmp_path / "local.jsonl"))  # png too
    assert all(os.path.getsize(r["png"]) > 0 for r in read_complete(tmp_path / "ray.jsonl"))  # drawn by the replica
    assert without_timing(read_complete(tmp_path / "ray.failures.jsonl")) == without_timing(
        read_complete(tmp_path / "local.failures.jsonl")
    )
    # A rerun resumes: nothing labelled again, the two failures tried again.
    status, again = label(checkpoint, *inputs, "--output", str(tmp_path / "ray.jsonl"), "--engine", "ray",
                          capsys=capsys)  # fmt: skip
    assert status == 1 and (again["pages"], again["skipped"], again["failed"]) == (0, 10, 2)
    assert len(read_complete(tmp_path / "ray.jsonl")) == 10


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> str:
    """A tiny checkpoint reading pages at 448 pixels: about a second a page here, so that a kill lands mid-page."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("slow") / "final", image_size=448)


def alive_actors(name: str) -> list[dict]:
    """This cluster's live actors whose class name or name holds `name`, from the GCS's actor table (the state API
    of `ray.util.state` needs the dashboard, which a `ray[data]` install does not run)."""
    from ray._private import state

    return [
        a
        for a in state.actors().values()
        if a["State"] == "ALIVE" and (name in a["ActorClassName"] or name in a["Name"])
    ]


def pages_started(stage: str) -> set[tuple]:
    """The pages whose `stage` ("read" or "label") the running labeller has started (its `PageAttempts` says)."""
    import ray

    watchers = alive_actors(ATTEMPTS_ACTOR)
    if not watchers:
        return set()
    return {tuple(key) for key in ray.get(ray.get_actor(watchers[0]["Name"]).pages_started.remote(stage))}


def wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def do_when(condition, action, timeout: float = 240.0) -> dict:
    """In a thread: wait for `condition()`, then run `action()`; returns a dict that gets `done` (and `error`)."""
    state: dict = {}

    def watch() -> None:
        try:
            wait_for(condition, timeout)
            action()
            state["done"] = True
        except (Exception, AssertionError) as err:  # noqa: BLE001 (reported by the test)
            state["error"] = err

    threading.Thread(target=watch, daemon=True).start()
    return state


@pytest.mark.slow
def test_a_dataset_with_word_columns_gives_the_default_engines_records(checkpoint, local_ray, tmp_path):
    from helpers import assert_same_records, draw_words

    datasets = pytest.importorskip("datasets")
    rows = {"image": [], "words": [], "bboxes": []}
    for i, words in enumerate([["date", "total"], ["name"], [], VOCAB[:4]]):
        image, boxes = draw_words(words, seed=i)
        rows["image"].append(image)
        rows["words"].append(words)
        width, height = image.size
        scale = (width, height, width, height)
        rows["bboxes"].append([[int(v * 1000 / s) for v, s in zip(b, scale, strict=True)] for b in boxes])
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).save_to_disk(tmp_path / "ds")
    argv = ["--dataset", str(tmp_path / "ds"), "--words_column", "words", "--boxes_column", "bboxes"]
    assert label(checkpoint, *argv, "--output", str(tmp_path / "local.jsonl"))[0] == 0
    status, summary = label(checkpoint, *argv, "--output", str(tmp_path / "ray.jsonl"), "--engine", "ray")
    assert status == 0 and (summary["pages"], summary["failed"]) == (4, 0)
    records = read_complete(tmp_path / "ray.jsonl")
    assert {r["words_from"] for r in records} == {"dataset"}
    assert_same_records(records, read_complete(tmp_path / "local.jsonl"))


def run_to_its_end(run, timeout: float = 400.0) -> dict:
    """`run()`'s summary, from a thread given `timeout` seconds: a run that is still going then fails the test (Ray
    retries a lost task without end), and so does one that raised."""
    done: list = []

    def target():
        try:
            done.append(run())
        except BaseException as err:  # noqa: BLE001 (handed to the test)
            done.append(err)

    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    runner.join(timeout=timeout)
    assert done, f"the run did not end within {timeout:.0f} s: a page was retried without end"
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


@pytest.mark.slow
def test_a_page_that_ends_its_reader_in_every_attempt_becomes_a_failure_and_the_run_ends(
    checkpoint, local_ray, tmp_path
):
    from helpers import draw_words

    from layoutlm_roialign.labelling import plan_run
    from layoutlm_roialign.labelling.ray_run import READ_ATTEMPTS, RayOptions, label_on_ray
    from layoutlm_roialign.loader import load_model_and_processor
    from layoutlm_roialign.options_layoutlm_roialign import ReadOptions

    datasets = pytest.importorskip("datasets")
    rows = {"image": [], "words": [], "bboxes": []}
    for i, words in enumerate([["date", "total"], ["name"], ["poison", "date"], VOCAB[:4]]):
        image, boxes = draw_words(words, seed=i)
        rows["image"].append(image)
        rows["words"].append(words)
        scale = (*image.size, *image.size)
        rows["bboxes"].append([[int(v * 1000 / s) for v, s in zip(b, scale, strict=True)] for b in boxes])
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).save_to_disk(tmp_path / "ds")
    output = tmp_path / "labels.jsonl"
    read = ReadOptions(words_column="words", boxes_column="bboxes")
    plan = plan_run(str(output), dataset=str(tmp_path / "ds"), read=read)

    def ends_its_process_on_poison(batch: dict) -> dict:
        """Ends the process that reads a row whose words hold "poison", in every attempt (as a crash in a PDF or image
        library would); defined here so that Ray pickles it by value for the readers."""
        if any("poison" in words for words in batch["words"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    plan.dataset = plan.dataset.with_transform(ends_its_process_on_poison)
    model, processor = load_model_and_processor(checkpoint)
    summary = run_to_its_end(lambda: label_on_ray(plan, model, processor, RayOptions(), quiet=True))
    assert (summary["pages"], summary["failed"]) == (3, 1)  # labelled, failed
    assert summary["retried"] >= READ_ATTEMPTS - 1  # its batch, started again after each loss
    (failure,) = read_complete(plan.failures_output)
    assert (failure["source"], failure["page"]) == (f"{tmp_path / 'ds'}[train]", 3)  # the poisoned row
    assert "ended its reader process (signal SIGKILL)" in failure["error"]
    assert sorted(r["page"] for r in read_complete(output)) == [1, 2, 4]  # the others, once each


@pytest.mark.slow
def test_a_page_that_ends_its_replica_in_every_attempt_becomes_a_failure_and_the_run_ends(
    checkpoint, local_ray, tmp_path
):
    from layoutlm_roialign.labelling import plan_run
    from layoutlm_roialign.labelling.ray_run import LABEL_ATTEMPTS, LOST_ALONE, RayOptions, label_on_ray
    from layoutlm_roialign.loader import load_model_and_processor

    (tmp_path / "in").mkdir()
    words = [["date", "name"], ["total", "amount"], ["phone", "date"], ["invoice", "received"]]  # "phone": doc2 only
    for i, page in enumerate(words):
        write_text_pdf(tmp_path / "in" / f"doc{i}.pdf", [page])
    output = tmp_path / "labels.jsonl"
    plan = plan_run(str(output), [str(tmp_path / "in")])
    model, processor = load_model_and_processor(checkpoint)
    poison = processor.tokenizer.convert_tokens_to_ids("phone")
    assert poison != processor.tokenizer.unk_token_id

    class EndsItsProcessOnPoison(type(model)):
        """Ends the process whose forward pass sees the token of "phone" (as a crash in a kernel would), in every
        attempt; defined here so that Ray pickles it by value for the replica."""

        head_name = type(model).__name__  # the head it labels with

        def forward(self, input_ids=None, **inputs):
            if input_ids is not None and bool((input_ids == poison).any()):
                os.kill(os.getpid(), signal.SIGKILL)
            return super().forward(input_ids=input_ids, **inputs)

    model.__class__ = EndsItsProcessOnPoison  # not a registered head: the replica gets this very object
    summary = run_to_its_end(lambda: label_on_ray(plan, model, processor, RayOptions(), batch_size=4, quiet=True))
    assert (summary["pages"], summary["failed"]) == (3, 1)  # labelled, failed
    assert summary["retried"] >= LABEL_ATTEMPTS - 1
    (failure,) = read_complete(plan.failures_output)
    assert (failure["source"], failure["page"]) == (str(tmp_path / "in" / "doc2.pdf"), 1)
    assert f"ended its model replica's process {LOST_ALONE} times" in failure["error"]
    assert keys_of(output) == [("doc0.pdf", 1), ("doc1.pdf", 1), ("doc3.pdf", 1)]  # the others, once each


@pytest.mark.slow
def test_a_model_worker_killed_mid_run_has_its_pages_retried_and_each_written_once(checkpoint, local_ray, tmp_path):
    from layoutlm_roialign.labelling import plan_run
    from layoutlm_roialign.labelling.ray_run import RayOptions, label_on_ray
    from layoutlm_roialign.loader import load_model_and_processor

    expected = text_pdfs(tmp_path / "in", {f"doc{i}.pdf": 2 for i in range(6)})
    output = tmp_path / "labels.jsonl"
    plan = plan_run(str(output), [str(tmp_path / "in")])
    model, processor = load_model_and_processor(checkpoint)
    inside = tmp_path / "inside-a-batch"  # written by the replica when it is inside its third forward pass

    class WaitsInItsThirdForward(type(model)):
        """Stops inside its third forward pass of the run (once, in the first replica): the kill lands there, while
        the replica holds a batch whose records are not sent; defined here so that Ray pickles it by value."""

        head_name = type(model).__name__
        forwards = 0

        def forward(self, **inputs):
            WaitsInItsThirdForward.forwards += 1
            if WaitsInItsThirdForward.forwards == 3 and not inside.exists():
                inside.write_text(str(os.getpid()))
                time.sleep(120)  # the test kills the process here; were it not killed, `retried` would stay 0
            return super().forward(**inputs)

    model.__class__ = WaitsInItsThirdForward  # not a registered head: the replica gets this very object
    killed = []

    def kill_the_replica():
        (replica,) = alive_actors("LabelReplica")  # its pid from Ray's state
        assert str(replica["Pid"]) == inside.read_text()  # the process inside the batch
        killed.append(len(read_complete(output)))
        os.kill(replica["Pid"], signal.SIGKILL)

    watch = do_when(lambda: inside.exists() and inside.read_text(), kill_the_replica)
    summary = run_to_its_end(lambda: label_on_ray(plan, model, processor, RayOptions(), batch_size=1, quiet=True))
    assert watch.get("done"), watch
    assert killed[0] < len(expected)  # killed mid-run
    assert keys_of(output) == sorted(expected)  # every page, once
    assert summary["pages"] == len(expected) and summary["retried"] >= 1


def reading_processes() -> list[int]:
    """The pids of the Ray worker processes running a `read_pages` task now (Ray titles a busy worker
    `ray::<task>`)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(b"ray::") and b"read_pages" in title:
            pids.append(int(pid))
    return pids


@pytest.mark.slow
@requires_tesseract
def test_a_reader_worker_killed_mid_page_has_its_page_read_again_and_each_written_once(
    checkpoint, local_ray, tmp_path
):
    from helpers import draw_words

    (tmp_path / "in").mkdir()
    for i in range(8):  # drawn 4x larger, so that OCR takes a second or so on an idle machine
        page = draw_words(VOCAB[i : i + 3], seed=i)[0]
        page.resize((page.width * 4, page.height * 4)).save(tmp_path / "in" / f"scan{i}.png")
    output = tmp_path / "labels.jsonl"
    killed = []

    def kill_a_reader():
        while True:  # a reader that finished its page before the kill is not killed: wait for the next one
            time.sleep(0.2)  # into the page, past the report that it started
            if pids := reading_processes():
                killed.append(len(pages_started("read")))
                os.kill(pids[0], signal.SIGKILL)
                return
            wait_for(reading_processes)

    watch = do_when(lambda: len(pages_started("read")) >= 2 and reading_processes(), kill_a_reader)
    status, summary = label(checkpoint, "--inputs", str(tmp_path / "in"), "--output", str(output), "--engine", "ray",
                            "--words_from", "ocr", "--batch_size", "1")  # fmt: skip
    assert watch.get("done"), watch
    assert status == 0 and killed[0] < 8
    assert keys_of(output) == sorted((f"scan{i}.png", 1) for i in range(8))  # every page, once
    assert summary["pages"] == 8 and summary["retried"] >= 1


@pytest.mark.slow
def test_a_killed_driver_rerun_with_the_same_command_resumes_and_writes_every_page_once(
    slow_checkpoint, local_ray, tmp_path
):
    expected = text_pdfs(tmp_path / "in", {f"doc{i}.pdf": 2 for i in range(6)})
    output = tmp_path / "labels.jsonl"
    argv = ["--model", slow_checkpoint, "--inputs", str(tmp_path / "in"), "--output", str(output), "--engine", "ray",
            "--words_from", "text", "--batch_size", "1", "--quiet"]  # fmt: skip
    driver = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "label.py"), *argv, "--ray_address", local_ray],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        wait_for(lambda: len(read_complete(output)) >= 3 or driver.poll() is not None, timeout=240)
        driver.kill()
    finally:
        stderr = driver.communicate(timeout=60)[1]
    assert driver.returncode == -signal.SIGKILL, stderr[-3000:]
    written = len(read_complete(output))
    assert 3 <= written < len(expected)
    status, summary = label(slow_checkpoint, *argv[2:-1], "--ray_address", local_ray)
    assert status == 0 and (summary["skipped"], summary["pages"]) == (written, len(expected) - written)
    assert keys_of(output) == sorted(expected)  # every page, once
    assert output.read_bytes().endswith(b"\n")
    status, summary = label(slow_checkpoint, *argv[2:-1], "--ray_address", local_ray)  # all done: nothing to label
    assert status == 0 and (summary["skipped"], summary["pages"], summary["retried"]) == (len(expected), 0, 0)
    assert keys_of(output) == sorted(expected)


@pytest.mark.slow
def test_replicas_load_the_checkpoint_on_one_machine_and_compute_on_its_cores(checkpoint, local_ray, monkeypatch):
    """On a cluster whose nodes all run here, a replica loads the checkpoint by its absolute path (no weights through
    the object store), and a CPU replica computes on the node's cores shared by the replicas there, not on the one
    thread Ray's OMP_NUM_THREADS gives an actor."""
    import ray
    import torch

    from layoutlm_roialign.labelling.ray_run import CheckpointSource, LabelReplica, models_for_replicas
    from layoutlm_roialign.loader import load_model_and_processor

    model, processor = load_model_and_processor(checkpoint)
    monkeypatch.chdir(os.path.dirname(checkpoint))
    given = models_for_replicas(ray, model, CheckpointSource("final"))  # relative to the driver's folder
    assert given == CheckpointSource(os.path.realpath(checkpoint))
    assert isinstance(models_for_replicas(ray, model, None), ray.ObjectRef)  # a model handed in: the object store

    replica = ray.remote(num_cpus=1)(LabelReplica).remote(
        given, ray.put(processor), 8, "float32", False, 0, 1, None, None
    )

    def threads_and_model(self):
        return torch.get_num_threads(), len(os.sched_getaffinity(0)), self.labeller.model.state_dict()

    threads, cores, weights = ray.get(replica.__ray_call__.remote(threads_and_model))
    assert threads == cores and (cores == 1 or threads > 1)  # Ray's OMP_NUM_THREADS for the actor is 1
    assert all(torch.equal(weights[k].cpu(), v) for k, v in model.state_dict().items())
    ray.kill(replica)


@pytest.mark.slow
def test_a_cluster_that_loses_a_node_mid_run_still_writes_every_page_once(slow_checkpoint, tmp_path):
    """Three nodes of one CPU (the head, two workers); the worker node running the model replica (else the first)
    is removed mid-run. (With two nodes of one CPU, the survivor's CPU goes to the restarted replica and no reader
    could run: a cluster needs CPUs for readers beyond its replicas'.) The last Ray test of the module: it replaces
    the module's local Ray with the cluster."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    ray.shutdown()
    nodes = dict(num_cpus=1, object_store_memory=100 * 2**20)
    cluster = Cluster(initialize_head=True, head_node_args={**nodes, "include_dashboard": False})
    try:
        workers = [cluster.add_node(**nodes) for _ in range(2)]
        cluster.wait_for_nodes()
        expected = text_pdfs(tmp_path / "in", {f"doc{i}.pdf": 2 for i in range(5)})
        output = tmp_path / "labels.jsonl"
        removed = []

        def remove_a_worker_node():
            replica_nodes = {a["Address"]["NodeID"] for a in alive_actors("LabelReplica")}
            node = next((w for w in workers if w.node_id in replica_nodes), workers[0])
            removed.append((len(read_complete(output)), node.node_id in replica_nodes))
            cluster.remove_node(node)

        watch = do_when(lambda: len(read_complete(output)) >= 2, remove_a_worker_node)
        status, summary = label(slow_checkpoint, "--inputs", str(tmp_path / "in"), "--output", str(output),
                                "--engine", "ray", "--words_from", "text", "--batch_size", "1",
                                "--ray_address", cluster.address)  # fmt: skip
        assert watch.get("done"), watch
        assert status == 0 and removed[0][0] < len(expected)  # removed mid-run
        assert keys_of(output) == sorted(expected)  # every page, once
        assert summary["pages"] == len(expected)
        print("removed after", removed, "retried", summary["retried"])
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_the_default_size_model_reaches_the_replicas_and_computes_alike():
    """The package's default model (LayoutLM-base + ResNet-101) is too deep a module tree for pickle at Python's
    recursion limit; the replicas get its head, config and weights instead, and the rebuilt model computes alike."""
    import pickle

    import torch

    from layoutlm_roialign import LayoutLMRoIAlignConfig, LayoutLMRoIAlignForTokenClassification
    from layoutlm_roialign.labelling.ray_run import rebuilt_model, replica_model

    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(LayoutLMRoIAlignConfig(num_labels=3)).eval()
    with pytest.raises(RecursionError):
        pickle.dumps(model)  # what Ray's put of the module itself met
    copy = rebuilt_model(pickle.loads(pickle.dumps(replica_model(model))))
    assert type(copy) is type(model) and not copy.training
    inputs = {
        "input_ids": torch.tensor([[101, 2054, 2003, 102]]),
        "bbox": torch.tensor([[[0, 0, 0, 0], [10, 10, 200, 40], [220, 10, 400, 40], [1000, 1000, 1000, 1000]]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "pixel_values": torch.rand(1, 3, 224, 224),
    }
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, copy(**inputs).logits)


def test_reader_tasks_hold_several_pages_yet_leave_no_cpu_without_work():
    """A text-layer PDF page costs about what a Ray task costs, so a task reads several pages; a small run is still
    split so that every CPU gets tasks, and a large one into at most MAX_BLOCKS."""
    from layoutlm_roialign.labelling.ray_run import MAX_BLOCKS, READ_TASK_PAGES, READ_TASKS_PER_CPU, read_tasks

    assert read_tasks(120, 2) == -(-120 // READ_TASK_PAGES)  # 8 pages a task
    assert read_tasks(12, 2) == 2 * READ_TASKS_PER_CPU  # 1-2 pages a task: both CPUs busy
    assert read_tasks(12, 64) == 12 and read_tasks(1, 2) == 1  # never an empty task
    assert read_tasks(10**8, 2) == MAX_BLOCKS


REPLICA_ON_ANOTHER_THREAD = r"""
import glob, json, pickle, threading, types
import torch
from layoutlm_roialign.labelling import ray_run

def ticks():  # CPU time of each thread of this process
    out = {}
    for task in glob.glob("/proc/self/task/*"):
        fields = open(task + "/stat").read().rsplit(")", 1)[1].split()
        out[task] = int(fields[11]) + int(fields[12])
    return out

class MatrixProducts:  # stands in for PageLabeller: matrix products (MKL), and the threads that computed them
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, group):
        a = torch.randn(1024, 1024)
        a @ a
        before = ticks()
        for _ in range(40):
            a @ a
        after = ticks()
        busy = sorted((after[k] - before.get(k, 0) for k in after), reverse=True)
        return [{**{k: group[0][k] for k in ("source", "page", "num_pages")}, "busy": busy[:2]}]

ray_run.PageLabeller = MatrixProducts
ray_run._report = lambda *args: 0  # no PageAttempts actor here
model = types.SimpleNamespace(config=types.SimpleNamespace(id2label={0: "O"}))
replica = ray_run.LabelReplica(model, None, 8, "float32", False, 0, 1, None, None)  # built on the main thread
page = {"source": "a.pdf", "page": 1, "num_pages": 1, "error": "no words"}  # no windows: labelled at once
done = []
caller = threading.Thread(target=lambda: done.append(replica({"item": [pickle.dumps(page)]})))  # as Ray Data calls
caller.start()
caller.join()
print("BUSY", json.loads(done[0]["record"][0])["busy"])
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPU cores to see a second thread compute")
def test_a_cpu_replica_called_on_another_thread_computes_on_its_cores():
    """Ray Data calls a replica on a thread of its own, not the one that built it, in a worker whose OMP_NUM_THREADS
    may be 1 from its start (the user's, exported before `ray start`): the matrix products of a call still run on the
    replica's threads, not on one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", REPLICA_ON_ANOTHER_THREAD], capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = json.loads(done.stdout.split("BUSY", 1)[1])
    assert second >= first / 3, (first, second)  # the second thread computed too (one thread alone: second == 0)
