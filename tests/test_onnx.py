"""ONNX export and the ONNX Runtime path: the export matches PyTorch within its tolerance (token logits and link
logits, any batch, sequence, entity and page count), the engine gives the same words, entities and pairs with
`runtime="onnx"`, int8 keeps the words where the margins are clear, and bad input stops with a message naming the
argument and the fix, writing nothing half.

Exports take 10-30 s each on a CPU (the dynamo exporter), so the tests that export are slow; the bad-input tests
that need no export run in the quick tier."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO_ROOT, save_tiny_checkpoint
from helpers import TEXT_PAGES, make_pixels_matter, write_text_pdf

from layoutlm_roialign import LayoutLMRoIAlignForRelationExtraction
from layoutlm_roialign import onnx_export as onnx_export_module
from layoutlm_roialign.data.synthetic import render_synthetic_form_with_links
from layoutlm_roialign.engine_layoutlm_roialign import Engine
from layoutlm_roialign.inference import load_model_and_processor
from layoutlm_roialign.onnx_export import FLOAT32_TOLERANCE, export_onnx, is_onnx_export, sample_pages
from layoutlm_roialign.onnx_runtime import EXPORT_RECORD, LINK_FILE, MODEL_FILE, load_onnx_model
from layoutlm_roialign.options_layoutlm_roialign import LinkOptions, WindowOptions
from layoutlm_roialign.road_layoutlm_roialign import predict_windows

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def tiny_checkpoint(folder, head=None):
    """A tiny checkpoint (`save_tiny_checkpoint`) whose page pixels change its predictions, with a classifier whose
    logits are as far apart as a trained one's (most tokens' two best logits more than 1 apart)."""
    save_tiny_checkpoint(folder, head)
    model, processor = load_model_and_processor(folder)
    make_pixels_matter(model)
    torch.manual_seed(1)
    torch.nn.init.normal_(model.classifier.weight, std=0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return {
        "token": tiny_checkpoint(root / "token"),
        "linking": tiny_checkpoint(root / "linking", LayoutLMRoIAlignForRelationExtraction),
    }


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """Each checkpoint exported in float32, and the linking one in int8 (with the records the exports returned)."""
    root = tmp_path_factory.mktemp("exports")
    done = {}
    for name, checkpoint in checkpoints.items():
        done[name] = (root / name, export_onnx(checkpoint, root / name))
    done["linking-int8"] = (root / "linking-int8", export_onnx(checkpoints["linking"], root / "linking-int8", "int8"))
    return done


def forms(count=3):
    """Synthetic form pages of different lengths: (image, words, 0-1000 boxes, gold entities)."""
    pages = []
    for index in range(count):
        image, words, boxes, _, entities, _ = render_synthetic_form_with_links(seed=5, index=index)
        n = 25 + 20 * index
        kept = [{**e, "label": e["label"]} for e in entities if max(e["word_indices"]) < n]
        pages.append((image.convert("RGB"), words[:n], boxes[:n], kept))
    return pages


def label(model, processor, pages, batch_size=4, given=False):
    """Engine records of `pages` (windows of 48 tokens, so pages have several; threshold 0: every candidate pair)."""
    engine = Engine(model, processor, windows=WindowOptions(48, 12), links=LinkOptions(threshold=0.0),
                    batch_size=batch_size)  # fmt: skip
    encoded = [engine.encode_page(image, 1, words, boxes) for image, words, boxes, _ in pages]
    return engine.label_batch(encoded, [e for *_, e in pages] if given else None)


def max_logit_difference(a, b, pages, batch_size):
    """The largest |a - b| over the token logits of the road's window loop on `pages`."""
    want = predict_windows(a, pages, batch_size)
    got = predict_windows(b, pages, batch_size)
    pairs = [(w, g) for x, y in zip(want, got, strict=True) for w, g in zip(x["logits"], y["logits"], strict=True)]
    return max(float((w - g).abs().max()) for w, g in pairs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["token", "linking"])
