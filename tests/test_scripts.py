"""The scripts end to end, as users run them: train.py -> a folder that loads as remote code in a fresh process
without the package; evaluate_checkpoint.py's JSON report; predict.py's JSON and PNG; two-process training under
`accelerate launch --cpu`; and bad input stopping with a message that names the flag."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest
import torch
from conftest import REPO_ROOT, run_without_package, save_tiny_checkpoint

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


def test_no_script_touches_sys_path_or_is_named_after_an_importable_module():
    """`python scripts/<name>` puts scripts/ first on sys.path: a script named after a module (a scripts/evaluate.py)
    would shadow it for every script. Here scripts/ is not on the path, so `find_spec` sees only real modules."""
    scripts = sorted(SCRIPTS.glob("*.py"))
    assert {"train", "evaluate_checkpoint", "predict", "label", "pretrain", "publish"} <= {p.stem for p in scripts}
    assert importlib.util.find_spec("evaluate") is not None  # the check can see a library's name
    shadowing = [p.name for p in scripts if importlib.util.find_spec(p.stem) is not None]
    assert shadowing == [], "these script names shadow an importable module"
    touching = [
        f"{p.name}:{node.lineno}"
        for p in scripts
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "path" and ast.unparse(node.value) == "sys"
    ]
    assert touching == [], "scripts import the package as installed, without editing sys.path"


@pytest.mark.parametrize("name", ["train.py", "evaluate_checkpoint.py", "pretrain.py"])
def test_scripts_run_from_their_folder_import_the_evaluate_library(name):
    """`python scripts/<name>` puts scripts/ first on sys.path, and no script there shadows the `evaluate` library
    that the package's metrics load. `python -i` keeps the script's own process after its run, where
    `import evaluate` must give the library."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-i", str(SCRIPTS / name), "--help"],
        input="import evaluate\nprint('EVALUATE_FILE', evaluate.__file__, callable(getattr(evaluate, 'load', None)))\n",
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "--output_dir" in result.stdout or "--model" in result.stdout, result.stderr[-3000:]
    line = next((x for x in (result.stdout + result.stderr).splitlines() if "EVALUATE_FILE" in x), "")
    _, file, loads = line.rsplit(" ", 2) if line.count(" ") >= 2 else ("", "", "")
    assert os.path.join("site-packages", "evaluate") in file and loads == "True", (line, result.stderr[-3000:])


def test_evaluate_checkpoint_scores_a_checkpoint_with_the_evaluate_library_from_its_folder(tmp_path):
    """scripts/evaluate_checkpoint.py run as users run it (scripts/ first on sys.path) scores a tiny checkpoint with
    the package's `evaluate` metrics: the report holds seqeval's fields."""
    folder = save_tiny_checkpoint(tmp_path / "token")
    result = run_script(
        "evaluate_checkpoint.py", "--model", str(folder), "--dataset", "synthetic", "--synthetic_pages", "4",
        "--validation_size", "2", "--max_length", "64", "--stride", "16", "--output", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["pages"] == 2 and {"precision", "recall", "f1", "accuracy"} <= set(report), report
    assert set(report["per_type"]) == {"HEADER", "QUESTION", "ANSWER"}, report  # seqeval's entity types


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
        "evaluate_checkpoint.py", "--model", str(out / "final"), "--dataset", "synthetic", "--synthetic_pages", "10",
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
    """An --output in a missing folder, or one where no file can be created (root passes every permission check;
    `/proc` takes no files), ran the whole evaluation, then a traceback, and the report was lost."""
    evaluate = script_main("evaluate_checkpoint.py")
    evaluated = []
    evaluate.__globals__["evaluate_checkpoint"] = lambda *args, **kwargs: evaluated.append(args) or {"f1": 0.5}
    cases = [(tmp_path / "missing" / "report.json", "the folder"), (tmp_path, "is a folder")]
    if os.path.isdir("/proc/self"):
        cases.append((Path("/proc/report.json"), "is not writable"))
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        (tmp_path / "locked").mkdir(mode=0o555)
        cases.append((tmp_path / "locked" / "report.json", "is not writable"))
    for output, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            evaluate(["--model", "m", "--dataset", "synthetic", "--output", str(output)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"--output {str(output)!r}" in err and message in err
    assert evaluated == []
    report = evaluate(["--model", "m", "--dataset", "synthetic", "--output", str(tmp_path / "report.json")])
    assert json.loads((tmp_path / "report.json").read_text()) == report == {"f1": 0.5}
    assert sorted(p for p in os.listdir(tmp_path) if p != "locked") == ["report.json"]  # whole, no temporary file


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A tiny token-classification checkpoint and a masked-LM (pre-training) one, with their processors."""
    from layoutlm_roialign import LayoutLMRoIAlignForMaskedLM

    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "token": save_tiny_checkpoint(root / "token"),
        "mlm": save_tiny_checkpoint(root / "mlm", LayoutLMRoIAlignForMaskedLM),
    }


def test_evaluate_refuses_a_checkpoint_that_does_not_label_words_naming_its_kind(tiny_checkpoints, capsys):
    """A masked-LM checkpoint was reported as a label-set mismatch."""
    evaluate = script_main("evaluate_checkpoint.py")
    with pytest.raises(SystemExit) as exit_info:
        evaluate(["--model", str(tiny_checkpoints["mlm"]), "--dataset", "synthetic", "--synthetic_pages", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is a LayoutLMRoIAlignForMaskedLM checkpoint, which does not label words" in err, err
    assert "token-classification or linking checkpoint" in err and "label set" not in err


def test_evaluate_refuses_max_eval_pages_below_one_naming_the_flag(tiny_checkpoints, capsys):
    """`--max_eval_pages 0` scored no pages and stopped with seqeval's TypeError."""
    evaluate = script_main("evaluate_checkpoint.py")
    for pages in ("0", "-1"):
        with pytest.raises(SystemExit) as exit_info:
            evaluate(["--model", str(tiny_checkpoints["token"]), "--dataset", "synthetic", "--synthetic_pages", "4",
                      "--max_length", "64", "--max_eval_pages", pages])  # fmt: skip
        assert exit_info.value.code == 2
        assert f"--max_eval_pages {pages}: give at least 1 page" in capsys.readouterr().err


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
