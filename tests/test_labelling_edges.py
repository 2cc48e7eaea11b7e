"""The labeller at its edges: nothing a user had is changed or lost. A foreign --output is refused and left
as it is; a second run on the same output stops; --merge checks the launch's shard set before it removes anything;
globs and folder walks give each file once and record unreadable folders; `--words_from text` never marks an image
done; a foreign record with a list for `page` is a clear error."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import time

import PIL.Image
import pytest
import torch
from conftest import REPO_ROOT, write_bilevel_png
from helpers import (
    TEXT_PAGES,
    label_in_process,
    make_archive,
    requires_tesseract,
    run_script,
    save_tiny_checkpoint,
    write_text_pdf,
)

from layoutlm_roialign.labelling import OutputLock, expand_inputs, merge_shards, plan_run, read_complete
from layoutlm_roialign.labelling.shards import output_paths
from layoutlm_roialign.options_layoutlm_roialign import ReadOptions


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "final")


@pytest.fixture
def text_pdfs(tmp_path):
    """A folder of three text-layer PDFs (5 pages), labelled without OCR."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_text_pdf(folder / "a.pdf", TEXT_PAGES)
    write_text_pdf(folder / "b.pdf", TEXT_PAGES[:1])
    write_text_pdf(folder / "c.pdf", TEXT_PAGES)
    return folder


def exit_code(checkpoint, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        label_in_process(checkpoint, argv)
    return exit_info.value.code, capsys.readouterr().err


def test_a_foreign_output_is_refused_and_left_as_it_is(checkpoint, text_pdfs, tmp_path, capsys):
    notes = tmp_path / "notes.jsonl"
    notes.write_bytes(b"my notes, no newline at the end")  # looked like a torn last line: it was truncated
    code, err = exit_code(checkpoint, ["--inputs", str(text_pdfs), "--output", str(notes)], capsys)
    assert code == 2 and "is not the labeller's" in err and "--output" in err
    assert notes.read_bytes() == b"my notes, no newline at the end"
    assert not (tmp_path / "notes.failures.jsonl").exists()

    # A failures file that is not ours is not replaced either.
    foreign = tmp_path / "labels.failures.jsonl"
    foreign.write_bytes(b"a list of mine")
    code, err = exit_code(checkpoint, ["--inputs", str(text_pdfs), "--output", str(tmp_path / "labels.jsonl")], capsys)
    assert code == 2 and "labels.failures.jsonl" in err and foreign.read_bytes() == b"a list of mine"

    # A torn record of ours is still cut off and its page labelled again.
    output = tmp_path / "ours.jsonl"
    output.write_bytes(b'{"source": "x.pdf", "page": 1, "num_pages": 1}\n{"source": "y.pd')
    label_in_process(checkpoint, ["--inputs", str(text_pdfs), "--output", str(output)])
    assert [r["source"] for r in read_complete(output)][0] == "x.pdf" and len(read_complete(output)) == 1 + 5


def test_a_record_whose_page_is_a_list_is_a_clear_error_naming_the_file_and_line(checkpoint, text_pdfs, tmp_path):
    output = tmp_path / "labels.jsonl"
    output.write_text('{"source": "a.pdf", "page": 1}\n{"source": "a.pdf", "page": [2]}\n')
    status, log = run_script("--model", checkpoint, "--inputs", str(text_pdfs), "--output", str(output), check_exit=2)
    assert "labels.jsonl line 2 is not a labeller record" in log and "Traceback" not in log


def test_a_second_run_on_the_same_output_stops_and_writes_nothing(checkpoint, text_pdfs, tmp_path, capsys):
    output = tmp_path / "labels.jsonl"
    with OutputLock(output):  # what a labelling run holds while it writes
        code, err = exit_code(checkpoint, ["--inputs", str(text_pdfs), "--output", str(output)], capsys)
        assert code == 2 and "being written by another running process" in err
        assert output.read_bytes() == b""
    summary = label_in_process(checkpoint, ["--inputs", str(text_pdfs), "--output", str(output)])
    assert summary["pages"] == 5  # the lock went with the run that held it
    assert not OutputLock.is_held(output)


@pytest.mark.slow
def test_two_runs_started_on_the_same_output_write_every_page_once(checkpoint, text_pdfs, tmp_path):
    output = tmp_path / "labels.jsonl"
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "label.py"), "--model", checkpoint, "--inputs",
            str(text_pdfs), "--output", str(output), "--quiet", "--num_workers", "0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "12"]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results
    keys = [(r["source"], r["page"]) for r in read_complete(output)]
    assert len(keys) == len(set(keys)) == 5


