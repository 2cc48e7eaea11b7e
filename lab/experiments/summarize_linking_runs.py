"""Table of the FUNSD linking runs of `lab/experiments/funsd_linking_runs.sh`: per row (text only, MobileNetV2) and seed,
validation pair F1 with gold entities (the epoch `Trainer` keeps, chosen by it; and the last epoch, not selected),
end-to-end pair F1 (entities predicted by the same checkpoint), entity F1, the F1 at other thresholds, and the gold
pairs no window can hold; mean and sample standard deviation over seeds, and each row minus text only per seed.

    python lab/experiments/summarize_linking_runs.py [runs] [prefix, default funsd-link] [--output results.md]
"""

import argparse
import json
import statistics
from pathlib import Path

ROWS = {
    "text": "text only (`--use_visual_features false`)",
    "mobilenet": "ImageNet MobileNetV2, trained (frozen batch norm)",
}


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def load(folder: Path) -> dict | None:
    results = folder / "all_results.json"
    if not results.is_file():
        return None
    result = json.loads(results.read_text())
    history = json.loads((sorted(folder.glob("checkpoint-*/trainer_state.json"))[-1]).read_text())["log_history"]
    evals = [h for h in history if "eval_link_f1" in h]
    e2e = result["link_scores"].get("end_to_end_by_threshold")
    if e2e is None and (folder / "end_to_end_by_threshold.json").is_file():  # lab/experiments/linking_thresholds.py
        e2e = json.loads((folder / "end_to_end_by_threshold.json").read_text())
    e2e = {float(t): v for t, v in (e2e or {}).items()}
    return {"result": result, "last_epoch_link_f1": evals[-1]["eval_link_f1"] if evals else None, "evals": evals,
            "e2e_by_threshold": e2e}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", default="runs")
    parser.add_argument("prefix", nargs="?", default="funsd-link")
    parser.add_argument("--output", default=None, help="also write the table (markdown) and the numbers (.json)")
    args = parser.parse_args()
    runs = Path(args.runs)
    table = {}
    for row in ROWS:
        seeds = {}
        for folder in sorted(runs.glob(f"{args.prefix}-{row}-s*")):
            if folder.is_dir() and (loaded := load(folder)) is not None:
                seeds[int(folder.name.rsplit("-s", 1)[1])] = loaded
        table[row] = seeds
    text = table.get("text", {})
    lines = [
        "| run | seeds | pair F1, gold entities (best epoch) | per seed | minus text only | pair F1, gold entities "
        "(last epoch) | pair P / R, gold entities | end-to-end pair F1 | end-to-end P / R | entity F1 | gold-entity F1 "
        "at threshold 0.1 / 0.3 / 0.5 / 0.7 | end-to-end F1 at 0.1 / 0.3 / 0.5 / 0.7 | gold pairs no window holds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    numbers = {}
    for row, seeds in table.items():
        if not seeds:
            continue
        gold = [s["result"]["link_scores"]["gold_entities"] for s in seeds.values()]
        e2e = [s["result"]["link_scores"]["end_to_end"] for s in seeds.values()]
        by_t = [s["result"]["link_scores"]["gold_entities_by_threshold"] for s in seeds.values()]
        entity = [s["result"]["entity_scores"]["f1"] for s in seeds.values()]
        diffs = [
            s["result"]["link_scores"]["gold_entities"]["f1"]
            - text[seed]["result"]["link_scores"]["gold_entities"]["f1"]
            for seed, s in seeds.items()
            if row != "text" and seed in text
        ]
        thresholds = sorted(by_t[0], key=float)
        lines.append(
            f"| {ROWS[row]} | {', '.join(map(str, seeds))} | {fmt([g['f1'] for g in gold])} | "
            f"{', '.join(format(g['f1'], '.3f') for g in gold)} | "
            + (f"{statistics.mean(diffs):+.3f} ({min(diffs):+.3f}, {max(diffs):+.3f})" if diffs else "-")
            + f" | {fmt([s['last_epoch_link_f1'] for s in seeds.values() if s['last_epoch_link_f1'] is not None])}"
            f" | {statistics.mean(g['precision'] for g in gold):.3f} / {statistics.mean(g['recall'] for g in gold):.3f}"
            f" | {fmt([e['f1'] for e in e2e])} | {statistics.mean(e['precision'] for e in e2e):.3f} / "
            f"{statistics.mean(e['recall'] for e in e2e):.3f} | {fmt(entity)} | "
            + " / ".join(f"{statistics.mean(b[t]['f1'] for b in by_t):.3f}" for t in thresholds)
            + " | "
            + " / ".join(
                f"{statistics.mean(s['e2e_by_threshold'][float(t)]['f1'] for s in seeds.values()):.3f}"
                if all(float(t) in s["e2e_by_threshold"] for s in seeds.values())
                else "-"
                for t in thresholds
            )
            + f" | {seeds[next(iter(seeds))]['result']['link_scores']['gold_unreachable']} of {gold[0]['gold']} |"
        )
        numbers[row] = {
            str(seed): {
                "link_scores": s["result"]["link_scores"],
                "entity_f1": s["result"]["entity_scores"]["f1"],
                "link_f1_per_epoch": [e["eval_link_f1"] for e in s["evals"]],
                "entity_f1_per_epoch": [e["eval_f1"] for e in s["evals"]],
                "end_to_end_by_threshold": s["e2e_by_threshold"],
            }
            for seed, s in seeds.items()
        }
    print("\n".join(lines))
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
        Path(args.output).with_suffix(".json").write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
