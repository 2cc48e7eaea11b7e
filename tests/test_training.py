"""Training logic: learning-rate groups, collator, label checks, word-level metrics equal seqeval, resume after an
interruption, atomic final folder, clear errors, and the visual branch beating text-only on synthetic forms."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_TRAINING_MODEL, make_funsd_release_root, save_tiny_checkpoint, tiny_config
from seqeval.metrics import f1_score, precision_score, recall_score
from transformers import AutoModelForTokenClassification, AutoProcessor, TrainerCallback, TrainingArguments

from layoutlm_roialign import LayoutLMRoIAlignForTokenClassification
from layoutlm_roialign.commands.evaluate import evaluate_checkpoint
from layoutlm_roialign.commands.train import TRAIN_SCRIPT_DEFAULTS, ModelArguments, run_training
from layoutlm_roialign.data import FUNSD_LABELS, DataArguments, load_training_data
from layoutlm_roialign.data.encoding import DataCollatorForLayoutLMRoIAlign
from layoutlm_roialign.final_folder import remove_stale_temporary_folders, save_folder_atomically
from layoutlm_roialign.hub import check_push_arguments
from layoutlm_roialign.inference import encode_page
from layoutlm_roialign.label_sets import check_label_set
from layoutlm_roialign.model_factory import build_model_and_processor
from layoutlm_roialign.resuming import completed_run, last_complete_checkpoint
from layoutlm_roialign.road_layoutlm_roialign import num_windows
from layoutlm_roialign.trainer import LayoutLMRoIAlignTrainer, freeze_backbone_until

LABELS = FUNSD_LABELS
TINY_MODEL = TINY_TRAINING_MODEL
NO_EVAL = dict(eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
SMALL_DATA = dict(dataset="synthetic", synthetic_pages=12, validation_size=4, max_length=64, stride=16)


def training_args(output_dir, **overrides) -> TrainingArguments:
    kwargs = {
        **TRAIN_SCRIPT_DEFAULTS,
        "output_dir": str(output_dir),
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 1e-3,
        "seed": 0,
        "disable_tqdm": True,
        "dataloader_pin_memory": False,
        "use_cpu": True,
        **overrides,
    }
    return TrainingArguments(**kwargs)


# ---------------------------------------------------------------------------------------- learning-rate groups


def test_parameter_groups_get_their_learning_rates(tmp_path):
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(visual_init="zero_gate"))  # gate and layer norm
    trainer = LayoutLMRoIAlignTrainer(
        model=model,
        args=training_args(tmp_path, learning_rate=1e-4, weight_decay=0.01, **NO_EVAL),
        learning_rates={"backbone": 0.0, "visual": 1e-3, "head": 5e-3},  # text: default = learning_rate
    )
    optimizer = trainer.create_optimizer()
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs == {"visual": 1e-3, "text": 1e-4, "head": 5e-3}  # backbone at 0 is frozen, not in the optimizer

    base = model.layoutlm_roialign
    owner = {id(p): g["name"] for g in optimizer.param_groups for p in g["params"]}
    assert all(not p.requires_grad and id(p) not in owner for p in base.visual_embeddings.backbone.parameters())
    assert owner[id(base.visual_embeddings.projection.weight)] == "visual"
    assert owner[id(base.visual_embeddings.gate)] == "visual"
    assert owner[id(base.visual_embeddings.layer_norm.weight)] == "visual"
    assert owner[id(base.layoutlm.encoder.layer[0].attention.self.query.weight)] == "text"
    assert owner[id(model.classifier.weight)] == "head"
    # Trainer's weight-decay rule holds inside every group: none on biases and norms.
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(model.classifier.weight)] == 0.01 and decay[id(model.classifier.bias)] == 0.0
    assert decay[id(base.visual_embeddings.layer_norm.weight)] == 0.0
    summary = {s["group"]: s for s in trainer.parameter_groups_summary}
    assert summary["backbone"]["trained"] == 0 and summary["backbone"]["parameters"] > 0

    # The scheduler scales every group from its own learning rate.
    trainer.create_scheduler(num_training_steps=10, optimizer=optimizer)
    assert [g["initial_lr"] for g in optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]


def test_freeze_backbone_until_a_stage():
    model = LayoutLMRoIAlignForTokenClassification(tiny_config())
    frozen = freeze_backbone_until(model, "layer2")
    backbone = model.layoutlm_roialign.visual_embeddings.backbone
    prefix = "layoutlm_roialign.visual_embeddings.backbone."
    assert {name.removeprefix(prefix).split(".")[0] for name in frozen} == {"conv1", "bn1", "layer1", "layer2"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith("layer3"))
    with pytest.raises(ValueError, match="--freeze_backbone_until 'layer9'.*stages"):
        freeze_backbone_until(model, "layer9")


def test_the_model_names_its_parameter_groups_and_backbone_stages():
    """One source for the trainer's groups and the freezing code: the model's own structure, not name prefixes."""
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(backbone="mobilenet_v2"))
    base = model.layoutlm_roialign
    groups = model.parameter_groups()
    assert list(groups) == [name for name, _ in model.named_parameters()]
    named = dict(model.named_parameters())
    backbone = {id(p) for p in base.visual_embeddings.backbone.parameters()}
    assert {groups[n] for n, p in named.items() if id(p) in backbone} == {"backbone"}
    assert {groups[n] for n in named if n.startswith("layoutlm_roialign.layoutlm.")} == {"text"}
    assert groups["layoutlm_roialign.visual_embeddings.projection.weight"] == "visual"
    assert groups["classifier.weight"] == "head"
    stages = model.backbone_stages()
    assert list(stages) == [f"features.{i}" for i in range(14)]  # cut at features.13
    assert sum(len(names) for names in stages.values()) == sum(1 for g in groups.values() if g == "backbone")
    frozen = freeze_backbone_until(model, "features.7")
    assert frozen == [name for stage in list(stages)[:8] for name in stages[stage]]
    assert all(named[n].requires_grad for n in stages["features.8"])
    text_only = LayoutLMRoIAlignForTokenClassification(tiny_config(use_visual_features=False))
    assert text_only.backbone_stages() == {} and "backbone" not in text_only.parameter_groups().values()
    with pytest.raises(ValueError, match="needs the visual branch"):
        freeze_backbone_until(text_only, "layer1")


def test_unknown_learning_rate_group_and_negative_rate_are_refused(tmp_path):
    model = LayoutLMRoIAlignForTokenClassification(tiny_config())
    with pytest.raises(ValueError, match="Unknown learning-rate groups"):
        LayoutLMRoIAlignTrainer(model=model, args=training_args(tmp_path, **NO_EVAL), learning_rates={"pooler": 1.0})
    with pytest.raises(ValueError, match="--text_learning_rate must be >= 0"):
        LayoutLMRoIAlignTrainer(model=model, args=training_args(tmp_path, **NO_EVAL), learning_rates={"text": -1.0})


# ------------------------------------------------------------------------------------------- data and labels


def test_collator_pads_every_input_consistently():
    features = [
        {
            "input_ids": [2, 7, 3],
            "bbox": [[0] * 4, [1, 2, 3, 4], [1000] * 4],
            "attention_mask": [1, 1, 1],
            "token_type_ids": [0, 0, 0],
            "labels": [-100, 3, -100],
            "pixel_values": torch.ones(3, 8, 8).numpy(),
            "word_ids": [-1, 0, -1],
            "page": 0,
        },
        {
            "input_ids": [2, 3],
            "bbox": [[0] * 4, [1000] * 4],
            "attention_mask": [1, 1],
            "token_type_ids": [0, 0],
            "labels": [-100, -100],
            "pixel_values": torch.zeros(3, 8, 8).numpy(),
            "word_ids": [-1, -1],
            "page": 1,
        },
    ]
    batch = DataCollatorForLayoutLMRoIAlign(pad_token_id=5, pad_to_multiple_of=4)(features)
    assert set(batch) == {"input_ids", "bbox", "attention_mask", "token_type_ids", "labels", "pixel_values"}
    assert batch["input_ids"].tolist() == [[2, 7, 3, 5], [2, 3, 5, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 3, -100, -100], [-100, -100, -100, -100]]
    assert batch["bbox"].shape == (2, 4, 4) and batch["bbox"][0, 1].tolist() == [1, 2, 3, 4]
    assert batch["bbox"][1, 2:].abs().sum() == 0
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and batch["pixel_values"][0].mean() == 1


def test_label_set_mismatch_names_the_labels():
    with pytest.raises(ValueError, match=r"only in the checkpoint \['B-DATE'\], only in the dataset \['B-ANSWER'\]"):
        check_label_set(["O", "B-QUESTION", "B-DATE"], ["O", "B-QUESTION", "B-ANSWER"], "--model_name_or_path x")
    with pytest.raises(ValueError, match="same labels, different ids"):
        check_label_set(["O", "B-A"], ["B-A", "O"], "--model_name_or_path x")
    check_label_set(LABELS, LABELS, "x")


def test_num_labels_mismatch_names_the_flag():
    with pytest.raises(ValueError, match="--num_labels 5 does not match the dataset, which has 7 labels"):
        build_model_and_processor(LABELS, [["a", "b"]], num_labels=5, **TINY_MODEL)


def test_a_release_root_keeps_its_test_split(tmp_path):
    """The README's FUNSD layout (training_data/ + testing_data/): validation comes out of train, test stays."""
    root = make_funsd_release_root(tmp_path / "dataset", train_pages=5, test_pages=2)
    raw = load_training_data(DataArguments(dataset=str(root), validation_size=2))
    assert {name: len(split) for name, split in raw.items()} == {"train": 3, "validation": 2, "test": 2}
    assert raw["test"]["id"] == ["test0000", "test0001"]
    assert raw["test"].info.dataset_name == "funsd"


