#!/usr/bin/env bash
# Inference latency and training speed of models side by side, measured in one run with the
# models taking turns (so that a change in machine load hits all of them), e.g. a model and its
# pruned versions:
#   bench/prune_speed.sh [-s HxW] [-t THREADS] [-r ROUNDS] BASE.safetensors PRUNED.safetensors ...
# For each of inference at batch 1, inference at batch 64 and a training step at batch 64, prints
# every model's median latency (median over rounds of convnet bench's median) and its ratio to
# the first model, with the MACs and parameters from convnet info.
set -euo pipefail
cd "$(dirname "$0")/.."
size=28 threads=2 rounds=5
while getopts "s:t:r:" o; do
  case $o in
    s) size=$OPTARG ;; t) threads=$OPTARG ;; r) rounds=$OPTARG ;;
    *) echo "usage: $0 [-s HxW] [-t THREADS] [-r ROUNDS] MODEL..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($# >= 1)) || { echo "usage: $0 [-s HxW] [-t THREADS] [-r ROUNDS] MODEL..." >&2; exit 2; }
make -j"$(nproc)" >/dev/null
bin=build/release/convnet
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((r = 0; r < rounds; r++)); do
  for mode in "1 inf" "64 inf" "64 train"; do
    read -r b kind <<<"$mode"
    for m in "$@"; do
      extra=()
      [[ $kind == train ]] && extra=(--train --runs 5 --warmup 1) || extra=(--runs 20 --warmup 3)
      ms=$("$bin" bench "$m" --input-size "$size" --batch "$b" --threads "$threads" "${extra[@]}" --json |
           /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')
      echo "$kind $b $m $ms" >>"$out"
    done
  done
  echo "round $((r + 1))/$rounds done" >&2
done
/usr/bin/python3 - "$out" "$bin" "$size" "$threads" "$@" <<'PY'
import json, statistics, subprocess, sys
path, binary, size, threads, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
rows = [l.split() for l in open(path)]
info = {}
for m in models:
    d = json.loads(subprocess.run([binary, "info", m, "--input-size", size, "--json"],
                                  capture_output=True, text=True, check=True).stdout)
    info[m] = (d["params"], d["macs"])
print(f"{threads} threads, {size}x{size}, medians over rounds of convnet bench medians")
print(f"{'model':40s} {'params':>9s} {'MACs':>11s}  {'inf b1 ms':>10s} {'inf b64 ms':>11s} {'train b64 ms':>13s}")
base = {}
for m in models:
    cells = []
    for kind, b in (("inf", "1"), ("inf", "64"), ("train", "64")):
        v = statistics.median(float(r[3]) for r in rows if r[0] == kind and r[1] == b and r[2] == m)
        base.setdefault((kind, b), v)
        cells.append(f"{v:.3f} ({v / base[(kind, b)]:.2f}x)")
    p, macs = info[m]
    print(f"{m[-40:]:40s} {p:9d} {macs:11d}  {cells[0]:>10s} {cells[1]:>11s} {cells[2]:>13s}")
PY
