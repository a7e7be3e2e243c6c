#!/usr/bin/env bash
# convnet against PyTorch (its fastest mode) and ONNX Runtime, same workloads in one run on this
# machine: inference latency (batch 1) and throughput (batch 16) of resnet18, resnet50 and
# efficientnet_b0 at 224x224; training throughput of ResNet-20 (28x28x1, batch 128), resnet18
# and efficientnet_b0 (224, batch 16); peak memory of each run; achieved FLOP/s against the
# machine's measured FMA peak. Medians; the table goes to stdout (markdown), progress to stderr.
# A full run appends its table to bench/RESULTS.md (--no-append to skip; --quick runs append
# only with --append). A workload that fails on one side (e.g. a model convnet does not have
# yet) shows as n/a and the run goes on.
#
#   bash bench/bench_peers.sh [--quick] [--models resnet20,resnet18,resnet50,efficientnet_b0]
#                             [--threads 1,2] [--only infer|train] [--rounds N] [--append | --no-append]
#
# --quick: few runs, no probing of PyTorch's variants, and only 2 threads unless --threads is
# given: a smoke test of under 3 minutes.
# Installs what it needs on first use (bench/peers/setup.sh: apt, npm); models for ONNX Runtime
# are exported once into build/peers/. Details: bench/peers/run.py, torch_bench.py, ort_bench.js.
set -euo pipefail
cd "$(dirname "$0")/.."
for a in "$@"; do
  if [[ "$a" == -h || "$a" == --help ]]; then exec /usr/bin/python3 bench/peers/run.py --help; fi
done
bash bench/peers/setup.sh
make -j2 >&2 || echo "bench_peers: make failed; measuring the existing build/release/convnet" >&2
[[ -x build/release/convnet ]] || { echo "bench_peers: no build/release/convnet" >&2; exit 1; }
exec /usr/bin/python3 bench/peers/run.py "$@"
