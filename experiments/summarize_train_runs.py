"""Table of the FUNSD runs of `experiments/funsd_train_runs.sh`: validation entity F1 per seed, best epoch (the
checkpoint `Trainer` keeps) and last epoch, mean and sample standard deviation over seeds."""

import json
import statistics
import sys
from pathlib import Path

ROWS = {
    "funsd-minilm-text": "text only (`--use_visual_features false`)",
    "funsd-minilm-mobilenet": "with the visual branch (ImageNet MobileNetV2, frozen)",
}


def epoch_f1s(run: Path) -> list[float]:
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    history = json.loads(states[-1].read_text())["log_history"]
    return [entry["eval_f1"] for entry in history if "eval_f1" in entry]


def main(root: str = "runs") -> None:
    print("| run | seeds | best-epoch F1 mean ± std | per seed | last-epoch F1 mean ± std | per seed |")
    print("|---|---|---|---|---|---|")
    for prefix, title in ROWS.items():
        runs = sorted(
            (p for p in Path(root).glob(f"{prefix}-s*") if p.is_dir()), key=lambda p: int(p.name.rsplit("-s", 1)[1])
        )
        runs = [r for r in runs if (r / "final" / "eval_results.json").is_file()]
        if not runs:
            continue
        best = [json.loads((r / "final" / "eval_results.json").read_text())["entity_scores"]["f1"] for r in runs]
        last = [epoch_f1s(r)[-1] for r in runs]

        def summary(values: list[float]) -> str:
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            return f"{statistics.mean(values):.3f} ± {spread:.3f} | {', '.join(f'{v:.3f}' for v in values)}"

        seeds = ", ".join(r.name.rsplit("-s", 1)[1] for r in runs)
        print(f"| {title} | {seeds} | {summary(best)} | {summary(last)} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
