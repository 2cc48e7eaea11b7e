# Sourced by funsd_train_runs.sh and funsd_backbone_runs.sh: the offline pretrained parts (pip install -e
# ".[experiments]") and the split and schedule that every run of scripts/train.py on FUNSD shares.
set -e
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# FUNSD's training split: the tests' environment variable, else beside the repository.
FUNSD=${LAYOUTLM_ROIALIGN_FUNSD:-../shared/data/funsd/training_data}
mkdir -p runs
# MiniLM-L6-H384 (LayoutLM's 2-D position embeddings start fresh) and ImageNet MobileNetV2 features.
MINILM=$(.venv/bin/python lab/experiments/pretrained_parts.py minilm)
MOB=$(.venv/bin/python lab/experiments/pretrained_parts.py mobilenet_v2)

# train NAME SEED ARGS...: one run in the background on one thread, into runs/NAME-sSEED (log: runs/NAME-sSEED.log).
train() {
  local name=$1 seed=$2
  shift 2
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/train.py \
    --dataset "$FUNSD" --validation_size 30 --split_seed 0 --text_model "$MINILM" \
    --learning_rate 1e-4 --head_learning_rate 1e-3 --num_train_epochs 6 --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 8 --warmup_steps 0.1 --weight_decay 0.01 --seed "$seed" --disable_tqdm true \
    --dataloader_pin_memory false "$@" --output_dir "runs/$name-s$seed" > "runs/$name-s$seed.log" 2>&1 &
}
