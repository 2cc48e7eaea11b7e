#!/usr/bin/env python
"""Fine-tune LayoutLM-RoIAlign on forms with `Trainer` (single process, or under `accelerate launch` for DDP).

    python scripts/train.py --dataset synthetic --output_dir runs/main ...   # see the README for full commands

Arguments: `--help` lists the model and data arguments (`layoutlm_roialign.training.ModelArguments`,
`DataArguments`) and every `TrainingArguments` flag. The logic lives in `layoutlm_roialign.training`.
"""

import json
import logging
import os
import sys

# This folder holds `evaluate.py`: keep it off the import path so that `import evaluate` means the library.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import transformers  # noqa: E402
from transformers import HfArgumentParser, TrainingArguments  # noqa: E402

from layoutlm_roialign.training import (  # noqa: E402
    TRAIN_SCRIPT_DEFAULTS,
    DataArguments,
    ModelArguments,
    run_training,
    use_cpu_processes_without_gpus,
)


def main(argv=None) -> dict:
    use_cpu_processes_without_gpus()
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**TRAIN_SCRIPT_DEFAULTS)
    argv = sys.argv[1:] if argv is None else argv
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
    if training_args.should_log:
        scores = result["entity_scores"]
        print(
            json.dumps(
                {
                    "f1": scores["f1"],
                    "precision": scores["precision"],
                    "recall": scores["recall"],
                    "per_type": scores["per_type"],
                    "final_dir": result["final_dir"],
                },
                indent=2,
            )
        )
    return result


if __name__ == "__main__":
    main()
