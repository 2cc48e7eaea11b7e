"""MVLM pre-training: the masked-LM head and its checkpoint (task heads load its encoder, remote code), the masking
rules, the blanked boxes, the cached windows, a short run whose loss falls, resume after a kill, fine-tuning the
result with scripts/train.py, and two processes under `accelerate launch`."""

from __future__ import annotations

import json
import os
import runpy
import shlex
import signal
import subprocess
import sys

import PIL.Image
import pytest
import torch
from conftest import REPO_ROOT, assert_remote_code_gives, model_inputs, random_batch, tiny_config, write_bilevel_png
from transformers import TrainingArguments

from layoutlm_roialign import (
    LayoutLMRoIAlignForMaskedLM,
    LayoutLMRoIAlignForRelationExtraction,
    LayoutLMRoIAlignForSequenceClassification,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignImageProcessor,
)
from layoutlm_roialign.data.funsd import FUNSD_LABELS
from layoutlm_roialign.pretraining import (
    PRETRAIN_SCRIPT_DEFAULTS,
    DataCollatorForMaskedVisualLanguageModeling,
    PretrainingArguments,
    blank_fill_value,
    read_pretraining_windows,
    run_pretraining,
)

SCRIPTS = REPO_ROOT / "scripts"
FUNSD_CONFIG = dict(id2label=dict(enumerate(FUNSD_LABELS)), label2id={n: i for i, n in enumerate(FUNSD_LABELS)})
# The model arguments of a tiny pre-training run (hidden 32, 2 layers, resnet18 at 64 px), 64-token windows.
TINY_PRETRAIN = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, backbone="resnet18",
    image_size=64, max_length=64, stride=16, num_workers=0, validation_windows=8,
)  # fmt: skip
TINY_FLAGS = [f"--{k}={v}" for k, v in TINY_PRETRAIN.items()]


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """24 synthetic forms as a `save_to_disk` dataset (words and 0-1000 boxes in columns) and a WordPiece tokenizer
    folder trained on their words."""
    from layoutlm_roialign.data.synthetic import generate_synthetic_forms
    from layoutlm_roialign.wordpiece import train_wordpiece_tokenizer

    root = tmp_path_factory.mktemp("mvlm-pages")
    forms = generate_synthetic_forms(24, seed=0)
    forms.save_to_disk(str(root / "forms"))
    train_wordpiece_tokenizer([" ".join(w) for w in forms["words"]], vocab_size=300).save_pretrained(root / "tok")
    return {"dataset": str(root / "forms"), "tokenizer": str(root / "tok")}


def source_args(pages, **overrides) -> PretrainingArguments:
    kwargs = dict(dataset=pages["dataset"], words_column="words", boxes_column="bboxes", tokenizer=pages["tokenizer"])
    return PretrainingArguments(**{**kwargs, **TINY_PRETRAIN, **overrides})


def pretrain_training_args(output_dir, **overrides) -> TrainingArguments:
    kwargs = {**PRETRAIN_SCRIPT_DEFAULTS, "output_dir": str(output_dir), "disable_tqdm": True, "use_cpu": True}
    return TrainingArguments(**{**kwargs, **overrides})


# --- The masked-LM head and its checkpoint ---------------------------------------------------------------------


def test_decoder_is_tied_to_the_word_embeddings_and_stays_tied_after_loading(tmp_path):
    model = LayoutLMRoIAlignForMaskedLM(tiny_config())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert torch.count_nonzero(model.cls.predictions.bias) == 0
    model.save_pretrained(tmp_path)
    loaded = LayoutLMRoIAlignForMaskedLM.from_pretrained(tmp_path)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_layoutlm_roialign.LayoutLMRoIAlignForMaskedLM"
    assert (tmp_path / "modeling_layoutlm_roialign.py").is_file()


def test_masked_lm_loss_reads_only_labelled_tokens_and_sparse_prediction_gives_the_same_loss():
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForMaskedLM(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model.layoutlm_roialign.visual_embeddings.dropout.p = 0.0
    batch = random_batch()
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1:3] = batch["input_ids"][:, 1:3]
    full = model(**model_inputs(batch), labels=labels)
    assert full.logits.shape == (*batch["input_ids"].shape, 99)
    expected = torch.nn.functional.cross_entropy(full.logits[:, 1:3].reshape(-1, 99), labels[:, 1:3].reshape(-1))
    torch.testing.assert_close(full.loss, expected)
    model.config.mlm_sparse_prediction = True
    sparse = model.train()(**model_inputs(batch), labels=labels)
    assert sparse.logits.shape == (6, 99)  # 3 rows x 2 predicted tokens
    torch.testing.assert_close(sparse.loss, full.loss)
    with pytest.raises(ValueError, match="`labels` must be token ids in 0..98"):
        model(**model_inputs(batch), labels=labels.masked_fill(labels >= 0, 500))


