#!/usr/bin/env bash
# The main job: train a CIFAR-style ResNet-20 on Fashion-MNIST, evaluate it and save it.
# Everything is installed and built on the way. Override with EPOCHS=10 OUT=runs/x.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

EPOCHS=${EPOCHS:-2}
OUT=${OUT:-runs/resnet20-fashion-mnist}
bin=build/release/convnet

echo "== train resnet20 on Fashion-MNIST for $EPOCHS epoch(s) -> $OUT" >&2
"$bin" train --model resnet20 --data fashion-mnist --epochs "$EPOCHS" --batch 128 --lr 0.1 \
  --optimizer sgd --momentum 0.9 --nesterov --weight-decay 5e-4 --schedule cosine \
  --crop-pad 2 --out "$OUT"

echo "== evaluate the saved model" >&2
"$bin" eval "$OUT/model.safetensors" --data fashion-mnist
"$bin" info "$OUT/model.safetensors" --input-size 28 | tail -n 1
