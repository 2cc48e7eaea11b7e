"""Model card filling and the Hub push, tested without a network by intercepting huggingface_hub's commit call."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, TINY_TRAINING_MODEL, make_funsd_release_root, tiny_config
from helpers import SCORES, Intercepted
from huggingface_hub import HfApi
from transformers import TrainingArguments

from layoutlm_roialign.commands.train import TRAIN_SCRIPT_DEFAULTS, ModelArguments, run_training
from layoutlm_roialign.data import FUNSD_LABELS, FUNSD_LICENSE, DataArguments, describe_data, load_training_data
from layoutlm_roialign.hub import HubError, push_folder_to_hub, render_model_card, write_model_card
from layoutlm_roialign.model_factory import build_model_and_processor

LABELS = FUNSD_LABELS
TINY_MODEL = {**TINY_TRAINING_MODEL, "num_hidden_layers": 1}


@pytest.fixture
def saved_folder(tmp_path):
    model, processor = build_model_and_processor(LABELS, [["date", "name", "total"]], **TINY_MODEL)
    folder = tmp_path / "final"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_render_model_card_requires_every_field():
    assert render_model_card("# {{name}} {{name}}", {"name": "x"}) == "# x x"
    with pytest.raises(KeyError, match="'repo_id'"):
        render_model_card("{{name}} {{repo_id}}", {"name": "x"})


@pytest.mark.parametrize("funsd", [True, False])
def test_model_card_has_metrics_per_type_loading_code_and_funsd_terms(saved_folder, funsd):
    data = {
        "dataset": "dataset" if funsd else "synthetic",
        "name": "funsd" if funsd else "synthetic-forms",
        "license": FUNSD_LICENSE if funsd else "apache-2.0",
        "train_pages": 119,
        "validation_pages": 30,
        "split": "30 validation pages (--split_seed 0)",
    }
    card = write_model_card(saved_folder, SCORES, data, {"learning rate": 5e-5}, repo_id="me/model").read_text()
    assert "| **overall** | 0.5000 | 0.2500 | **0.3333** | 8 |" in card
    assert "| QUESTION | 0.5000 | 0.5000 | 0.5000 | 4 |" in card and "| ANSWER | 0.0000 |" in card
    assert "| HEADER | 0.0000 | 0.0000 | 0.0000 | 0 |" in card  # every type of the label set, even unseen
    assert 'AutoModelForTokenClassification.from_pretrained("me/model", trust_remote_code=True)' in card
    assert "| learning rate | 5e-05 |" in card
    assert ("non-commercial" in card) == funsd
    assert ("license: other" in card) == funsd and ("license: apache-2.0" in card) != funsd
    assert "{{" not in card


def card_metadata(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_the_licence_comes_from_the_loader_not_from_the_folder_name(saved_folder, tmp_path):
    """The README's FUNSD command names its folder `dataset`: the loader knows it is FUNSD."""
    root = make_funsd_release_root(tmp_path / "dataset")
    args = DataArguments(dataset=str(root), validation_size=2)
    card = write_model_card(saved_folder, SCORES, describe_data(args, load_training_data(args)), {}).read_text()
    assert card_metadata(card)["license"] == "other" and card_metadata(card)["datasets"] == ["nielsr/funsd"]
    assert "non-commercial, research and educational purposes only" in card

    synthetic = DataArguments(dataset="synthetic", synthetic_pages=6, validation_size=2)
    data = describe_data(synthetic, load_training_data(synthetic))
    card = write_model_card(saved_folder, SCORES, data, {}).read_text()
    assert card_metadata(card)["license"] == "apache-2.0" and "non-commercial" not in card

    # --dataset_license overrides what the loader says, both ways.
    args.dataset_license = "cc-by-4.0"
    card = write_model_card(saved_folder, SCORES, describe_data(args, load_training_data(args)), {}).read_text()
    assert card_metadata(card)["license"] == "apache-2.0" and "non-commercial" not in card
    synthetic.dataset_license = "cc-by-nc-4.0"
    card = write_model_card(saved_folder, SCORES, describe_data(synthetic, load_training_data(synthetic)), {})
    card = card.read_text()
    assert card_metadata(card)["license"] == "other" and "licensed under: cc-by-nc-4.0" in card
    # A dataset whose licence nobody reported is not published as apache-2.0.
    card = write_model_card(saved_folder, SCORES, {"dataset": "me/forms", "train_pages": 3}, {}).read_text()
    assert card_metadata(card)["license"] == "other" and "is not known" in card


