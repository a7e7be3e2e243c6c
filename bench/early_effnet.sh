#!/usr/bin/env bash
# The first steps of the EfficientNet-B0 recipe (bench/compare_training_effnet.sh) in convnet and
# in PyTorch over many seeds: a short run (200 steps on the first 12,800 training images: warm-up
# over the first 100, cosine over the next 100), whose final training loss and test accuracy
# (first 2,000 test images) are averaged over seeds per side. The 5-epoch comparison needs many
# seeds to resolve half a point; this one localises a difference: run it with the stochastic parts
# switched off one at a time and see which variant makes the two sides differ.
#
#   bench/early_effnet.sh [SEEDS] [VARIANT...]    (default seeds 1..6, variants full nodrop noaug)
#
# Variants: full (dropout 0.2, stochastic depth 0.2, crop + flip), nodrop (dropout and stochastic
# depth 0), noaug (no crop or flip), plain (neither); plaininit: plain, with convnet starting
# from the very weights PyTorch initialised for that seed (train_pytorch.py --save-init, convnet
# train --init), which separates the initialisation from the rest of training.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1,2,3,4,5,6}
shift || true
variants=("$@")
((${#variants[@]})) || variants=(full nodrop noaug)
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$out"' EXIT
make -j"$(nproc)" >/dev/null
# CONVNET=PATH runs another binary (a copy, so that rebuilding during a long run changes nothing)
convnet=${CONVNET:-build/release/convnet}
common=(--epochs 2 --batch 128 --optimizer adamw --lr 3e-3 --weight-decay 0.05 --warmup 1
        --label-smoothing 0.1 --limit-train 12800 --limit-test 2000)
for v in "${variants[@]}"; do
  cflags=() pflags=()
  case $v in
    full) ;;
    nodrop) cflags=(--dropout 0 --stochastic-depth 0); pflags=(--dropout 0 --stochastic-depth 0) ;;
    noaug) cflags=(--crop-pad 0 --no-flip); pflags=(--no-augment) ;;
    plain|plaininit) cflags=(--dropout 0 --stochastic-depth 0 --crop-pad 0 --no-flip)
           pflags=(--dropout 0 --stochastic-depth 0 --no-augment) ;;
    *) echo "early_effnet.sh: unknown variant '$v'" >&2; exit 2 ;;
  esac
  for s in ${seeds//,/ }; do
    echo "== $v seed $s" >&2
    init=()
    if [[ $v == plaininit ]]; then
      # PyTorch first: it writes the initial weights that convnet then starts from
      bash bench/train_pytorch.sh --model efficientnet_b0 "${common[@]}" --drop-last \
        "${pflags[@]}" --seed "$s" --save-init "$out/init-$s.safetensors" > "$out/p-$v-$s.txt"
      init=(--init "$out/init-$s.safetensors")
    fi
    "$convnet" train --model efficientnet_b0 --data fashion-mnist "${common[@]}" --schedule cosine \
      --crop-pad 2 "${cflags[@]}" "${init[@]}" --seed "$s" --out "$out/c-$v-$s" >/dev/null 2>&1
    if [[ $v != plaininit ]]; then
      bash bench/train_pytorch.sh --model efficientnet_b0 "${common[@]}" --drop-last \
        "${pflags[@]}" --seed "$s" > "$out/p-$v-$s.txt"
    fi
  done
done
/usr/bin/python3 - "$out" "$seeds" "${variants[@]}" <<'PY'
import csv, math, os, statistics as st, sys
out, seeds, variants = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
def conv(v, s):
    rows = list(csv.DictReader(open(os.path.join(out, f"c-{v}-{s}", "metrics.csv"))))
    return float(rows[-1]["train_loss"]), 100 * float(rows[-1]["test_acc"])
def torch_(v, s):
    last = [l.split() for l in open(os.path.join(out, f"p-{v}-{s}.txt")) if l.startswith("epoch")][-1]
    d = dict(zip(last[::2], last[1::2]))
    return float(d["train_loss"]), 100 * float(d["test_acc"])
def ms(xs):
    return st.fmean(xs), (st.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan"))
print(f"EfficientNet-B0, 200 steps on 12,800 images, seeds {','.join(seeds)}: mean (standard error)")
print(f"{'variant':8} {'convnet loss':>16} {'pytorch loss':>16} {'convnet acc':>16} {'pytorch acc':>16} {'acc diff':>14}")
for v in variants:
    c = [conv(v, s) for s in seeds]
    p = [torch_(v, s) for s in seeds]
    cl, pl = ms([x[0] for x in c]), ms([x[0] for x in p])
    ca, pa = ms([x[1] for x in c]), ms([x[1] for x in p])
    d = ca[0] - pa[0]
    se = math.sqrt(ca[1] ** 2 + pa[1] ** 2)
    print(f"{v:8} {cl[0]:>9.4f} ({cl[1]:.4f}) {pl[0]:>9.4f} ({pl[1]:.4f}) {ca[0]:>9.2f} ({ca[1]:.2f}) "
          f"{pa[0]:>9.2f} ({pa[1]:.2f}) {d:>+7.2f} ({se:.2f})")
PY