def write_launch(checkpoint, folder, output, count: int = 2) -> None:
    """Run the `count` processes of a launch, one after another, into shards of `output`."""
    from layoutlm_roialign.inference import load_model_and_processor

    model, processor = load_model_and_processor(checkpoint)
    for index in range(count):
        plan = plan_run(str(output), [str(folder)], process_index=index, num_processes=count)
        plan.run(model, processor, num_workers=0, quiet=True)


@pytest.mark.parametrize("damage", ["missing", "empty", "torn", "unfinished", "writing"])
def test_merge_checks_the_launch_and_removes_nothing_when_a_shard_is_not_complete(
    checkpoint, text_pdfs, tmp_path, damage
):
    output = tmp_path / "labels.jsonl"
    write_launch(checkpoint, text_pdfs, output)
    first, _ = output_paths(output, 0, 2)
    if damage == "missing":
        os.remove(first)
    elif damage == "empty":
        open(first, "wb").close()
    elif damage == "torn":
        with open(first, "ab") as f:
            f.write(b'{"source": "a.pd')
    elif damage == "unfinished":  # its process was killed before it finished
        os.remove(first.removesuffix(".jsonl") + ".done.json")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    lock = OutputLock(first) if damage == "writing" else None
    try:
        message = {"missing": "is missing shard", "empty": "holds 0 of the", "torn": "torn line",
                   "unfinished": "was not finished", "writing": "still being written"}[damage]  # fmt: skip
        with pytest.raises(ValueError, match=message):
            merge_shards(output)
    finally:
        if lock is not None:
            lock.release()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # nothing changed
    if damage == "writing":  # once the writer is gone the same shards merge, and only then are they removed
        assert merge_shards(output)["records"] == 5
        assert not list(tmp_path.glob("labels.shard-*"))


