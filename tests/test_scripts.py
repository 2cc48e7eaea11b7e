"""The scripts end to end, as users run them: train.py -> a folder that loads as remote code in a fresh process
without the package; evaluate.py's JSON report; predict.py's JSON and PNG; two-process training under
`accelerate launch --cpu`; and bad input stopping with a message that names the flag."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import PIL.Image
import pytest
import torch
from conftest import REPO_ROOT, run_without_package

SCRIPTS = REPO_ROOT / "scripts"
TINY = [
    "--dataset", "synthetic", "--synthetic_pages", "10", "--validation_size", "3",
    "--backbone", "resnet18", "--image_size", "64", "--hidden_size", "32", "--num_hidden_layers", "2",
    "--num_attention_heads", "4", "--intermediate_size", "37", "--tokenizer_vocab_size", "300",
    "--max_length", "64", "--stride", "16", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
    "--learning_rate", "1e-3", "--disable_tqdm", "true", "--dataloader_pin_memory", "false",
]  # fmt: skip


def run_script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def script_main(name: str):
    return runpy.run_path(str(SCRIPTS / name), run_name="script")["main"]


@pytest.mark.parametrize("name", ["train.py", "evaluate.py", "pretrain.py"])
def test_scripts_run_from_their_folder_import_the_evaluate_library_not_evaluate_py(name):
    """`python scripts/<name>` puts scripts/ first on sys.path, where evaluate.py would shadow the `evaluate` library
    that the package's metrics load; each script takes its folder off the path before its imports."""
    result = run_script(name, "--help", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--output_dir" in result.stdout or "--model" in result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny train.py run (2 epochs), shared by the tests below."""
    out = tmp_path_factory.mktemp("train")
    result = run_script("train.py", *TINY, "--num_train_epochs", "2", "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    return out, json.loads(result.stdout[result.stdout.rindex('{\n  "f1"') :])


LOAD_WITHOUT_PACKAGE = """
import json, sys
import torch
from transformers import AutoModelForTokenClassification, AutoProcessor
try:
    import layoutlm_roialign
    raise SystemExit("the package should not be importable here")
except ImportError:
    pass
folder, page = sys.argv[1], json.load(open(sys.argv[2]))
model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
from PIL import Image
enc = processor(Image.open(page["image"]), page["words"], page["boxes"], return_tensors="pt")
with torch.no_grad():
    logits = model(**enc).logits
print(json.dumps({"model": type(model).__module__, "processor": type(processor).__module__,
                  "labels": model.config.id2label, "logits": logits[0].tolist()}))
"""


@pytest.mark.slow  # a train.py run in a subprocess (the `trained` fixture)
def test_train_writes_a_folder_that_loads_as_remote_code_without_the_package(trained, tmp_path):
    out, printed = trained
    final = out / "final"
    assert printed["final_dir"] == str(final) and 0 <= printed["f1"] <= 1
    assert {"ANSWER", "QUESTION"} <= set(printed["per_type"])
    names = set(os.listdir(final))
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md",
            "modeling_layoutlm_roialign.py", "configuration_layoutlm_roialign.py", "processing_layoutlm_roialign.py",
            "image_processing_layoutlm_roialign.py"} <= names  # fmt: skip
    config = json.loads((final / "config.json").read_text())
    assert config["auto_map"]["AutoModelForTokenClassification"].startswith("modeling_layoutlm_roialign.")
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary folder left behind
    # Two epochs, a checkpoint each (save_total_limit 2 keeps both: the best and the last).
    steps = sorted(int(n.split("-")[1]) for n in os.listdir(out) if n.startswith("checkpoint-"))
    assert len(steps) == 2 and steps[1] == 2 * steps[0]

    page = {"image": str(tmp_path / "page.png"), "words": ["date", "total", "name"],
            "boxes": [[50, 50, 200, 90], [300, 50, 420, 90], [50, 150, 200, 190]]}  # fmt: skip
    PIL.Image.new("RGB", (200, 260), "white").save(page["image"])
    (tmp_path / "page.json").write_text(json.dumps(page))
    (tmp_path / "load.py").write_text(LOAD_WITHOUT_PACKAGE)
    result = run_without_package(
        f"import runpy, sys; sys.argv = ['load.py', {str(final)!r}, 'page.json']; runpy.run_path('load.py')", tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["model"].startswith("transformers_modules.") and loaded["processor"].startswith("transformers_")
    assert loaded["labels"]["3"] == "B-QUESTION"

    # The same logits as the package's own classes give.
    from transformers import AutoModelForTokenClassification, AutoProcessor

    model = AutoModelForTokenClassification.from_pretrained(final).eval()
    processor = AutoProcessor.from_pretrained(final)
    enc = processor(PIL.Image.open(page["image"]), page["words"], page["boxes"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits[0]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # a train.py run in a subprocess (the `trained` fixture)
def test_evaluate_reports_the_training_scores_as_json(trained, tmp_path):
    out, printed = trained
    report_path = tmp_path / "report.json"
    result = run_script(
        "evaluate.py", "--model", str(out / "final"), "--dataset", "synthetic", "--synthetic_pages", "10",
        "--validation_size", "3", "--max_length", "64", "--stride", "16", "--output", str(report_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["pages"] == 3 and report["split"] == "validation"
    assert report["f1"] == pytest.approx(printed["f1"], abs=1e-9)  # same pages, same model as train.py's best
    assert report["per_type"] == printed["per_type"]


@pytest.mark.slow  # a train.py run in a subprocess (the `trained` fixture)
def test_predict_writes_json_and_a_png(trained, tmp_path):
    out, _ = trained
    image = tmp_path / "page.png"
    PIL.Image.new("RGB", (300, 400), "white").save(image)
    words = tmp_path / "words.json"
    words.write_text(
        json.dumps(
            {
                "words": ["date", "1998", "total"],
                "pixel_boxes": [[10, 10, 60, 30], [70, 10, 120, 30], [10, 50, 60, 70]],
            }
        )
    )
    result = run_script(
        "predict.py", "--model", str(out / "final"), "--image", str(image), "--words", str(words),
        "--output_json", str(tmp_path / "pred.json"), "--output_png", str(tmp_path / "pred.png"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    prediction = json.loads((tmp_path / "pred.json").read_text())
    assert [w["text"] for w in prediction["words"]] == ["date", "1998", "total"]
    assert prediction["words"][0]["box"] == [33, 25, 200, 75]
    assert all(set(w) == {"text", "box", "pixel_box", "label", "score"} for w in prediction["words"])
    assert all(
        set(e) >= {"label", "text", "box", "pixel_box", "score", "word_indices"} for e in prediction["entities"]
    )
    with PIL.Image.open(tmp_path / "pred.png") as png:
        assert png.format == "PNG" and png.height == 400 and png.width > 300


def test_evaluate_checks_its_output_before_it_evaluates(tmp_path, capsys):
    """An --output in a missing folder ran the whole evaluation, then a traceback, and the report was lost."""
    evaluate = script_main("evaluate.py")
    evaluated = []
    evaluate.__globals__["evaluate_checkpoint"] = lambda *args: evaluated.append(args) or {"f1": 0.5}
    for output, message in (
        (tmp_path / "missing" / "report.json", "the folder"),
        (tmp_path, "is a folder"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            evaluate(["--model", "m", "--dataset", "synthetic", "--output", str(output)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"--output {str(output)!r}" in err and message in err
    assert evaluated == []
    report = evaluate(["--model", "m", "--dataset", "synthetic", "--output", str(tmp_path / "report.json")])
    assert json.loads((tmp_path / "report.json").read_text()) == report == {"f1": 0.5}
    assert sorted(os.listdir(tmp_path)) == ["report.json"]  # written whole, no temporary file left


def test_bad_input_stops_with_a_message_naming_the_flag(tmp_path, capsys):
    train = script_main("train.py")
    cases = [
        (["--dataset", str(tmp_path / "missing")], "--dataset"),
        (["--num_labels", "3"], "--num_labels 3"),
        (["--push_to_hub", "true"], "--hub_model_id"),
        (["--model_name_or_path", str(tmp_path / "nothing-here")], "--model_name_or_path"),
    ]
    for extra, flag in cases:
        with pytest.raises(SystemExit) as exit_info:
            train([*TINY, "--max_steps", "1", "--output_dir", str(tmp_path / "out"), *extra])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_training_under_accelerate_launch(tmp_path):
    # accelerate 1.x's `--cpu --num_processes 2` starts ONE process unless given an MPI hostfile; `--multi_gpu` on a
    # machine without GPUs starts two, and train.py then sets up DDP over CPU processes (gloo).
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(SCRIPTS / "train.py"), *TINY, "--num_train_epochs", "1", "--output_dir", str(out)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in result.stderr  # 2 x 4
    results = json.loads((out / "all_results.json").read_text())
    assert (out / f"checkpoint-{results['global_step']}" / "trainer_state.json").is_file()
    from transformers import AutoModelForTokenClassification, AutoProcessor

    model = AutoModelForTokenClassification.from_pretrained(out / "final")
    processor = AutoProcessor.from_pretrained(out / "final")
    assert model.config.num_labels == 7 and processor.image_processor.size == 64


@pytest.mark.slow
def test_quickstart_main_job_trains_labels_with_the_pipeline_without_the_package_and_draws(tmp_path):
    # The README's first command runs scripts/quickstart.py; here with fewer pages and one epoch.
    out = tmp_path / "quick"
    result = run_script("quickstart.py", "--output_dir", str(out), "--pages", "16", "--epochs", "1")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Validation entity scores" in result.stdout and "overall" in result.stdout
    # the pipeline in a process without the package labels the page as the package's own road does
    assert "LayoutLMRoIAlignForTokenClassification loaded by the pipeline; same labels here: True" in result.stdout
    prediction = json.loads((out / "prediction.json").read_text())
    assert prediction["words"] and all({"text", "box", "label", "score"} <= set(w) for w in prediction["words"])
    with PIL.Image.open(out / "prediction.png") as png:
        assert png.format == "PNG"
    assert (out / "final" / "modeling_layoutlm_roialign.py").is_file()
