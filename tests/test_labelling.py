"""Labelling an archive (scripts/label.py, layoutlm_roialign.labelling): a mixed folder in, one record per readable
page and the failures with reasons out; text-layer words; batching matches predict_page; the backbone runs once per
page; resume after a kill or a torn line; shards merge to the single-process output; datasets in."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest
import torch
from conftest import REPO_ROOT
from helpers import (
    TEXT_PAGES,
    VOCAB,
    assert_same_records,
    by_key,
    draw_words,
    label_in_process,
    make_archive,
    requires_tesseract,
    run_script,
    save_tiny_checkpoint,
    write_text_pdf,
)

pytest.importorskip("pypdfium2", reason="the labeller's PDF inputs need pypdfium2 (the `pdf` extra)")

from layoutlm_roialign.data import FUNSD_LABELS  # noqa: E402
from layoutlm_roialign.inference import group_pages, predict_page  # noqa: E402
from layoutlm_roialign.labelling import (  # noqa: E402
    PageLabeller,
    PageReader,
    expand_inputs,
    merge_shards,
    page_jobs,
    plan_run,
    read_complete,
    recover,
)
from layoutlm_roialign.options_layoutlm_roialign import ReadOptions, WindowOptions  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "final")


@pytest.fixture(scope="module")
def model_and_processor(checkpoint):
    from layoutlm_roialign.inference import load_model_and_processor

    return load_model_and_processor(checkpoint)


def test_a_mixed_folder_gives_one_record_per_readable_page_and_the_failures_with_reasons(checkpoint, tmp_path):
    pages = make_archive(tmp_path / "in")
    output = tmp_path / "labels.jsonl"
    status, log = run_script(
        "--model", checkpoint, "--inputs", str(tmp_path / "in"), "--output", str(output), "--words_from", "text",
        "--num_workers", "2", "--quiet", check_exit=1,
    )  # fmt: skip
    records = read_complete(output)
    keys = sorted((os.path.basename(r["source"]), r["page"]) for r in records)
    assert keys == [("c_text.pdf", 1), ("c_text.pdf", 2)]  # the pages with a text layer: --words_from text never OCRs
    assert all(r["num_pages"] == pages[os.path.basename(r["source"])] for r in records)
    failures = read_complete(tmp_path / "labels.failures.jsonl")
    failures = {(os.path.basename(r["source"]), r["page"]): r for r in failures}
    no_text = {(name, p) for name, count in pages.items() for p in range(1, count + 1)} - set(keys)
    assert set(failures) == no_text | {("f_corrupt.png", 1), ("g_empty.pdf", None)}
    assert "empty" in failures[("g_empty.pdf", None)]["error"]
    assert "damaged or incomplete" in failures[("f_corrupt.png", 1)]["error"]
    assert all("--words_from text never OCRs" in failures[key]["error"] for key in no_text)
    assert [failures[("e.tif", p)]["num_pages"] for p in (1, 2, 3)] == [3, 3, 3]
    summary = json.loads(log.strip().splitlines()[-1])
    assert (summary["pages"], summary["failed"], summary["skipped"]) == (2, 8, 0)

    # Text-layer words equal the words drawn into the PDF.
    text = by_key(records)
    for page, words in enumerate(TEXT_PAGES, start=1):
        record = text[(str(tmp_path / "in" / "c_text.pdf"), page)]
        assert record["words_from"] == "text" and [w["text"] for w in record["words"]] == words
        assert all(w["label"] in FUNSD_LABELS and 0 < w["score"] <= 1 for w in record["words"])
        assert all(0 <= v <= 1000 for w in record["words"] for v in w["box"])

    # A rerun labels nothing again (and retries the two failures, which fail again: exit status 1 again).
    status, log = run_script(
        "--model", checkpoint, "--inputs", str(tmp_path / "in"), "--output", str(output), "--words_from", "text",
        "--quiet", check_exit=1,
    )  # fmt: skip
    assert json.loads(log.strip().splitlines()[-1])["skipped"] == 2
    assert len(read_complete(output)) == 2 and len(read_complete(tmp_path / "labels.failures.jsonl")) == 8


@requires_tesseract
def test_pages_without_a_text_layer_are_ocrd_and_text_layers_are_not(checkpoint, tmp_path):
    make_archive(tmp_path / "in")
    output = tmp_path / "labels.jsonl"
    run_script("--model", checkpoint, "--inputs", str(tmp_path / "in"), "--output", str(output), check_exit=1)
    records = by_key(read_complete(output))
    assert [w["text"] for w in records[(str(tmp_path / "in" / "a.png"), 1)]["words"]] == ["total", "amount"]
    scan = records[(str(tmp_path / "in" / "d_scan.pdf"), 1)]
    assert scan["words_from"] == "ocr" and [w["text"] for w in scan["words"]] == ["received"]
    text = records[(str(tmp_path / "in" / "c_text.pdf"), 1)]
    assert text["words_from"] == "text" and [w["text"] for w in text["words"]] == TEXT_PAGES[0]
    assert [w["text"] for w in records[(str(tmp_path / "in" / "e.tif"), 2)]["words"]] == ["invoice"]


def test_batched_pages_get_the_labels_and_scores_of_predict_page(model_and_processor, tmp_path):
    """Windows of several pages in one padded batch, one image per page: the same answers as one page at a time."""
    model, processor = model_and_processor
    write_text_pdf(tmp_path / "doc.pdf", TEXT_PAGES + [VOCAB * 3])
    jobs, _ = page_jobs([str(tmp_path / "doc.pdf")])
    reader = PageReader(jobs, processor, ReadOptions("text"), WindowOptions(16, 4), keep_image=True)
    items = [reader[i] for i in range(len(reader))]
    windows = [len(i["windows"]["input_ids"]) for i in items]
    assert windows[:2] == [1, 1] and windows[2] >= 2  # the long page has windows
    records = PageLabeller(model, processor)(items)
    for item, record in zip(items, records, strict=True):
        alone = predict_page(model, processor, item["image"], item["words"], item["boxes"], max_length=16, stride=4)
        assert [w["label"] for w in record["words"]] == [w["label"] for w in alone["words"]]
        assert [w["score"] for w in record["words"]] == pytest.approx([w["score"] for w in alone["words"]], abs=1e-5)
        assert [(e["label"], e["text"]) for e in record["entities"]] == [
            (e["label"], e["text"]) for e in alone["entities"]
        ]


def test_a_page_split_into_windows_runs_the_backbone_once(model_and_processor, tmp_path):
    model, processor = model_and_processor
    write_text_pdf(tmp_path / "doc.pdf", [VOCAB * 3, ["date", "total"]])
    jobs, _ = page_jobs([str(tmp_path / "doc.pdf")])
    reader = PageReader(jobs, processor, ReadOptions("text"), WindowOptions(12, 3))
    items = [reader[i] for i in range(len(reader))]
    windows = [len(i["windows"]["input_ids"]) for i in items]
    assert windows[0] >= 2 and windows[1] == 1
    calls = []
    backbone = model.layoutlm_roialign.visual_embeddings.backbone
    handle = backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        PageLabeller(model, processor)(items)
    finally:
        handle.remove()
    assert calls == [2]  # one backbone run for the batch, over the two pages' images, for all its windows


def test_group_pages_keeps_pages_whole_and_batches_pages_of_similar_length():
    def page(windows, length=20):
        return {"windows": {"input_ids": torch.zeros(windows, length)}} if windows else {"error": "x"}

    def shape(batches):
        return [[tuple(p["windows"]["input_ids"].shape) if "windows" in p else 0 for p in b] for b in batches]

    pages = [page(1), page(2), page(0), page(3), page(9), page(1), page(1)]
    assert shape(group_pages(pages, 4, lookahead=1)) == [
        [0], [(1, 20), (2, 20)], [(3, 20)], [(9, 20)], [(1, 20), (1, 20)]
    ]  # fmt: skip
    pages = [page(1, n) for n in (10, 500, 12, 480, 11, 490)]
    lengths = [[p["windows"]["input_ids"].shape[1] for p in b] for b in group_pages(pages, 2, lookahead=2)]
    assert lengths == [[10, 12], [500, 490], [480, 11]]  # the oldest page with its nearest in length


def test_a_killed_run_resumes_and_writes_every_page_exactly_once(checkpoint, tmp_path):
    """SIGKILL in the middle of writing the 4th record (half a line on disk), then a rerun."""
    (tmp_path / "in").mkdir()
    pages = {"a.pdf": 2, "b.pdf": 1, "c.pdf": 2}
    for name, count in pages.items():
        write_text_pdf(tmp_path / "in" / name, TEXT_PAGES[:count])
    output = tmp_path / "labels.jsonl"
    killer = f"""