def test_evaluate_scores_the_test_split_of_a_release_root(tmp_path):
    """The README's FUNSD evaluation: `scripts/evaluate_checkpoint.py --dataset <release root> --split test`."""
    root = make_funsd_release_root(tmp_path / "dataset", train_pages=5, test_pages=2)
    model, processor = build_model_and_processor(LABELS, [["FORM", "Date:", "1998"]], **TINY_MODEL)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    evaluate = runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate_checkpoint.py"), run_name="script")["main"]
    argv = [
        "--model",
        str(tmp_path / "model"),
        "--dataset",
        str(root),
        "--split",
        "test",
        "--max_length",
        "64",
        "--stride",
        "16",
    ]
    report = evaluate([*argv, "--output", str(tmp_path / "report.json")])
    assert report["split"] == "test" and report["pages"] == 2
    assert json.loads((tmp_path / "report.json").read_text()) == report
    # Its scores are seqeval's on the word labels it predicts for the test pages, against their gold labels.
    data_args = DataArguments(dataset=str(root), max_length=64, stride=16)
    labelled = evaluate_checkpoint(str(tmp_path / "model"), data_args, "test", return_predictions=True)
    references, predictions = labelled["references"], labelled["predictions"]
    assert (
        [len(r) for r in references]
        == [len(p) for p in predictions]
        == [len(w) for w in load_training_data(data_args)["test"]["words"]]
    )
    assert references != [["O"] * len(r) for r in references]  # gold entities to find
    assert report["f1"] == pytest.approx(f1_score(references, predictions), abs=1e-12)
    assert report["precision"] == pytest.approx(precision_score(references, predictions), abs=1e-12)
    assert report["recall"] == pytest.approx(recall_score(references, predictions), abs=1e-12)


