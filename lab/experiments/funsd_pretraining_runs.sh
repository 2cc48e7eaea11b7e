#!/usr/bin/env bash
# Issue 21: MVLM pre-training of MiniLM-L6-H384 (text and layout, no pixels) on unlabelled pages, then the same
# FUNSD fine-tune as lab/experiments/funsd_single_lr_runs.sh's text-only row (119 / 30 split by seed 0, one learning
# rate 5e-5, 6 epochs, batch 4, 10 % warm-up) from MiniLM as it ships and from the pre-trained folder.
#
#     .venv/bin/python lab/experiments/pretraining_pages.py --output ../pretraining-pages   # FUNSD train pages, PDF list
#     lab/experiments/funsd_pretraining_runs.sh pretrain mvlm-both                 # FUNSD 119 + Debian sample pages
#     lab/experiments/funsd_pretraining_runs.sh pretrain mvlm-funsd                # FUNSD 119 pages only
#     lab/experiments/funsd_pretraining_runs.sh finetune mvlm-both 0 1 2           # fine-tunes, two at a time
#     lab/experiments/funsd_pretraining_runs.sh finetune none 0                    # MiniLM as it ships
#
# Needs the `experiments` extra (MiniLM-L6-H384), FUNSD's training split ($LAYOUTLM_ROIALIGN_FUNSD, default
# ../shared/data/funsd/training_data) and Debian's texlive-latex-base-doc.
set -e
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# FUNSD's training split: the tests' environment variable, else beside the repository.
FUNSD=${LAYOUTLM_ROIALIGN_FUNSD:-../shared/data/funsd/training_data}
PY=${PYTHON:-.venv/bin/python}
PAGES=${PAGES:-../pretraining-pages}
STEPS=${STEPS:-120}
PRETRAIN_LR=${PRETRAIN_LR:-1e-4}
mkdir -p runs
MINILM=$($PY lab/experiments/pretrained_parts.py minilm)
FUNSD_PAGES=(--dataset "$PAGES/funsd_train" --words_column words --boxes_column bboxes)

pretrain() {
  local name=$1 sources=()
  case $name in
    mvlm-both) sources=("${FUNSD_PAGES[@]}" --inputs "$PAGES/debian_sample.txt") ;;
    mvlm-funsd) sources=("${FUNSD_PAGES[@]}") ;;
    mvlm-debian) sources=(--inputs "$PAGES/debian_sample.txt") ;;
    *) echo "unknown pre-training run $name" >&2; exit 2 ;;
  esac
  OMP_NUM_THREADS=${THREADS:-2} HF_HUB_OFFLINE=1 $PY scripts/pretrain.py "${sources[@]}" --words_from text \
    --text_model "$MINILM" --text_only true --learning_rate "$PRETRAIN_LR" --max_steps "$STEPS" \
    --per_device_train_batch_size 8 --eval_steps 20 --save_steps 40 --logging_steps 10 --validation_windows 32 \
    --num_workers 1 --cache_dir "$PAGES/cache" --seed 0 --disable_tqdm true --dataloader_pin_memory false \
    --output_dir "runs/$name" > "runs/$name.log" 2>&1
}

finetune() {
  local from=$1 seed=$2 text=$MINILM
  [ "$from" != none ] && text="runs/$from/final"
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $PY scripts/train.py \
    --dataset "$FUNSD" --validation_size 30 --split_seed 0 --text_model "$text" \
    --learning_rate 5e-5 --num_train_epochs 6 --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 8 --warmup_steps 0.1 --weight_decay 0.01 --seed "$seed" --disable_tqdm true \
    --dataloader_pin_memory false --use_visual_features false \
    --output_dir "runs/funsd-ft-$from-s$seed" > "runs/funsd-ft-$from-s$seed.log" 2>&1
}

stage=$1
shift
if [ "$stage" = pretrain ]; then
  for NAME in "$@"; do pretrain "$NAME"; done
elif [ "$stage" = finetune ]; then
  FROM=$1
  shift
  for SEED in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
    finetune "$FROM" "$SEED" &
  done
  wait
else
  echo "usage: $0 pretrain NAME... | finetune FROM SEED..." >&2
  exit 2
fi
