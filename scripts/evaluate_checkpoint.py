#!/usr/bin/env python
"""Score a LayoutLM-RoIAlign checkpoint on a dataset split: entity P/R/F1 overall and per type, as JSON; for a
linking checkpoint also key-value pair P/R/F1 with the gold entities and end to end (pairs between the entities the
checkpoint finds), at the checkpoint's `link_threshold`.

    python scripts/evaluate_checkpoint.py --model runs/main/final --dataset synthetic --split validation --output report.json
    python scripts/evaluate_checkpoint.py --model runs/linking/final --dataset dataset --split test   # a FUNSD release root

The data flags are `scripts/train.py`'s (`layoutlm_roialign.data.DataArguments`), and the dataset is loaded the same
way, so the same `--split_seed` scores the same validation pages; a dataset's own splits (a FUNSD release root's
`test`) are kept. The scores are `scripts/train.py`'s: the package's `evaluate` metrics (`entity_f1`, `pair_f1`,
loaded from their files by `layoutlm_roialign.metrics`). The run is
`layoutlm_roialign.commands.evaluate.evaluate_checkpoint`; this file parses the flags and writes the report.
"""

import json
import sys
from collections.abc import Sequence

from transformers import HfArgumentParser

from layoutlm_roialign.commands.evaluate import EvaluateArguments, evaluate_checkpoint
from layoutlm_roialign.data import DataArguments
from layoutlm_roialign.outputs import check_output_paths, write_files


def main(argv: Sequence[str] | None = None) -> dict:
    parser = HfArgumentParser((EvaluateArguments, DataArguments))
    args, data_args = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.output:
            check_output_paths({"--output": args.output})
        report = evaluate_checkpoint(
            args.model,
            data_args,
            args.split,
            args.batch_size,
            args.trust_remote_code,
            runtime=args.runtime,
            dtype=args.dtype,
        )
    except ValueError as err:
        parser.error(str(err))
    text = json.dumps(report, indent=2)
    if args.output:
        write_files({args.output: lambda f: f.write((text + "\n").encode())})
    print(text)
    return report


if __name__ == "__main__":
    main()
