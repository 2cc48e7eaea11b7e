"""Key-value linking: FUNSD's links in the loaders, the synthetic forms' links, the processor's entity
encoding across windows, the link head (loss falls and it recovers links; padding and batch companions change no
score; bad input), the metrics, and the linking checkpoint's save / load / remote-code round trip."""

from __future__ import annotations

import json
import os
import runpy

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import (
    MODEL_INPUTS,
    REPO_ROOT,
    TINY_TRAINING_MODEL,
    make_funsd_release_root,
    run_without_package,
    tiny_config,
)
from transformers import TrainingArguments

from layoutlm_roialign import (
    LayoutLMRoIAlignConfig,
    LayoutLMRoIAlignForRelationExtraction,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignImageProcessor,
    LayoutLMRoIAlignProcessor,
)
from layoutlm_roialign.commands.train import TRAIN_SCRIPT_DEFAULTS, ModelArguments, run_training
from layoutlm_roialign.data import (
    FUNSD_LABELS,
    DataArguments,
    generate_synthetic_forms,
    load_funsd_folder,
    render_synthetic_form,
    render_synthetic_form_with_links,
)
from layoutlm_roialign.dataset_predictions import end_to_end_scores
from layoutlm_roialign.drawing import draw_pairs
from layoutlm_roialign.inference import is_linking_model, predict_page
from layoutlm_roialign.metrics import end_to_end_link_scores, gold_links, link_scores
from layoutlm_roialign.processing_layoutlm_roialign import merge_window_links, select_links
from layoutlm_roialign.wordpiece import train_wordpiece_tokenizer

FUNSD_ID2LABEL = dict(enumerate(FUNSD_LABELS))
TYPES = ["HEADER", "QUESTION", "ANSWER"]  # what FUNSD's labels resolve to


@pytest.fixture(scope="module")
def synthetic():
    return generate_synthetic_forms(28, seed=11)


@pytest.fixture(scope="module")
def processor(synthetic):
    tokenizer = train_wordpiece_tokenizer([" ".join(w) for w in synthetic["words"]], vocab_size=300)
    return LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(size=64), tokenizer)


def linking_config(processor, **overrides) -> LayoutLMRoIAlignConfig:
    return tiny_config(
        vocab_size=len(processor.tokenizer), max_position_embeddings=512, id2label=FUNSD_ID2LABEL, **overrides
    )


# ------------------------------------------------------------------------------------------------------------- data


def test_funsd_loader_links_equal_the_json_files(funsd_train):
    ds = load_funsd_folder(funsd_train)
    total, dropped = 0, 0
    for row in ds:
        form = json.loads((funsd_train / "annotations" / f"{row['id']}.json").read_text())["form"]
        with_words = {e["id"] for e in form if any(w["text"].strip() for w in e["words"])}
        expected = {tuple(pair) for e in form for pair in e["linking"]}
        kept = {pair for pair in expected if set(pair) <= with_words}
        assert {tuple(pair) for pair in row["links"]} == kept and len(row["links"]) == len(kept)
        dropped += len(expected) - len(kept)
        total += len(kept)
        # entities: the JSON's non-empty words, in the loader's word numbering, with the JSON's labels
        by_id = {e["id"]: e for e in form}
        assert [e["id"] for e in row["entities"]] == [e["id"] for e in form if e["id"] in with_words]
        for entity in row["entities"]:
            source = by_id[entity["id"]]
            assert entity["label"] == source["label"].upper()
            assert [row["words"][i] for i in entity["word_indices"]] == [
                w["text"] for w in source["words"] if w["text"].strip()
            ]
            boxes = np.array([row["bboxes"][i] for i in entity["word_indices"]])
            assert entity["box"] == [*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()]
    # 4,230 distinct links in the 149 JSON files; 83 touch an entity without words (dropped with it)
    assert (total, dropped) == (4147, 83)
    question_answer = sum(len(gold_links(row["entities"], row["links"], [["QUESTION", "ANSWER"]])) for row in ds)
    assert question_answer == 3049  # of the 3,129 question -> answer links


