"""The pre-training measurement's results: the MVLM pre-training runs (pages, windows, tokens, steps, time, the
held-out loss / masked-token accuracy curve, throughput) and the FUNSD fine-tunes from each starting point: token
labelling text only (`funsd-ft-<start>-s<seed>`), with the ImageNet MobileNetV2 visual branch (`funsd-ftmob-...`)
and the linking model (`funsd-ftlink-...`, also its pair F1 with gold entities); validation entity F1 of the kept
epoch and of every epoch, per seed, mean and sample standard deviation. A run killed before its end (its log ends
with "killed at the deadline") is listed as such and left out of the means.

    python lab/experiments/summarize_pretraining_runs.py runs --output lab/experiments/results_funsd_pretraining \
        --command "the command that made runs/"
"""

import argparse
import json
import re
import statistics
from pathlib import Path

STARTS = {"none": "MiniLM-L6-H384 as it ships (no pre-training)"}
KINDS = {"funsd-ft": "text only", "funsd-ftmob": "MobileNetV2", "funsd-ftlink": "linking, text only"}


def epoch_f1(run: Path) -> list[float]:
    """Validation entity F1 after each epoch, from the run's log (the kept checkpoint's state may end earlier)."""
    by_epoch: dict[str, float] = {}
    for f1, epoch in re.findall(
        r"'eval_f1': '?([0-9.e-]+)'?.*?'epoch': '?([0-9.]+)'?", run.with_suffix(".log").read_text()
    ):
        by_epoch.setdefault(epoch, round(float(f1), 4))  # the first per epoch: the last one is the kept model's
    return list(by_epoch.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", nargs="?", default="runs")
    parser.add_argument("--output", required=True, help="Path stem: writes <stem>.json and <stem>.md.")
    parser.add_argument("--command", default=None, help="The command(s) that made the runs, for the record.")
    parser.add_argument("--no_reference", action="store_true", help="Leave out issue 10's no-pre-training row.")
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
    for log in sorted(root.glob("funsd-ft*-s*.log")):
        first, second, rest = log.stem.split("-", 2)
        kind, (start, seed) = f"{first}-{second}", rest.rsplit("-s", 1)
        if kind not in KINDS:
            continue
        run = finetunes.setdefault(f"{kind}/{start}", {"kind": kind, "start": start, "seeds": {}, "killed": []})
        path = log.with_suffix("") / "all_results.json"
        if not path.is_file():
            if "killed at the deadline" not in log.read_text():
                raise SystemExit(f"{log}: the run neither finished nor was killed at the deadline; read its log.")
            run["killed"].append(seed)
            continue
        result = json.loads(path.read_text())
        run["seeds"][seed] = {
            "best_epoch_f1": round(result["entity_scores"]["f1"], 4),
            "per_type_f1": {k: round(v["f1"], 4) for k, v in result["entity_scores"]["per_type"].items()},
            "epoch_f1": epoch_f1(path.parent),
            "train_runtime_s": round(result["train"]["train_runtime"], 1),
        }
        if kind == "funsd-ftlink":
            run["seeds"][seed]["pair_f1"] = round(result["eval"]["eval_link_f1"], 4)
    for run in finetunes.values():
        for key, name in (("best_epoch_f1", ""), ("pair_f1", "pair_")):
            values = [s[key] for s in run["seeds"].values() if key in s]
            if values:
                run[f"{name}mean"] = round(statistics.mean(values), 4)
                run[f"{name}std"] = round(statistics.stdev(values), 4) if len(values) > 1 else None
        run["starts_from"] = STARTS.get(run["start"], f"MiniLM-L6-H384 after MVLM pre-training run `{run['start']}`")
    # The no-pre-training row of issue 10 (lab/experiments/funsd_single_lr_runs.sh, the same scripts/train.py command as
    # `finetune none`): its three seeds, for the seeds not rerun here.
    reference = None
    table = Path(__file__).with_name("results_funsd_single_lr.md")
    for line in table.read_text().splitlines() if table.is_file() and not args.no_reference else []:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and cells[1] == "**one lr 5e-5:** text only":
            per_seed = dict(zip(cells[2].split(", "), map(float, cells[4].split(", ")), strict=True))
            reference = {"source": f"{table.name}, row '{cells[1]}'", "per_seed": per_seed, "mean ± std": cells[3]}
    results = {
        "command": args.command,
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
    lines += ["", "| fine-tune | from | seeds | best-epoch entity F1 mean ± std | per seed | pair F1 (gold entities) "
              "mean ± std | F1 by epoch (per seed) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in finetunes.values():
        seeds = sorted(run["seeds"])
        if not seeds:
            lines.append(
                f"| {KINDS[run['kind']]} | {run['starts_from']} | killed: {', '.join(run['killed'])} | | | | |"
            )
            continue
        std = f" ± {run['std']:.3f}" if run["std"] is not None else ""
        per_seed = ", ".join(f"{run['seeds'][s]['best_epoch_f1']:.3f}" for s in seeds)
        pair = ""
        if "pair_mean" in run:
            pair = f"{run['pair_mean']:.3f}" + (f" ± {run['pair_std']:.3f}" if run["pair_std"] is not None else "")
        epochs = "; ".join(" ".join(f"{v:.3f}" for v in run["seeds"][s]["epoch_f1"]) for s in seeds)
        killed = f" (killed: {', '.join(run['killed'])})" if run["killed"] else ""
        lines.append(f"| {KINDS[run['kind']]} | {run['starts_from']} | {', '.join(seeds)}{killed} | "
                     f"{run['mean']:.3f}{std} | {per_seed} | {pair} | {epochs} |")  # fmt: skip
    if reference:
        per_seed = ", ".join(f"{v:.3f}" for v in reference["per_seed"].values())
        lines.append(f"| text only | {STARTS['none']}, issue 10's runs ({reference['source']}) | "
                     f"{', '.join(reference['per_seed'])} | {reference['mean ± std']} | {per_seed} | | |")  # fmt: skip
    Path(f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
