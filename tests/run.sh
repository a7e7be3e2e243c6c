#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds the optimised and the sanitizer builds,
# makes the PyTorch reference files, runs every test in both builds, and ends with one summary
# line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
make -j"$(nproc)" BUILD=asan >&2 || { echo "asan build failed"; echo "0 passed, 1 failed"; exit 1; }

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
refs=build/refs
if [[ ! -f $refs/stamp ]] || [[ tests/parity/make_refs.py -nt $refs/stamp ]] ||
   [[ tests/parity/cifar_resnet.py -nt $refs/stamp ]]; then
  echo "== making PyTorch reference files" >&2
  mkdir -p "$refs"
  /usr/bin/python3 tests/parity/make_refs.py "$refs" >&2 && touch "$refs/stamp"
fi

imgrefs=build/imgrefs
if [[ ! -f $imgrefs/stamp ]] || [[ tests/parity/make_image_refs.py -nt $imgrefs/stamp ]]; then
  echo "== making torchvision image references" >&2
  mkdir -p "$imgrefs"
  /usr/bin/python3 tests/parity/make_image_refs.py "$imgrefs" >&2 && touch "$imgrefs/stamp"
fi

qrefs=build/qrefs
if [[ ! -f $qrefs/stamp ]] || [[ tests/parity/make_qconv_refs.py -nt $qrefs/stamp ]]; then
  echo "== making PyTorch quantized convolution references" >&2
  mkdir -p "$qrefs"
  /usr/bin/python3 tests/parity/make_qconv_refs.py "$qrefs" >&2 && touch "$qrefs/stamp"
fi

passed=0 failed=0
log=$(mktemp)
run() { # name, command...
  local name=$1; shift
  echo "== $name" >&2
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  cat "$log" >&2
  # each suite ends with "<suite>: N passed, M failed"
  local line p f
  line=$(grep -E '^[a-z0-9_ -]+: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
  f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  [[ -n $line ]] || { p=0; f=1; echo "   ($name printed no summary)" >&2; }
  if ((rc != 0 && f == 0)); then f=1; echo "   ($name exited $rc)" >&2; fi
  passed=$((passed + p)); failed=$((failed + f))
  echo "   $name: $p passed, $f failed ($((SECONDS - t0)) s)" >&2
}

for b in release asan; do
  run "gemm [$b]" build/$b/tests/test_gemm
  run "qkernels [$b]" build/$b/tests/test_qkernels "$qrefs"
  run "io [$b]" build/$b/tests/test_io
  run "image [$b]" build/$b/tests/test_image "$imgrefs"
  run "ops [$b]" build/$b/tests/test_ops
  run "ops-effnet [$b]" build/$b/tests/test_ops_effnet
  run "winograd [$b]" build/$b/tests/test_winograd
  run "models [$b]" build/$b/tests/test_models "$refs"
  run "parity [$b]" build/$b/tests/test_parity "$refs"
  run "train [$b]" build/$b/tests/test_train
  run "prune [$b]" build/$b/tests/test_prune
  run "quant [$b]" build/$b/tests/test_quant
  run "int8 [$b]" build/$b/tests/test_int8
  run "cli [$b]" bash tests/test_cli.sh build/$b/convnet
done
# the portable kernels of the ops that this CPU would otherwise always run on AVX-512 or AVX2,
# and the AVX2 ones (depthwise, activations, direct convolution, batch norm sums) on AVX-512 CPUs
run "ops-effnet [release, CN_CPU=generic]" env CN_CPU=generic build/release/tests/test_ops_effnet
run "ops-effnet [release, CN_CPU=avx2]" env CN_CPU=avx2 build/release/tests/test_ops_effnet
run "ops [release, CN_CPU=avx2]" env CN_CPU=avx2 build/release/tests/test_ops
run "ops [release, CN_CPU=generic]" env CN_CPU=generic build/release/tests/test_ops
# the int8 kernels of an AVX-512 VNNI CPU without VBMI (lookup tables in scalar code)
run "qkernels [release, CN_CPU=avx512-novbmi]" env CN_CPU=avx512-novbmi build/release/tests/test_qkernels "$qrefs"
rm -f "$log"
echo "$passed passed, $failed failed"
((failed == 0))
