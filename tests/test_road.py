"""The one road from a page to its answer: labels and pairs from one pass, the pipeline that travels with every
checkpoint (used where the package cannot be imported), `AutoModel` on every checkpoint, and the one loader."""

from __future__ import annotations

import json

import PIL.Image
import pytest
import torch
from conftest import TINY_TRAINING_MODEL, run_without_package
from helpers import VOCAB, make_pixels_matter, requires_tesseract, write_text_pdf

from layoutlm_roialign import (
    LayoutLMRoIAlignForRelationExtraction,
    LayoutLMRoIAlignForSequenceClassification,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignModel,
)
from layoutlm_roialign.data import FUNSD_LABELS, generate_synthetic_forms, render_synthetic_form
from layoutlm_roialign.dataset_predictions import predict_dataset
from layoutlm_roialign.engine_layoutlm_roialign import Engine
from layoutlm_roialign.inference import decode_page, load_model_and_processor, predict_page
from layoutlm_roialign.model_factory import build_model_and_processor
from layoutlm_roialign.options_layoutlm_roialign import LinkOptions, WindowOptions


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny token, sequence and linking checkpoints (random weights, pixels live, one tokenizer) and a page."""
    torch.manual_seed(0)
    image, words, boxes, _ = render_synthetic_form(seed=12345, index=0)
    token, processor = build_model_and_processor(
        FUNSD_LABELS, [words * 2], **{**TINY_TRAINING_MODEL, "tokenizer_vocab_size": 200}
    )
    make_pixels_matter(token)
    config = token.config
    config.link_threshold = 0.05
    linking = LayoutLMRoIAlignForRelationExtraction(config)
    linking.load_state_dict(token.state_dict(), strict=False)
    with torch.no_grad():  # B-QUESTION and B-ANSWER by turns, whatever the word
        linking.classifier.weight.normal_(std=0.5)
        linking.classifier.bias.copy_(torch.tensor([-9.0, -9.0, -9.0, 3.0, -9.0, 3.0, -9.0]))
    sequence_config = type(config).from_dict({**config.to_dict(), "num_labels": 3, "id2label": None, "label2id": None})
    sequence = LayoutLMRoIAlignForSequenceClassification(sequence_config)
    root = tmp_path_factory.mktemp("road")
    folders = {}
    for name, model in (("token", token), ("sequence", sequence), ("linking", linking)):
        folders[name] = root / name
        model.eval().save_pretrained(folders[name])
        processor.save_pretrained(folders[name])
    image.save(root / "page.png")
    return {"folders": folders, "processor": processor, "root": root, "page": (image, words, boxes),
            "models": {"token": token.eval(), "sequence": sequence.eval(), "linking": linking.eval()}}  # fmt: skip


def two_passes(model, processor, image, words, boxes) -> dict:
    """What linking cost before the one road: label the page, then encode it again with the entities decided and run
    the whole model a second time for the link scores."""
    encoding = processor(image, words, boxes, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        logits = model(**{k: encoding[k] for k in processor.model_input_names}).logits[0]
    decoded = decode_page(words, boxes, [encoding.word_ids(0)], [logits], *image.size, model.config.id2label)
    entities = [{"word_indices": e["word_indices"], "label": e["label"]} for e in decoded["entities"]]
    encoding = processor(image, words, boxes, entities=entities, entity_types=model.config.resolved_entity_types,
                         truncation=True, max_length=512, return_tensors="pt")  # fmt: skip
    names = [*processor.model_input_names, "entity_spans", "entity_labels"]
    with torch.no_grad():
        link_logits = model(**{k: encoding[k] for k in names}).link_logits
    pairs = processor.post_process_relation_extraction(encoding, link_logits, config=model.config)[0]
    return {
        "labels": [w["label"] for w in decoded["words"]],
        "pairs": [(p["key"], p["value"], p["score"]) for p in pairs],
    }


def test_labels_and_pairs_of_a_page_come_from_one_pass(checkpoints, tmp_path, monkeypatch):
    """A one-window page: the text encoder once, the backbone once, the page file opened once; the labels and pairs
    equal the two passes' (label, then link the decided entities with the whole model again)."""
    model, processor = checkpoints["models"]["linking"], checkpoints["processor"]
    image, words, boxes = checkpoints["page"]
    calls = {"encoder": 0, "backbone": 0, "open": 0}
    hooks = [
        model.layoutlm_roialign.layoutlm.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1)),
        model.layoutlm_roialign.visual_embeddings.backbone.register_forward_hook(
            lambda *a: calls.__setitem__("backbone", calls["backbone"] + 1)
        ),
    ]  # fmt: skip
    real_open = PIL.Image.open

    def counting_open(*args, **kwargs):
        calls["open"] += 1
        return real_open(*args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    try:
        prediction = predict_page(model, processor, str(checkpoints["root"] / "page.png"), words, boxes)
    finally:
        for hook in hooks:
            hook.remove()
        monkeypatch.undo()
    assert calls == {"encoder": 1, "backbone": 1, "open": 1}
    assert len(prediction["entities"]) >= 4 and len(prediction["pairs"]) >= 2
    expected = two_passes(model, processor, image, words, boxes)
    assert [w["label"] for w in prediction["words"]] == expected["labels"]
    got = [(p["key"]["entity"], p["value"]["entity"]) for p in prediction["pairs"]]
    assert got == [(k, v) for k, v, _ in expected["pairs"]]
    assert [p["score"] for p in prediction["pairs"]] == pytest.approx([s for *_, s in expected["pairs"]], abs=1e-4)


def test_gold_entities_are_linked_in_the_same_one_pass(checkpoints):
    model, processor = checkpoints["models"]["linking"], checkpoints["processor"]
    image, words, boxes = checkpoints["page"]
    calls = []
    hook = model.layoutlm_roialign.layoutlm.register_forward_hook(lambda *a: calls.append(1))
    try:
        given = [{"word_indices": [0], "label": "question"}, {"word_indices": [1], "label": "B-ANSWER"}]
        prediction = predict_page(model, processor, image, words, boxes, entities=given)
    finally:
        hook.remove()
    assert len(calls) == 1
    assert [e["label"] for e in prediction["entities"]] == ["QUESTION", "ANSWER"]
    assert [(p["key"]["entity"], p["value"]["entity"]) for p in prediction["pairs"]] == [(0, 1)]
    for bad, message in (
        ([{"word_indices": [0], "label": "KEY"}], r"'KEY'.*one of the model's entity types \['HEADER', 'QUESTION'"),
        ([{"word_indices": [0], "label": None}], "has the label None"),
        (
            [{"word_indices": [0, 1], "label": "QUESTION"}, {"word_indices": [1], "label": "ANSWER"}],
            r"`entities`\[1\] overlaps \(word 1",
        ),
        ([{"word_indices": [0.0], "label": "QUESTION"}], "must be integers"),
    ):
        with pytest.raises(ValueError, match=message):
            predict_page(model, processor, image, words, boxes, entities=bad)


def test_dataset_scoring_gives_the_pair_probabilities_the_engine_gives_at_threshold_zero(checkpoints):
    """`predict_dataset` drives the engine: its words and entities are `Engine.label_batch`'s, and its pair scores
    (among the predicted and among the gold entities, one encoder pass per page) are the pairs the engine decides at
    threshold 0, each value's best key, with the predicted or the gold entities."""
    model, processor = checkpoints["models"]["linking"], checkpoints["processor"]
    rows = generate_synthetic_forms(3, seed=5)
    calls = []
    hook = model.layoutlm_roialign.layoutlm.register_forward_hook(lambda *a: calls.append(1))
    try:
        predictions = predict_dataset(model, processor, rows, 64, 16, batch_size=64)
    finally:
        hook.remove()
    assert len(calls) == 1  # the three pages' windows in one pass; the link head reads the states kept from it
    engine = Engine(model, processor, windows=WindowOptions(64, 16), links=LinkOptions(0.0, True), batch_size=4)
    pages = [engine.encode_page(row["image"], 1, row["words"], row["bboxes"]) for row in rows]
    labelled, with_gold = engine.label_batch(pages), engine.label_batch(pages, [row["entities"] for row in rows])
    for prediction, page, gold_page in zip(predictions, labelled, with_gold, strict=True):
        assert [w["label"] for w in prediction["words"]] == [w["label"] for w in page["words"]]
        assert [e["word_indices"] for e in prediction["entities"]] == [e["word_indices"] for e in page["entities"]]
        for scores, decided in ((prediction["pair_scores"], page["pairs"]), (prediction["gold_pair_scores"],
                                                                              gold_page["pairs"])):  # fmt: skip
            assert [(k, v) for k, v, _ in scores] == [(p["key"]["entity"], p["value"]["entity"]) for p in decided]
            assert [s for *_, s in scores] == pytest.approx([p["score"] for p in decided], abs=1e-4)
    assert sum(len(p["pair_scores"]) for p in predictions) >= 3
    assert sum(len(p["gold_pair_scores"]) for p in predictions) >= 3
    token = Engine(checkpoints["models"]["token"], processor, windows=WindowOptions(64, 16))
    with pytest.raises(ValueError, match="`gold_entities` are linked by a linking model"):
        token.label_batch(pages, gold_entities=[row["entities"] for row in rows])
    with pytest.raises(ValueError, match="`gold_entities` has 1 lists for 3 pages: give one per page"):
        engine.label_batch(pages, pair_scores=True, gold_entities=[rows[0]["entities"]])


def test_auto_model_gives_the_base_model_of_every_checkpoint_without_the_package(checkpoints, tmp_path):
    image, words, boxes = checkpoints["page"]
    processor = checkpoints["processor"]
    inputs = {k: v for k, v in processor(image, words, boxes, return_tensors="pt").items()
              if k in processor.model_input_names}  # fmt: skip
    torch.save(inputs, tmp_path / "inputs.pt")
    for name, model in checkpoints["models"].items():
        with torch.no_grad():
            torch.save(model.layoutlm_roialign(**inputs).last_hidden_state, tmp_path / f"{name}.pt")
        config = json.loads((checkpoints["folders"][name] / "config.json").read_text())
        assert config["auto_map"]["AutoModel"] == "modeling_layoutlm_roialign.LayoutLMRoIAlignModel"
    folders = {name: str(folder) for name, folder in checkpoints["folders"].items()}
    result = run_without_package(
        f"""
        import torch
        from transformers import AutoModel
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        for name, folder in {folders!r}.items():
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            assert type(model).__name__ == "LayoutLMRoIAlignModel", (name, type(model))
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            with torch.no_grad():
                states = model(**inputs).last_hidden_state
            expected = torch.load({str(tmp_path)!r} + f"/{{name}}.pt")
            assert torch.allclose(states, expected, atol=1e-5), (name, (states - expected).abs().max())
        print("REMOTE_OK")
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout


def test_the_pipeline_without_the_package_gives_the_packages_words_entities_and_pairs(checkpoints, tmp_path):
    pytest.importorskip("pypdfium2", reason="the PDF input needs pypdfium2 (the `pdf` extra)")
    folder = checkpoints["folders"]["linking"]
    model, processor = load_model_and_processor(folder)
    image, words, boxes = checkpoints["page"]
    page = str(checkpoints["root"] / "page.png")
    expected = predict_page(model, processor, page, words, boxes)
    write_text_pdf(tmp_path / "doc.pdf", [VOCAB[:6]])
    expected_pdf = predict_page(model, processor, str(tmp_path / "doc.pdf"))
    assert expected_pdf["words_from"] == "text" and expected_pdf["words"]
    (tmp_path / "expected.json").write_text(json.dumps([expected, expected_pdf]))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    result = run_without_package(
        f"""
        import json
        from transformers import pipeline
        pipe = pipeline(model={str(folder)!r}, trust_remote_code=True)
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        expected, expected_pdf = json.load(open("expected.json"))
        got = pipe({{"image": {page!r}, "words": {words!r}, "boxes": {boxes!r}}})
        for key in ("words", "entities", "pairs"):
            assert got[key] == expected[key], key
        assert len(got["pairs"]) >= 2
        pdf = pipe("doc.pdf", page=1)
        assert pdf["words"] == expected_pdf["words"] and pdf["pairs"] == expected_pdf["pairs"], pdf
        both = pipe([{{"image": {page!r}, "words": {words!r}, "boxes": {boxes!r}}}, "doc.pdf"], batch_size=16)
        assert [b["pairs"] for b in both] == [expected["pairs"], expected_pdf["pairs"]]
        for bad, number, message in (
            ("broken.png", 1, "is not an image PIL can read"),
            ("doc.pdf", 3, "`page` 3: 'doc.pdf' has 1 page"),
            ({{"image": {page!r}, "words": ["a", "b"], "boxes": [[0, 0, 1, 1]]}}, 1, "`words` has 2 entries but `boxes` has 1"),
            ({{"image": {page!r}, "text": ["a"]}}, 1, "takes the keys"),
        ):
            try:
                pipe(bad, page=number)
            except ValueError as err:
                assert message in str(err), (message, str(err))
            else:
                raise AssertionError(f"no error for {{bad!r}}")
        print("REMOTE_OK")
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout


def test_auto_model_for_token_classification_gives_the_joint_class_with_the_package(checkpoints):
    """With the package imported, the Auto class loads a linking checkpoint as the class its config names (no link
    head weights dropped), and a token checkpoint as the token classifier."""
    from transformers import AutoModelForTokenClassification

    for trust in (False, True):
        linking = AutoModelForTokenClassification.from_pretrained(checkpoints["folders"]["linking"],
                                                                  trust_remote_code=trust)  # fmt: skip
        assert type(linking).__name__ == "LayoutLMRoIAlignForRelationExtraction"
        expected = checkpoints["models"]["linking"].link_head.state_dict()
        for key, value in linking.link_head.state_dict().items():
            assert torch.equal(value, expected[key]), key
    token = AutoModelForTokenClassification.from_pretrained(checkpoints["folders"]["token"])
    assert type(token) is LayoutLMRoIAlignForTokenClassification
    model, _ = load_model_and_processor(checkpoints["folders"]["sequence"])
    assert type(model) is LayoutLMRoIAlignForSequenceClassification
    base, _ = load_model_and_processor(checkpoints["folders"]["linking"], task="feature-extraction")
    assert type(base) is LayoutLMRoIAlignModel


@pytest.mark.parametrize("importable", [False, True], ids=["package-blocked", "package-importable"])
def test_two_checkpoints_in_final_folders_load_as_their_own_classes_in_either_order(checkpoints, tmp_path, importable):
    """Every run saves to `final/`: a token and a linking checkpoint from two such folders, loaded in one process in
    either order, each come back as the class their config names (the linking one with its saved link head and
    pairs, the token one without), the second one by the Auto class and by the pipeline; with the package
    importable, by their own code until the package is imported, then by the package's classes."""
    import shutil

    folders = {}
    for name in ("token", "linking"):
        folders[name] = str(shutil.copytree(checkpoints["folders"][name], tmp_path / name / "final"))
    torch.save(checkpoints["models"]["linking"].link_head.state_dict(), tmp_path / "link_head.pt")
    image, words, boxes = checkpoints["page"]
    page = {"image": str(checkpoints["root"] / "page.png"), "words": words, "boxes": boxes}
    expected = {"token": "LayoutLMRoIAlignForTokenClassification", "linking": "LayoutLMRoIAlignForRelationExtraction"}
    # Each checkpoint first (one process each), then the other by the other road, then both again by the first's.
    loads = (
        [("auto", "token"), ("pipeline", "linking"), ("auto", "linking"), ("pipeline", "token")],
        [("pipeline", "linking"), ("auto", "token"), ("pipeline", "token"), ("auto", "linking")],
    )
    for order in loads:
        result = run_without_package(
            f"""
            import sys
            import torch
            from transformers import AutoModelForTokenClassification, pipeline

            def check(load, name, package):
                if load == "auto":
                    model = AutoModelForTokenClassification.from_pretrained({folders!r}[name], trust_remote_code=True)
                else:
                    pipe = pipeline(model={folders!r}[name], trust_remote_code=True)
                    model = pipe.model
                    assert ("pairs" in pipe({page!r})) == (name == "linking"), (load, name)
                assert type(model).__name__ == {expected!r}[name], (load, name, type(model))
                assert type(model).__module__.startswith("layoutlm_roialign" if package else "transformers_modules")
                if name == "linking":
                    saved = torch.load("link_head.pt")
                    for key, value in model.link_head.state_dict().items():
                        assert torch.equal(value, saved[key]), key

            for load, name in {order!r}:
                check(load, name, package=False)
            assert sys.modules.get("layoutlm_roialign") is None
            if {importable!r}:
                import layoutlm_roialign
                for load, name in {order!r}:
                    check(load, name, package=True)
            print("REMOTE_OK")
            """,
            cwd=tmp_path,
            importable=importable,
        )
        assert result.returncode == 0, (order, result.stderr[-3000:])
        assert "REMOTE_OK" in result.stdout


def test_pairs_are_decided_by_the_checkpoints_rules_everywhere(checkpoints):
    """The processor's post-processing takes the threshold and the one-key rule from the model's config (or both
    given), like the road."""
    model, processor = checkpoints["models"]["linking"], checkpoints["processor"]
    image, words, boxes = checkpoints["page"]
    entities = predict_page(model, processor, image, words, boxes)["entities"]
    encoding = processor(image, words, boxes, entities=[{"word_indices": e["word_indices"], "label": e["label"]}
                                                         for e in entities],
                         entity_types=model.config.resolved_entity_types, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        link_logits = model(**{k: encoding[k] for k in (*processor.model_input_names, "entity_spans",
                                                         "entity_labels")}).link_logits  # fmt: skip
    with pytest.raises(ValueError, match="Pass the model's `config`"):
        processor.post_process_relation_extraction(encoding, link_logits)
    by_config = processor.post_process_relation_extraction(encoding, link_logits, config=model.config)[0]
    assert by_config == processor.post_process_relation_extraction(encoding, link_logits, 0.05, True)[0]
    assert by_config != processor.post_process_relation_extraction(encoding, link_logits, 0.5, True)[0]
    for threshold, one_value_key, message in (
        (1.5, True, r"`threshold` must be a number in \[0, 1\].*got 1.5"),
        (float("nan"), None, "`threshold` must be a number in"),
        ("0.5", None, r"got '0.5' \(a str\)"),
        (None, "yes", "`one_value_key` must be True or False, got 'yes'"),
    ):
        with pytest.raises(ValueError, match=message):  # the check every driver makes (`check_link_rules`)
            processor.post_process_relation_extraction(
                encoding, link_logits, threshold, one_value_key, config=model.config
            )
        with pytest.raises(ValueError, match=message):
            predict_page(model, processor, image, words, boxes, threshold=threshold, one_value_key=one_value_key)
    road = predict_page(model, processor, image, words, boxes)["pairs"]
    assert [(p["key"], p["value"]) for p in by_config] == [(p["key"]["entity"], p["value"]["entity"]) for p in road]


def test_the_pipeline_takes_batch_size_workers_and_dtype_as_pipelines_do(checkpoints):
    from transformers import pipeline

    folder = str(checkpoints["folders"]["linking"])
    image, words, boxes = checkpoints["page"]
    page = {"image": str(checkpoints["root"] / "page.png"), "words": words, "boxes": boxes}
    pipe = pipeline(model=folder, trust_remote_code=True)
    one = pipe(page)
    many = pipe([page, page, page], batch_size=3, num_workers=2)
    assert [m["pairs"] for m in many] == [one["pairs"]] * 3
    assert [[w["label"] for w in m["words"]] for m in many] == [[w["label"] for w in one["words"]]] * 3
    half = pipeline(model=folder, trust_remote_code=True, dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    result = half(page)
    assert [w["text"] for w in result["words"]] == words and all(0 < w["score"] <= 1 for w in result["words"])
    assert "pairs" in result


def test_evaluate_script_scores_pairs_of_a_linking_checkpoint(checkpoints, tmp_path, capsys):
    """scripts/evaluate_checkpoint.py on a linking checkpoint and a FUNSD folder prints and writes entity F1 and pair
    precision / recall / F1, with gold entities and end to end."""
    import runpy

    from conftest import REPO_ROOT, make_funsd_release_root

    root = make_funsd_release_root(tmp_path / "funsd", train_pages=3, test_pages=2)
    for annotation in root.glob("*/annotations/*.json"):  # link each page's question (id 1) to its answer (id 2)
        form = json.loads(annotation.read_text())
        for entity in form["form"]:
            entity["linking"] = [[1, 2]] if entity["id"] in (1, 2) else []
        annotation.write_text(json.dumps(form))
    main = runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate_checkpoint.py"), run_name="script")["main"]
    folder = str(checkpoints["folders"]["linking"])
    report = main(["--model", folder, "--dataset", str(root), "--split", "test", "--output", str(tmp_path / "r.json")])
    written = json.loads((tmp_path / "r.json").read_text())
    assert written == json.loads(capsys.readouterr().out) and written["pages"] == 2
    assert {"precision", "recall", "f1"} <= set(written) and written["link_threshold"] == 0.05
    for kind in ("gold_entities", "end_to_end"):
        scores = written["pairs"][kind]
        assert scores["gold"] == 2  # each page: one question -> answer link (make_funsd_release_root)
        assert 0 <= scores["correct"] <= min(scores["predicted"], scores["gold"])
        assert scores["f1"] == pytest.approx(report["pairs"][kind]["f1"])
    # the gold-entity scores are those of the model's pairs among the gold entities of each page
    model, processor = load_model_and_processor(folder)
    from layoutlm_roialign.data import DataArguments, load_training_data

    pages = load_training_data(DataArguments(dataset=str(root)))["test"]
    correct = 0
    for row in pages:
        gold = [{"word_indices": e["word_indices"], "label": e["label"]} for e in row["entities"]]
        pairs = predict_page(model, processor, row["image"], row["words"], row["bboxes"], entities=gold)["pairs"]
        correct += sum((p["key"]["label"], p["value"]["label"]) == ("QUESTION", "ANSWER") for p in pairs)
    assert written["pairs"]["gold_entities"]["correct"] == correct
    token = str(checkpoints["folders"]["token"])
    assert "pairs" not in main(["--model", token, "--dataset", str(root), "--split", "test"])


def test_only_token_labelling_checkpoints_carry_the_pipeline_and_the_road_refuses_other_heads(checkpoints):
    for name in ("token", "linking", "sequence"):
        config = json.loads((checkpoints["folders"][name] / "config.json").read_text())
        assert ("custom_pipelines" in config) == (name != "sequence"), name
        assert (checkpoints["folders"][name] / "pipeline_layoutlm_roialign.py").is_file() == (name != "sequence")
    image, words, boxes = checkpoints["page"]
    model, processor = checkpoints["models"]["sequence"], checkpoints["processor"]
    with pytest.raises(ValueError, match="needs a token-classification or linking checkpoint.*SequenceClassification"):
        predict_page(model, processor, image, words, boxes)


def test_the_pipeline_refuses_arguments_it_would_misread_through_the_checks_every_driver_shares(checkpoints):
    from transformers import pipeline

    pipe = pipeline(model=str(checkpoints["folders"]["linking"]), trust_remote_code=True)
    image, words, boxes = checkpoints["page"]
    page = {"image": image, "words": words, "boxes": boxes}
    calls = [
        ({"threshold": 2}, r"`threshold` must be a number in \[0, 1\].*got 2\."),
        ({"threshold": -1}, r"`threshold` must be a number in \[0, 1\].*got -1\."),
        ({"threshold": float("nan")}, r"`threshold` must be a number in \[0, 1\].*got nan\."),
        ({"threshold": "0.5"}, r"`threshold` must be a number in \[0, 1\].*got '0\.5' \(a str\)"),
        ({"one_value_key": "no"}, r"`one_value_key` must be True or False, got 'no'"),
        ({"batch_size": 0}, r"`batch_size` must be a positive int \(windows per forward pass\), got 0"),
        ({"max_length": 0}, r"`max_length` must be a positive int \(tokens per window\), got 0"),
    ]
    for kwargs, match in calls:
        with pytest.raises(ValueError, match=match):
            pipe(page, **kwargs)
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int"):
        pipeline(model=str(checkpoints["folders"]["linking"]), trust_remote_code=True, batch_size=0)
    with pytest.raises(ValueError, match=r"`words` must be a list.*got str 'hello'.*text\.split\(\)"):
        pipe({"image": image, "words": "hello", "boxes": [[0, 0, 10, 10]] * 5})
    assert pipe(page, threshold=1)["pairs"] == [] and len(pipe(page, threshold=0)["pairs"]) > 0

    # Pixel boxes measured on another size of the page are refused as predict.py refuses them, or clamped on request.
    width, height = image.size
    far = {"image": image, "words": words[:2], "pixel_boxes": [[0, 0, 10, 10], [10, 10, 3 * width, 20]]}
    with pytest.raises(ValueError, match=rf"word 1 .* outside the {width} x {height} page.*--clamp_boxes"):
        pipe(far)
    assert pipe(far, clamp_boxes=True)["words"][1]["box"][2] == 1000


def test_word_indices_that_are_not_a_list_of_integers_are_an_error_naming_word_indices_everywhere(checkpoints):
    from transformers import pipeline

    model, processor = checkpoints["models"]["linking"], checkpoints["processor"]
    image, words, boxes = checkpoints["page"]
    pipe = pipeline(model=str(checkpoints["folders"]["linking"]), trust_remote_code=True)
    cases = [
        (3, r"has `word_indices` 3: give a list of word indices \(integers\), e\.g\. \[3\]"),
        ([1.5], r"has `word_indices` \[1\.5\]: they must be integers"),
    ]
    for word_indices, match in cases:
        entities = [{"word_indices": word_indices, "label": "question"}]
        with pytest.raises(ValueError, match=match):
            predict_page(model, processor, image, words, boxes, entities=entities)
        with pytest.raises(ValueError, match=match):
            pipe({"image": image, "words": words, "boxes": boxes, "entities": entities})
        with pytest.raises(ValueError, match=match):
            processor(image, words, boxes, entities=entities, entity_types=model.config.resolved_entity_types)


@requires_tesseract
def test_an_ocr_language_tesseract_lacks_is_named_with_the_installed_ones_before_any_page_is_read(checkpoints):
    from transformers import pipeline

    model, processor = checkpoints["models"]["token"], checkpoints["processor"]
    pipe = pipeline(model=str(checkpoints["folders"]["token"]), trust_remote_code=True)
    path = str(checkpoints["root"] / "page.png")
    match = r"`ocr_lang` 'xxx': Tesseract has no 'xxx' language; installed: .*eng"
    with pytest.raises(ValueError, match=match):
        pipe(path, ocr_lang="xxx")
    with pytest.raises(ValueError, match=match):
        predict_page(model, processor, path, ocr_lang="xxx")
