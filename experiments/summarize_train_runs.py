"""Table of the FUNSD runs of `experiments/funsd_train_runs.sh` and `funsd_backbone_runs.sh`: validation entity F1 per seed, best epoch (the
checkpoint `Trainer` keeps) and last epoch, mean and sample standard deviation over seeds."""

import json
import statistics
import sys
from pathlib import Path

ROWS = {
    "funsd-minilm-text": "text only (`--use_visual_features false`)",
    "funsd-minilm-mobilenet": "with the visual branch (ImageNet MobileNetV2, frozen)",
    "funsd-minilm-mobilenet-trained": "ImageNet MobileNetV2, trained at 1e-4 (frozen batch norm)",
    # experiments/funsd_backbone_runs.sh: a randomly initialized ResNet-101
    "funsd-minilm-resnet101-frozen": "random ResNet-101, frozen (group norm), zero gate",
    "funsd-minilm-resnet101-trained": "random ResNet-101, trained at 1e-4 (group norm), zero gate",
    "funsd-minilm-resnet101-tutorial": "random ResNet-101, trained at 1e-4, tutorial init (`visual_init=normal`)",
}


def history(run: Path) -> list[dict]:
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text())["log_history"]


def epoch_values(run: Path, key: str) -> list[float]:
    return [entry[key] for entry in history(run) if key in entry]


def main(root: str = "runs") -> None:
    print(
        "| run | seeds | best-epoch F1 mean ± std | per seed | last-epoch F1 mean ± std | per seed "
        "| epoch-2 F1 mean | last-epoch train loss | largest logged grad norm (end of each epoch, before clipping) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for prefix, title in ROWS.items():
        runs = sorted(
            (p for p in Path(root).glob(f"{prefix}-s*") if p.is_dir()), key=lambda p: int(p.name.rsplit("-s", 1)[1])
        )
        runs = [r for r in runs if (r / "final" / "eval_results.json").is_file()]
        if not runs:
            continue
        best = [json.loads((r / "final" / "eval_results.json").read_text())["entity_scores"]["f1"] for r in runs]
        last = [epoch_values(r, "eval_f1")[-1] for r in runs]
        early = statistics.mean(epoch_values(r, "eval_f1")[1] for r in runs)
        loss = statistics.mean(epoch_values(r, "loss")[-1] for r in runs)
        grad = max(max(epoch_values(r, "grad_norm")) for r in runs)

        def summary(values: list[float]) -> str:
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            return f"{statistics.mean(values):.3f} ± {spread:.3f} | {', '.join(f'{v:.3f}' for v in values)}"

        seeds = ", ".join(r.name.rsplit("-s", 1)[1] for r in runs)
        print(f"| {title} | {seeds} | {summary(best)} | {summary(last)} | {early:.3f} | {loss:.3f} | {grad:.1f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
