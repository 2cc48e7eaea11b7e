#!/usr/bin/env python
"""Pre-train LayoutLM-RoIAlign on unlabelled pages with a masked visual-language model (MVLM), then fine-tune it.

    python scripts/pretrain.py --inputs archive/ --text_model <bert folder or id> --output_dir runs/mvlm
    python scripts/train.py --text_model runs/mvlm/final --dataset ... --output_dir runs/forms

Arguments: `--help` lists the sources, model and masking arguments (`layoutlm_roialign.pretraining.
PretrainingArguments`) and every `TrainingArguments` flag; a single `.json` argument is read as a file of them. The
run is `layoutlm_roialign.pretraining.run_pretraining`: pages read by the labeller's page reader and cached as
windows, `Trainer` with one learning rate, `<output_dir>/final` written atomically with a model card. Runs unchanged
under `accelerate launch`; `--resume_from_checkpoint true` continues a killed run from its last checkpoint, and a
rerun of a run killed while reading reads only the pages not read yet. Ctrl-C prints the command that goes on
(exit 130).
"""

import json
import logging
import os
import sys
from collections.abc import Sequence

import transformers
from transformers import HfArgumentParser, TrainingArguments

from layoutlm_roialign.commands.train import use_cpu_processes_without_gpus
from layoutlm_roialign.pretraining import PRETRAIN_SCRIPT_DEFAULTS, PretrainingArguments, run_pretraining
from layoutlm_roialign.pretraining.run import resume_hint
from layoutlm_roialign.trainer import precision_defaults


def main(argv: Sequence[str] | None = None) -> dict:
    use_cpu_processes_without_gpus()
    parser = HfArgumentParser((PretrainingArguments, TrainingArguments))
    parser.set_defaults(**PRETRAIN_SCRIPT_DEFAULTS, **precision_defaults())  # bf16 on a GPU with it
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            args, training_args = parser.parse_json_file(os.path.abspath(argv[0]))
        else:
            args, training_args = parser.parse_args_into_dataclasses(argv)
    except ValueError as err:  # PretrainingArguments checks its fields when it is built
        parser.error(str(err))
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(level)
    try:
        summary = run_pretraining(args, training_args)
    except ValueError as err:  # bad input: a clear message naming the flag, no traceback
        parser.error(str(err))
    except KeyboardInterrupt:  # Ctrl-C: what was kept and how to go on, no traceback
        script = os.path.relpath(__file__) if not os.path.relpath(__file__).startswith("..") else __file__
        print(f"\n{resume_hint(script, argv, training_args.output_dir)}", file=sys.stderr)
        raise SystemExit(130) from None
    if training_args.should_log:
        keys = ("data", "training", "eval", "curve", "final_dir")
        print(json.dumps({k: summary[k] for k in keys}, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
