#!/usr/bin/env bash
# int8 inference against float32 and against PyTorch's int8 (onednn engine, which uses VNNI),
# in one run on this machine: resnet50 at 224x224, batch 1 and 16, 2 threads (THREADS=...).
# convnet's int8 model comes from `convnet quantize --scheme int8` of a freshly initialised
# resnet50 calibrated on 16 generated images (speed does not depend on the weights); PyTorch's
# from FX post-training quantization of torchvision's resnet50 (bench/peers/torch_int8.py).
# Medians over ROUNDS rounds (default 5) in which both sides run back to back, each side each
# time the best of three medians of RUNS / 3 + 1 timed runs (PyTorch's float32 and int8
# alternating in one process); the table goes to stdout, each round's numbers to stderr.
#
#   bash bench/bench_int8.sh [MODEL]      (default resnet50; BATCHES="1 16" by default)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-resnet50}
threads=${THREADS:-2}
runs=${RUNS:-30}
make -j2 >&2
bin=build/release/convnet
work=build/bench_int8
mkdir -p "$work/calib/a" "$work/calib/b"
if [[ ! -f $work/calib/b/15.png ]]; then
  /usr/bin/python3 - "$work/calib" <<'PYEOF'
import sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(16):
    img = (rng.random((224, 224, 3)) * 255).astype("uint8")
    Image.fromarray(img).save(f"{sys.argv[1]}/{'ab'[i % 2]}/{i}.png")
PYEOF
fi
echo "== quantizing a fresh $model to int8" >&2
"$bin" quantize --model "$model" --scheme int8 --data "folder:$work/calib" --calib 16 --batch 8 \
  --out "$work/$model.int8.safetensors" >&2
# the float32 file of the same model, for the size ratio
num() { # the number of JSON key $1 on stdin
  sed -nE "s/^[[:space:]]*\"$1\":[[:space:]]*([-+0-9.eE]+),?[[:space:]]*$/\1/p"
}
fsize=$(( $("$bin" info --model "$model" --json | num params | head -n 1) * 4 ))
isize=$(stat -c %s "$work/$model.int8.safetensors")

ms() { num median_ms; }
printf '| %s | batch | threads | convnet fp32 ms | convnet int8 ms | int8/fp32 | PyTorch fp32 ms | PyTorch int8 (onednn) ms | convnet int8 / PyTorch int8 |\n' "model"
printf '|---|---|---|---|---|---|---|---|---|\n'
# convnet's time the way bench/peers/torch_int8.py takes PyTorch's: the best of three medians of
# runs / 3 + 1 runs each
cn_ms() {
  local best=1e9 m
  for _ in 1 2 3; do
    m=$("$bin" bench "$@" --input-size 224 --batch "$batch" --threads "$threads" --runs $((r / 3 + 1)) --json | ms)
    best=$(awk -v a="$m" -v b="$best" 'BEGIN{print (a < b) ? a : b}')
  done
  echo "$best"
}
med() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for batch in ${BATCHES:-1 16}; do
  r=$runs; ((batch > 1)) && r=$((runs / 3 + 3))
  # ROUNDS rounds (default 5), each convnet float32, convnet int8 and PyTorch (float32 and int8)
  # back to back, so that the machine's drift hits both sides alike; the medians over the rounds
  fs=() qs=() tfs=() tqs=()
  for rep in $(seq "${ROUNDS:-5}"); do
    fs+=("$(cn_ms --model "$model")")
    qs+=("$(cn_ms "$work/$model.int8.safetensors")")
    t=$(/usr/bin/python3 bench/peers/torch_int8.py --model "$model" --batch "$batch" --threads "$threads" --runs "$r")
    tfs+=("$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['float_ms'])" "$t")")
    tqs+=("$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['int8_ms'])" "$t")")
    echo "  round $rep batch $batch: convnet fp32 ${fs[-1]} int8 ${qs[-1]}, PyTorch fp32 ${tfs[-1]} int8 ${tqs[-1]} ms" >&2
  done
  f=$(printf '%s\n' "${fs[@]}" | med) q=$(printf '%s\n' "${qs[@]}" | med)
  tf=$(printf '%s\n' "${tfs[@]}" | med) tq=$(printf '%s\n' "${tqs[@]}" | med)
  # the median over the rounds of each round's ratio (both sides of a round ran minutes apart
  # at most), to stderr
  rr=$(for i in "${!qs[@]}"; do awk -v a="${qs[$i]}" -v b="${tqs[$i]}" 'BEGIN{print a / b}'; done | med)
  echo "  batch $batch: median of the rounds' convnet int8 / PyTorch int8 ratios: $rr" >&2
  awk -v m="$model" -v b="$batch" -v th="$threads" -v f="$f" -v q="$q" -v tf="$tf" -v tq="$tq" \
    'BEGIN{printf "| %s | %d | %d | %.2f | %.2f | %.2fx | %.2f | %.2f | %.2fx |\n", m, b, th, f, q, q/f, tf, tq, q/tq}'
done
awk -v i="$isize" -v f="$fsize" 'BEGIN{printf "\nint8 file %d bytes, float32 weights %d bytes: %.3fx\n", i, f, i/f}'