def test_float32_export_matches_pytorch_at_any_batch_and_length(name, checkpoints, exports):
    folder, record = exports[name]
    assert record["check"]["max_abs_diff_logits"] <= FLOAT32_TOLERANCE
    noise = record["check"]["pytorch_batch_noise_logits"]  # PyTorch's own: 1 against 4 windows per pass
    assert record["check"]["tolerance"] == max(FLOAT32_TOLERANCE, 2 * noise) and record["quantization"] == "float32"
    model, processor = load_model_and_processor(checkpoints[name])
    exported, _ = load_model_and_processor(folder, runtime="onnx")
    pages = sample_pages(processor, model.config, 4)  # windows of different lengths, pages of 1-4 windows
    assert sum(len(p["word_ids"]) for p in pages) >= 6
    for batch_size in (1, 3, 5):  # one window; windows of two pages; windows of three pages per pass
        assert max_logit_difference(model, exported, pages, batch_size) <= FLOAT32_TOLERANCE
    names = {"token": [MODEL_FILE], "linking": [MODEL_FILE, LINK_FILE]}[name]
    assert record["files"] == names and all((folder / f).is_file() for f in names)
    assert (folder / "processor_config.json").is_file() and (folder / "config.json").is_file()
    card = (folder / "README.md").read_text()
    assert str(checkpoints[name]) in card and "opset 18" in card and "float32" in card
    assert json.loads((folder / EXPORT_RECORD).read_text()) == record


@pytest.mark.slow
def test_the_link_head_matches_pytorch_for_any_entity_count(checkpoints, exports):
    folder, record = exports["linking"]
    assert record["check"]["link_pairs"] > 0 and record["check"]["max_abs_diff_link_logits"] <= FLOAT32_TOLERANCE
    model, _ = load_model_and_processor(checkpoints["linking"])
    exported, _ = load_model_and_processor(folder, runtime="onnx")
    g = torch.Generator().manual_seed(0)
    for batch, length, count, images in [(1, 9, 2, 1), (3, 20, 5, 2), (4, 31, 11, 3)]:
        states = torch.randn(batch, length, model.config.hidden_size, generator=g)
        xy = torch.randint(0, 800, (batch, length, 2), generator=g)
        bbox = torch.cat([xy, xy + 50], -1)
        starts = torch.randint(1, length - 3, (batch, count), generator=g)
        spans = torch.stack([starts, starts + torch.randint(1, 3, (batch, count), generator=g)], -1)
        if count > 2:
            spans[0, -1] = 0  # a padding row
        labels = torch.arange(count).remainder(2).add(1).repeat(batch, 1)  # QUESTION, ANSWER, QUESTION, ...
        feature_map = torch.randn(images, 256, 4, 4, generator=g)
        image_index = torch.randint(0, images, (batch,), generator=g)
        args = (states, bbox, spans, labels, feature_map, image_index)
        with torch.no_grad():
            want = model.link_logits_from_states(*args)
        got = exported.link_logits_from_states(*args)
        assert got.shape == want.shape == (batch, count, count)
        assert (want > -9000).any() and torch.equal(want > -9000, got > -9000)
        assert float((want - got).abs().max()) <= FLOAT32_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("given", [False, True])
def test_the_engine_gives_the_same_words_entities_and_pairs_with_onnx(given, checkpoints, exports):
    model, processor = load_model_and_processor(checkpoints["linking"])
    exported, onnx_processor = load_model_and_processor(exports["linking"][0], runtime="onnx")
    pages = forms()
    want, got = label(model, processor, pages, given=given), label(exported, onnx_processor, pages, given=given)
    assert sum(len(r["pairs"]) for r in want) > 0
    for a, b in zip(want, got, strict=True):
        assert [(w["text"], w["label"]) for w in a["words"]] == [(w["text"], w["label"]) for w in b["words"]]
        assert [w["score"] for w in a["words"]] == pytest.approx([w["score"] for w in b["words"]], abs=1e-5)
        assert [(e["label"], e["word_indices"]) for e in a["entities"]] == [
            (e["label"], e["word_indices"]) for e in b["entities"]
        ]
        assert [(p["key"]["entity"], p["value"]["entity"]) for p in a["pairs"]] == [
            (p["key"]["entity"], p["value"]["entity"]) for p in b["pairs"]
        ]
        assert [p["score"] for p in a["pairs"]] == pytest.approx([p["score"] for p in b["pairs"]], abs=2e-4)


