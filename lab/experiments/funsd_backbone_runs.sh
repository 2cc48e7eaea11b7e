#!/usr/bin/env bash
# scripts/train.py full fine-tunes on FUNSD's training split (119 / 30, split seed 0) to decide how to regularize the
# visual term: a RANDOMLY initialized ResNet-101 frozen vs trained at 1e-4 (default zero-gate init, group norm), the
# tutorial's raw projection (visual_init=normal) with that backbone trained, and the pretrained MobileNetV2 of
# funsd_train_runs.sh trained at 1e-4 instead of frozen. Same schedule as funsd_train_runs.sh; one set per seed
# given, in parallel pairs (one thread each):
#
#     lab/experiments/funsd_backbone_runs.sh 0 1 2 && .venv/bin/python lab/experiments/summarize_train_runs.py
source "$(dirname "$0")/funsd_runs_common.sh"
for SEED in "$@"; do
  VISUAL="--visual_learning_rate 1e-3"
  train funsd-minilm-resnet101-frozen "$SEED" --backbone resnet101 --backbone_learning_rate 0 $VISUAL
  train funsd-minilm-resnet101-trained "$SEED" --backbone resnet101 --backbone_learning_rate 1e-4 $VISUAL
  wait
  train funsd-minilm-resnet101-tutorial "$SEED" --backbone resnet101 --backbone_learning_rate 1e-4 $VISUAL \
    --visual_init normal
  train funsd-minilm-mobilenet-trained "$SEED" --backbone mobilenet_v2 --backbone_weights "$MOB" \
    --backbone_learning_rate 1e-4 $VISUAL
  wait
done