@pytest.mark.parametrize(
    "head",
    [
        LayoutLMRoIAlignForTokenClassification,
        LayoutLMRoIAlignForSequenceClassification,
        LayoutLMRoIAlignForRelationExtraction,
    ],
)
def test_mlm_checkpoint_loads_into_each_task_head_with_only_the_head_newly_initialized(tmp_path, head):
    mlm = LayoutLMRoIAlignForMaskedLM(tiny_config())
    mlm.save_pretrained(tmp_path)
    model, info = head.from_pretrained(tmp_path, output_loading_info=True, **FUNSD_CONFIG)
    head_keys = {k for k in model.state_dict() if not k.startswith("layoutlm_roialign.")}
    # The masked-LM model has no pooler (it would never be trained): a head that reads the pooled [CLS] starts its
    # pooler fresh, as BERT's sequence classifier does from a masked-LM checkpoint.
    head_keys |= {k for k in model.state_dict() if ".pooler." in k}
    assert head_keys and set(info["missing_keys"]) == head_keys
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as saved:  # the tied decoder is not stored
        assert set(info["unexpected_keys"]) == {k for k in saved.keys() if k.startswith("cls.")}
    assert not info["mismatched_keys"]
    encoder = model.layoutlm_roialign.state_dict()
    for key, value in mlm.layoutlm_roialign.state_dict().items():
        assert torch.equal(encoder[key], value), key


def test_mlm_head_round_trips_as_remote_code_without_the_package(tmp_path):
    model = LayoutLMRoIAlignForMaskedLM(tiny_config()).eval()
    ckpt = tmp_path / "mlm"
    model.save_pretrained(ckpt)
    batch = model_inputs(random_batch())
    with torch.no_grad():
        expected = model(**batch).logits
    checks = (
        'assert type(model).__name__ == "LayoutLMRoIAlignForMaskedLM", type(model)\n'
        "assert model.get_output_embeddings().weight is model.get_input_embeddings().weight\n"
    )
    assert_remote_code_gives(ckpt, batch, expected, tmp_path, auto_class="AutoModelForMaskedLM", checks=checks)


# --- Masking ----------------------------------------------------------------------------------------------------