@pytest.mark.slow
def test_an_export_pickles_as_its_folder_for_worker_processes(exports):
    """A worker process (a Ray replica) gets an exported model by pickle: it loads the folder again and labels alike."""
    import pickle

    exported, processor = load_model_and_processor(exports["linking"][0], runtime="onnx")
    copy = pickle.loads(pickle.dumps(exported))
    assert copy is not exported and copy.folder == exported.folder and copy.head_name == exported.head_name
    pages = forms(2)
    want, got = label(exported, processor, pages), label(copy, processor, pages)
    assert [[w["label"] for w in r["words"]] for r in want] == [[w["label"] for w in r["words"]] for r in got]
    assert [len(r["pairs"]) for r in want] == [len(r["pairs"]) for r in got]


@pytest.mark.slow
def test_int8_gives_the_float32_words_where_the_margins_are_clear(exports):
    folder, record = exports["linking-int8"]
    assert record["quantization"] == "int8" and record["check"]["clear_label_agreement"] == 1.0
    assert record["check"]["clear_tokens"] > 0
    assert (folder / MODEL_FILE).stat().st_size < (exports["linking"][0] / MODEL_FILE).stat().st_size / 2
    full, processor = load_model_and_processor(exports["linking"][0], runtime="onnx")
    int8, _ = load_model_and_processor(folder, runtime="onnx")
    pages = forms()
    want, got = label(full, processor, pages), label(int8, processor, pages)
    clear = compared = 0
    for a, b in zip(want, got, strict=True):
        for w, v in zip(a["words"], b["words"], strict=True):
            if w["score"] >= 0.75:  # the float32 label is clear (its probability 3x the rest together)
                clear += 1
                compared += w["label"] == v["label"]
    assert clear > 0 and compared == clear


@pytest.mark.slow
def test_a_failed_check_writes_nothing_and_keeps_an_earlier_export(checkpoints, exports, tmp_path, monkeypatch):
    def graphs_of_the_earlier_export(model, pages, folder, opset):  # the same graphs, without exporting again
        shutil.copy(exports["token"][0] / MODEL_FILE, folder / MODEL_FILE)

    def off_by_one(folder, flag):  # an export whose logits are all 1 too high
        model = load_onnx_model(folder, flag)
        run = model.session.run
        model.session = SimpleNamespace(run=lambda names, feed: [run(names, feed)[0] + 1], get_inputs=None)
        return model

    monkeypatch.setattr(onnx_export_module, "_export_graphs", graphs_of_the_earlier_export)
    monkeypatch.setattr(onnx_export_module, "load_onnx_model", off_by_one)
    with pytest.raises(
        ValueError, match=r"differs from PyTorch by 1.00e\+00, above the tolerance.*nothing was written"
    ):
        export_onnx(checkpoints["token"], tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
    earlier = tmp_path / "earlier"
    shutil.copytree(exports["token"][0], earlier)
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    with pytest.raises(ValueError, match="above the tolerance"):
        export_onnx(checkpoints["token"], earlier)
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]


@pytest.mark.slow
def test_predict_and_label_scripts_run_an_export_and_say_so(checkpoints, exports, tmp_path):
    image, words, boxes, _ = forms(1)[0]
    image.save(tmp_path / "page.png")
    (tmp_path / "words.json").write_text(json.dumps({"words": words, "boxes": boxes}))
    predict = runpy.run_path(str(REPO_ROOT / "scripts" / "predict.py"), run_name="script")["main"]
    out = {}
    for runtime, model in (("torch", checkpoints["linking"]), ("onnx", exports["linking"][0])):
        argv = ["--model", str(model), "--image", str(tmp_path / "page.png"), "--words", str(tmp_path / "words.json"),
                "--output_json", str(tmp_path / f"{runtime}.json"), "--output_png", "", "--runtime", runtime]  # fmt: skip
        out[runtime] = predict(argv)
        assert json.loads((tmp_path / f"{runtime}.json").read_text())["runtime"] == runtime
    assert [w["label"] for w in out["torch"]["words"]] == [w["label"] for w in out["onnx"]["words"]]
    write_text_pdf(tmp_path / "doc.pdf", TEXT_PAGES)
    label_main = runpy.run_path(str(REPO_ROOT / "scripts" / "label.py"), run_name="script")["main"]
    records = {}
    for runtime, model in (("torch", checkpoints["linking"]), ("onnx", exports["linking"][0])):
        output = tmp_path / f"{runtime}.jsonl"
        label_main(["--model", str(model), "--runtime", runtime, "--inputs", str(tmp_path / "doc.pdf"), "--output",
                    str(output), "--quiet", "--num_workers", "0"])  # fmt: skip
        records[runtime] = [json.loads(line) for line in output.read_text().splitlines()]
        assert [r["runtime"] for r in records[runtime]] == [runtime] * len(TEXT_PAGES)
    for a, b in zip(records["torch"], records["onnx"], strict=True):
        assert [w["label"] for w in a["words"]] == [w["label"] for w in b["words"]]
        assert [(p["key"]["entity"], p["value"]["entity"]) for p in a["pairs"]] == [
            (p["key"]["entity"], p["value"]["entity"]) for p in b["pairs"]
        ]


