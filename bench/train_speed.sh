#!/usr/bin/env bash
# Training speed of the headline recipe, convnet against PyTorch in one run, at the same thread
# count: ResNet-20 on 28x28x1 images, batch 128, forward + backward + SGD step with BatchNorm in
# training mode. Each side is timed several times, alternating, and the medians are compared.
#   bench/train_speed.sh [THREADS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${2:-3}
make -j"$(nproc)" >/dev/null
ours=() theirs=()
for ((r = 0; r < rounds; r++)); do
  o=$(build/release/convnet bench --model resnet20 --in-channels 1 --num-classes 10 --input-size 28 \
        --batch 128 --train --runs 20 --warmup 3 --threads "$threads" --json |
      /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["img_per_s"])')
  t=$(bash bench/train_pytorch.sh --max-steps 20 --compute-only --threads "$threads" 2>/dev/null |
      sed -n 's/^train_img_per_s //p' | tail -n 1)
  echo "round $((r + 1)): convnet $o img/s, pytorch $t img/s" >&2
  ours+=("$o") theirs+=("$t")
done
/usr/bin/python3 - "${ours[*]}" "${theirs[*]}" "$threads" <<'PY'
import statistics, sys
o = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
mo, mt = statistics.median(o), statistics.median(t)
print(f"ResNet-20 28x28x1 batch 128 training, {sys.argv[3]} threads: convnet {mo:.0f} img/s, "
      f"PyTorch {mt:.0f} img/s, ratio {mo / mt:.2f}x")
PY