def test_push_sends_the_complete_folder_in_one_commit(saved_folder, monkeypatch):
    data = {"dataset": "synthetic", "license": "apache-2.0", "train_pages": 8}
    write_model_card(saved_folder, SCORES, data, {}, repo_id="me/model")
    (saved_folder / "training_args.bin").write_bytes(b"pickle")  # never published
    hub = Intercepted(monkeypatch)
    push_folder_to_hub(saved_folder, "me/model", token="hf_fake", private=True)

    assert hub.repos == [("me/model", {"private": True, "exist_ok": True, "repo_type": "model"})]
    card = next(op for op in hub.commits[0]["operations"] if op.path_in_repo == "README.md")
    metadata = card_metadata(open(card.path_or_fileobj).read())  # the card's YAML header parses
    assert metadata["library_name"] == "transformers" and "custom_code" in metadata["tags"]
    assert len(hub.commits) == 1
    expected = set(os.listdir(saved_folder)) - {"training_args.bin"}
    assert hub.files() == expected
    assert {
        "config.json",
        "model.safetensors",
        "README.md",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "modeling_layoutlm_roialign.py",
        "configuration_layoutlm_roialign.py",
        "processing_layoutlm_roialign.py",
        "image_processing_layoutlm_roialign.py",
    } <= expected


def test_push_refuses_an_incomplete_folder(saved_folder, monkeypatch):
    hub = Intercepted(monkeypatch)
    os.remove(saved_folder / "processing_layoutlm_roialign.py")
    with pytest.raises(ValueError, match=r"missing \['README.md', 'processing_layoutlm_roialign.py'\]"):
        push_folder_to_hub(saved_folder, "me/model", token="hf_fake")
    assert hub.commits == []


def test_train_with_push_to_hub_publishes_the_final_folder(tmp_path, monkeypatch):
    hub = Intercepted(monkeypatch)
    args = TrainingArguments(
        **{
            **TRAIN_SCRIPT_DEFAULTS,
            "output_dir": str(tmp_path),
            "max_steps": 2,
            "eval_strategy": "no",
            "save_strategy": "no",
            "load_best_model_at_end": False,
            "use_cpu": True,
            "push_to_hub": True,
            "hub_model_id": "me/forms",
            "hub_token": "hf_fake",
            "disable_tqdm": True,
        }
    )
    data = DataArguments(dataset="synthetic", synthetic_pages=6, validation_size=2, max_length=64, stride=16)
    result = run_training(ModelArguments(**TINY_MODEL), data, args)

    final = tmp_path / "final"
    assert hub.whoami == ["hf_fake"]  # the token was checked with the Hub before training
    assert result["pushed"] and [repo for repo, _ in hub.repos] == ["me/forms"]
    assert hub.commits[0]["repo_id"] == "me/forms"
    assert hub.files() == set(os.listdir(final)) - {"training_args.bin"}
    card = (final / "README.md").read_text()
    assert "me/forms" in card and "| **overall** |" in card


def push_training_args(tmp_path, **overrides) -> TrainingArguments:
    return TrainingArguments(
        **{**TRAIN_SCRIPT_DEFAULTS, "output_dir": str(tmp_path), "max_steps": 2, "eval_strategy": "no",
           "save_strategy": "no", "load_best_model_at_end": False, "use_cpu": True, "push_to_hub": True,
           "hub_model_id": "me/forms", "hub_token": "hf_fake", "disable_tqdm": True, **overrides}
    )  # fmt: skip


