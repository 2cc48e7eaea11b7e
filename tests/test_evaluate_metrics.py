"""The package's `evaluate` metrics, loaded from their files with the network blocked: `entity_f1` gives seqeval's
scores on the same predictions, `pair_f1` the pair counts; `metrics.entity_scores` and `metrics.link_scores` are
those metrics."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import evaluate
import pytest
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

import layoutlm_roialign
from layoutlm_roialign.metrics import entity_scores, link_scores, load_metric

METRICS_FOLDER = Path(layoutlm_roialign.__file__).parent / "evaluate_metrics"

# A fixed set of predictions that exercises seqeval's chunking: an entity that starts with I-, a type that is only
# predicted (ANSWER has no gold entity on the first page), a wrong boundary, a wrong type, and an empty page.
REFERENCES = [
    ["B-HEADER", "I-HEADER", "O", "B-QUESTION", "I-QUESTION", "B-QUESTION", "O"],
    ["B-QUESTION", "B-ANSWER", "I-ANSWER", "I-ANSWER", "O", "B-QUESTION", "B-ANSWER"],
    [],
    ["O", "O", "B-ANSWER"],
]
PREDICTIONS = [
    ["B-HEADER", "I-HEADER", "O", "I-QUESTION", "I-QUESTION", "B-ANSWER", "O"],
    ["B-QUESTION", "B-ANSWER", "I-ANSWER", "O", "O", "B-QUESTION", "B-QUESTION"],
    [],
    ["B-HEADER", "O", "B-ANSWER"],
]


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails: what the metrics load must be on this machine."""

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def random_pages(seed: int, pages: int = 40) -> tuple[list[list[str]], list[list[str]]]:
    """Random BIO references and predictions that agree on about half of the words."""
    labels = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
    rng = random.Random(seed)
    references, predictions = [], []
    for _ in range(pages):
        gold = rng.choices(labels, k=rng.randint(1, 30))
        references.append(gold)
        predictions.append([g if rng.random() < 0.5 else rng.choice(labels) for g in gold])
    return references, predictions


def seqeval_scores(references: list[list[str]], predictions: list[list[str]]) -> dict:
    report = classification_report(references, predictions, output_dict=True, zero_division=0)
    return {
        "precision": precision_score(references, predictions, zero_division=0),
        "recall": recall_score(references, predictions, zero_division=0),
        "f1": f1_score(references, predictions, zero_division=0),
        "accuracy": accuracy_score(references, predictions),
        "per_type": {
            name: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "number": v["support"]}
            for name, v in report.items()
            if not name.endswith(" avg")
        },
    }


@pytest.mark.parametrize("pages", ["fixed", "random"])
def test_entity_f1_loaded_from_its_file_offline_equals_seqeval(no_network, pages):
    references, predictions = (REFERENCES, PREDICTIONS) if pages == "fixed" else random_pages(seed=0)
    metric = evaluate.load(str(METRICS_FOLDER / "entity_f1.py"))
    scores = metric.compute(predictions=predictions, references=references)
    expected = seqeval_scores(references, predictions)
    assert scores == expected  # the same floats, not approximately
    assert set(scores["per_type"]) == {"HEADER", "QUESTION", "ANSWER"}
    assert 0 < scores["f1"] < 1
    # the package's function and loader are that metric
    assert entity_scores(references, predictions) == scores
    assert load_metric("entity_f1").compute(predictions=predictions, references=references) == scores


def test_entity_f1_of_the_fixed_predictions_by_hand(no_network):
    scores = entity_scores(REFERENCES, PREDICTIONS)
    # gold: HEADER 1, QUESTION 4, ANSWER 3 = 8; predicted: HEADER 2, QUESTION 4, ANSWER 3 = 9; correct: HEADER 1,
    # QUESTION 3 (I-QUESTION I-QUESTION is one QUESTION; the last B-QUESTION of page 1 is an ANSWER), ANSWER 1 = 5
    assert (scores["precision"], scores["recall"]) == pytest.approx((5 / 9, 5 / 8))
    assert scores["per_type"]["QUESTION"] == pytest.approx(
        {"precision": 0.75, "recall": 0.75, "f1": 0.75, "number": 4}
    )
    assert scores["per_type"]["ANSWER"]["number"] == 3 and scores["accuracy"] == pytest.approx(12 / 17)


def test_entity_metric_refuses_pages_of_different_lengths_and_recovers(no_network):
    with pytest.raises(ValueError, match="page 1: 2 reference labels but 1 predicted"):
        entity_scores([["O"], ["O", "B-ANSWER"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 reference pages but 1 predicted"):
        entity_scores([["O"], ["O"]], [["O"]])
    assert entity_scores(REFERENCES, PREDICTIONS) == seqeval_scores(REFERENCES, PREDICTIONS)


def test_pair_f1_loaded_from_its_file_offline_counts_pairs(no_network):
    metric = evaluate.load(str(METRICS_FOLDER / "pair_f1.py"))
    gold = [{(0, 1), (2, 3)}, {(0, 1)}, set(), {(4, 5), (6, 5)}]
    # page 0: one right, one turned around; page 2: a pair without gold, its negative ids name predicted entities that
    # match no gold entity (as `end_to_end_link_scores` writes them); page 3: both right, one listed twice
    predicted = [[(0, 1), (3, 2)], [], [(-1, -2)], [(4, 5), (6, 5), (4, 5)]]
    scores = metric.compute(predictions=predicted, references=[sorted(page) for page in gold])
    assert scores == pytest.approx(
        {"precision": 0.6, "recall": 0.6, "f1": 0.6, "predicted": 5, "gold": 5, "correct": 3}
    )
    assert link_scores(gold, [set(page) for page in predicted]) == scores
    assert load_metric("pair_f1").compute(predictions=[[]], references=[[]])["f1"] == 0.0


def test_load_metric_names_the_metrics_it_has():
    with pytest.raises(ValueError, match="entity_f1, pair_f1"):
        load_metric("seqeval")
