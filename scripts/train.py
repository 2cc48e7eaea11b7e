#!/usr/bin/env python
"""Fine-tune LayoutLM-RoIAlign on forms with `Trainer` (single process, or under `accelerate launch` for DDP).

    python scripts/train.py --dataset synthetic --output_dir runs/main ...   # see the README for full commands

Arguments: `--help` lists the model arguments (`ModelArguments`), the data arguments shared with
`scripts/evaluate_checkpoint.py` (`layoutlm_roialign.data.DataArguments`) and every `TrainingArguments` flag; a single `.json`
argument is read as a file of them. `--task linking` trains the key-value linking model (labels and question ->
answer links, one checkpoint). The run is `layoutlm_roialign.commands.train.run_training` (the data, the model, the
metrics, the final folder with its model card, the push); this file parses the flags and prints the scores. `--bf16 true`
trains under bf16 autocast where the device computes bf16 natively (a GPU with bf16, a CPU with AMX or AVX512-BF16:
refused elsewhere); the default is float32.
"""

import json
import logging
import os
import sys
from collections.abc import Sequence

import transformers
from transformers import HfArgumentParser, TrainingArguments

from layoutlm_roialign.commands.train import (
    TRAIN_SCRIPT_DEFAULTS,
    ModelArguments,
    run_training,
    use_cpu_processes_without_gpus,
)
from layoutlm_roialign.data import DataArguments
from layoutlm_roialign.hub import HubError
from layoutlm_roialign.trainer import precision_defaults


def main(argv: Sequence[str] | None = None) -> dict:
    use_cpu_processes_without_gpus()
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**TRAIN_SCRIPT_DEFAULTS, **precision_defaults(gpu_bf16=False))  # float32 unless --bf16 true
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(argv)

    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(level)
    try:
        result = run_training(model_args, data_args, training_args)
    except ValueError as err:  # bad input: a clear message naming the flag, no traceback
        parser.error(str(err))
    except HubError as err:  # the push at the end: one line, the trained folder kept
        sys.exit(f"train.py: {err}.")
    if training_args.should_log:
        scores = result["entity_scores"]
        summary = {key: scores[key] for key in ("f1", "precision", "recall", "per_type")}
        if result.get("link_scores"):
            summary["link_scores"] = result["link_scores"]
        summary["final_dir"] = result["final_dir"]
        if result.get("already_complete"):
            summary["already_complete"] = True
        print(json.dumps(summary, indent=2))
    return result


if __name__ == "__main__":
    main()
