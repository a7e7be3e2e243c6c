#!/usr/bin/env bash
# The accuracy reference: trains ResNet-20 on Fashion-MNIST with the same recipe in convnet and in
# PyTorch (SGD 0.1, momentum 0.9, Nesterov, wd 5e-4, batch 128, cosine, random crop pad 2 + flip)
# and prints both test-accuracy curves.  bench/compare_training.sh [EPOCHS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-10}
seed=${2:-1}
out=$(mktemp -d)
make -j"$(nproc)" >/dev/null
echo "== convnet" >&2
build/release/convnet train --model resnet20 --data fashion-mnist --epochs "$epochs" --batch 128 \
  --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 --schedule cosine --crop-pad 2 \
  --seed "$seed" --out "$out/convnet" >/dev/null
echo "== pytorch" >&2
bash bench/train_pytorch.sh --epochs "$epochs" --seed "$seed" >"$out/pytorch.txt"
/usr/bin/python3 - "$out/convnet/metrics.csv" "$out/pytorch.txt" <<'PY'
import csv, sys
ours = {int(r["epoch"]): r for r in csv.DictReader(open(sys.argv[1]))}
theirs = {}
for line in open(sys.argv[2]):
    f = line.split()
    if f and f[0] == "epoch":
        d = dict(zip(f[::2], f[1::2]))
        theirs[int(d["epoch"])] = d
print(f"{'epoch':>5} {'convnet test acc':>17} {'pytorch test acc':>17} {'convnet img/s':>14} {'pytorch img/s':>14}")
for e in sorted(ours):
    t = theirs.get(e, {})
    ta = float(t.get("test_acc", "nan"))
    ta = ta * 100 if ta <= 1 else ta
    print(f"{e:>5} {float(ours[e]['test_acc']) * 100:>16.2f}% {ta:>16.2f}% "
          f"{float(ours[e]['img_per_s']):>14.0f} {float(t.get('img_per_s', 'nan')):>14.0f}")
PY
rm -rf "$out"
