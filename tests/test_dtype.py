"""What the model computes in (`compute_layoutlm_roialign`, `ComputeOptions`): `dtype="auto"` resolves by the device's
bf16 capability (faked both ways), every driver writes what ran into its output, int8 gives float32's words where
the margins are clear, training takes bf16 where the CPU has it, and bad values stop with a message naming `dtype`
or `--bf16`."""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import subprocess
import sys
from types import SimpleNamespace

import datasets
import pytest
import torch
from conftest import REPO_ROOT, save_tiny_checkpoint
from helpers import label_in_process
from transformers import TrainingArguments

from layoutlm_roialign.compute_layoutlm_roialign import CPU_BF16_ENV, model_for, resolve_dtype, resolve_for
from layoutlm_roialign.data import FUNSD_LABELS, render_synthetic_form
from layoutlm_roialign.inference import Engine, load_model_and_processor, predict_page
from layoutlm_roialign.options_layoutlm_roialign import ComputeOptions
from layoutlm_roialign.trainer import check_resumed_precision, precision_defaults, training_precision


def fake_cpu(monkeypatch, amx: bool, avx512_bf16: bool = False, onednn_bf16: bool = True) -> None:
    """Make torch's CPU checks answer as a CPU with (or without) AMX / AVX512-BF16 would, with no cap set."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "onednn_bf16", "expected"),
    [
        (True, True, True, "bfloat16"),  # Sapphire Rapids and later
        (False, True, True, "bfloat16"),  # Cooper Lake, Zen 4
        (False, False, True, "float32"),  # AVX512 without bf16: oneDNN would emulate it
        (True, True, False, "float32"),  # oneDNN may not use bf16
    ],
)
def test_auto_follows_the_cpu_bf16_capability(monkeypatch, amx, avx512_bf16, onednn_bf16, expected):
    fake_cpu(monkeypatch, amx, avx512_bf16, onednn_bf16)
    assert resolve_dtype("auto", "cpu") == expected
    assert ComputeOptions().resolve("cpu") == ComputeOptions(expected)
    assert resolve_dtype("float32", "cpu") == "float32"
    assert resolve_dtype(torch.float32, "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"


@pytest.mark.parametrize(("cap", "expected"), [("AVX2", "float32"), ("avx512_core_vnni", "float32"),
                                               ("AVX512_CORE_AMX", "bfloat16"), ("AVX512_CORE_BF16", "bfloat16")])  # fmt: skip
def test_a_onednn_isa_cap_below_bf16_hides_it_from_auto(monkeypatch, cap, expected):
    fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert resolve_dtype("auto", "cpu") == expected
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert resolve_dtype("auto", "cpu") == "float32"


def test_onednn_capped_at_avx2_makes_auto_float32_for_real():
    """Nothing faked: a fresh interpreter whose oneDNN may use AVX2 at most gets float32 on any CPU."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": str(REPO_ROOT)}
    env.pop(CPU_BF16_ENV, None)
    code = "from layoutlm_roialign.compute_layoutlm_roialign import resolve_dtype; print(resolve_dtype('auto', 'cpu'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "float32"


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_follows_the_gpu_bf16_capability(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_dtype("auto", "cuda:0") == expected
    assert resolve_dtype(torch.float32, "cuda") == "float32"


def test_int8_on_a_gpu_and_unknown_dtypes_are_refused_by_name():
    with pytest.raises(ValueError, match=r"`dtype='int8'` \(dynamic quantization\) runs on the CPU only.*cuda:0"):
        resolve_dtype("int8", "cuda:0")
    for bad in ("float16", "bf16", torch.float16, 8):
        with pytest.raises(ValueError, match=r"`dtype` must be one of \('auto', 'float32', 'bfloat16', 'int8'\)"):
            ComputeOptions(bad)


class _OnGpu(torch.nn.Module):
    """A model whose parameters say they are on a GPU (faked on a machine without one)."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def parameters(self, recurse=True):
        return iter([SimpleNamespace(device=torch.device("cuda:0"))])


def test_int8_on_a_gpu_is_refused_by_the_engine(checkpoint):
    model, processor = load_model_and_processor(str(checkpoint))
    with pytest.raises(ValueError, match=r"`dtype='int8'`.*CPU only, and the model is on cuda:0"):
        Engine(_OnGpu(model.config), processor, dtype="int8")
    with pytest.raises(ValueError, match=r"Give `compute` or its shorthand `dtype`, not both"):
        Engine(model, processor, compute=ComputeOptions("float32"), dtype="int8")


def test_a_model_that_is_not_a_torch_module_computes_as_exported():
    exported = SimpleNamespace(runtime="onnx")  # as an ONNX Runtime export stands in for a model
    assert resolve_for("auto", exported) == resolve_for(torch.float32, exported) == "float32"
    for asked in ("bfloat16", "int8"):
        with pytest.raises(ValueError, match=rf"`dtype='{asked}'` applies to PyTorch models"):
            resolve_for(asked, exported)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("dtype") / "tiny")


@pytest.fixture(scope="module")
def form(tmp_path_factory):
    """A synthetic form as a PNG and a words JSON, and as a one-page dataset (`train` x 5 and `test`)."""
    root = tmp_path_factory.mktemp("form")
    image, words, boxes, tags = render_synthetic_form(seed=5, index=0)
    image.save(root / "form.png")
    (root / "form.words.json").write_text(json.dumps({"words": words, "boxes": boxes}))
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "words": datasets.Sequence(datasets.Value("string")),
            "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=FUNSD_LABELS)),
        }
    )
    page = datasets.Dataset.from_dict(
        {"image": [image], "words": [words], "bboxes": [boxes], "ner_tags": [tags]}, features=features
    )
    datasets.DatasetDict({"train": datasets.concatenate_datasets([page] * 5), "test": page}).save_to_disk(
        root / "dataset"
    )
    return root, words, boxes


def test_predict_page_and_the_pipeline_write_what_ran(checkpoint, form, monkeypatch):
    from transformers import pipeline

    root, words, boxes = form
    model, processor = load_model_and_processor(str(checkpoint))
    page = str(root / "form.png")
    fake_cpu(monkeypatch, amx=False)
    assert predict_page(model, processor, page, words, boxes)["dtype"] == "float32"
    assert pipeline(model=str(checkpoint), trust_remote_code=True)({"image": page, "words": words,
                                                                    "boxes": boxes})["dtype"] == "float32"  # fmt: skip
    fake_cpu(monkeypatch, amx=True)
    auto = predict_page(model, processor, page, words, boxes)
    assert auto["dtype"] == "bfloat16"
    assert predict_page(model, processor, page, words, boxes, dtype="float32")["dtype"] == "float32"
    assert predict_page(model, processor, page, words, boxes, dtype="int8")["dtype"] == "int8"
    pipe = pipeline(model=str(checkpoint), trust_remote_code=True)  # pipeline()'s dtype "auto"
    assert pipe({"image": page, "words": words, "boxes": boxes})["dtype"] == "bfloat16"
    explicit = pipeline(model=str(checkpoint), trust_remote_code=True, dtype=torch.float32)
    out = explicit({"image": page, "words": words, "boxes": boxes})
    assert out["dtype"] == "float32"
    assert out["words"] == predict_page(model, processor, page, words, boxes, dtype="float32")["words"]


def test_the_scripts_and_the_demo_write_what_ran(checkpoint, form, tmp_path):
    root, words, _ = form
    predict = runpy.run_path(str(REPO_ROOT / "scripts" / "predict.py"), run_name="script")["main"]
    args = ["--model", str(checkpoint), "--image", str(root / "form.png"), "--words", str(root / "form.words.json")]
    predict([*args, "--output_json", str(tmp_path / "a.json"), "--output_png", ""])
    predict([*args, "--output_json", str(tmp_path / "b.json"), "--output_png", "", "--dtype", "int8"])
    assert json.loads((tmp_path / "a.json").read_text())["dtype"] == "float32"  # auto, where bf16 is not native
    assert json.loads((tmp_path / "b.json").read_text())["dtype"] == "int8"

    source = ["--dataset", str(root / "dataset"), "--split", "test", "--words_column", "words", "--boxes_column",
              "bboxes"]  # fmt: skip
    summary = label_in_process(
        str(checkpoint), [*source, "--output", str(tmp_path / "l.jsonl"), "--dtype", "bfloat16"]
    )
    (record,) = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert record["dtype"] == summary["dtype"] == "bfloat16"

    evaluate = runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate_checkpoint.py"), run_name="script")["main"]
    report = evaluate(["--model", str(checkpoint), "--dataset", str(root / "dataset"), "--split", "test",
                       "--dtype", "int8", "--output", str(tmp_path / "report.json")])  # fmt: skip
    assert report["dtype"] == json.loads((tmp_path / "report.json").read_text())["dtype"] == "int8"

    pytest.importorskip("gradio", reason="the demo needs gradio (the `demo` extra)")
    spec = importlib.util.spec_from_file_location("demo_app_dtype", REPO_ROOT / "demo" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    _, prediction = app.label_page(
        app.Labeller(str(checkpoint), "int8"), root / "form.png", 1, root / "form.words.json"
    )
    assert prediction["dtype"] == "int8"
    saved = json.loads(open(app.write_json(prediction, tmp_path)).read())
    assert saved["dtype"] == "int8"


def test_bad_dtypes_stop_the_scripts_with_the_flag_named(checkpoint, form, tmp_path, capsys):
    root, _, _ = form
    predict = runpy.run_path(str(REPO_ROOT / "scripts" / "predict.py"), run_name="script")["main"]
    with pytest.raises(SystemExit) as exit_:
        predict(["--model", str(checkpoint), "--image", str(root / "form.png"), "--dtype", "float16"])
    assert exit_.value.code == 2
    assert "--dtype" in capsys.readouterr().err


def test_int8_gives_the_float32_words_where_the_margins_are_clear(checkpoint):
    """A tiny checkpoint whose classifier is scaled up so that most words have a clear winner (probability > 0.6:
    at least 0.2 above the runner-up); int8 keeps every such label on three forms, and it did run (other scores)."""
    model, processor = load_model_and_processor(str(checkpoint))
    with torch.no_grad():
        model.classifier.weight.mul_(60.0)
    clear, labels, changed = 0, set(), 0
    for index in range(3):
        image, words, boxes, _ = render_synthetic_form(seed=11, index=index)
        exact = predict_page(model, processor, image, words, boxes, dtype="float32")["words"]
        int8 = predict_page(model, processor, image, words, boxes, dtype="int8")["words"]
        for a, b in zip(exact, int8, strict=True):
            changed += a["score"] != b["score"]
            if a["score"] > 0.6:
                clear += 1
                labels.add(a["label"])
                assert b["label"] == a["label"], (a, b)
    assert clear >= 30 and len(labels) >= 2  # the check covers many words and more than one label
    assert changed > 0
    quantized = model_for(model, "int8")
    assert quantized is not model and model_for(model, "int8") is quantized  # one copy, made once
    assert type(quantized.classifier).__module__.startswith("torch.ao.nn.quantized")
    assert isinstance(model.classifier, torch.nn.Linear)  # the model itself is left as it was


def test_training_takes_bf16_on_a_cpu_only_where_it_computes_it_and_only_when_asked(monkeypatch, tmp_path):
    import layoutlm_roialign.trainer as trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    fake_cpu(monkeypatch, amx=True)
    assert trainer.CPU_BF16_BY_DEFAULT is False  # measured too slow to be the default (docs/results.md)
    assert precision_defaults() == {"bf16": False, "use_cpu": True}  # use_cpu: Trainer then takes --bf16 true
    asked = TrainingArguments(output_dir=str(tmp_path), bf16=True, use_cpu=True, report_to="none")
    trainer.check_bf16(asked)  # an AMX CPU trains in bf16 when asked
    monkeypatch.setattr(trainer, "CPU_BF16_BY_DEFAULT", True)
    assert precision_defaults() == {"bf16": True, "use_cpu": True}
    fake_cpu(monkeypatch, amx=False)
    assert precision_defaults() == {"bf16": False, "use_cpu": True}
    with pytest.raises(ValueError, match=r"--bf16 true: this CPU does not compute bf16 natively"):
        trainer.check_bf16(asked)


def test_bf16_training_without_support_is_refused_by_name(tmp_path, capsys):
    train = runpy.run_path(str(REPO_ROOT / "scripts" / "train.py"), run_name="script")["main"]
    with pytest.raises(SystemExit) as exit_:  # LAYOUTLM_ROIALIGN_CPU_BF16=0 in the tests: no native bf16
        train(["--dataset", "synthetic", "--output_dir", str(tmp_path / "run"), "--bf16", "true"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--bf16 true: this CPU does not compute bf16 natively" in err and "--bf16 false" in err
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_keeps_its_precision(tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    torch.save(TrainingArguments(output_dir=str(tmp_path), bf16=False, report_to="none"),
               checkpoint / "training_args.bin")  # fmt: skip
    bf16 = TrainingArguments(output_dir=str(tmp_path), bf16=True, use_cpu=True, report_to="none")
    assert training_precision(bf16) == "bf16 mixed precision"
    with pytest.raises(ValueError, match=r"--bf16 true: the run in .*checkpoint-4 trained in float32.*--bf16 false"):
        check_resumed_precision(str(checkpoint), bf16)
    check_resumed_precision(str(checkpoint), TrainingArguments(output_dir=str(tmp_path), report_to="none"))


def test_the_model_card_records_the_training_precision(tmp_path):
    from conftest import tiny_config

    from layoutlm_roialign import LayoutLMRoIAlignForTokenClassification
    from layoutlm_roialign.commands.train import ModelArguments, hyperparameters
    from layoutlm_roialign.data import DataArguments

    model = LayoutLMRoIAlignForTokenClassification(tiny_config())
    key = "precision (training, and the evaluations that choose the kept epoch)"
    for training_args, expected in (
        (
            TrainingArguments(output_dir=str(tmp_path), bf16=True, use_cpu=True, report_to="none"),
            "bf16 mixed precision",
        ),
        (TrainingArguments(output_dir=str(tmp_path), report_to="none"), "float32"),
    ):
        rows = hyperparameters(ModelArguments(), DataArguments(max_length=64, stride=16), training_args, model)
        assert rows[key] == expected


def test_the_onnx_export_checks_itself_against_float32_where_auto_is_bf16(checkpoint, tmp_path, monkeypatch):
    """On a CPU where `auto` means bf16, the export's check still compares with PyTorch in float32."""
    pytest.importorskip("onnxruntime", reason="the [onnx] extra")
    from layoutlm_roialign.onnx_export import export_onnx

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # faking this op breaks the exporter's op tables
        pytest.skip("oneDNN here has no bf16")
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    record = export_onnx(str(checkpoint), tmp_path / "onnx", log=lambda *args: None)
    assert (tmp_path / "onnx" / "model.onnx").is_file() and record
