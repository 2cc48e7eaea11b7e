#!/usr/bin/env bash
# Issue 6 saw a trained random ResNet-101 memorize FUNSD's training pages over 12 epochs. The full fine-tunes of
# funsd_backbone_runs.sh at 12 epochs instead of 6: text only vs. the random ResNet-101 trained at 1e-4 with the
# zero gate, for the given seeds, two runs at a time (one thread each; ~65 min for 3 seeds on 2 cores):
#
#     lab/experiments/funsd_long_runs.sh 0 1 2 && .venv/bin/python lab/experiments/summarize_train_runs.py
source "$(dirname "$0")/funsd_runs_common.sh"
JOBS=()
for SEED in "$@"; do
  JOBS+=("train funsd-minilm-resnet101-trained-12ep $SEED --backbone resnet101 --backbone_learning_rate 1e-4 --visual_learning_rate 1e-3 --num_train_epochs 12")
done
for SEED in "$@"; do
  JOBS+=("train funsd-minilm-text-12ep $SEED --use_visual_features false --num_train_epochs 12")
done
for JOB in "${JOBS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
  $JOB
done
wait
