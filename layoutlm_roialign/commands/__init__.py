"""The runs behind the scripts, importable where the scripts are not: `train` (`scripts/train.py`'s fine-tuning run
and its arguments) and `evaluate` (`scripts/evaluate_checkpoint.py`'s scoring of a checkpoint). They need the `train` extra."""