def test_synthetic_forms_link_each_question_to_the_answer_beside_it(synthetic):
    for index in range(4):  # the page is the one render_synthetic_form draws (the quickstart's pages are unchanged)
        with_links = render_synthetic_form_with_links(11, index)
        plain = render_synthetic_form(11, index)
        assert with_links[1:4] == plain[1:4]
        assert np.array_equal(np.asarray(with_links[0]), np.asarray(plain[0]))
    links = 0
    for row in synthetic:
        entities = {e["id"]: e for e in row["entities"]}
        for key, value in row["links"]:
            q, a = entities[key], entities[value]
            assert (q["label"], a["label"]) == ("QUESTION", "ANSWER")
            assert a["word_indices"][0] == q["word_indices"][-1] + 1  # the value follows its key on the line
            assert abs(q["box"][1] - a["box"][1]) < 30
            links += 1
        tags = [FUNSD_LABELS[t] for t in row["ner_tags"]]
        assert sum(t == "B-ANSWER" for t in tags) == len(row["links"])  # every answer has its question
    assert links > 50


# -------------------------------------------------------------------------------------------------------- processor


def test_entities_and_links_are_encoded_per_window_and_merge_back(synthetic, processor):
    row = synthetic[0]
    whole = processor(row["image"], row["words"], row["bboxes"], entities=row["entities"], links=row["links"],
                      entity_types=TYPES, truncation=True, max_length=512)  # fmt: skip
    spans, labels = whole["entity_spans"][0], whole["entity_labels"][0]
    assert len(spans) == len(row["entities"])
    for (start, end), entity in zip(spans, row["entities"], strict=True):
        word_ids = whole.word_ids(0)[start:end]
        assert sorted(set(word_ids)) == entity["word_indices"]
    assert labels == [TYPES.index(e["label"]) for e in row["entities"]]
    assert sum(map(sum, whole["link_labels"][0])) == len(row["links"])

    windows = processor(row["image"], row["words"], row["bboxes"], entities=row["entities"], links=row["links"],
                        entity_types=TYPES, truncation=True, max_length=48, stride=16,
                        return_overflowing_tokens=True, padding=True, return_tensors="pt")  # fmt: skip
    assert len(windows["input_ids"]) > 2
    seen, linked = set(), set()
    for k in range(len(windows["input_ids"])):
        word_ids = windows.word_ids(k)
        for e, ((start, end), index) in enumerate(zip(windows["entity_spans"][k].tolist(),
                                          windows["entity_index"][k].tolist(), strict=True)):  # fmt: skip
            if index < 0:
                assert (start, end) == (0, 0)
                continue
            entity = row["entities"][index]
            assert sorted(set(word_ids[start:end])) == entity["word_indices"]  # the whole entity is in the window
            # ... and every token of its words: none outside the span in this window
            outside = [w for t, w in enumerate(word_ids) if w in entity["word_indices"] and not start <= t < end]
            assert not outside
            seen.add(index)
            for v, value_index in enumerate(windows["entity_index"][k].tolist()):
                if windows["link_labels"][k, e, v] == 1:
                    linked.add((entity["id"], row["entities"][value_index]["id"]))
    assert seen == set(range(len(row["entities"])))  # every entity fits some window here
    assert linked == {tuple(pair) for pair in row["links"]}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(entities=[{"word_indices": [0, 1]}], links=[[0, 5]]), "names entity id 5"),
        (dict(entities=[{"word_indices": [0, 2]}]), "must be consecutive"),
        (dict(entities=[{"word_indices": [2, 3]}]), "reach past the page's 3 words"),
        (dict(entities=[{"word_indices": []}]), "no `word_indices`"),
        (dict(entities=[{"word_indices": [0], "label": "QUESTION"}]), "pass `entity_types`"),
        (dict(entities=[{"word_indices": [0], "id": 1}, {"word_indices": [1], "id": 1}]), "repeats the id 1"),
        (dict(links=[[0, 1]]), "pass `entities` too"),
    ],
)
def test_bad_entities_and_links_name_the_argument(processor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        processor(text=["a", "b", "c"], boxes=[[0, 0, 10, 10]] * 3, **kwargs)


def test_no_entities_gives_empty_rows_and_no_pairs(processor):
    enc = processor(text=["a", "b"], boxes=[[0, 0, 10, 10]] * 2, entities=[], links=[], return_tensors="pt")
    assert enc["entity_spans"].shape == (1, 0, 2) and enc["link_labels"].shape == (1, 0, 0)
    model = LayoutLMRoIAlignForRelationExtraction(linking_config(processor, use_visual_features=False)).eval()
    out = model(**{k: enc[k] for k in ("input_ids", "bbox", "attention_mask", "entity_spans", "link_labels")})
    assert out.link_logits.shape == (1, 0, 0) and out.loss.item() == 0.0
    assert processor.post_process_relation_extraction(enc, out.link_logits, config=model.config) == [[]]


def test_window_merge_takes_each_pair_from_the_window_with_most_context():
    # one page, two windows of 10 word tokens; entities 0 and 1 in both, near the end of window 0 and the middle of 1
    spans = [[[7, 8], [9, 10]], [[4, 5], [6, 7]]]
    logits = [np.array([[-1e4, -0.1], [-1e4, -1e4]]), np.array([[-1e4, -3.0], [-1e4, -1e4]])]  # log-probabilities
    merged = merge_window_links([[0, 1], [0, 1]], spans, logits, [10, 10], [0, 0])
    assert merged == [{(0, 1): -3.0}]
    log = np.log
    scores = {(0, 1): log(0.6), (2, 1): log(0.7), (0, 3): log(0.9), (4, 5): log(0.4)}
    assert select_links(scores, 0.5, one_value_key=True) == [
        (0, 3, pytest.approx(0.9)),
        (2, 1, pytest.approx(0.7)),
    ]  # value 1's best key only; (4, 5) is below the threshold
    assert len(select_links(scores, 0.5, one_value_key=False)) == 3


# ------------------------------------------------------------------------------------------------------------ model


def encode(processor, rows, **kwargs):
    return processor([r["image"] for r in rows], [r["words"] for r in rows], [r["bboxes"] for r in rows],
                     entities=[r["entities"] for r in rows], links=[r["links"] for r in rows], entity_types=TYPES,
                     truncation=True, max_length=512, padding=True, return_tensors="pt", **kwargs)  # fmt: skip


LINK_INPUTS = (*MODEL_INPUTS, "entity_spans", "entity_labels")


def test_padding_and_batch_companions_do_not_change_a_pages_pair_scores(synthetic, processor):
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForRelationExtraction(linking_config(processor)).eval()
    with torch.no_grad():  # the zero-initialized visual projection would hide the entity box feature
        model.layoutlm_roialign.visual_embeddings.projection.weight.normal_(0, 0.02)
    alone = encode(processor, [synthetic[1]])
    together = encode(processor, [synthetic[2], synthetic[1], synthetic[3]])
    assert together["input_ids"].shape[1] > alone["input_ids"].shape[1]  # padded further in the batch
    with torch.no_grad():
        a = model(**{k: alone[k] for k in LINK_INPUTS}).link_logits[0]
        b = model(**{k: together[k] for k in LINK_INPUTS}).link_logits[1]
    n = len(synthetic[1]["entities"])
    assert b.shape[0] > n  # entity rows padded to the batch's most
    assert (a > -1e4).sum() > 5
    torch.testing.assert_close(b[:n, :n], a, rtol=1e-4, atol=1e-4)
    assert (b[n:] == -1e4).all() and (b[:, n:] == -1e4).all()


def test_candidates_follow_link_types_and_bad_entity_inputs_are_refused(processor):
    model = LayoutLMRoIAlignForRelationExtraction(linking_config(processor, use_visual_features=False)).eval()
    ids = torch.randint(5, 50, (1, 10))
    spans = torch.tensor([[[1, 3], [3, 4], [4, 6], [0, 0]]])
    types = torch.tensor([[1, 2, 0, -100]])  # QUESTION, ANSWER, HEADER, padding
    with torch.no_grad():
        logits = model(input_ids=ids, entity_spans=spans, entity_labels=types).link_logits[0]
    assert ((logits > -1e4) == torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).bool()).all()
    with pytest.raises(ValueError, match="`entity_spans` sequence 0, entity 1 is \\[3, 11\\]"):
        model(input_ids=ids, entity_spans=torch.tensor([[[1, 3], [3, 11]]]))
    with pytest.raises(ValueError, match="`entity_labels` must be in 0..2"):
        model(input_ids=ids, entity_spans=spans, entity_labels=torch.tensor([[1, 2, 7, -100]]))
    with pytest.raises(ValueError, match="`link_labels` must have shape"):
        model(input_ids=ids, entity_spans=spans, link_labels=torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="need `entity_spans`"):
        model(input_ids=ids, entity_labels=types)
    with pytest.raises(ValueError, match="`config.link_types` .* names types"):
        LayoutLMRoIAlignForRelationExtraction(linking_config(processor, link_types=[["KEY", "VALUE"]]))
    with pytest.raises(ValueError, match="`link_threshold`"):
        linking_config(processor, link_threshold=1.5)


