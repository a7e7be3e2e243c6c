#!/usr/bin/env bash
# The accuracy reference for EfficientNet-B0 (issue 3): trains torchvision's EfficientNet-B0 with a
# 1-channel stem on Fashion-MNIST with the same recipe in convnet and in PyTorch, prints both
# test-accuracy curves side by side and the final difference (goal: within 0.5 points).
#
#   bench/compare_training_effnet.sh [EPOCHS] [SEED]        (defaults: RECIPE_EPOCHS below, 1)
#
# Recipe (both sides): AdamW lr LR, betas 0.9/0.999, decoupled weight decay WD on every
# parameter, batch 128 (last partial batch dropped, as convnet's loader does), linear warm-up over
# WARMUP epochs from 1 % of LR then cosine to 0 stepped every iteration, label smoothing LS,
# random crop 28 with zero padding 2 + horizontal flip, dropout 0.2 and stochastic depth 0.2.
# Environment: CONVNET_ONLY=1 or PYTORCH_ONLY=1 runs one side; KEEP=DIR keeps the outputs in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-5}
seed=${2:-1}
lr=3e-3
wd=0.05
warmup=1
ls=0.1
batch=128
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$out"' EXIT
make -j"$(nproc)" >/dev/null
convnet=build/release/convnet

if [ -z "${PYTORCH_ONLY:-}" ]; then
  # convnet sets the input channels and classes from the data set (Fashion-MNIST: 1 and 10)
  if ! msg=$("$convnet" info --model efficientnet_b0 --in-channels 1 --num-classes 10 \
      --input-size 28 2>&1 >/dev/null); then
    echo "compare_training_effnet.sh: this convnet build cannot create efficientnet_b0 yet:" >&2
    echo "  $msg" >&2
    echo "  (run with PYTORCH_ONLY=1 for the PyTorch curve alone)" >&2
    exit 1
  fi
  echo "== convnet (efficientnet_b0, $epochs epochs)" >&2
  "$convnet" train --model efficientnet_b0 --data fashion-mnist --epochs "$epochs" \
    --batch "$batch" --optimizer adamw --lr "$lr" --weight-decay "$wd" --warmup "$warmup" \
    --schedule cosine --label-smoothing "$ls" --crop-pad 2 --seed "$seed" \
    --out "$out/convnet" >/dev/null
fi
if [ -z "${CONVNET_ONLY:-}" ]; then
  echo "== pytorch (efficientnet_b0, $epochs epochs)" >&2
  bash bench/train_pytorch.sh --model efficientnet_b0 --epochs "$epochs" --batch "$batch" \
    --optimizer adamw --lr "$lr" --weight-decay "$wd" --warmup "$warmup" \
    --label-smoothing "$ls" --drop-last --seed "$seed" | tee "$out/pytorch.txt" >&2
fi

/usr/bin/python3 - "$out/convnet/metrics.csv" "$out/pytorch.txt" <<'PY'
import csv, math, os, sys
ours, theirs = {}, {}
if os.path.exists(sys.argv[1]):
    ours = {int(r["epoch"]): r for r in csv.DictReader(open(sys.argv[1]))}
if os.path.exists(sys.argv[2]):
    for line in open(sys.argv[2]):
        f = line.split()
        if f and f[0] == "epoch":
            d = dict(zip(f[::2], f[1::2]))
            theirs[int(d["epoch"])] = d
nan = float("nan")
def pct(v):
    return nan if v is None else float(v) * 100
print("EfficientNet-B0 on Fashion-MNIST, test accuracy per epoch")
print(f"{'epoch':>5} {'convnet test acc':>17} {'pytorch test acc':>17} {'difference':>11} "
      f"{'convnet img/s':>14} {'pytorch img/s':>14}")
for e in sorted(set(ours) | set(theirs)):
    o, t = ours.get(e, {}), theirs.get(e, {})
    a, b = pct(o.get("test_acc")), pct(t.get("test_acc"))
    print(f"{e:>5} {a:>16.2f}% {b:>16.2f}% {a - b:>+10.2f}  "
          f"{float(o.get('img_per_s', nan)):>14.0f} {float(t.get('img_per_s', nan)):>14.0f}")
if ours and theirs:
    last = max(set(ours) & set(theirs), default=None)
    if last is not None:
        a, b = pct(ours[last]["test_acc"]), pct(theirs[last]["test_acc"])
        verdict = "within" if abs(a - b) <= 0.5 else "NOT within"
        print(f"final (epoch {last}): convnet {a:.2f}%  pytorch {b:.2f}%  difference {a - b:+.2f} "
              f"points ({verdict} 0.5)")
PY