@pytest.mark.slow
def test_merge_while_a_shard_is_being_written_loses_no_page(checkpoint, text_pdfs, tmp_path, monkeypatch):
    """Process 0 of 2 writes slowly; --merge during its run stops; after both finish it has every page."""
    output = tmp_path / "labels.jsonl"
    slow = f"""
import os, sys, time
os.environ.update(RANK="0", WORLD_SIZE="2")
sys.argv = ["label.py", "--model", {checkpoint!r}, "--inputs", {str(text_pdfs)!r}, "--output", {str(output)!r},
            "--batch_size", "1", "--num_workers", "0", "--quiet"]
from layoutlm_roialign.labelling import jsonl
from layoutlm_roialign.labelling.jsonl import read_complete
original = jsonl.JsonlWriter.write
def write(self, records):
    original(self, records)
    time.sleep(3)
jsonl.JsonlWriter.write = write
import runpy
runpy.run_path({str(REPO_ROOT / "scripts" / "label.py")!r}, run_name="__main__")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    writer = subprocess.Popen([sys.executable, "-c", slow], env=env, stderr=subprocess.PIPE, text=True)
    shard = output_paths(output, 0, 2)[0]
    deadline = time.time() + 240
    while not read_complete(shard) and time.time() < deadline and writer.poll() is None:
        time.sleep(0.2)
    assert read_complete(shard) and writer.poll() is None, writer.stderr.read() if writer.poll() is not None else ""
    with pytest.raises(ValueError, match="still being written"):
        merge_shards(output)
    assert os.path.exists(shard) and not output.exists()
    assert writer.wait(timeout=300) == 0, writer.stderr.read()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    label_in_process(checkpoint, ["--inputs", str(text_pdfs), "--output", str(output)])
    status, log = run_script("--merge", "--output", str(output))
    assert "merged 2 shards: 5 pages" in log
    assert len(read_complete(output)) == 5 and not list(tmp_path.glob("labels.shard-*"))


def test_globs_and_folders_give_each_file_once_through_symlinks_and_loops(tmp_path):
    folder = tmp_path / "archive"
    (folder / "sub").mkdir(parents=True)
    PIL.Image.new("L", (10, 10)).save(folder / "a.png")
    PIL.Image.new("L", (10, 10)).save(folder / "sub" / "b.png")
    os.symlink(folder, folder / "sub" / "loop")  # a directory symlink loop
    os.symlink(folder / "a.png", folder / "also_a.png")  # a second name of a.png
    names = [os.path.relpath(p, tmp_path) for p in expand_inputs([str(folder / "**" / "*.png")])]
    assert names == ["archive/a.png", "archive/sub/b.png"]
    names = [os.path.relpath(p, tmp_path) for p in expand_inputs([str(folder), str(folder / "a.png")])]
    assert names == ["archive/a.png", "archive/sub/b.png"]


def test_an_unreadable_folder_is_a_failure_record_and_a_given_one_says_it_cannot_be_read(
    checkpoint, text_pdfs, tmp_path, monkeypatch
):
    locked = text_pdfs / "locked"
    locked.mkdir()
    write_text_pdf(locked / "d.pdf", TEXT_PAGES[:1])
    scandir = os.scandir

    def refusing(path="."):  # what a folder without read permission gives (the tests may run as root)
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    plan = plan_run(str(tmp_path / "labels.jsonl"), [str(text_pdfs)])
    plan.lock.release()
    assert len(plan.jobs) == 5
    assert plan.failures == [
        {"source": str(locked), "page": None,
         "error": "the folder cannot be read (Permission denied): its files were not labelled"}
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"--inputs .*locked.*: the folder cannot be read \(Permission denied\)"):
        expand_inputs([str(locked)])


def test_words_from_text_fails_image_pages_so_that_a_later_ocr_run_labels_them(checkpoint, tmp_path, capsys):
    pages = make_archive(tmp_path / "in")
    output = tmp_path / "labels.jsonl"
    code, _ = exit_code(checkpoint, ["--inputs", str(tmp_path / "in"), "--output", str(output),
                                     "--words_from", "text"], capsys)  # fmt: skip
    assert code == 1
    labelled = {(os.path.basename(r["source"]), r["page"]) for r in read_complete(output)}
    assert labelled == {("c_text.pdf", 1), ("c_text.pdf", 2)}
    failures = {
        (os.path.basename(r["source"]), r["page"]): r for r in read_complete(tmp_path / "labels.failures.jsonl")
    }
    no_text = {(n, p) for n, count in pages.items() for p in range(1, count + 1)} - labelled
    assert no_text <= set(failures)
    assert all("--words_from text" in failures[key]["error"] for key in no_text)
    plan = plan_run(str(output), [str(tmp_path / "in")], read=ReadOptions("ocr"))
    plan.lock.release()
    todo = {(os.path.basename(j.source), j.page) for j in plan.jobs}
    assert todo == no_text | {("f_corrupt.png", 1)}  # an OCR run picks them up (and retries the damaged page)
    assert json.loads(json.dumps(plan.failures)) == plan.failures


def test_dpi_out_of_bounds_is_an_argument_error_naming_dpi(checkpoint, text_pdfs, tmp_path, capsys):
    for dpi in ("0", "-1", "10000"):
        code, err = exit_code(
            checkpoint, ["--inputs", str(text_pdfs), "--output", str(tmp_path / "l.jsonl"), "--dpi", dpi], capsys
        )
        assert code == 2 and "--dpi must be a number of dots per inch above 0 and at most 1200" in err
    assert not list(tmp_path.glob("l*"))


def test_a_page_past_the_decompression_bomb_limit_is_a_failure_record_and_the_run_goes_on(
    checkpoint, text_pdfs, tmp_path, capsys
):
    write_bilevel_png(text_pdfs / "huge.png")  # 20000 x 20000: 400 MP, past PIL's 179 MP limit
    output = tmp_path / "labels.jsonl"
    code, _ = exit_code(checkpoint, ["--inputs", str(text_pdfs), "--output", str(output)], capsys)
    assert code == 1  # some pages failed
    assert len(read_complete(output)) == 5  # every page of the three PDFs
    (failure,) = read_complete(tmp_path / "labels.failures.jsonl")
    assert failure["source"] == str(text_pdfs / "huge.png") and failure["page"] is None
    assert "400,000,000 pixels" in failure["error"] and "decompression bombs" in failure["error"]


def test_a_device_this_machine_lacks_exits_2_naming_device_before_any_output(checkpoint, text_pdfs, tmp_path, capsys):
    missing = f"cuda:{torch.cuda.device_count()}"  # on a machine without a GPU: cuda:0, what --device cuda means
    for device in (missing, "gpu"):
        code, err = exit_code(checkpoint, ["--inputs", str(text_pdfs), "--output", str(tmp_path / "l.jsonl"),
                                           "--device", device], capsys)  # fmt: skip
        assert code == 2 and f"--device {device}" in err and "no such device here" in err
    assert not list(tmp_path.glob("l*"))  # no 0-byte output left behind


@requires_tesseract
def test_an_ocr_language_tesseract_lacks_exits_2_naming_ocr_lang_and_the_installed_ones(
    checkpoint, text_pdfs, tmp_path, capsys
):
    code, err = exit_code(checkpoint, ["--inputs", str(text_pdfs), "--output", str(tmp_path / "l.jsonl"),
                                       "--ocr_lang", "eng+xxx"], capsys)  # fmt: skip
    assert code == 2 and "--ocr_lang 'eng+xxx': Tesseract has no 'xxx' language; installed: " in err
    assert "eng" in err.split("installed: ")[1]
    assert not list(tmp_path.glob("l*"))
    # pretrain.py takes the same page-source arguments: refused before any page is read
    pretrain = runpy.run_path(str(REPO_ROOT / "scripts" / "pretrain.py"), run_name="script")["main"]
    with pytest.raises(SystemExit) as exit_info:
        pretrain(["--inputs", str(text_pdfs), "--ocr_lang", "xxx", "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--ocr_lang 'xxx': Tesseract has no 'xxx' language; installed: " in err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_prints_how_to_resume_and_exits_130_and_the_same_command_resumes(checkpoint, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, reader workers included) once the first pages are written."""
    (tmp_path / "in").mkdir()
    pages = {"a.pdf": 2, "b.pdf": 1, "c.pdf": 2}
    for name, count in pages.items():
        write_text_pdf(tmp_path / "in" / name, TEXT_PAGES[:count])
    output = tmp_path / "labels.jsonl"
    argv = ["--model", checkpoint, "--inputs", str(tmp_path / "in"), "--output", str(output), "--words_from", "text",
            "--batch_size", "1", "--num_workers", "1", "--quiet"]  # fmt: skip
    interrupter = f"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job starts with it ignored)