import os, signal, sys
sys.argv = ["label.py", "--model", {checkpoint!r}, "--inputs", {str(tmp_path / "in")!r}, "--output", {str(output)!r},
            "--words_from", "text", "--batch_size", "1", "--num_workers", "1", "--quiet"]
from layoutlm_roialign.labelling import jsonl
written = []
original = jsonl.JsonlWriter.write
def write(self, records):
    for record in records:
        if self.path.endswith("labels.jsonl") and len(written) == 3:
            self._file.write(jsonl.json.dumps(record).encode()[:40])
            self._file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, [record])
        if self.path.endswith("labels.jsonl"):
            written.append(record)
jsonl.JsonlWriter.write = write
import runpy
runpy.run_path({str(REPO_ROOT / "scripts" / "label.py")!r}, run_name="__main__")
"""
    killed = subprocess.run([sys.executable, "-c", killer], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    data = output.read_bytes()
    assert data.count(b"\n") == 3 and not data.endswith(b"\n")  # three records and a torn fourth
    run_script(
        "--model", checkpoint, "--inputs", str(tmp_path / "in"), "--output", str(output), "--words_from", "text",
        "--quiet",
    )  # fmt: skip
    keys = [(os.path.basename(r["source"]), r["page"]) for r in read_complete(output)]
    assert sorted(keys) == sorted((name, p) for name, count in pages.items() for p in range(1, count + 1))
    assert output.read_bytes().endswith(b"\n")


def test_recover_cuts_a_torn_line_and_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"source": "a.png", "page": 1}\n{"source": "b.png", "pa')
    assert [r["source"] for r in recover(path)] == ["a.png"]
    assert path.read_bytes() == b'{"source": "a.png", "page": 1}\n'
    path.write_bytes(b'{"source": "a.png", "page": 1}\nhello\n{"source": "b.png", "page": 1}\n')
    with pytest.raises(ValueError, match="line 2 is not a JSON record"):
        recover(path)


def test_shards_of_two_processes_merge_to_the_single_process_output(checkpoint, tmp_path):
    make_archive(tmp_path / "in")
    common = ["--inputs", str(tmp_path / "in"), "--words_from", "text", "--max_length", "16", "--stride", "4"]
    with pytest.raises(SystemExit) as exit_info:
        label_in_process(checkpoint, [*common, "--output", str(tmp_path / "one.jsonl")])
    assert exit_info.value.code == 1
    from layoutlm_roialign.inference import load_model_and_processor

    model, processor = load_model_and_processor(checkpoint)
    for index in range(2):
        plan = plan_run(
            str(tmp_path / "two.jsonl"), [str(tmp_path / "in")], read=ReadOptions("text"), windows=WindowOptions(16, 4),
            process_index=index, num_processes=2,
        )  # fmt: skip
        plan.run(model, processor, num_workers=0, quiet=True)
    shard_names = sorted(p.name for p in tmp_path.glob("two.shard-*"))
    assert shard_names == [
        "two.shard-00000-of-00002.done.json",
        "two.shard-00000-of-00002.failures.jsonl",
        "two.shard-00000-of-00002.jsonl",
        "two.shard-00001-of-00002.done.json",
        "two.shard-00001-of-00002.failures.jsonl",
        "two.shard-00001-of-00002.jsonl",
    ]
    merged = merge_shards(tmp_path / "two.jsonl")
    assert merged["records"] == 2 and merged["failures"] == 8 and not list(tmp_path.glob("two.shard-*"))
    assert_same_records(read_complete(tmp_path / "one.jsonl"), read_complete(tmp_path / "two.jsonl"))
    assert (
        by_key(read_complete(tmp_path / "one.failures.jsonl")).keys()
        == by_key(read_complete(tmp_path / "two.failures.jsonl")).keys()
    )


def test_a_dataset_with_word_columns_is_labelled_without_ocr(checkpoint, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"image": [], "words": [], "bboxes": []}
    for i, words in enumerate([["date", "total"], ["name"], []]):
        image, boxes = draw_words(words, seed=i)
        rows["image"].append(image)
        rows["words"].append(words)
        rows["bboxes"].append(
            [[int(v * 1000 / s) for v, s in zip(b, (400, 300, 400, 300), strict=True)] for b in boxes]
        )
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).save_to_disk(tmp_path / "ds")
    summary = label_in_process(
        checkpoint, ["--dataset", str(tmp_path / "ds"), "--words_column", "words", "--boxes_column", "bboxes",
                     "--output", str(tmp_path / "labels.jsonl"), "--png_dir", str(tmp_path / "png")],
    )  # fmt: skip
    assert summary["pages"] == 3 and summary["failed"] == 0
    records = read_complete(tmp_path / "labels.jsonl")
    records = sorted(records, key=lambda r: r["page"])
    assert [(r["source"], r["page"]) for r in records] == [(f"{tmp_path / 'ds'}[train]", p) for p in (1, 2, 3)]
    assert [[w["text"] for w in r["words"]] for r in records] == [["date", "total"], ["name"], []]
    assert all(r["words_from"] == "dataset" for r in records)
    assert [PIL.Image.open(r["png"]).size[1] for r in records] == [300, 300, 300]


def test_a_token_classifiers_records_have_no_pairs(model_and_processor, tmp_path):
    model, processor = model_and_processor
    write_text_pdf(tmp_path / "doc.pdf", TEXT_PAGES[:1])
    jobs, _ = page_jobs([str(tmp_path / "doc.pdf")])
    record = PageLabeller(model, processor)(
        [PageReader(jobs, processor, ReadOptions("text"), WindowOptions().resolve(model.config))[0]]
    )[0]
    assert record["words"] and "pairs" not in record


def test_inputs_expand_in_a_fixed_order_from_folders_globs_and_list_files(tmp_path):
    make_archive(tmp_path / "in")
    (tmp_path / "in" / "sub").mkdir()
    PIL.Image.new("L", (10, 10)).save(tmp_path / "in" / "sub" / "z.png")
    (tmp_path / "list.txt").write_text("# pages to label\nin/b.jpg\n\nin/a.png\n")
    files = expand_inputs([str(tmp_path / "list.txt"), str(tmp_path / "in"), str(tmp_path / "in" / "*.tif")])
    names = [os.path.relpath(f, tmp_path) for f in files]
    assert names == [
        "in/b.jpg", "in/a.png", "in/c_text.pdf", "in/d_scan.pdf", "in/e.tif", "in/f_corrupt.png", "in/g_empty.pdf",
        "in/sub/z.png",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"--inputs .*nope.* does not exist"):
        expand_inputs([str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.webp")])


def test_bad_arguments_exit_with_status_2_and_name_the_flag(checkpoint, tmp_path, capsys):
    main = runpy.run_path(str(REPO_ROOT / "scripts" / "label.py"), run_name="script")["main"]
    for argv, message in (
        (["--model", checkpoint, "--inputs", str(tmp_path / "nope"), "--output", "x.jsonl"], "does not exist"),
        (["--inputs", str(tmp_path), "--output", str(tmp_path / "x.jsonl")], "--model is required"),
        (["--merge", "--output", str(tmp_path / "x.jsonl")], "no shard files"),
        (["--model", checkpoint, "--inputs", checkpoint, "--output", str(tmp_path)], "is a folder"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_pages_are_read_as_numpy_free_plain_json(model_and_processor, tmp_path):
    """Records hold plain JSON types (ints, floats, strings), so they round-trip through the file unchanged."""
    model, processor = model_and_processor
    write_text_pdf(tmp_path / "doc.pdf", TEXT_PAGES[:1])
    jobs, _ = page_jobs([str(tmp_path / "doc.pdf")])
    record = PageLabeller(model, processor)(
        [PageReader(jobs, processor, ReadOptions("text"), WindowOptions().resolve(model.config))[0]]
    )[0]
    assert json.loads(json.dumps(record)) == record
    assert not any(isinstance(v, np.generic) for w in record["words"] for v in w["box"])


def test_the_process_share_comes_from_the_launchers_environment(monkeypatch):
    from layoutlm_roialign.labelling import process_share

    for name in ("WORLD_SIZE", "RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert process_share() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "32")  # accelerate launch --num_machines 4 --num_processes 32, rank 13
    monkeypatch.setenv("RANK", "13")
    assert process_share() == (13, 32)


def test_bf16_autocast_labels_the_same_words_with_close_scores(model_and_processor, tmp_path):
    model, processor = model_and_processor
    write_text_pdf(tmp_path / "doc.pdf", TEXT_PAGES)
    jobs, _ = page_jobs([str(tmp_path / "doc.pdf")])
    reader = PageReader(jobs, processor, ReadOptions("text"), WindowOptions().resolve(model.config))
    items = [reader[i] for i in range(2)]
    fp32 = PageLabeller(model, processor)(items)
    bf16 = PageLabeller(model, processor, dtype="bfloat16")(items)
    for a, b in zip(fp32, bf16, strict=True):
        assert [w["text"] for w in a["words"]] == [w["text"] for w in b["words"]]
        assert [w["score"] for w in a["words"]] == pytest.approx([w["score"] for w in b["words"]], abs=0.05)
    assert next(model.parameters()).dtype == torch.float32  # autocast, not a cast of the weights
    with pytest.raises(ValueError, match="--dtype must be one of"):
        PageLabeller(model, processor, dtype="float16")
