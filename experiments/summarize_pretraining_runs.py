"""Issue 21's results: the MVLM pre-training runs of `experiments/funsd_pretraining_runs.sh` (pages, windows, tokens,
steps, time, the held-out loss / masked-token accuracy curve, throughput) and the FUNSD fine-tunes from each starting
point (validation entity F1 of the kept epoch and of every epoch, per seed; mean and sample standard deviation).

    python experiments/summarize_pretraining_runs.py runs --output experiments/results_funsd_pretraining
"""

import argparse
import json
import statistics
from pathlib import Path

STARTS = {"none": "MiniLM-L6-H384 as it ships (no pre-training)"}


def epoch_f1(run: Path) -> list[float]:
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return [round(h["eval_f1"], 4) for h in json.loads(states[-1].read_text())["log_history"] if "eval_f1" in h]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", nargs="?", default="runs")
    parser.add_argument("--output", required=True, help="Path stem: writes <stem>.json and <stem>.md.")
    args = parser.parse_args()
    root = Path(args.root)
    pretraining = {}
    for path in sorted(root.glob("mvlm-*/pretraining_results.json")):
        summary = json.loads(path.read_text())
        train = summary["training"]
        pretraining[path.parent.name] = {
            "data": summary["data"],
            "validation_windows": summary["validation_windows"],
            "steps": train["global_step"],
            "epochs": round(train["epochs"], 2),
            "batch_size": train["total_batch_size"],
            "learning_rate": train["learning_rate"],
            "windows_seen": train["windows_seen"],
            "tokens_seen_approx": round(
                train["windows_seen"] * summary["data"]["tokens"] / summary["data"]["windows"]
            ),
            "train_seconds": round(train["train_seconds"], 1),
            "train_cpu_seconds": round(train["train_cpu_seconds"], 1) if "train_cpu_seconds" in train else None,
            "windows_per_second": train["windows_per_second"],
            "eval_curve": list({c["step"]: c for c in summary["eval_curve"]}.values()),  # one point per step
            "train_curve": summary["train_curve"],
            "arguments": summary["arguments"],
        }
    finetunes: dict[str, dict] = {}
    for path in sorted(root.glob("funsd-ft-*-s*/all_results.json")):
        name = path.parent.name[len("funsd-ft-") :]
        start, seed = name.rsplit("-s", 1)
        result = json.loads(path.read_text())
        run = finetunes.setdefault(start, {"seeds": {}})
        run["seeds"][seed] = {
            "best_epoch_f1": round(result["entity_scores"]["f1"], 4),
            "per_type_f1": {k: round(v["f1"], 4) for k, v in result["entity_scores"]["per_type"].items()},
            "epoch_f1": epoch_f1(path.parent),
            "train_runtime_s": round(result["train"]["train_runtime"], 1),
        }
    for start, run in finetunes.items():
        values = [s["best_epoch_f1"] for s in run["seeds"].values()]
        run["mean"] = round(statistics.mean(values), 4)
        run["std"] = round(statistics.stdev(values), 4) if len(values) > 1 else None
        run["starts_from"] = STARTS.get(start, f"MiniLM-L6-H384 after MVLM pre-training run `{start}`")
    # The no-pre-training row of issue 10 (experiments/funsd_single_lr_runs.sh, the same scripts/train.py command as
    # `finetune none`): its three seeds, for the seeds not rerun here.
    reference = None
    table = Path(__file__).with_name("results_funsd_single_lr.md")
    for line in table.read_text().splitlines() if table.is_file() else []:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and cells[1] == "**one lr 5e-5:** text only":
            per_seed = dict(zip(cells[2].split(", "), map(float, cells[4].split(", ")), strict=True))
            reference = {"source": f"{table.name}, row '{cells[1]}'", "per_seed": per_seed, "mean ± std": cells[3]}
    results = {
        "command": "STEPS=60 experiments/funsd_pretraining_runs.sh pretrain mvlm-both; "
        "experiments/funsd_pretraining_runs.sh finetune none 0; experiments/funsd_pretraining_runs.sh finetune "
        "mvlm-both 0 1 2; python experiments/summarize_pretraining_runs.py runs --output "
        "experiments/results_funsd_pretraining",
        "pretraining": pretraining,
        "finetunes": finetunes,
        "no_pretraining_issue_10": reference,
    }
    Path(f"{args.output}.json").write_text(json.dumps(results, indent=2) + "\n")

    lines = ["| pre-training run | sources | pages | windows | tokens | steps (batch) | epochs | wall / CPU s | "
             "windows/s | held-out MVLM loss / masked acc. by step |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, p in pretraining.items():
        curve = ", ".join(f"{c['step']}: {c['loss']:.2f} / {c['masked_accuracy']:.3f}" for c in p["eval_curve"])
        cpu = p["train_cpu_seconds"] if p["train_cpu_seconds"] is not None else "not recorded"
        lines.append(
            f"| {name} | {', '.join(p['data']['sources'])} | {p['data']['pages']} | {p['data']['windows']} | "
            f"{p['data']['tokens']} | {p['steps']} ({p['batch_size']}) | {p['epochs']} | {p['train_seconds']:.0f} / "
            f"{cpu} | {p['windows_per_second']} | {curve} |"
        )
    lines += ["", "| fine-tune from | seeds | best-epoch F1 mean ± std | per seed | F1 by epoch (per seed) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for run in finetunes.values():
        seeds = sorted(run["seeds"])
        std = f" ± {run['std']:.3f}" if run["std"] is not None else ""
        per_seed = ", ".join(f"{run['seeds'][s]['best_epoch_f1']:.3f}" for s in seeds)
        epochs = "; ".join(" ".join(f"{v:.3f}" for v in run["seeds"][s]["epoch_f1"]) for s in seeds)
        lines.append(f"| {run['starts_from']} | {', '.join(seeds)} | {run['mean']:.3f}{std} | {per_seed} | {epochs} |")
    if reference:
        per_seed = ", ".join(f"{v:.3f}" for v in reference["per_seed"].values())
        lines.append(f"| {STARTS['none']}, issue 10's runs ({reference['source']}) | "
                     f"{', '.join(reference['per_seed'])} | {reference['mean ± std']} | {per_seed} | |")  # fmt: skip
    Path(f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
