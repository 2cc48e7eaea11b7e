#!/usr/bin/env bash
# Issue 10: full fine-tunes of scripts/train.py on FUNSD's training split (119 train / 30 validation pages, split
# seed 0) the way a new user trains: ONE learning rate (5e-5, LayoutLM's) for every parameter, no groups, the
# default `visual_init`. Text only vs. pretrained MobileNetV2 (trained) vs. random ResNet-101 (trained), for the
# given seeds, two runs at a time (one thread each):
#
#     lab/experiments/funsd_single_lr_runs.sh 0 1 2 && .venv/bin/python lab/experiments/summarize_train_runs.py
#
# Needs the `experiments` extra (MiniLM-L6-H384, ImageNet MobileNetV2 features) and FUNSD's training split
# ($LAYOUTLM_ROIALIGN_FUNSD, default ../shared/data/funsd/training_data).
set -e
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# FUNSD's training split: the tests' environment variable, else beside the repository.
FUNSD=${LAYOUTLM_ROIALIGN_FUNSD:-../shared/data/funsd/training_data}
PY=${PYTHON:-.venv/bin/python}
EPOCHS=${EPOCHS:-6}
mkdir -p runs
MINILM=$($PY lab/experiments/pretrained_parts.py minilm)
MOB=$($PY lab/experiments/pretrained_parts.py mobilenet_v2)

train() {
  local name=$1 seed=$2
  shift 2
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $PY scripts/train.py \
    --dataset "$FUNSD" --validation_size 30 --split_seed 0 --text_model "$MINILM" \
    --learning_rate 5e-5 --num_train_epochs "$EPOCHS" --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 8 --warmup_steps 0.1 --weight_decay 0.01 --seed "$seed" --disable_tqdm true \
    --dataloader_pin_memory false "$@" --output_dir "runs/$name-s$seed" > "runs/$name-s$seed.log" 2>&1
}

JOBS=()
for SEED in "$@"; do
  JOBS+=("train funsd-1lr-text $SEED --use_visual_features false")
  JOBS+=("train funsd-1lr-resnet101 $SEED --backbone resnet101")
  JOBS+=("train funsd-1lr-mobilenet $SEED --backbone mobilenet_v2 --backbone_weights $MOB")
done
for JOB in "${JOBS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
  $JOB &
done
wait