def _windows(tokenizer, rows: int, seed: int = 0, pixels: bool = False) -> list[dict]:
    """`rows` windows of random words of the tokenizer's vocabulary (many split into sub-tokens), of different
    lengths, each with its word ids and word boxes (every sub-token its word's box)."""
    g = torch.Generator().manual_seed(seed)
    vocab = [w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 2]
    out = []
    for r in range(rows):
        count = 3 + r % 12
        words = ["".join(vocab[int(i)] for i in torch.randint(len(vocab), (2,), generator=g)) for _ in range(count)]
        encoded = tokenizer(words, is_split_into_words=True)
        word_ids = encoded.word_ids()
        boxes = [[60 * (w % 15), 40 * (w // 15), 60 * (w % 15) + 50, 40 * (w // 15) + 30] for w in range(count)]
        row = {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "token_type_ids": encoded["token_type_ids"],
            "bbox": [[0, 0, 0, 0] if w is None else boxes[w] for w in word_ids],
            "word_ids": [-1 if w is None else w for w in word_ids],
        }
        row["bbox"][-1] = [1000, 1000, 1000, 1000]  # [SEP]
        if pixels:
            row["pixel_values"] = torch.randn(3, 64, 64, generator=g).numpy()
        out.append(row)
    return out


@pytest.fixture(scope="module")
def tokenizer(pages):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(pages["tokenizer"])


def test_masking_keeps_boxes_never_masks_special_tokens_and_follows_15_80_10_10(tokenizer):
    features = _windows(tokenizer, 400)
    collator = DataCollatorForMaskedVisualLanguageModeling(tokenizer, generator=torch.Generator().manual_seed(0))
    plain = collator.pad(features)
    batch = collator(features)
    labels, ids = batch["labels"], plain["input_ids"]
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    padding = plain["attention_mask"] == 0
    assert special.any() and padding.any()
    assert (labels[special | padding] == -100).all()  # [CLS], [SEP], [PAD] never chosen
    assert torch.equal(batch["input_ids"][special | padding], ids[special | padding])
    assert torch.equal(batch["bbox"], plain["bbox"])  # masked tokens keep their boxes
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original ids
    share = chosen.sum() / (~special & ~padding).sum()
    assert 0.13 < share < 0.17, share
    masked = (batch["input_ids"] == tokenizer.mask_token_id) & chosen
    kept = (batch["input_ids"] == ids) & chosen
    replaced = chosen & ~masked & ~kept
    n = chosen.sum()
    assert abs(masked.sum() / n - 0.8) < 0.03 and abs(kept.sum() / n - 0.1) < 0.03
    assert abs(replaced.sum() / n - 0.1) < 0.03
    assert not torch.isin(batch["input_ids"][replaced], torch.tensor(tokenizer.all_special_ids)).any()


def test_whole_word_masking_chooses_every_sub_token_of_a_word_or_none(tokenizer):
    features = _windows(tokenizer, 100, seed=1)
    collator = DataCollatorForMaskedVisualLanguageModeling(
        tokenizer, whole_word_mask=True, generator=torch.Generator().manual_seed(1)
    )
    batch = collator(features)
    split_words = 0
    for row, f in enumerate(features):
        chosen = (batch["labels"][row, : len(f["word_ids"])] != -100).tolist()
        for word in set(f["word_ids"]) - {-1}:
            states = {c for c, w in zip(chosen, f["word_ids"], strict=True) if w == word}
            assert len(states) == 1, (row, word)
            split_words += f["word_ids"].count(word) > 1 and states == {True}
    assert split_words > 10  # words of several sub-tokens were chosen whole


def test_a_batch_always_predicts_something_and_only_special_tokens_give_no_label(tokenizer):
    features = _windows(tokenizer, 1)[:1]
    collator = DataCollatorForMaskedVisualLanguageModeling(
        tokenizer, mlm_probability=1e-6, generator=torch.Generator().manual_seed(0)
    )
    assert (collator(features)["labels"] != -100).sum() == 1
    only_special = [{**features[0], "input_ids": [tokenizer.cls_token_id, tokenizer.sep_token_id],
                     "attention_mask": [1, 1], "token_type_ids": [0, 0], "bbox": [[0] * 4, [1000] * 4],
                     "word_ids": [-1, -1]}]  # fmt: skip
    assert (collator(only_special)["labels"] == -100).all()
    with pytest.raises(ValueError, match="mlm_probability"):
        DataCollatorForMaskedVisualLanguageModeling(tokenizer, mlm_probability=1.0)


def test_chosen_tokens_boxes_are_blanked_to_white_paper_in_the_image_and_nothing_else(tokenizer):
    processor = LayoutLMRoIAlignImageProcessor(size=64)
    fill = blank_fill_value(processor)
    white = processor.preprocess(PIL.Image.new("RGB", (8, 8), "white"), return_tensors="pt")
    torch.testing.assert_close(white["pixel_values"][0, :, 0, 0], torch.tensor(fill))
    features = _windows(tokenizer, 6, pixels=True)
    collator = DataCollatorForMaskedVisualLanguageModeling(
        tokenizer, fill_value=fill, generator=torch.Generator().manual_seed(2)
    )
    batch = collator(features)
    assert (batch["labels"] != -100).any(dim=1).sum() >= 2  # rows with tokens to predict (a short row may have none)
    for row, f in enumerate(features):
        original = torch.as_tensor(f["pixel_values"])
        chosen = batch["labels"][row] != -100
        inside = torch.zeros(64, 64, dtype=torch.bool)
        for x0, y0, x1, y1 in batch["bbox"][row][chosen].tolist():
            inside[y0 * 64 // 1000 : -(-y1 * 64 // 1000), x0 * 64 // 1000 : -(-x1 * 64 // 1000)] = True
        assert inside.any() == bool(chosen.any())
        blanked = batch["pixel_values"][row]
        assert torch.equal(blanked[:, inside], torch.tensor(fill)[:, None].expand(3, int(inside.sum())))
        assert torch.equal(blanked[:, ~inside], original[:, ~inside])


# --- Reading, caching, training -------------------------------------------------------------------------------


def test_windows_are_read_once_and_a_second_call_reuses_the_cache(pages, tmp_path, monkeypatch):
    from layoutlm_roialign.labelling.reading import PageReader
    from layoutlm_roialign.pretraining import build_pretraining_model

    args = source_args(pages)
    _, processor = build_pretraining_model(args)
    windows, stats = read_pretraining_windows(args, processor, tmp_path / "cache", pixels=True)
    assert not stats["cached"] and stats["pages"] == 24 and stats["windows"] == len(windows) > 24
    assert stats["tokens"] == sum(len(ids) for ids in windows["input_ids"]) and stats["failed_pages"] == 0
    row = windows[0]
    assert row["input_ids"][0] == processor.tokenizer.cls_token_id and row["word_ids"][0] == -1
    assert len(row["bbox"]) == len(row["input_ids"]) <= 64 and len(row["pixel_values"]) == 3

    def no_reading(self, index):
        raise AssertionError("a cached page was read again")

    monkeypatch.setattr(PageReader, "__getitem__", no_reading)
    again, stats_again = read_pretraining_windows(args, processor, tmp_path / "cache", pixels=True)
    assert stats_again["cached"] and again["input_ids"] == windows["input_ids"]
    with pytest.raises(AssertionError, match="read again"):  # other settings are other windows
        read_pretraining_windows(source_args(pages, stride=8), processor, tmp_path / "cache", pixels=True)


def test_pdf_pages_are_read_through_the_labellers_reader(pages, tmp_path):
    pytest.importorskip("pypdfium2")
    from helpers import TEXT_PAGES, write_text_pdf

    from layoutlm_roialign.pretraining import build_pretraining_model

    (tmp_path / "in").mkdir()
    write_text_pdf(tmp_path / "in" / "doc.pdf", TEXT_PAGES)
    (tmp_path / "in" / "empty.pdf").write_bytes(b"")
    args = PretrainingArguments(inputs=[str(tmp_path / "in")], tokenizer=pages["tokenizer"], words_from="text",
                                **{**TINY_PRETRAIN})  # fmt: skip
    _, processor = build_pretraining_model(args)
    windows, stats = read_pretraining_windows(args, processor, tmp_path / "cache", pixels=False)
    assert stats["documents"] == 2 and stats["pages_with_words"] == 2 and stats["failed_pages"] == 1
    assert stats["pages"] == 3 and stats["words"] == sum(map(len, TEXT_PAGES))  # the empty PDF: one failed page
    assert "pixel_values" not in windows.column_names
    words = processor.tokenizer.decode([i for row in windows["input_ids"] for i in row], skip_special_tokens=True)
    assert "invoice" in words.replace(" ##", "")


def test_a_page_past_the_decompression_bomb_limit_is_a_failed_page_and_pretraining_goes_on(pages, tmp_path):
    (tmp_path / "in").mkdir()
    write_bilevel_png(tmp_path / "in" / "huge.png")  # 20000 x 20000: 400 MP, past PIL's 179 MP limit
    main = runpy.run_path(str(SCRIPTS / "pretrain.py"), run_name="script")["main"]
    summary = main([*_pretrain_command(pages, tmp_path / "out", "--inputs", str(tmp_path / "in"), "--max_steps", "1",
                                       "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "true")[1:]])  # fmt: skip
    data = summary["data"]
    assert (data["pages"], data["pages_with_words"], data["failed_pages"]) == (
        25,
        24,
        1,
    )  # pages = with words + without words + failed
    (failure,) = summary["failures"]
    assert "huge.png" in failure and "400,000,000 pixels" in failure and "decompression bombs" in failure
    assert summary["training"]["global_step"] == 1


def test_short_run_on_synthetic_pages_lowers_the_mlm_loss_and_writes_a_checkpoint_train_py_fine_tunes(pages, tmp_path):
    from layoutlm_roialign.checkpoint_files import is_written_checkpoint

    args = source_args(pages)
    training = pretrain_training_args(
        tmp_path / "mvlm", max_steps=40, learning_rate=3e-3, eval_steps=10, save_steps=20, logging_steps=10, seed=0
    )
    summary = run_pretraining(args, training)
    losses = [point["loss"] for point in summary["eval_curve"]]
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.3, losses
    assert [point["step"] for point in summary["eval_curve"]] == [0, 10, 20, 30, 40]  # step 0: before training
    assert summary["eval_curve"][-1]["masked_accuracy"] > summary["eval_curve"][0]["masked_accuracy"]
    final = tmp_path / "mvlm" / "final"
    card = (final / "README.md").read_text()
    assert "| documents / pages (with words + without words + failed) | 1 / 24 (24 + 0 + 0) |" in card
    assert "| steps / epochs | 40 /" in card and str(summary["data"]["tokens"]) in card
    assert str(tmp_path) not in card  # a card names sources, never this machine's paths
    assert json.loads((final / "config.json").read_text())["architectures"] == ["LayoutLMRoIAlignForMaskedLM"]
    assert is_written_checkpoint(final)  # a rerun may replace it
    (final / "notes.txt").write_text("mine")
    assert not is_written_checkpoint(final)  # not once it holds something of the user's
    (final / "notes.txt").unlink()

    from layoutlm_roialign.model_factory import build_model_and_processor

    train_main = runpy.run_path(str(SCRIPTS / "train.py"), run_name="script")["main"]

    mlm = LayoutLMRoIAlignForMaskedLM.from_pretrained(final)
    text_model, _ = build_model_and_processor(FUNSD_LABELS, text_model=str(final), backbone="resnet18", image_size=64)
    for key, value in mlm.layoutlm_roialign.layoutlm.state_dict().items():
        assert torch.equal(text_model.layoutlm_roialign.layoutlm.state_dict()[key], value), key
    whole, _ = build_model_and_processor(FUNSD_LABELS, model_name_or_path=str(final))
    assert whole.config.num_labels == len(FUNSD_LABELS)
    for key, value in mlm.layoutlm_roialign.state_dict().items():
        assert torch.equal(whole.layoutlm_roialign.state_dict()[key], value), key
    for flag in ("--text_model", "--model_name_or_path"):
        out = tmp_path / f"ft{flag}"
        result = train_main(["--dataset", "synthetic", "--synthetic_pages", "8", "--validation_size", "2",
                             "--max_length", "64", "--stride", "16", flag, str(final), "--backbone", "resnet18",
                             "--image_size", "64", "--max_steps", "2", "--output_dir", str(out), "--use_cpu", "true",
                             "--disable_tqdm", "true", "--eval_strategy", "no", "--save_strategy", "no",
                             "--load_best_model_at_end", "false"])  # fmt: skip
        assert (out / "final" / "config.json").is_file() and result["global_step"] == 2
        assert is_written_checkpoint(out / "final")


def test_bad_arguments_exit_with_status_2_and_name_the_flag(pages, tmp_path, capsys):
    main = runpy.run_path(str(SCRIPTS / "pretrain.py"), run_name="script")["main"]

    cases = [
        ([], "--inputs"),
        (["--dataset", pages["dataset"]], "--text_model"),
        (["--dataset", pages["dataset"], "--tokenizer", pages["tokenizer"], "--mlm_probability", "1.5"],
         "--mlm_probability"),
        (["--inputs", str(tmp_path / "missing"), "--tokenizer", pages["tokenizer"], *TINY_FLAGS], "--inputs"),
        (["--dataset", pages["dataset"], "--tokenizer", pages["tokenizer"], "--words_column", "words"],
         "--boxes_column"),
    ]  # fmt: skip
    for extra, flag in cases:
        with pytest.raises(SystemExit) as exit_info:
            main([*extra, "--output_dir", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err


def _pretrain_command(pages, out, *extra) -> list[str]:
    return [
        str(SCRIPTS / "pretrain.py"), "--dataset", pages["dataset"], "--words_column", "words", "--boxes_column",
        "bboxes", "--tokenizer", pages["tokenizer"], *TINY_FLAGS, "--output_dir", str(out), "--disable_tqdm", "true",
        "--logging_steps", "1", *extra,
    ]  # fmt: skip


def test_a_killed_run_resumes_from_its_last_checkpoint(pages, tmp_path):
    """SIGKILL right after checkpoint-4 is saved (step 5 never logged), then the same command with
    `--resume_from_checkpoint true`."""
    out = tmp_path / "mvlm"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    common = ["--max_steps", "8", "--save_steps", "4", "--eval_steps", "4"]
    killer = f"""
import os, signal, sys
sys.argv = {_pretrain_command(pages, out, *common)!r}
import transformers
original = transformers.Trainer._save_checkpoint
def save_then_die(self, *args, **kwargs):
    original(self, *args, **kwargs)
    if self.state.global_step == 4:
        os.kill(os.getpid(), signal.SIGKILL)
transformers.Trainer._save_checkpoint = save_then_die
import runpy
import shlex
runpy.run_path(sys.argv[0], run_name="__main__")
"""
    killed = subprocess.run([sys.executable, "-c", killer], capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (out / "checkpoint-4" / "trainer_state.json").is_file() and not (out / "final").exists()
    resumed = subprocess.run(
        [sys.executable, *_pretrain_command(pages, out, *common, "--resume_from_checkpoint", "true")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming training from checkpoint with epoch 0 and global step 4" in resumed.stderr
    assert "Reusing the" in resumed.stderr  # the windows came from the cache, not from the pages
    results = json.loads((out / "pretraining_results.json").read_text())
    assert results["training"]["global_step"] == 8 and results["training"]["resumed_from"] == "checkpoint-4"
    steps = [point["step"] for point in results["train_curve"]]
    assert steps == list(range(1, 9))  # steps 1-4 from the killed run's state, 5-8 from this one, none twice
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_process_pretraining_under_accelerate_launch(pages, tmp_path):
    # As tests/test_scripts.py does for train.py: `--multi_gpu` on a machine without GPUs starts two CPU processes.
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               *_pretrain_command(pages, out, "--max_steps", "4", "--save_steps", "2", "--eval_steps", "2")]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 16" in result.stderr  # 2 x 8
    results = json.loads((out / "pretraining_results.json").read_text())
    assert results["training"]["global_step"] == 4 and results["training"]["total_batch_size"] == 16
    assert len(list((out / "windows").iterdir())) == 1  # one cache, written by the main process
    model = LayoutLMRoIAlignForMaskedLM.from_pretrained(out / "final")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


# --- What a run keeps, reuses and never replaces ------------------------------------------------------------------


class PageReads:
    """Counts the pages `PageReader` reads (their `(source, page)`), and raises `KeyboardInterrupt` (Ctrl-C) on the
    read after `stop_after` pages."""

    def __init__(self, monkeypatch, stop_after: int | None = None) -> None:
        from layoutlm_roialign.labelling.reading import PageReader

        self.keys, self.stop_after, original = [], stop_after, PageReader.__getitem__

        def counted(reader, index):
            if self.stop_after is not None and len(self.keys) == self.stop_after:
                raise KeyboardInterrupt
            self.keys.append(reader.jobs[index].key)
            return original(reader, index)

        monkeypatch.setattr(PageReader, "__getitem__", counted)


def test_a_reading_interrupted_midway_is_resumed_reading_only_the_pages_not_read_yet(pages, tmp_path, monkeypatch):
    from layoutlm_roialign.pretraining import build_pretraining_model
    from layoutlm_roialign.pretraining import windows as windows_module

    monkeypatch.setattr(windows_module, "PART_WINDOWS", 1)  # one part per page: the cut below drops one page
    args = source_args(pages)
    _, processor = build_pretraining_model(args)
    whole, whole_stats = read_pretraining_windows(args, processor, tmp_path / "whole", pixels=True)
    jobs = [(pages["dataset"] + "[train]", page) for page in range(1, 25)]
    reads = PageReads(monkeypatch, stop_after=10)
    with pytest.raises(KeyboardInterrupt):
        read_pretraining_windows(args, processor, tmp_path / "cache", pixels=True)
    assert reads.keys == jobs[:10]
    [store] = [path for path in (tmp_path / "cache").iterdir() if path.name.endswith(".parts")]
    records = (store / "pages.jsonl").read_bytes().splitlines(keepends=True)
    assert len(records) == 10  # Ctrl-C: every page read was kept
    # as a kill mid-write leaves it: the last record cut short (its part is then no page's, and is dropped)
    (store / "pages.jsonl").write_bytes(b"".join(records[:-1]) + records[-1][:30])
    reads.keys.clear()
    reads.stop_after = None
    windows, stats = read_pretraining_windows(args, processor, tmp_path / "cache", pixels=True)
    assert reads.keys == jobs[9:]  # the 9 pages kept are not read again; the torn one is
    assert not stats["cached"] and len(windows) == len(whole)
    assert windows.to_dict() == whole.to_dict()
    drop = ("seconds", "cached")
    assert {k: v for k, v in stats.items() if k not in drop} == {k: v for k, v in whole_stats.items() if k not in drop}
    assert [path.name.startswith(".") for path in (tmp_path / "cache").iterdir()] == [False]  # the cache alone


def test_a_reading_killed_with_sigkill_keeps_the_pages_written_and_a_rerun_reads_only_the_others(
    pages, tmp_path, monkeypatch
):
    from layoutlm_roialign.pretraining import build_pretraining_model

    out = tmp_path / "mvlm"
    killer = f"""
import os, signal, sys
sys.argv = {_pretrain_command(pages, out, "--max_steps", "1")!r}
from layoutlm_roialign.labelling.reading import PageReader
from layoutlm_roialign.pretraining import windows
windows.PART_WINDOWS = 1
original, reads = PageReader.__getitem__, []
def read_then_die(self, index):
    if len(reads) == 10:
        os.kill(os.getpid(), signal.SIGKILL)
    reads.append(index)
    return original(self, index)
PageReader.__getitem__ = read_then_die
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", killer], capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    [store] = [path for path in (out / "windows").iterdir() if path.name.endswith(".parts")]
    kept = len((store / "pages.jsonl").read_text().splitlines())
    assert kept == 10  # each page read was on disk (its part, then its record) before the next one was read
    args = source_args(pages)
    _, processor = build_pretraining_model(args)
    whole, _ = read_pretraining_windows(args, processor, tmp_path / "whole", pixels=True)
    reads = PageReads(monkeypatch)
    windows, stats = read_pretraining_windows(args, processor, out / "windows", pixels=True)
    assert reads.keys == [(pages["dataset"] + "[train]", page) for page in range(kept + 1, 25)]
    assert windows.to_dict() == whole.to_dict() and stats["pages_with_words"] == 24
    assert [path.name.startswith(".") for path in (out / "windows").iterdir()] == [False]


def test_counts_add_up_and_every_failure_names_its_file_and_page(tmp_path, caplog):
    from layoutlm_roialign.data.synthetic import generate_synthetic_forms
    from layoutlm_roialign.pretraining import build_pretraining_model
    from layoutlm_roialign.wordpiece import train_wordpiece_tokenizer

    forms = generate_synthetic_forms(3, seed=0)
    forms = forms.map(lambda row, i: {"words": [], "bboxes": []} if i == 1 else row, with_indices=True)
    forms.save_to_disk(str(tmp_path / "forms"))
    train_wordpiece_tokenizer([" ".join(w) for w in forms["words"]], vocab_size=300).save_pretrained(tmp_path / "tok")
    (tmp_path / "in").mkdir()
    PIL.Image.new("RGB", (40, 40), "white").save(tmp_path / "in" / "scan.png")  # no text layer: fails with text
    (tmp_path / "in" / "empty.png").write_bytes(b"")  # cannot be opened
    args = PretrainingArguments(inputs=[str(tmp_path / "in")], dataset=str(tmp_path / "forms"), words_column="words",
                                boxes_column="bboxes", tokenizer=str(tmp_path / "tok"), words_from="text",
                                **TINY_PRETRAIN)  # fmt: skip
    _, processor = build_pretraining_model(args)
    with caplog.at_level("INFO", logger="layoutlm_roialign.pretraining.windows"):
        _, stats = read_pretraining_windows(args, processor, tmp_path / "cache", pixels=False)
    assert (stats["documents"], stats["pages"]) == (3, 5)  # 2 files + the dataset; 1 + 1 + 3 pages
    assert (stats["pages_with_words"], stats["pages_without_words"], stats["failed_pages"]) == (2, 1, 2)
    assert stats["pages"] == stats["pages_with_words"] + stats["pages_without_words"] + stats["failed_pages"]
    assert stats["failures"] == [
        f"{tmp_path / 'in' / 'empty.png'}: the file is empty (0 bytes)",
        f"{tmp_path / 'in' / 'scan.png'} page 1: the page has no text layer (an image, a scan) and --words_from "
        "text never OCRs: it is left for a run with --words_from auto or ocr",
    ]
    assert "3 documents, 5 pages: 2 with words + 1 without words + 2 failed (a document that cannot be opened " in (
        caplog.text
    )


@pytest.mark.parametrize("script", ["pretrain.py", "train.py"])
def test_a_final_folder_holding_files_a_save_does_not_write_is_refused_up_front_and_kept(pages, tmp_path, capsys,
                                                                                        script):  # fmt: skip
    out = tmp_path / "out"
    final = out / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text(json.dumps({"model_type": "layoutlm_roialign"}))
    (final / "keep.txt").write_text("mine")
    main = runpy.run_path(str(SCRIPTS / script), run_name="script")["main"]
    if script == "pretrain.py":
        argv = _pretrain_command(pages, out, "--max_steps", "1")[1:]
    else:
        argv = ["--dataset", "synthetic", "--synthetic_pages", "8", "--validation_size", "2", "--max_length", "64",
                "--stride", "16", "--backbone", "resnet18", "--image_size", "64", "--hidden_size", "32",
                "--num_hidden_layers", "2", "--num_attention_heads", "4", "--intermediate_size", "37", "--max_steps",
                "1", "--output_dir", str(out), "--use_cpu", "true", "--eval_strategy", "no", "--save_strategy", "no",
                "--load_best_model_at_end", "false", "--report_to", "none"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--output_dir: {final} holds files this run did not write" in err
    assert sorted(os.listdir(final)) == ["config.json", "keep.txt"] and (final / "keep.txt").read_text() == "mine"
    assert os.listdir(out) == ["final"]  # refused before reading or training


def test_an_output_dir_that_is_a_file_and_a_text_model_that_is_missing_exit_2_naming_the_flag(pages, tmp_path,
                                                                                             capsys):  # fmt: skip
    main = runpy.run_path(str(SCRIPTS / "pretrain.py"), run_name="script")["main"]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    source = ["--dataset", pages["dataset"], "--words_column", "words", "--boxes_column", "bboxes", "--max_length",
              "64", "--stride", "16", "--num_workers", "0", "--backbone", "resnet18", "--image_size", "64"]  # fmt: skip
    out = ["--output_dir", str(tmp_path / "out")]
    cases = [
        (["--tokenizer", pages["tokenizer"], "--output_dir", str(notes)], "--output_dir", "is a file, not a folder"),
        (["--tokenizer", pages["tokenizer"], "--output_dir", str(notes / "run")], "--output_dir", "a file, not a"),
        (["--tokenizer", pages["tokenizer"], "--cache_dir", str(notes), *out], "--cache_dir", "is a file"),
        (["--text_model", str(tmp_path / "models" / "bert"), *out], "--text_model", "is not a folder"),
        (["--text_model", "./bert", *out], "--text_model", "is not a folder"),
        (["--text_model", "no-such-model-here", *out], "--text_model 'no-such-model-here' cannot be loaded", ""),
    ]
    for extra, flag, reason in cases:
        with pytest.raises(SystemExit) as exit_info:
            main([*source, *extra])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert flag in err and reason in err and "Traceback" not in err, err
    assert notes.read_text() == "mine" and not (tmp_path / "out").exists()  # nothing read, nothing written


def test_ctrl_c_while_reading_prints_the_command_that_goes_on_and_resuming_reuses_the_pages_read(pages, tmp_path):
    out = tmp_path / "mvlm"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = _pretrain_command(pages, out, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no")
    interrupted = f"""
import sys
sys.argv = {command!r}
from layoutlm_roialign.labelling.reading import PageReader
original, reads = PageReader.__getitem__, []
def read_then_ctrl_c(self, index):
    if len(reads) == 5:
        raise KeyboardInterrupt
    reads.append(index)
    return original(self, index)
PageReader.__getitem__ = read_then_ctrl_c
import runpy
import shlex
runpy.run_path(sys.argv[0], run_name="__main__")
"""
    result = subprocess.run([sys.executable, "-c", interrupted], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, env=env)  # fmt: skip
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [hint] = [line for line in result.stderr.splitlines() if line.startswith("Interrupted;")]
    prefix = "Interrupted; the pages read so far are kept. To go on from there, run: python "
    assert hint.startswith(prefix) and shlex.split(hint[len(prefix) :]) == ["scripts/pretrain.py", *command[1:]]
    resumed = subprocess.run([sys.executable, *command, "--resume_from_checkpoint", "true"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"No complete checkpoint in {out} yet: the pages read so far are reused" in resumed.stderr
    assert "Reusing the 5 pages read by an earlier run" in resumed.stderr and "reading the other 19" in resumed.stderr
    assert [path.name for path in (out / "windows").iterdir() if path.name.startswith(".")] == []
    assert (out / "final" / "model.safetensors").is_file()


def test_resuming_before_anything_was_read_says_there_is_nothing_to_resume(pages, tmp_path, capsys):
    main = runpy.run_path(str(SCRIPTS / "pretrain.py"), run_name="script")["main"]
    out = tmp_path / "mvlm"
    with pytest.raises(SystemExit) as exit_info:
        main([*_pretrain_command(pages, out, "--resume_from_checkpoint", "true")[1:]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--resume_from_checkpoint: nothing to resume in {out}: no complete checkpoint and no pages read" in err


def test_resuming_with_other_arguments_is_refused_naming_them(pages, tmp_path, capsys):
    main = runpy.run_path(str(SCRIPTS / "pretrain.py"), run_name="script")["main"]
    out = tmp_path / "mvlm"
    common = ["--max_steps", "2", "--save_steps", "2", "--eval_strategy", "no"]
    main(_pretrain_command(pages, out, *common)[1:])
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    changes = [
        (["--max_length", "32", "--stride", "8"], "--max_length 32 (the run has 64); --stride 8 (the run has 16)"),
        (["--text_only", "true"], "--text_only True (the run has False)"),
    ]
    for change, named in changes:
        with pytest.raises(SystemExit) as exit_info:
            main([*_pretrain_command(pages, out, *common, "--resume_from_checkpoint", "true")[1:], *change])
        assert exit_info.value.code == 2
        assert f"The run in {out} was started with other arguments: {named}." in capsys.readouterr().err


def test_the_final_save_itself_never_replaces_a_folder_that_took_a_users_file_during_the_run(tmp_path):
    from layoutlm_roialign.checkpoint_files import is_written_checkpoint
    from layoutlm_roialign.final_folder import save_folder_atomically

    final = tmp_path / "final"
    final.mkdir()
    (final / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=f"{final} holds files this run did not write"):
        save_folder_atomically(final, lambda out: (out / "config.json").write_text("{}"), is_written_checkpoint)
    assert os.listdir(final) == ["keep.txt"] and os.listdir(tmp_path) == ["final"]
