#!/usr/bin/env python
"""Score a LayoutLM-RoIAlign checkpoint on a dataset split: entity P/R/F1 overall and per type, as JSON.

    python scripts/evaluate.py --model runs/main/final --dataset synthetic --split validation --output report.json

The data flags are `scripts/train.py`'s (`layoutlm_roialign.data.DataArguments`), and the dataset is loaded the same
way, so the same `--split_seed` scores the same validation pages; a dataset's own splits (a FUNSD release root's
`test`) are kept.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from layoutlm_roialign.checkpoints import load_checkpoint_for_labels
from layoutlm_roialign.data import DataArguments, label_names_of, load_training_data
from layoutlm_roialign.data.encoding import DataCollatorForLayoutLMRoIAlign, encode_dataset
from layoutlm_roialign.inference import predict_windows
from layoutlm_roialign.metrics import WordLevelEntityMetrics, entity_scores
from layoutlm_roialign.outputs import check_output_paths, write_files


@dataclass
class EvaluateArguments:
    """Which checkpoint to score on which split, and where the report goes."""

    model: str = field(metadata={"help": "Checkpoint folder or Hub id."})
    split: str = field(
        default="validation",
        metadata={
            "help": "Split to score: one of the dataset's own (e.g. test), or validation (split off train by "
            "--split_seed when the dataset has none)."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Windows per forward pass."})
    output: str | None = field(default=None, metadata={"help": "Write the JSON report here (default: stdout)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own code (Hub ids)."})


def evaluate_checkpoint(
    model: str,
    data_args: DataArguments,
    split: str = "validation",
    batch_size: int = 8,
    trust_remote_code: bool = False,
    return_predictions: bool = False,
) -> dict:
    """Score checkpoint `model` on `split` of `data_args.dataset`. Returns the JSON report: entity
    precision/recall/F1 overall and per type, word accuracy, page and window counts (and the per-page word labels
    with `return_predictions`)."""
    raw = load_training_data(data_args)
    if split not in raw:
        raise ValueError(f"--split {split!r} is not a split of --dataset {data_args.dataset!r}: {sorted(raw)}.")
    pages = raw[split]
    net, processor = load_checkpoint_for_labels(model, label_names_of(pages), f"--model {model}", trust_remote_code)
    if torch.cuda.is_available():
        net = net.cuda()
    encoded = encode_dataset(pages, processor, data_args.max_length, data_args.stride, desc=f"Encoding {split}")
    inputs = [name for name in processor.model_input_names if name in encoded.column_names]
    collate = DataCollatorForLayoutLMRoIAlign(pad_token_id=processor.tokenizer.pad_token_id, pad_to_multiple_of=None)
    logits = predict_windows(net, encoded.select_columns(inputs), inputs, batch_size, collate=collate)
    metrics = WordLevelEntityMetrics(encoded, pages, net.config.id2label)
    predictions = metrics.word_predictions([window.argmax(-1).numpy() for window in logits])
    report = {
        "model": model,
        "dataset": data_args.dataset,
        "split": split,
        "pages": len(pages),
        "windows": len(encoded),
        **entity_scores(metrics.references, predictions),
    }
    if return_predictions:
        report["predictions"] = predictions
        report["references"] = metrics.references
    return report


def main(argv: Sequence[str] | None = None) -> dict:
    parser = HfArgumentParser((EvaluateArguments, DataArguments))
    args, data_args = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else list(argv))
    try:
        check_output_paths({"--output": args.output})  # before the evaluation, not after it
        report = evaluate_checkpoint(args.model, data_args, args.split, args.batch_size, args.trust_remote_code)
    except ValueError as err:
        parser.error(str(err))
    text = json.dumps(report, indent=2)
    if args.output:
        write_files({args.output: lambda f: f.write((text + "\n").encode("utf-8"))})
    print(text)
    return report


if __name__ == "__main__":
    main()
