"""The scoring run of `scripts/evaluate_checkpoint.py`: a checkpoint on a dataset split, with the package's `evaluate` metrics.

`evaluate_checkpoint` labels every page of the split through the package's road
(`dataset_predictions.predict_dataset`: one pass per page) and scores the word labels with `metrics.entity_scores`
(the `entity_f1` metric: seqeval's entity F1, overall and per type); a linking checkpoint's pairs are scored with
`metrics.link_scores` (the `pair_f1` metric), with the gold entities and end to end, at the checkpoint's
`link_threshold`. The data arguments are `scripts/train.py`'s (`layoutlm_roialign.data.DataArguments`) and the
dataset is loaded the same way, so the same `--split_seed` scores the same validation pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..compute_fields import dtype_field, runtime_field
from ..compute_layoutlm_roialign import resolve_for
from ..data import DataArguments, has_links, label_names_of, load_training_data
from ..dataset_predictions import link_scores_of, predict_dataset
from ..inference import is_linking_model
from ..label_sets import load_checkpoint_for_labels
from ..metrics import entity_scores

__all__ = ["EvaluateArguments", "evaluate_checkpoint"]


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
    dtype: str = dtype_field()
    output: str | None = field(default=None, metadata={"help": "Write the JSON report here (default: stdout)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own code (Hub ids)."})
    runtime: str = runtime_field()


def evaluate_checkpoint(
    model: str,
    data_args: DataArguments,
    split: str = "validation",
    batch_size: int = 8,
    trust_remote_code: bool = False,
    return_predictions: bool = False,
    runtime: str = "torch",
    dtype: str = "auto",
) -> dict:
    """Score checkpoint `model` on `split` of `data_args.dataset`.

    Returns:
        The JSON report: entity precision/recall/F1 overall and per type, word accuracy, the page count, `dtype`
        (what the model computed in: `dtype` resolved for its device); for a
        linking checkpoint `"pairs"`: pair precision/recall/F1 with the gold entities (`gold_entities`) and end to
        end (`end_to_end`) at its `link_threshold`; and the per-page word labels with `return_predictions`.

    Raises:
        ValueError: naming the flag, for a split the dataset lacks or that has no pages, `--max_eval_pages` below 1,
            a checkpoint that does not label words (e.g. a masked-LM one) or whose labels differ from the dataset's,
            or a linking checkpoint on a dataset without entity links.
    """
    if data_args.max_eval_pages is not None and data_args.max_eval_pages < 1:
        raise ValueError(
            f"--max_eval_pages {data_args.max_eval_pages}: give at least 1 page, or leave it out to score every page."
        )
    raw = load_training_data(data_args)
    if split not in raw:
        raise ValueError(f"--split {split!r} is not a split of --dataset {data_args.dataset!r}: {sorted(raw)}.")
    pages = raw[split]
    if len(pages) == 0:
        raise ValueError(f"--split {split!r} of --dataset {data_args.dataset!r} has no pages to score.")
    net, processor = load_checkpoint_for_labels(
        model, label_names_of(pages), f"--model {model}", trust_remote_code, runtime=runtime
    )
    if torch.cuda.is_available() and runtime == "torch":
        net = net.cuda()
    try:
        dtype = resolve_for(dtype, net)
    except ValueError as err:
        raise ValueError(f"--dtype {dtype}: {err}") from err
    predictions = predict_dataset(net, processor, pages, data_args.max_length, data_args.stride, batch_size, dtype)
    id2label = net.config.id2label
    references = [[id2label[int(t)] for t in tags] for tags in pages["ner_tags"]]
    labels = [[w["label"] for w in p["words"]] for p in predictions]
    report = {
        "model": model,
        "dataset": data_args.dataset,
        "split": split,
        "runtime": runtime,
        "pages": len(pages),
        "dtype": dtype,
        **entity_scores(references, labels),
    }
    if is_linking_model(net):
        if not has_links(pages):
            raise ValueError(
                f"--model {model} links entities, but --dataset {data_args.dataset!r} has no entity links to score "
                "pairs against (a FUNSD folder has them)."
            )
        threshold = net.config.link_threshold
        scores = link_scores_of(predictions, list(pages), net.config.link_types, [threshold])
        report["link_threshold"] = threshold
        report["pairs"] = {kind: by_threshold[float(threshold)] for kind, by_threshold in scores.items()}
    if return_predictions:
        report["predictions"] = labels
        report["references"] = references
    return report