# Bad input (quick: no export needed).


def test_an_existing_folder_that_is_not_an_export_is_refused_untouched(checkpoints, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for target in (mine, checkpoints["token"]):  # a user's folder; the checkpoint itself
        before = sorted(p.name for p in target.iterdir())
        with pytest.raises(ValueError, match="OUTPUT_DIR .* not a folder scripts/export_onnx.py wrote"):
            export_onnx(checkpoints["token"], target)
        assert sorted(p.name for p in target.iterdir()) == before
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert not is_onnx_export(mine) and is_onnx_export(tmp_path / "empty")


def test_the_script_exits_with_status_2_naming_the_argument(checkpoints, tmp_path, capsys):
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "export_onnx.py"), run_name="script")["main"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    for argv, message in [
        ([str(checkpoints["token"]), str(tmp_path / "mine")], "OUTPUT_DIR"),
        ([str(checkpoints["token"]), str(tmp_path / "new"), "--opset", "11"], "--opset must be an int >= 18"),
        ([str(checkpoints["token"]), str(tmp_path / "new"), "--quantize", "int4"], "--quantize"),
        ([str(checkpoints["token"]), str(tmp_path / "new"), "--tolerance", "0"], "--tolerance must be a positive"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            script(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_backbone_that_cannot_export_is_refused_by_name_and_nothing_is_written(checkpoints, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise torch._dynamo.exc.Unsupported("data-dependent operator")

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(ValueError, match="backbone 'resnet18' .* cannot be exported to ONNX.*--runtime torch"):
        export_onnx(checkpoints["token"], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_runtime_onnx_without_the_extra_names_it(checkpoints, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(ValueError, match=r"--runtime onnx needs ONNX Runtime.*layoutlm-roialign\[onnx\]"):
        load_model_and_processor(checkpoints["token"], runtime="onnx")
    with pytest.raises(ValueError, match=r"needs ONNX Runtime.*\[onnx\]"):
        export_onnx(checkpoints["token"], checkpoints["token"].parent / "never")
    assert not (checkpoints["token"].parent / "never").exists()


def export_like(checkpoint, folder):
    """A folder with the checkpoint's config and processor (an export's, less its graphs)."""
    _, processor = load_model_and_processor(checkpoint)
    folder.mkdir()
    shutil.copy(checkpoint / "config.json", folder / "config.json")
    processor.save_pretrained(folder)
    return folder


def graph(path, inputs, logits_shape):
    """A small valid ONNX graph with `inputs` whose `logits` output has `logits_shape`."""
    from onnx import TensorProto, helper, numpy_helper

    value = numpy_helper.from_array(torch.zeros(logits_shape).numpy(), "value")
    node = helper.make_node("Constant", [], ["logits"], value=value)
    model = helper.make_model(
        helper.make_graph(
            [node],
            "other",
            [helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in inputs],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, logits_shape)],
        ),  # fmt: skip
        opset_imports=[helper.make_opsetid("", 18)],
    )
    onnx.save(model, path)


def test_a_missing_corrupt_or_foreign_onnx_file_is_refused_with_the_fix(checkpoints, tmp_path):
    token = checkpoints["token"]
    with pytest.raises(ValueError, match=r"holds no model.onnx.*scripts/export_onnx.py"):
        load_model_and_processor(token, runtime="onnx")  # a PyTorch checkpoint
    folder = export_like(token, tmp_path / "export")
    (folder / MODEL_FILE).write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ValueError, match=r"model.onnx' is not a readable ONNX model.*export_onnx.py"):
        load_model_and_processor(folder, runtime="onnx")
    graph(folder / MODEL_FILE, ["input_ids", "bbox"], [1, 1, 7])  # another model's inputs
    with pytest.raises(ValueError, match=r"is not the export of the model.*its inputs are \['input_ids', 'bbox'\]"):
        load_model_and_processor(folder, runtime="onnx")
    inputs = ["input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values", "image_index"]
    graph(folder / MODEL_FILE, inputs, [1, 1, 3])  # another label count
    with pytest.raises(ValueError, match=r"its logits have 3 values per token, the config says 7"):
        load_model_and_processor(folder, runtime="onnx")
    graph(folder / MODEL_FILE, inputs, [1, 1, 7])
    model, _ = load_model_and_processor(folder, runtime="onnx")  # the same graph with the config's labels loads
    assert model.config.num_labels == 7


def test_a_linking_export_without_its_link_head_is_refused(checkpoints, tmp_path):
    folder = export_like(checkpoints["linking"], tmp_path / "export")
    inputs = ["input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values", "image_index"]
    graph(folder / MODEL_FILE, inputs, [1, 1, 7])  # a token classifier's graph: no states for the link head
    with pytest.raises(ValueError, match=r"its outputs are \['logits'\], the config's model gives \['logits', 'fused"):
        load_model_and_processor(folder, runtime="onnx")


def test_an_export_loaded_without_runtime_onnx_says_to_use_it(checkpoints, tmp_path):
    folder = export_like(checkpoints["token"], tmp_path / "export")
    (folder / EXPORT_RECORD).write_text(json.dumps({"format": "layoutlm-roialign-onnx"}))
    with pytest.raises(ValueError, match="is an ONNX export .* --runtime onnx"):
        load_model_and_processor(folder)
    with pytest.raises(ValueError, match="--runtime must be one of"):
        load_model_and_processor(folder, runtime="tensorrt")


@pytest.mark.slow
def test_evaluate_scores_an_export_as_it_scores_the_checkpoint(checkpoints, exports, funsd_train, tmp_path):
    from layoutlm_roialign.commands.evaluate import evaluate_checkpoint
    from layoutlm_roialign.data import DataArguments

    names = sorted(p.stem for p in (funsd_train / "annotations").glob("*.json"))[:3]
    for split in ("training_data", "testing_data"):
        for kind, suffix in (("annotations", ".json"), ("images", ".png")):
            (tmp_path / split / kind).mkdir(parents=True)
            for name in names:
                shutil.copy(funsd_train / kind / f"{name}{suffix}", tmp_path / split / kind / f"{name}{suffix}")
    data = DataArguments(dataset=str(tmp_path))
    want = evaluate_checkpoint(str(checkpoints["linking"]), data, "test", return_predictions=True)
    got = evaluate_checkpoint(str(exports["linking"][0]), data, "test", return_predictions=True, runtime="onnx")
    assert (want.pop("runtime"), got.pop("runtime")) == ("torch", "onnx")
    assert (want.pop("model"), got.pop("model")) == (str(checkpoints["linking"]), str(exports["linking"][0]))
    assert got["predictions"] == want["predictions"] and got["pages"] == want["pages"] == 3
    assert got == want  # every score, entities and pairs


def test_onnx_runs_on_the_cpu_only_and_without_compile(checkpoints, tmp_path, capsys):
    from layoutlm_roialign import LayoutLMRoIAlignConfig
    from layoutlm_roialign.onnx_runtime import LayoutLMRoIAlignOnnxModel

    config = LayoutLMRoIAlignConfig.from_pretrained(checkpoints["token"])
    model = LayoutLMRoIAlignOnnxModel(config, SimpleNamespace(get_inputs=list, get_outputs=list), tmp_path)
    assert model.to("cpu") is model and next(model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match=r"--runtime onnx runs on the CPU .*not on 'cuda:1'.*--runtime torch"):
        model.to("cuda:1")
    label_main = runpy.run_path(str(REPO_ROOT / "scripts" / "label.py"), run_name="script")["main"]
    with pytest.raises(SystemExit) as exit_info:
        label_main(["--model", str(tmp_path), "--runtime", "onnx", "--compile", "--inputs", str(tmp_path),
                    "--output", str(tmp_path / "labels.jsonl")])  # fmt: skip
    assert (
        exit_info.value.code == 2 and "--compile runs torch.compile, which --runtime onnx" in capsys.readouterr().err
    )
    assert not (tmp_path / "labels.jsonl").exists()