def test_a_config_without_entity_types_builds_a_linker_of_untyped_entities():
    config = tiny_config(use_visual_features=False)  # labels LABEL_0..6: no B-/I- types, no `entity_types`
    assert config.resolved_entity_types == []
    model = LayoutLMRoIAlignForRelationExtraction(config).eval()
    ids = torch.randint(5, 50, (1, 10))
    spans = torch.tensor([[[1, 3], [3, 4], [4, 6], [0, 0]]])
    with torch.no_grad():
        logits = model(input_ids=ids, entity_spans=spans).link_logits[0]
    # every ordered pair of the three real entities is a candidate, never an entity with itself or padding
    expected = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]).bool()
    assert ((logits > -1e4) == expected).all()
    with pytest.raises(ValueError, match="the config names none: set `config.entity_types`"):
        model(input_ids=ids, entity_spans=spans, entity_labels=torch.tensor([[0, 1, 0, -100]]))


def test_the_link_head_learns_to_recover_the_links_of_synthetic_forms(synthetic, processor):
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForRelationExtraction(linking_config(processor, use_visual_features=False))
    train, held_out = [synthetic[i] for i in range(20)], [synthetic[i] for i in range(20, 28)]
    batches = [encode(processor, train[i : i + 4]) for i in range(0, 20, 4)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(14):
        for batch in batches:
            out = model(**{k: batch[k] for k in (*LINK_INPUTS, "link_labels") if k != "pixel_values"})
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            losses.append(out.loss.item())
    assert np.mean(losses[-5:]) < 0.25 * np.mean(losses[:5])
    model.eval()
    enc = encode(processor, held_out)
    with torch.no_grad():
        link_logits = model(**{k: enc[k] for k in LINK_INPUTS if k != "pixel_values"}).link_logits
    predicted = [{(k, v) for k, v in ((p["key"], p["value"]) for p in page)}
                 for page in processor.post_process_relation_extraction(enc, link_logits, 0.5, True)]  # fmt: skip
    gold = [gold_links(r["entities"], r["links"], [["QUESTION", "ANSWER"]]) for r in held_out]
    scores = link_scores(gold, predicted)
    assert scores["gold"] > 20 and scores["f1"] > 0.75, scores  # chance: an answer picks among ~10 questions


# ---------------------------------------------------------------------------------------------------------- metrics


def test_link_metrics_count_pairs_and_match_predicted_entities_by_their_words():
    gold = [{(0, 1), (2, 3)}, {(0, 1)}]
    assert link_scores(gold, [{(0, 1), (3, 2)}, set()]) == {
        "precision": 0.5, "recall": 1 / 3, "f1": 0.4, "predicted": 2, "gold": 3, "correct": 1,
    }  # fmt: skip
    gold_entities = [[[0, 1], [2], [5], [6, 7]]]
    # predicted entity 0 = gold 1 (word 2), 1 = gold 0 (words 0-1), 2 = words 6 only (no gold entity has exactly it)
    predicted_entities = [[[2], [0, 1], [6]]]
    scores = end_to_end_link_scores(gold_entities, [{(0, 1), (2, 3)}], predicted_entities, [{(1, 0), (0, 2)}])
    assert (scores["correct"], scores["predicted"], scores["gold"]) == (1, 2, 2)
    entities = [{"id": 7, "label": "ANSWER"}, {"id": 3, "label": "QUESTION"}, {"id": 1, "label": "HEADER"}]
    assert gold_links(entities, [[7, 3], [1, 3], [3, 9]], [["QUESTION", "ANSWER"]]) == {(1, 0)}


# ----------------------------------------------------------------------------------- checkpoints and prediction


def test_linking_checkpoint_round_trip_and_remote_code_without_the_package(synthetic, processor, tmp_path):
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForRelationExtraction(linking_config(processor)).eval()
    with torch.no_grad():
        model.layoutlm_roialign.visual_embeddings.projection.weight.normal_(0, 0.02)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForTokenClassification"].endswith("LayoutLMRoIAlignForRelationExtraction")
    assert config["architectures"] == ["LayoutLMRoIAlignForRelationExtraction"]

    enc = encode(processor, [synthetic[4]])
    inputs = {k: enc[k] for k in LINK_INPUTS}
    with torch.no_grad():
        expected = model(**inputs)
    again = LayoutLMRoIAlignForRelationExtraction.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        assert torch.equal(again(**inputs).link_logits, expected.link_logits)
    # the joint checkpoint is a token classifier too: its token head loads alone and gives the same logits
    token_model = LayoutLMRoIAlignForTokenClassification.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        assert torch.equal(token_model(**{k: enc[k] for k in LINK_INPUTS[:5]}).logits, expected.logits)

    torch.save(inputs, tmp_path / "inputs.pt")
    torch.save(expected.link_logits, tmp_path / "expected.pt")
    result = run_without_package(
        f"""
        import torch
        from transformers import AutoModelForTokenClassification, AutoProcessor
        folder = {str(tmp_path / "ckpt")!r}
        model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__name__ == "LayoutLMRoIAlignForRelationExtraction", type(model)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        enc = processor(text=["date:", "john"], boxes=[[0, 0, 10, 10], [20, 0, 40, 10]], entities=[{{"word_indices": [0],
                        "label": "QUESTION"}}, {{"word_indices": [1], "label": "ANSWER"}}], links=[[0, 1]],
                        entity_types=model.config.resolved_entity_types)
        assert len(enc["entity_spans"][0]) == 2 and enc["link_labels"][0] == [[0, 1], [0, 0]], enc
        with torch.no_grad():
            logits = model(**torch.load({str(tmp_path / "inputs.pt")!r})).link_logits
        assert torch.equal(logits, torch.load({str(tmp_path / "expected.pt")!r}))
        print("REMOTE_OK")
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout


def test_predict_page_links_given_entities_and_draw_pairs_draws_them(synthetic, processor):
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForRelationExtraction(linking_config(processor, link_threshold=1e-6)).eval()
    assert is_linking_model(model)
    row = synthetic[5]
    gold = [{"word_indices": e["word_indices"], "label": e["label"]} for e in row["entities"]]
    # with gold entities and a threshold that keeps every candidate: each answer gets its best question
    prediction = predict_page(model, processor, row["image"], row["words"], row["bboxes"], entities=gold)
    answers = [i for i, e in enumerate(gold) if e["label"] == "ANSWER"]
    assert sorted(p["value"]["entity"] for p in prediction["pairs"]) == answers
    for pair in prediction["pairs"]:
        assert pair["key"]["label"] == "QUESTION" and set(pair["key"]) >= {"entity", "text", "box", "pixel_box"}
        assert 0 < pair["score"] <= 1
    picture = draw_pairs(row["image"], prediction, FUNSD_LABELS)
    arrows = np.all(np.asarray(picture)[..., :3] == (230, 120, 0), axis=-1)
    assert arrows.sum() > 100
    assert predict_page(model, processor, row["image"], row["words"], row["bboxes"], entities=[])["pairs"] == []


def test_given_entities_are_normalized_or_refused_naming_the_argument(synthetic, processor):
    """Raw FUNSD labels ("question"), BIO labels and type ids link as the type names do; anything else, duplicates,
    overlapping spans and non-integer word indices stop with a ValueError naming `entities` (they gave 0 pairs)."""
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForRelationExtraction(linking_config(processor, link_threshold=1e-6)).eval()
    row = synthetic[5]
    gold = [{"word_indices": e["word_indices"], "label": e["label"]} for e in row["entities"]]

    def pairs(entities):
        return predict_page(model, processor, row["image"], row["words"], row["bboxes"], entities=entities)["pairs"]

    expected = pairs(gold)
    assert expected
    for spell in (str.lower, str.title, lambda label: f"B-{label}", lambda label: TYPES.index(label)):
        assert pairs([{**e, "label": spell(e["label"])} for e in gold]) == expected
    other = pairs([{**e, "label": "other" if e["label"] == "HEADER" else e["label"]} for e in gold])
    assert other == expected  # FUNSD's "other" is an entity that is never linked (HEADER is no candidate here)
    for label in ("KEY", None, "B-"):
        with pytest.raises(ValueError, match=r"`entities`\[0\] has the label .*\['HEADER', 'QUESTION', 'ANSWER'\]"):
            pairs([{**gold[0], "label": label}, *gold[1:]])
    multi = next(i for i, e in enumerate(gold) if len(e["word_indices"]) > 1)
    span = gold[multi]["word_indices"]
    for entities, match in (
        (gold + [gold[multi]], rf"`entities`\[{len(gold)}\] repeats `entities`\[{multi}\]"),
        (gold + [{"word_indices": span[-1:], "label": "ANSWER"}], rf"`entities`\[{len(gold)}\] overlaps"),
        ([{"word_indices": [float(i) for i in span], "label": "QUESTION"}], "must be integers"),
        ([{"word_indices": [0.5], "label": "QUESTION"}], "must be integers"),
    ):
        with pytest.raises(ValueError, match=match):
            pairs(entities)


def test_end_to_end_scores_run_on_predicted_entities(synthetic, processor):
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForRelationExtraction(linking_config(processor, use_visual_features=False)).eval()
    scores = end_to_end_scores(model, processor, synthetic.select(range(2)), max_length=128, stride=32)
    gold = sum(len(gold_links(r["entities"], r["links"], [["QUESTION", "ANSWER"]])) for r in synthetic.select([0, 1]))
    assert scores["gold"] == gold and 0 <= scores["correct"] <= scores["predicted"]


# ------------------------------------------------------------------------------------- the offline training path


def linking_training_args(output_dir, **overrides):
    return TrainingArguments(**{**TRAIN_SCRIPT_DEFAULTS, "output_dir": str(output_dir), "num_train_epochs": 1,
                                "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
                                "learning_rate": 1e-3, "seed": 0, "disable_tqdm": True,
                                "dataloader_pin_memory": False, "use_cpu": True, **overrides})  # fmt: skip


def test_train_script_task_linking_reports_link_scores_and_refuses_data_without_links(tmp_path):
    data = dict(dataset="synthetic", synthetic_pages=10, validation_size=4, max_length=64, stride=16)
    result = run_training(ModelArguments(**TINY_TRAINING_MODEL, task="linking"), DataArguments(**data),
                          linking_training_args(tmp_path / "run"))  # fmt: skip
    scores = result["link_scores"]
    assert set(scores) >= {"gold_entities", "end_to_end", "gold_entities_by_threshold", "gold_unreachable"}
    assert scores["gold_entities"]["gold"] == scores["end_to_end"]["gold"] > 0
    assert result["eval"]["eval_link_gold"] == scores["gold_entities"]["gold"]
    folder = tmp_path / "run" / "final"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LayoutLMRoIAlignForRelationExtraction"]
    assert "## Key-value pairs" in (folder / "README.md").read_text()
    assert json.loads((folder / "eval_results.json").read_text())["link_scores"]["end_to_end"]["gold"] > 0
    # a FUNSD-like Hub copy without entity links cannot train the linking task
    root = make_funsd_release_root(tmp_path / "funsd")
    (tmp_path / "saved").mkdir()
    load_funsd_folder(root / "training_data").remove_columns(["entities", "links"]).save_to_disk(tmp_path / "saved/d")
    with pytest.raises(ValueError, match="--task linking needs entity links"):
        run_training(ModelArguments(**TINY_TRAINING_MODEL, task="linking"),
                     DataArguments(dataset=str(tmp_path / "saved/d"), validation_size=2),
                     linking_training_args(tmp_path / "run2"))  # fmt: skip


@pytest.mark.slow
def test_offline_linking_run_then_predict_script_writes_pairs_and_arrows(tmp_path):
    """The offline main-job path: train.py --task linking on synthetic forms, then predict.py on an unseen page."""
    data = dict(dataset="synthetic", synthetic_pages=96, validation_size=0.2, max_length=128, stride=32)
    # text only, to be quick: it labels entities poorly here (headers differ from questions only in the pixels, entity
    # F1 ~0.4), so the end-to-end bar is low; with gold entities the head finds every link
    model_args = ModelArguments(**{**TINY_TRAINING_MODEL, "hidden_size": 64, "intermediate_size": 128},
                                use_visual_features=False, task="linking")  # fmt: skip
    result = run_training(model_args, DataArguments(**data),
                          linking_training_args(tmp_path / "run", num_train_epochs=15, learning_rate=3e-3))  # fmt: skip
    assert result["link_scores"]["gold_entities"]["f1"] > 0.9, result["link_scores"]
    assert result["link_scores"]["end_to_end"]["f1"] > 0.25, result["link_scores"]

    image, words, boxes, _, entities, links = render_synthetic_form_with_links(seed=12345, index=0)
    image.save(tmp_path / "page.png")
    (tmp_path / "words.json").write_text(json.dumps({"words": words, "boxes": boxes}))
    main = runpy.run_path(str(REPO_ROOT / "scripts" / "predict.py"), run_name="script")["main"]
    prediction = main(["--model", result["final_dir"], "--image", str(tmp_path / "page.png"), "--words",
                       str(tmp_path / "words.json"), "--output_json", str(tmp_path / "p.json"), "--output_png",
                       str(tmp_path / "p.png")])  # fmt: skip
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["pairs"] == prediction["pairs"] and len(saved["pairs"]) > 0
    for pair in saved["pairs"]:
        assert set(pair) == {"key", "value", "score"}
        assert set(pair["key"]) >= {"entity", "label", "text", "box", "pixel_box"}
    by_words = {tuple(e["word_indices"]): e["id"] for e in entities}
    found = {
        (
            by_words.get(tuple(saved["entities"][p["key"]["entity"]]["word_indices"])),
            by_words.get(tuple(saved["entities"][p["value"]["entity"]]["word_indices"])),
        )
        for p in saved["pairs"]
    }
    assert found & {tuple(link) for link in links}  # some pairs of the unseen page are its gold links
    with PIL.Image.open(tmp_path / "p.png") as picture:
        assert np.all(np.asarray(picture.convert("RGB")) == (230, 120, 0), axis=-1).sum() > 50  # the arrows


def test_a_linking_run_pushes_its_folder_with_the_pair_scores_on_the_card(tmp_path, monkeypatch):
    from helpers import Intercepted

    hub = Intercepted(monkeypatch)
    args = linking_training_args(tmp_path, max_steps=2, eval_strategy="no", save_strategy="no",
                                 load_best_model_at_end=False, push_to_hub=True, hub_model_id="me/pairs",
                                 hub_token="hf_fake")  # fmt: skip
    data = DataArguments(dataset="synthetic", synthetic_pages=6, validation_size=2, max_length=64, stride=16)
    result = run_training(ModelArguments(**TINY_TRAINING_MODEL, task="linking"), data, args)
    final = tmp_path / "final"
    assert result["pushed"] and hub.files() == set(os.listdir(final)) - {"training_args.bin"}
    card = (final / "README.md").read_text()
    gold = result["link_scores"]["gold_entities"]
    assert "## Key-value pairs" in card and "QUESTION -> ANSWER" in card
    assert (
        f"| gold entities | {gold['precision']:.4f} | {gold['recall']:.4f} | **{gold['f1']:.4f}** | {gold['gold']} |"
        in card
    )