sys.argv = ["label.py", *{argv!r}]
from layoutlm_roialign.labelling import jsonl
from layoutlm_roialign.labelling.jsonl import read_complete
original = jsonl.JsonlWriter.write
def write(self, records):
    original(self, records)
    # Once, after the first records are written: a write may carry several pages (pages are batched as they are
    # read), so waiting for an exact count could let the run finish first.
    if self.path.endswith("labels.jsonl") and read_complete(self.path) and not getattr(jsonl, "interrupted", False):
        jsonl.interrupted = True
        os.killpg(0, signal.SIGINT)  # what the terminal sends on Ctrl-C
jsonl.JsonlWriter.write = write
import runpy
runpy.run_path({str(REPO_ROOT / "scripts" / "label.py")!r}, run_name="__main__")
"""
    interrupted = subprocess.run([sys.executable, "-c", interrupter], capture_output=True, text=True, timeout=300,
                                 start_new_session=True)  # fmt: skip
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    assert "Traceback" not in interrupted.stderr
    assert interrupted.stderr.strip().splitlines()[-1] == (
        f"interrupted: the pages labelled so far are kept in {output}; run the same command again to resume."
    )
    kept = len(read_complete(output))
    assert kept >= 1
    run_script(*argv)
    keys = [(os.path.basename(r["source"]), r["page"]) for r in read_complete(output)]
    assert sorted(keys) == sorted((name, p) for name, count in pages.items() for p in range(1, count + 1))


def test_window_and_batch_sizes_below_1_exit_2_naming_the_flag_before_any_output(
    checkpoint, text_pdfs, tmp_path, capsys
):
    for flag, value in (("--max_length", "0"), ("--batch_size", "0"), ("--stride", "-1"), ("--num_workers", "-1")):
        code, err = exit_code(checkpoint, ["--inputs", str(text_pdfs), "--output", str(tmp_path / "l.jsonl"),
                                           flag, value], capsys)  # fmt: skip
        assert code == 2 and f"{flag} must be" in err and f"got {value}" in err, (flag, err[-300:])
    assert not list(tmp_path.glob("l*"))


CRASH_WORDS = ["signature", "signature"]  # the words of the row whose reading ends its process


def rows_dataset(folder, rows_words: list[list[str]]) -> str:
    """A saved `datasets` dataset of drawn pages, one a row, with their words and 0-1000 boxes."""
    from helpers import draw_words

    datasets = pytest.importorskip("datasets")
    rows = {"image": [], "words": [], "bboxes": []}
    for i, words in enumerate(rows_words):
        image, boxes = draw_words(words, seed=i)
        rows["image"].append(image)
        rows["words"].append(words)
        scale = (*image.size, *image.size)
        rows["bboxes"].append([[int(v * 1000 / s) for v, s in zip(b, scale, strict=True)] for b in boxes])
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).save_to_disk(folder)
    return str(folder)


def ends_its_reader(once_flag: str | None = None):
    """A dataset transform that ends the process reading the row of CRASH_WORDS by SIGKILL, as a crash in a PDF or
    image library or the memory killer would: in every attempt, or (`once_flag`: a file it creates) the first only."""
    import signal

    def transform(batch: dict) -> dict:
        if CRASH_WORDS in batch["words"] and not (once_flag and os.path.exists(once_flag)):
            if once_flag:
                open(once_flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    return transform


@pytest.fixture
def slow_loader_start(monkeypatch):
    """DataLoader iterators that take a second to start (a busy machine), so that a worker can die before its
    iterator is handed back."""
    start = torch.utils.data.DataLoader.__iter__

    def slowly(self):
        iterator = start(self)
        time.sleep(1.0)
        return iterator

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", slowly)


def label_past_a_crashing_row(checkpoint, folder, every_attempt: bool, caplog) -> None:
    """Label 12 dataset rows whose 6th ends its reader process (in every attempt, or the first time only) with the
    default engine, and check that the run went on: the row a failure record or labelled, every other page once,
    the user told once, no worker left behind and torch's SIGCHLD handling as it was."""
    import multiprocessing

    from helpers import VOCAB

    from layoutlm_roialign.loader import load_model_and_processor

    words = [[VOCAB[i % len(VOCAB)], VOCAB[(i + 3) % len(VOCAB)]] for i in range(12)]
    words[5] = CRASH_WORDS
    data = rows_dataset(folder / "ds", words)
    output = folder / "labels.jsonl"
    plan = plan_run(str(output), dataset=data, read=ReadOptions(words_column="words", boxes_column="bboxes"))
    plan.dataset = plan.dataset.with_transform(ends_its_reader(None if every_attempt else str(folder / "once")))
    model, processor = load_model_and_processor(checkpoint)
    caplog.clear()
    summary = plan.run(model, processor, batch_size=2, num_workers=2, quiet=True)
    assert not multiprocessing.active_children()  # the lost loader's other worker stopped too
    (lost,) = [r.message for r in caplog.records if "one process each" in r.message]  # the user is told, once
    again = re.search(r"reading the (\d+) pages", lost)  # those not yet given back: 8 at most (2 workers x 4)
    assert lost.startswith("DataLoader worker (pid") and again and 1 <= int(again[1]) <= 8, lost
    torch.utils.data._utils.signal_handling._error_if_any_worker_fails()  # no lost worker left registered with torch
    subprocess.run([sys.executable, "-c", "pass"], check=True)  # a child's exit (SIGCHLD) after the run raises nothing
    time.sleep(0.2)
    pages = sorted(r["page"] for r in read_complete(output))
    failures = read_complete(plan.failures_output)
    if every_attempt:
        assert (summary["pages"], summary["failed"]) == (11, 1)
        (failure,) = failures
        assert (failure["source"], failure["page"]) == (f"{data}[train]", 6)  # the row whose reading crashes
        assert "ended its reader process (signal SIGKILL)" in failure["error"]
        assert pages == [p for p in range(1, 13) if p != 6]  # the others, once each
    else:  # read again, alone, it is labelled
        assert (summary["pages"], summary["failed"]) == (12, 0) and not failures
        assert pages == list(range(1, 13))


@pytest.mark.parametrize("every_attempt", [True, False], ids=["crashes-every-time", "crashes-once"])
@pytest.mark.parametrize("busy", [False, True], ids=["", "dies-as-the-loader-starts"])
def test_a_page_that_ends_its_reader_process_does_not_stop_the_run(
    checkpoint, tmp_path, every_attempt, busy, caplog, request
):
    if busy:
        request.getfixturevalue("slow_loader_start")
    label_past_a_crashing_row(checkpoint, tmp_path, every_attempt, caplog)


@pytest.mark.slow
def test_a_page_that_ends_its_reader_process_never_stops_the_run_in_20_runs(checkpoint, tmp_path, caplog):
    """The worker's death races the main process (a page it sent may still wait for its tensors' file descriptors,
    which the dead worker can no longer hand over): 20 runs, each must go on."""
    for run in range(20):
        folder = tmp_path / str(run)
        folder.mkdir()
        label_past_a_crashing_row(checkpoint, folder, run % 2 == 0, caplog)
