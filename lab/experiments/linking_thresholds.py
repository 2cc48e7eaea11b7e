"""End-to-end pair scores of finished linking runs at several thresholds, from their final checkpoints (the runs
themselves score end to end at the config's threshold only when they predate `end_to_end_by_threshold`; pair F1
with gold entities at each threshold is already in their `all_results.json`).

    python lab/experiments/linking_thresholds.py runs/funsd-link-*-s?    # writes <run>/end_to_end_by_threshold.json

The validation pages are the runs' own: FUNSD's training split, 30 pages held out by split seed 0.
"""

import argparse
import json
import os
from pathlib import Path

import torch

from layoutlm_roialign.data import DataArguments, load_training_data
from layoutlm_roialign.dataset_predictions import end_to_end_scores
from layoutlm_roialign.inference import load_model_and_processor
from layoutlm_roialign.metrics import LinkingMetrics

# FUNSD's training split: the tests' environment variable, else beside the repository.
FUNSD_TRAIN = os.environ.get(
    "LAYOUTLM_ROIALIGN_FUNSD", str(Path(__file__).resolve().parents[3] / "shared" / "data" / "funsd" / "training_data")
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--dataset", default=FUNSD_TRAIN, help="FUNSD's training_data.")
    args = parser.parse_args()
    pages = load_training_data(DataArguments(dataset=args.dataset, validation_size=30, split_seed=0))["validation"]
    for run in map(Path, args.runs):
        model, processor = load_model_and_processor(run / "final")
        with torch.inference_mode():
            scores = end_to_end_scores(model.eval(), processor, pages, thresholds=LinkingMetrics.THRESHOLDS)
        (run / "end_to_end_by_threshold.json").write_text(json.dumps(scores, indent=2))
        print(run.name, {t: round(s["f1"], 3) for t, s in scores.items()}, flush=True)


if __name__ == "__main__":
    main()
