#!/usr/bin/env bash
# The main job: train a CIFAR-style ResNet-20 on Fashion-MNIST, evaluate it and save it, then
# prune it (structured: half of the channels inside each residual branch removed for real),
# fine-tune the smaller model briefly and print the before/after table (parameters, MACs,
# measured latency, accuracy). Everything is installed and built on the way.
# Override with EPOCHS=10 FINETUNE_EPOCHS=3 PRUNE_AMOUNT=0.5 OUT=runs/x.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

EPOCHS=${EPOCHS:-2}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-1}
PRUNE_AMOUNT=${PRUNE_AMOUNT:-0.5}
OUT=${OUT:-runs/resnet20-fashion-mnist}
bin=build/release/convnet

echo "== train resnet20 on Fashion-MNIST for $EPOCHS epoch(s) -> $OUT" >&2
"$bin" train --model resnet20 --data fashion-mnist --epochs "$EPOCHS" --batch 128 --lr 0.1 \
  --optimizer sgd --momentum 0.9 --nesterov --weight-decay 5e-4 --schedule cosine \
  --crop-pad 2 --out "$OUT"

echo "== evaluate the saved model" >&2
"$bin" eval "$OUT/model.safetensors" --data fashion-mnist
"$bin" info "$OUT/model.safetensors" --input-size 28 | tail -n 1

echo "== prune $PRUNE_AMOUNT of the channels inside the residual branches (L2 filter norm)," \
  "fine-tune $FINETUNE_EPOCHS epoch(s)" >&2
"$bin" prune "$OUT/model.safetensors" --method l2 --amount "$PRUNE_AMOUNT" --input-size 28 \
  --bench-batch 32 --data fashion-mnist --finetune-epochs "$FINETUNE_EPOCHS" --lr 0.01 \
  --out "$OUT/pruned.safetensors"