def test_unknown_dataset_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--dataset"):
        load_training_data(DataArguments(dataset=str(tmp_path / "no-such-folder")))


def test_push_to_hub_needs_a_repo_id_and_a_token(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--hub_model_id"):
        check_push_arguments(training_args(tmp_path, push_to_hub=True))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no cached login
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ValueError, match="--hub_token"):
        check_push_arguments(training_args(tmp_path, push_to_hub=True, hub_model_id="user/model"))


def test_checkpoint_with_another_label_set_is_refused(tmp_path):
    model, processor = build_model_and_processor(["O", "B-DATE", "I-DATE"], [["a"]], **TINY_MODEL)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"only in the checkpoint \['B-DATE', 'I-DATE'\]"):
        build_model_and_processor(LABELS, model_name_or_path=str(tmp_path))


# ------------------------------------------------------------------------------------------ folders on disk


def test_final_folder_is_replaced_atomically(tmp_path):
    destination = tmp_path / "final"
    save_folder_atomically(destination, lambda folder: (folder / "config.json").write_text("old"))

    def interrupted(folder: Path) -> None:
        (folder / "config.json").write_text("new")
        raise KeyboardInterrupt  # e.g. Ctrl-C while the weights are written

    with pytest.raises(KeyboardInterrupt):
        save_folder_atomically(destination, interrupted)
    assert (destination / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no half-written folder left behind
    save_folder_atomically(destination, lambda folder: (folder / "config.json").write_text("new"))
    assert (destination / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_left_overs_of_an_interrupted_final_save_are_removed_and_nothing_else(tmp_path):
    final = tmp_path / "final"
    save_folder_atomically(final, lambda folder: (folder / "config.json").write_text("kept"))
    for name in (".final.tmp-4242", ".final.old-4243", ".final.tmp-notes", ".other.tmp-1", "final.tmp-7"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_text("partial")
    assert remove_stale_temporary_folders(final) == [tmp_path / ".final.old-4243", tmp_path / ".final.tmp-4242"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".final.tmp-notes", ".other.tmp-1", "final", "final.tmp-7"]
    assert (final / "config.json").read_text() == "kept"
    # Killed between moving the old folder aside and renaming the new one in: the old folder comes back.
    final.rename(tmp_path / ".final.old-99")
    (tmp_path / ".final.tmp-99").mkdir()
    remove_stale_temporary_folders(final)
    assert (final / "config.json").read_text() == "kept" and not (tmp_path / ".final.tmp-99").exists()


def finished_run(output_dir: Path, step: int = 6) -> None:
    """What a run that trained `step` of `max_steps=step` steps leaves: checkpoints, final/, all_results.json."""
    for n in (step // 2, step):
        (output_dir / f"checkpoint-{n}").mkdir(parents=True)
        state = {"global_step": n, "max_steps": step, "num_train_epochs": 2, "log_history": []}
        (output_dir / f"checkpoint-{n}" / "trainer_state.json").write_text(json.dumps(state))
    save_tiny_checkpoint(output_dir / "final")  # a complete checkpoint: what resume checks `final/` is
    scores = {"f1": 0.5, "precision": 0.5, "recall": 0.5, "per_type": {}}
    results = {"entity_scores": scores, "final_dir": str(output_dir / "final"), "global_step": step}
    (output_dir / "all_results.json").write_text(json.dumps(results))


def test_resuming_a_finished_run_is_a_no_op(tmp_path):
    """The README's command after a kill, on a run that had finished: says so, trains nothing, leaves final alone."""
    finished_run(tmp_path)
    (tmp_path / ".final.tmp-4242").mkdir()  # an interrupted save of another run in this folder
    before = (tmp_path / "final" / "config.json").stat().st_mtime_ns
    resume = {"resume_from_checkpoint": "true", "max_steps": 6, **NO_EVAL}
    result = run_training(ModelArguments(**TINY_MODEL), DataArguments(**SMALL_DATA), training_args(tmp_path, **resume))
    assert result["already_complete"] and result["global_step"] == 6 and result["entity_scores"]["f1"] == 0.5
    assert (tmp_path / "final" / "config.json").stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all_results.json", "checkpoint-3", "checkpoint-6", "final"]
    # A longer schedule continues the run instead (it then trains, which needs real checkpoints: see the slow test).
    assert completed_run(tmp_path, training_args(tmp_path, max_steps=8)) is None
    assert completed_run(tmp_path, training_args(tmp_path, max_steps=6)) is not None


def test_last_complete_checkpoint_skips_an_interrupted_save(tmp_path):
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-6").mkdir()  # saving was interrupted: weights maybe, no trainer_state.json
    (tmp_path / "checkpoint-6" / "config.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert last_complete_checkpoint(tmp_path / "missing") is None


# -------------------------------------------------------------------------------------------------- training


def _first_subtoken_predictions(model, processor, pages) -> list[list[str]]:
    """Reference predictions computed without the training code: one window per page, first sub-token per word."""
    predictions = []
    model.eval()
    for page in pages:
        enc = processor(page["image"], page["words"], page["bboxes"], return_tensors="pt")
        with torch.no_grad():
            ids = model(**enc).logits.argmax(-1)[0].tolist()
        labels, seen = [], set()
        for position, word in enumerate(enc.word_ids(0)):
            if word is not None and word not in seen:
                seen.add(word)
                labels.append(model.config.id2label[ids[position]])
        assert len(labels) == len(page["words"])
        predictions.append(labels)
    return predictions


@pytest.mark.slow
def test_reported_f1_equals_seqeval_on_the_same_predictions(tmp_path):
    data_args = DataArguments(**{**SMALL_DATA, "max_length": 512})  # one window per page: a plain reference
    result = run_training(ModelArguments(**TINY_MODEL), data_args, training_args(tmp_path, num_train_epochs=2))
    final = Path(result["final_dir"])
    model = AutoModelForTokenClassification.from_pretrained(final)
    processor = AutoProcessor.from_pretrained(final)
    pages = load_training_data(data_args)["validation"]
    names = pages.features["ner_tags"].feature.names
    references = [[names[t] for t in tags] for tags in pages["ner_tags"]]
    predictions = _first_subtoken_predictions(model, processor, pages)

    assert result["eval"]["eval_f1"] == pytest.approx(f1_score(references, predictions), abs=1e-9)
    assert result["eval"]["eval_precision"] == pytest.approx(precision_score(references, predictions), abs=1e-9)
    assert result["eval"]["eval_recall"] == pytest.approx(recall_score(references, predictions), abs=1e-9)
    for name, values in result["entity_scores"]["per_type"].items():
        assert result["eval"][f"eval_{name}_f1"] == values["f1"]
    # The best epoch's model is the one saved (eval every epoch, keep the best).
    assert result["eval"]["eval_f1"] == max(
        log["eval_f1"]
        for log in json.loads((Path(result["best_checkpoint"]) / "trainer_state.json").read_text())["log_history"]
        if "eval_f1" in log
    )
    # scripts/evaluate_checkpoint.py's function scores the saved folder the same way.
    report = evaluate_checkpoint(str(final), data_args)
    assert report["f1"] == pytest.approx(result["eval"]["eval_f1"], abs=1e-9)
    assert report["pages"] == len(pages)


@pytest.mark.slow
def test_reported_scores_equal_evaluate_py_on_pages_that_span_several_windows(tmp_path):
    """Training's evaluation and scripts/evaluate_checkpoint.py's label a page longer than `max_length` through its
    overlapping windows, merged back per word: both report the same scores, seqeval's on those word labels."""
    data_args = DataArguments(**SMALL_DATA)  # 64-token windows overlapping by 16
    result = run_training(ModelArguments(**TINY_MODEL), data_args, training_args(tmp_path, num_train_epochs=2))
    final = result["final_dir"]
    pages = load_training_data(data_args)["validation"]
    processor = AutoProcessor.from_pretrained(final)
    windows = [
        num_windows(encode_page(processor, page["image"], page["words"], page["bboxes"], 64, 16)) for page in pages
    ]
    assert min(windows) >= 2, windows  # every page spans several windows
    report = evaluate_checkpoint(final, data_args, return_predictions=True)
    assert report["pages"] == len(pages)
    for key in ("f1", "precision", "recall", "accuracy"):
        assert report[key] == pytest.approx(result["eval"][f"eval_{key}"], abs=1e-9), key
    for name, values in report["per_type"].items():
        assert values["f1"] == pytest.approx(result["eval"][f"eval_{name}_f1"], abs=1e-9), name
    assert report["f1"] == pytest.approx(f1_score(report["references"], report["predictions"]), abs=1e-12)
    assert report["f1"] > 0  # it learned something: equal zeros would not tell the two roads apart


class Interrupt(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupt(f"killed after saving step {state.global_step}")


@pytest.mark.slow
def test_resume_after_an_interruption_reaches_the_same_steps_and_weights(tmp_path):
    model_args, data_args = ModelArguments(**TINY_MODEL), DataArguments(**SMALL_DATA)
    steps = dict(
        max_steps=6,
        save_strategy="steps",
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        logging_strategy="steps",
        logging_steps=2,
    )
    reference = run_training(model_args, data_args, training_args(tmp_path / "straight", **steps))

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        run_training(model_args, data_args, training_args(interrupted, **steps), callbacks=[InterruptAfterSave(4)])
    assert not (interrupted / "final").exists()
    (interrupted / "checkpoint-5").mkdir()  # a save cut short: must be skipped, not resumed from
    resumed = run_training(model_args, data_args, training_args(interrupted, resume_from_checkpoint="true", **steps))

    assert resumed["global_step"] == reference["global_step"] == 6
    assert resumed["eval"]["eval_f1"] == pytest.approx(reference["eval"]["eval_f1"])
    a = AutoModelForTokenClassification.from_pretrained(reference["final_dir"]).state_dict()
    b = AutoModelForTokenClassification.from_pretrained(resumed["final_dir"]).state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)

    # The README's command after a kill, run once more on the finished run: a no-op that says so, and that clears
    # what an interrupted final save left behind.
    final = interrupted / "final"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in final.iterdir()}
    checkpoints = sorted(p.name for p in interrupted.glob("checkpoint-*"))
    (interrupted / ".final.tmp-4242").mkdir()
    again = run_training(model_args, data_args, training_args(interrupted, resume_from_checkpoint="true", **steps))
    assert again["already_complete"] and again["global_step"] == 6
    assert again["entity_scores"] == resumed["entity_scores"] and again["final_dir"] == str(final)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in final.iterdir()} == before
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == checkpoints
    assert not (interrupted / ".final.tmp-4242").exists()


@pytest.mark.slow
def test_visual_branch_beats_text_only_on_forms_whose_labels_need_the_pixels(tmp_path):
    # On the synthetic forms a header differs from a question only by its shaded band, and the value after it is O
    # instead of ANSWER, so text and boxes cannot tell those lines apart. ONE learning rate for every part (the
    # random backbone included), as users train: the default visual_init must open at it without groups.
    scores = {}
    for visual in (True, False):
        model_args = ModelArguments(
            **{**TINY_MODEL, "image_size": 224, "hidden_size": 64, "intermediate_size": 128},
            use_visual_features=visual,
        )
        data_args = DataArguments(
            dataset="synthetic", synthetic_pages=96, validation_size=12, max_length=128, stride=32
        )
        args = training_args(
            tmp_path / str(visual),
            num_train_epochs=10,
            learning_rate=2e-3,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            load_best_model_at_end=False,
            per_device_train_batch_size=4,
        )
        result = run_training(model_args, data_args, args)
        scores[visual] = (result["eval"]["eval_f1"], result["eval"]["eval_HEADER_f1"])
    assert scores[True][0] > scores[False][0] + 0.15, scores
    assert scores[True][1] > scores[False][1] + 0.3, scores  # the headers are where the pixels help
