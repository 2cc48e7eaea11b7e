"""Table of the FUNSD runs of `lab/experiments/funsd_train_runs.sh`, `funsd_backbone_runs.sh`, `funsd_long_runs.sh` and
`funsd_single_lr_runs.sh`: validation entity F1 of the best epoch (the checkpoint `Trainer` keeps) per seed, its
difference from the text-only run of the same seed and schedule, the last epoch's F1 (not selected), mean and sample
standard deviation over seeds; per-entity F1 of the best epoch; and how training went (epoch-2 F1, last-epoch train
loss, largest logged gradient norm).

    python lab/experiments/summarize_train_runs.py [runs] [run-name prefix filter, e.g. funsd-1lr]
"""

import json
import statistics
import sys
from pathlib import Path

TEXT_ONLY = "funsd-minilm-text"
# run-name prefix -> (row title, the text-only prefix of the same schedule that the row is compared with)
ROWS = {
    TEXT_ONLY: ("text only (`--use_visual_features false`)", None),
    "funsd-minilm-mobilenet": ("ImageNet MobileNetV2, frozen (frozen batch norm), zero gate", TEXT_ONLY),
    # lab/experiments/funsd_backbone_runs.sh
    "funsd-minilm-mobilenet-trained": (
        "ImageNet MobileNetV2, trained at 1e-4 (frozen batch norm), zero gate",
        TEXT_ONLY,
    ),
    "funsd-minilm-resnet101-frozen": ("random ResNet-101, frozen (group norm), zero gate", TEXT_ONLY),
    "funsd-minilm-resnet101-trained": ("random ResNet-101, trained at 1e-4 (group norm), zero gate", TEXT_ONLY),
    "funsd-minilm-resnet101-tutorial": (
        "random ResNet-101, trained at 1e-4, tutorial init (`visual_init=normal`)",
        TEXT_ONLY,
    ),
    # lab/experiments/funsd_long_runs.sh
    "funsd-minilm-text-12ep": ("**12 epochs:** text only", None),
    "funsd-minilm-resnet101-trained-12ep": (
        "**12 epochs:** random ResNet-101, trained at 1e-4 (group norm), zero gate",
        "funsd-minilm-text-12ep",
    ),
    # lab/experiments/funsd_single_lr_runs.sh: ONE learning rate (5e-5) for every parameter, default visual_init
    "funsd-1lr-text": ("**one lr 5e-5:** text only", None),
    "funsd-1lr-mobilenet": (
        "**one lr 5e-5:** ImageNet MobileNetV2, trained (frozen batch norm), `normed_zero_projection`",
        "funsd-1lr-text",
    ),
    "funsd-1lr-resnet101": (
        "**one lr 5e-5:** random ResNet-101, trained (group norm), `normed_zero_projection`",
        "funsd-1lr-text",
    ),
}


def history(run: Path) -> list[dict]:
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text())["log_history"]


def epoch_values(run: Path, key: str) -> list[float]:
    return [entry[key] for entry in history(run) if key in entry]


def main(root: str = "runs", only: str = "") -> None:
    print(
        "| run | seeds | best-epoch F1 mean ± std | per seed | minus text only (same schedule and seed): mean (min, max) "
        "| last-epoch F1 mean ± std | best-epoch F1 QUESTION / ANSWER / HEADER | epoch-2 F1 mean "
        "| last-epoch train loss | largest logged grad norm (last step of an epoch, before clipping) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    scores: dict[str, dict[str, float]] = {}
    for prefix, (title, baseline) in ROWS.items():
        if not prefix.startswith(only):
            continue
        runs = sorted(
            (p for p in Path(root).glob(f"{prefix}-s*") if p.is_dir()), key=lambda p: int(p.name.rsplit("-s", 1)[1])
        )
        runs = [r for r in runs if (r / "final" / "eval_results.json").is_file()]
        if not runs:
            continue
        seeds = [r.name.rsplit("-s", 1)[1] for r in runs]
        results = [json.loads((r / "final" / "eval_results.json").read_text())["entity_scores"] for r in runs]
        best = [result["f1"] for result in results]
        per_type = " / ".join(
            f"{statistics.mean(result['per_type'][name]['f1'] for result in results):.3f}"
            for name in ("QUESTION", "ANSWER", "HEADER")
        )
        scores[prefix] = dict(zip(seeds, best, strict=True))
        reference = scores.get(baseline, {})
        paired = [f1 - reference[seed] for seed, f1 in zip(seeds, best, strict=True) if seed in reference]
        versus = f"{statistics.mean(paired):+.3f} ({min(paired):+.3f}, {max(paired):+.3f})" if paired else "-"
        last = [epoch_values(r, "eval_f1")[-1] for r in runs]
        early = statistics.mean(epoch_values(r, "eval_f1")[1] for r in runs)
        loss = statistics.mean(epoch_values(r, "loss")[-1] for r in runs)
        grad = max(max(epoch_values(r, "grad_norm")) for r in runs)

        def spread(values: list[float]) -> str:
            std = statistics.stdev(values) if len(values) > 1 else float("nan")
            return f"{statistics.mean(values):.3f} ± {std:.3f}"

        per_seed = ", ".join(f"{v:.3f}" for v in best)
        print(
            f"| {title} | {', '.join(seeds)} | {spread(best)} | {per_seed} | {versus} | {spread(last)} | {per_type} "
            f"| {early:.3f} | {loss:.3f} | {grad:.1f} |"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