def test_an_unreachable_hub_or_refused_token_stops_train_before_it_trains(tmp_path, monkeypatch):
    hub = Intercepted(monkeypatch)

    def unreachable(api, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'\n...60 more lines...")

    monkeypatch.setattr(HfApi, "whoami", unreachable)
    data = DataArguments(dataset="synthetic", synthetic_pages=6, validation_size=2, max_length=64, stride=16)
    with pytest.raises(ValueError, match=r"--push_to_hub: asking the Hub who the token belongs to failed \("
                       r"ConnectionError: Failed to resolve 'huggingface.co'\); nothing was trained"):  # fmt: skip
        run_training(ModelArguments(**TINY_MODEL), data, push_training_args(tmp_path))
    assert not (tmp_path / "final").exists() and hub.commits == []


def test_a_failed_push_after_training_is_one_line_and_keeps_the_trained_folder(tmp_path, monkeypatch, capsys):
    Intercepted(monkeypatch)

    def refused(api, *args, **kwargs):
        raise OSError("403 Forbidden: you cannot write to me/forms\nRequest ID: abc")

    monkeypatch.setattr(HfApi, "create_commit", refused)
    data = DataArguments(dataset="synthetic", synthetic_pages=6, validation_size=2, max_length=64, stride=16)
    with pytest.raises(HubError) as failure:
        run_training(ModelArguments(**TINY_MODEL), data, push_training_args(tmp_path))
    final = tmp_path / "final"
    assert str(failure.value) == (
        f"pushing {final} to https://huggingface.co/me/forms failed (OSError: 403 Forbidden: you cannot write to "
        f"me/forms); the trained model is kept in {final} (scripts/publish.py --model {final} --repo_id me/forms "
        "publishes it)"
    )
    assert (final / "model.safetensors").is_file() and (final / "README.md").is_file()

    script = runpy.run_path(str(REPO_ROOT / "scripts" / "train.py"), run_name="script")["main"].__globals__
    monkeypatch.setitem(script, "run_training", lambda *args: (_ for _ in ()).throw(failure.value))
    with pytest.raises(SystemExit) as exit_info:
        script["main"](["--output_dir", str(tmp_path / "again")])
    assert exit_info.value.code == f"train.py: {failure.value}."  # printed as one line, exit status 1


@pytest.mark.slow  # builds and installs a wheel with pip
def test_an_installed_wheel_has_the_model_card_template_and_the_metric_files(tmp_path):
    """pyproject.toml alone builds the wheel; installed, the package finds its model card template and loads its
    `evaluate` metrics from their files (package data, loaded by path), offline."""
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(
        REPO_ROOT / "layoutlm_roialign", source / "layoutlm_roialign", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)], check=True)
    (wheel,) = tmp_path.glob("layoutlm_roialign-*.whl")
    subprocess.run([*pip, "install", str(wheel), "--no-deps", "--no-index", "--target", str(tmp_path / "site")],
                   check=True)  # fmt: skip
    code = (
        "import layoutlm_roialign\n"
        "from layoutlm_roialign.hub import find_model_card_template\n"
        "from layoutlm_roialign.metrics import METRICS_FOLDER, load_metric\n"
        "import importlib.metadata\n"
        "print(layoutlm_roialign.__file__, layoutlm_roialign.__version__, importlib.metadata.version('layoutlm-roialign'))\n"
        "print(find_model_card_template())\n"
        "print(METRICS_FOLDER)\n"
        "print(load_metric('entity_f1').compute(predictions=[['B-A', 'O']], references=[['B-A', 'I-A']])['f1'])\n"
        "print(load_metric('pair_f1').compute(predictions=[[[0, 1]]], references=[[[0, 1], [2, 1]]])['recall'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    loaded = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    package, version, installed_version, template, metrics, entity_f1, pair_recall = loaded.stdout.split()
    installed = (tmp_path / "site" / "layoutlm_roialign").resolve()
    assert Path(package).parent == installed  # the wheel's copy, not this checkout
    assert version == installed_version and wheel.name.startswith(f"layoutlm_roialign-{version}-")  # one version
    assert Path(template) == installed / "model_card.md"
    assert Path(template).read_text() == (REPO_ROOT / "model_card.md").read_text()
    assert Path(metrics) == installed / "evaluate_metrics"
    assert (entity_f1, pair_recall) == ("0.0", "0.5")


def test_the_card_names_a_local_text_encoder_folder_never_its_path(tmp_path):
    """A model card goes to the Hub: `--text_model /home/me/models/minilm` must not publish this machine's path."""
    from layoutlm_roialign import LayoutLMRoIAlignForTokenClassification
    from layoutlm_roialign.commands.train import hyperparameters

    folder = tmp_path / "private" / "minilm"
    folder.mkdir(parents=True)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config())
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[])
    rows = hyperparameters(ModelArguments(text_model=str(folder)), DataArguments(), args, model)
    assert rows["text encoder"] == "minilm (a local folder)"
    assert str(tmp_path) not in json.dumps(rows, default=str)
    rows = hyperparameters(ModelArguments(text_model="microsoft/layoutlm-base-uncased"), DataArguments(), args, model)
    assert rows["text encoder"] == "microsoft/layoutlm-base-uncased"
