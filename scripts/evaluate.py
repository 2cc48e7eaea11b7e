#!/usr/bin/env python
"""Score a LayoutLM-RoIAlign checkpoint on a dataset split: entity P/R/F1 overall and per type, as JSON.

python scripts/evaluate.py --model runs/main/final --dataset synthetic --split validation --output report.json
"""

import json
import os
import sys

# This folder holds `evaluate.py`: keep it off the import path so that `import evaluate` means the library.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
from dataclasses import dataclass, field  # noqa: E402

from transformers import HfArgumentParser  # noqa: E402

from layoutlm_roialign.training import evaluate_checkpoint  # noqa: E402


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "Checkpoint folder or Hub id."})
    dataset: str = field(default="synthetic", metadata={"help": "Hub dataset id, FUNSD-layout folder or synthetic."})
    split: str = field(
        default="validation",
        metadata={"help": "Split to score (validation is split off train by --split_seed when the dataset has none)."},
    )
    validation_size: float = field(default=0.2, metadata={"help": "As in train.py."})
    split_seed: int = field(default=0, metadata={"help": "As in train.py."})
    synthetic_pages: int = field(default=240, metadata={"help": "As in train.py."})
    synthetic_seed: int = field(default=0, metadata={"help": "As in train.py."})
    max_length: int = field(default=512, metadata={"help": "Tokens per window."})
    stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows."})
    batch_size: int = field(default=8, metadata={"help": "Windows per forward pass."})
    output: str | None = field(default=None, metadata={"help": "Write the JSON report here (default: stdout)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own code (Hub ids)."})


def main(argv=None) -> dict:
    parser = HfArgumentParser(EvaluateArguments)
    (args,) = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    try:
        report = evaluate_checkpoint(**vars(args))
    except ValueError as err:
        parser.error(str(err))
    text = json.dumps(report, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
