#!/usr/bin/env python
"""Label Studio, both ways: a project's labelling configuration for a checkpoint, and the labeller's records as
pre-annotated tasks to import and correct.

    python scripts/labelstudio.py config --model runs/main/final --output config.xml
    python scripts/label.py --model runs/main/final --inputs scans/ --output labels.jsonl
    python scripts/labelstudio.py export --model runs/main/final --records labels.jsonl \
        --image_root scans/ --image_root_url "/data/local-files/?d=scans/" --output tasks.json
    python scripts/labelstudio.py export ... --records page.json   # one page of scripts/predict.py

After correcting, export the project as JSON and train on it: `scripts/train.py --dataset export.json
--images_dir scans/` (see the README's "Label your own forms"). Outputs are written atomically and only replace
files this script wrote. Exit status 2 for bad arguments.
"""

import argparse
import json
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="The labelling configuration (XML) for a checkpoint's labels.")
    config.add_argument("--model", required=True, help="Checkpoint folder or Hub id (its label set).")
    config.add_argument("--output", required=True, help="Where to write the XML.")
    config.add_argument("--trust_remote_code", action="store_true", help="Run the checkpoint's own code (Hub ids).")
    export = commands.add_parser("export", help="The labeller's records (or predict.py's JSON) as Label Studio tasks.")
    export.add_argument(
        "--records", required=True, help="scripts/label.py's JSON Lines, or scripts/predict.py's JSON."
    )
    export.add_argument("--output", required=True, help="Where to write the tasks (JSON, for Label Studio's import).")
    export.add_argument("--model", required=True, help="The checkpoint that labelled the pages (the model_version).")
    export.add_argument(
        "--image_root_url",
        required=True,
        help="URL prefix Label Studio serves --image_root under, e.g. '/data/local-files/?d=scans/' or "
        "'https://files.example.com/scans/'.",
    )
    export.add_argument("--image_root", default=".", help="The folder whose files the URLs name (default: here).")
    export.add_argument("--render_dir", help="Where PDF pages, TIFF frames and dataset rows are written as PNG.")
    export.add_argument("--image", help="With predict.py's JSON: the page image it labelled.")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    from layoutlm_roialign import labelstudio_tasks as tasks_module

    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.command == "config":
            from transformers import AutoConfig

            from layoutlm_roialign.configuration_layoutlm_roialign import label_names

            config = AutoConfig.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
            types = tasks_module.entity_types(label_names(config))
            tasks_module.write_config(args.output, tasks_module.labelling_config(types))
            summary = {"output": args.output, "entity_types": types}
        else:
            records = tasks_module.read_records(args.records)
            if args.image:
                records = [{**r, "source": args.image} for r in records]
            elif any("source" not in r for r in records):
                raise ValueError(f"--records {args.records} is predict.py's JSON: give --image, the page it labelled.")
            tasks, rendered, skipped = tasks_module.export_tasks(
                records, args.image_root_url, args.image_root, args.model, args.render_dir
            )
            tasks_module.write_tasks(args.output, tasks, rendered)
            summary = {"output": args.output, "tasks": len(tasks), "rendered": len(rendered), "skipped": skipped,
                       "regions": sum(r["type"] == "rectangle" for t in tasks for r in t["predictions"][0]["result"]),
                       "relations": sum(r["type"] == "relation" for t in tasks for r in t["predictions"][0]["result"])}  # fmt: skip
    except (ValueError, OSError) as err:
        parser.error(str(err))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
