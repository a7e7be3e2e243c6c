#!/usr/bin/env bash
# The main job: train a CIFAR-style ResNet-20 on Fashion-MNIST, evaluate it and save it, then
# prune it (structured: half of the channels inside each residual branch removed for real),
# fine-tune the smaller model briefly and print the before/after table (parameters, MACs,
# measured latency, accuracy), quantize the pruned model to int8 and print accuracy, file size and
# latency of float32 and int8 side by side. Everything is installed and built on the way.
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

echo "== quantize the pruned model to int8 (calibration on 512 training images)" >&2
"$bin" quantize "$OUT/pruned.safetensors" --scheme int8 --data fashion-mnist --calib 512 \
  --out "$OUT/pruned.int8.safetensors"

echo "== float32 and int8 side by side (latency: batch 1, best median of 50 runs over 3" \
  "alternating rounds, so that a noisy moment does not pick one model)" >&2
num() { # the number of JSON key $1 on stdin
  sed -nE "s/^[[:space:]]*\"$1\":[[:space:]]*([-+0-9.eE]+),?[[:space:]]*$/\1/p"
}
models=("$OUT/model.safetensors" "$OUT/pruned.safetensors" "$OUT/pruned.int8.safetensors")
labels=("float32" "pruned float32" "pruned int8")
best=(1e9 1e9 1e9)
for round in 1 2 3; do
  for i in 0 1 2; do
    ms=$("$bin" bench "${models[$i]}" --input-size 28 --batch 1 --runs 50 --json | num median_ms)
    best[$i]=$(awk "BEGIN{print ($ms < ${best[$i]}) ? $ms : ${best[$i]}}")
  done
done
printf '%-16s %10s %12s %12s\n' "model" "accuracy" "file bytes" "latency ms"
for i in 0 1 2; do
  acc=$("$bin" eval "${models[$i]}" --data fashion-mnist --json | num accuracy)
  printf '%-16s %9.2f%% %12d %12.3f\n' "${labels[$i]}" "$(awk "BEGIN{print 100*$acc}")" \
    "$(stat -c %s "${models[$i]}")" "${best[$i]}"
done
