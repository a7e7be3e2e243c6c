#!/usr/bin/env bash
# End-to-end tests of the convnet command line: usage errors, model inspection, bad model files,
# bad datasets, forward, training with exact resume, atomic writes and PyTorch interoperability.
#
# usage: bash tests/test_cli.sh path/to/convnet
#
# Everything is generated in a temporary directory that is removed at exit. Needs /usr/bin/python3
# with numpy and torch (torchvision) and the Fashion-MNIST files of Debian's
# dataset-fashion-mnist. Ends with one line "cli: N passed, M failed"; exits 1 if M > 0.
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 CONVNET_BINARY" >&2
  echo "cli: 0 passed, 1 failed"
  exit 1
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "$1" 2>/dev/null || echo "$1")
PY=/usr/bin/python3
FMNIST=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
T=$(mktemp -d "${TMPDIR:-/tmp}/convnet-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
cd "$T" || exit 1
# Under the sanitizers (harmless for the release build): stop at the first report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$REPO/tests/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0 failed=0
TIMEOUT=${CLI_TEST_TIMEOUT:-600}

pass_() { passed=$((passed + 1)); }
fail_() { # description, reason
  failed=$((failed + 1))
  echo "FAIL: $1: $2" >&2
  if [[ -s $T/err ]]; then sed -n '1,15s/^/    stderr| /p' "$T/err" >&2; fi
}

# Runs "$@" with no stdin; stdout in $T/out, stderr in $T/err, status in RC.
run() {
  timeout -k 10 "$TIMEOUT" "$@" </dev/null >"$T/out" 2>"$T/err"
  RC=$?
}

# Why the last run counts as a crash (sanitizer report, signal, timeout); empty if it did not.
crash_reason() {
  if grep -qE 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:' "$T/err"; then
    echo "sanitizer report"
  elif ((RC == 124)); then
    echo "timed out after ${TIMEOUT}s"
  elif ((RC >= 128)); then
    echo "killed by signal $((RC - 128))"
  fi
}

# expect_ok "description" -- command...
# Passes when the command exits 0 with no sanitizer report. Leaves $T/out and $T/err.
expect_ok() {
  local desc=$1
  shift
  [[ $1 == -- ]] && shift
  run "$@"
  local why
  why=$(crash_reason)
  if [[ -n $why ]]; then fail_ "$desc" "$why (exit $RC)"; return 1; fi
  if ((RC != 0)); then fail_ "$desc" "exit $RC, expected 0"; return 1; fi
  pass_
  return 0
}

# expect_fail "description" EXIT_CODE "stderr substring" ["another substring"...] -- command...
# Passes when the command exits with EXIT_CODE, every substring appears in stderr (fixed string),
# and there is no crash or sanitizer report.
expect_fail() {
  local desc=$1 code=$2
  shift 2
  local subs=()
  while [[ $# -gt 0 && $1 != -- ]]; do subs+=("$1"); shift; done
  shift
  run "$@"
  local why s
  why=$(crash_reason)
  if [[ -n $why ]]; then fail_ "$desc" "$why (exit $RC)"; return 1; fi
  if ((RC != code)); then fail_ "$desc" "exit $RC, expected $code"; return 1; fi
  for s in "${subs[@]}"; do
    if ! grep -qF -- "$s" "$T/err"; then
      fail_ "$desc" "stderr lacks '$s'"
      return 1
    fi
  done
  pass_
  return 0
}

# check "description" command... : passes when the command (a plain assertion) exits 0.
check() {
  local desc=$1
  shift
  local msg
  if msg=$("$@" 2>&1); then
    pass_
  else
    failed=$((failed + 1))
    echo "FAIL: $desc" >&2
    [[ -n $msg ]] && sed 's/^/    | /' <<<"$msg" | head -20 >&2
  fi
}

# torch_check DESC MODEL INPUT LOGITS: MODEL loads into PyTorch (tests/parity/check_torch_load.py,
# load_state_dict strict) and gives the LOGITS convnet wrote for INPUT
torch_check() {
  local desc=$1 model=$2 input=$3 logits=$4 ref=${4%.safetensors}_ref.safetensors
  $PY - "$REPO" "$input" "$logits" "$ref" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1] + "/tests/parity")
import st
st.save(sys.argv[4], {"input": st.load(sys.argv[2])[0]["input"], "logits": st.load(sys.argv[3])[0]["logits"]})
EOF
  check "$desc" $PY "$REPO/tests/parity/check_torch_load.py" "$model" "$ref"
}

# json_check 'python expression over d' FILE : d is the parsed JSON of FILE.
json_check() {
  $PY -c '
import json, sys
d = json.load(open(sys.argv[2]))
ok = eval(sys.argv[1])
if not ok:
    sys.exit("assertion %r failed on %s" % (sys.argv[1], json.dumps({k: v for k, v in d.items() if k != "layers"})))
' "$1" "$2"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

summary() {
  echo "== [$((SECONDS - ${T0:-0})) s] done" >&2
  echo "cli: $passed passed, $failed failed"
  ((failed == 0))
  exit $?
}

if [[ ! -x $BIN ]]; then
  failed=1
  echo "FAIL: $BIN is not an executable" >&2
  summary
fi

# Tiny training runs: sizes can be lowered for slow machines.
# The sanitizer build is ~10x slower: smaller runs there.
if grep -qa __asan_init "$BIN"; then
  LT=${CLI_LIMIT_TRAIN:-64} LE=${CLI_LIMIT_TEST:-64}
else
  LT=${CLI_LIMIT_TRAIN:-256} LE=${CLI_LIMIT_TEST:-128}
fi
TRAIN_ARGS=(--model resnet20 --limit-train "$LT" --limit-test "$LE" --batch 32 --epochs 2 --threads 2
            --seed 7)

T0=$SECONDS
section() { echo "== [$((SECONDS - T0)) s] $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Fixtures: model files (good and bad), input tensors, corrupted IDX datasets.
# ---------------------------------------------------------------------------------------------
cat >"$T/gen.py" <<'EOF'
import gzip, json, os, shutil, struct, sys
import numpy as np
import torch, torchvision

repo, out, fmnist = sys.argv[1:4]
sys.path.insert(0, os.path.join(repo, "tests", "parity"))
import st
from cifar_resnet import cifar_resnet

torch.manual_seed(0)
torch.set_num_threads(2)
rng = np.random.default_rng(0)
P = lambda name: os.path.join(out, name)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def perturb_bn(model):
    # non-trivial running statistics so that eval mode is a real test
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)


ARCH = {"format": "convnet", "format_version": "1",
        "arch": json.dumps({"name": "resnet20", "in_channels": 1, "num_classes": 10})}

# a resnet20 (1 channel, 10 classes) written by PyTorch, with convnet's metadata
r20 = cifar_resnet(20, 1, 10)
perturb_bn(r20)
r20.eval()
sd = state(r20)
st.save(P("r20.safetensors"), sd, ARCH)
st.save(P("r20_plain.safetensors"), sd)  # a plain state_dict: no metadata

x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
st.save(P("in.safetensors"), {"input": x})
with torch.no_grad():
    st.save(P("r20_ref_logits.safetensors"), {"logits": r20(torch.from_numpy(x))})
st.save(P("in_noinput.safetensors"), {"x": x})
st.save(P("in_3ch.safetensors"), {"input": rng.standard_normal((2, 3, 28, 28)).astype(np.float32)})
st.save(P("in_3d.safetensors"), {"input": x[0]})
st.save(P("in_f64.safetensors"), {"input": x.astype(np.float64)})
st.save(P("in_i32.safetensors"), {"input": (x * 10).astype(np.int32)})
st.save(P("in_empty.safetensors"), {"input": np.zeros((0, 1, 28, 28), np.float32)})

raw = open(P("r20.safetensors"), "rb").read()
(hlen,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + hlen])
open(P("empty.safetensors"), "wb").close()
open(P("truncated.safetensors"), "wb").write(raw[:8 + hlen + (len(raw) - 8 - hlen) // 2])
open(P("short.safetensors"), "wb").write(raw[:5])
open(P("hdrlen.safetensors"), "wb").write(struct.pack("<Q", len(raw)) + raw[8:])
open(P("hdrlen_huge.safetensors"), "wb").write(struct.pack("<Q", 1 << 62) + raw[8:])
bad = b"this is not JSON at all!"
bad += b" " * (-len(bad) % 8)
open(P("notjson.safetensors"), "wb").write(struct.pack("<Q", len(bad)) + bad + raw[8 + hlen:])


def with_header(name, hdr):
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    open(P(name), "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + hlen:])


h = json.loads(json.dumps(header))
last = max(h[k]["data_offsets"][1] for k in h if k != "__metadata__")
h2 = json.loads(json.dumps(header))
h2["fc.bias"]["data_offsets"] = [h2["fc.weight"]["data_offsets"][0], h2["fc.weight"]["data_offsets"][0] + 40]
with_header("overlap.safetensors", h2)
h2 = json.loads(json.dumps(header))
h2["fc.bias"]["shape"] = [-10]
with_header("negshape.safetensors", h2)
h2 = json.loads(json.dumps(header))
h2["fc.bias"]["dtype"] = "F99"
with_header("baddtype.safetensors", h2)
b, e = h["fc.weight"]["data_offsets"]
h["fc.weight"]["data_offsets"] = [last + 64, last + 64 + (e - b)]
with_header("offsets.safetensors", h)

sd2 = dict(sd)
sd2["conv1.weight"] = torch.zeros(16, 3, 3, 3)
st.save(P("wrongshape.safetensors"), sd2, ARCH)
sd2 = dict(sd)
del sd2["layer2.1.bn2.running_var"]
st.save(P("missing.safetensors"), sd2, ARCH)
sd2 = dict(sd)
sd2["head.extra.weight"] = torch.zeros(3)
st.save(P("extra.safetensors"), sd2, ARCH)
sd2 = dict(sd)
sd2["fc.weight"] = sd["fc.weight"].to(torch.int32)
st.save(P("intweight.safetensors"), sd2, ARCH)
st.save(P("badarch.safetensors"), sd, dict(ARCH, arch=json.dumps({"name": "resnet999", "in_channels": 1, "num_classes": 10})))

# a plain torchvision resnet18 state_dict (num_batches_tracked is int64), plus a reference
tv = torchvision.models.resnet18()
perturb_bn(tv)
tv.eval()
tsd = state(tv)
assert tsd["bn1.num_batches_tracked"].dtype == torch.int64
st.save(P("tv_resnet18.safetensors"), tsd)
xt = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
st.save(P("tv_in.safetensors"), {"input": xt})
with torch.no_grad():
    st.save(P("tv_ref_logits.safetensors"), {"logits": tv(torch.from_numpy(xt))})

# MACs (conv + linear, as convnet counts them) of resnet18 at a non-square 96x128, by hooks
macs = []
def hook(mod, inp, outp):
    if isinstance(mod, torch.nn.Conv2d):
        macs.append(outp.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1])
    elif isinstance(mod, torch.nn.Linear):
        macs.append(outp.numel() * mod.in_features)
for mod in tv.modules():
    mod.register_forward_hook(hook)
with torch.no_grad():
    tv(torch.zeros(1, 3, 96, 128))
open(P("macs_resnet18_96x128"), "w").write(str(sum(macs)))

# IDX datasets: the test split decompressed, then one corruption per directory; the train split
# is linked (eval only reads t10k).
idx = {}
for base in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    with gzip.open(os.path.join(fmnist, base + ".gz"), "rb") as f:
        idx[base] = bytearray(f.read())
IM, LB = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def dataset(name, images=None, labels=None, gz_images=None):
    d = P(name)
    os.makedirs(d)
    for base in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        os.symlink(os.path.join(fmnist, base), os.path.join(d, base))
    if gz_images is not None:
        open(os.path.join(d, IM + ".gz"), "wb").write(gz_images)
    else:
        open(os.path.join(d, IM), "wb").write(idx[IM] if images is None else images)
    open(os.path.join(d, LB), "wb").write(idx[LB] if labels is None else labels)


dataset("data_ok")
im = bytearray(idx[IM]); im[0:4] = b"\x12\x34\x08\x03"
dataset("data_magic", images=im)
dataset("data_trunc", images=idx[IM][: len(idx[IM]) // 2])
gzd = open(os.path.join(fmnist, IM + ".gz"), "rb").read()
dataset("data_truncgz", gz_images=gzd[: len(gzd) // 2])
lb = bytearray(idx[LB][: 8 + 9999]); lb[4:8] = struct.pack(">I", 9999)
dataset("data_count", labels=lb)
lb = bytearray(idx[LB]); lb[8 + 5] = 10
dataset("data_label", labels=lb)
im = bytearray(idx[IM]) + b"\0" * 7
dataset("data_trailing", images=im)
os.makedirs(P("data_empty"))
print("fixtures ok")
EOF
if ! $PY "$T/gen.py" "$REPO" "$T" "$FMNIST" >"$T/gen.log" 2>&1; then
  cat "$T/gen.log" >&2
  failed=$((failed + 1))
  echo "FAIL: generating fixtures" >&2
  summary
fi

# ---------------------------------------------------------------------------------------------
# 1. help, unknown commands and options
# ---------------------------------------------------------------------------------------------
section "1. help, unknown commands and options"
for h in --help -h help; do
  expect_ok "convnet $h" -- "$BIN" "$h" && check "convnet $h prints usage on stdout" grep -q '^usage: convnet' "$T/out"
done
expect_ok "convnet --version" -- "$BIN" --version
for c in train eval info forward bench prune predict; do
  if expect_ok "convnet $c --help" -- "$BIN" "$c" --help; then
    check "convnet $c --help prints usage on stdout" grep -q "^usage: convnet $c" "$T/out"
  fi
done
expect_fail "no command" 2 "usage: convnet" -- "$BIN"
expect_fail "unknown command" 2 "unknown command 'frobnicate'" -- "$BIN" frobnicate
for c in train eval info forward bench prune predict; do
  expect_fail "$c: unknown option" 2 "unknown option '--frobnicate'" -- "$BIN" "$c" --frobnicate
done

# ---------------------------------------------------------------------------------------------
# 2. info: parameters and MACs of every architecture
# ---------------------------------------------------------------------------------------------
section "2. info: parameters and MACs of every architecture"
expect_ok "info --list" -- "$BIN" info --list
check "info --list names all ten models" $PY -c '
import sys
names = {s.strip() for s in open(sys.argv[1]).read().split(",")}
want = {"resnet18","resnet34","resnet50","resnet101","resnet152","resnet20","resnet32","resnet44","resnet56","resnet110"}
sys.exit(None if want <= names else "missing %s" % (want - names))' "$T/out"
declare -A PARAMS=([resnet18]=11689512 [resnet34]=21797672 [resnet50]=25557032 [resnet101]=44549160
                   [resnet152]=60192808)
for m in resnet18 resnet34 resnet50 resnet101 resnet152; do
  if expect_ok "info --model $m --json" -- "$BIN" info --model "$m" --json; then
    check "info $m: params ${PARAMS[$m]}, 3 channels, 1000 classes, 224x224" json_check \
      "d['model'] == '$m' and d['params'] == ${PARAMS[$m]} and d['in_channels'] == 3 and d['num_classes'] == 1000 and (d['input_h'], d['input_w']) == (224, 224) and sum(l['params'] for l in d['layers']) == d['params'] and sum(l['macs'] for l in d['layers']) == d['macs']" "$T/out"
    case $m in
      resnet18) check "info resnet18: 1814073344 MACs at 224" json_check "d['macs'] == 1814073344" "$T/out" ;;
      resnet50) check "info resnet50: 4089184256 MACs at 224" json_check "d['macs'] == 4089184256" "$T/out" ;;
    esac
  fi
done
# CIFAR ResNets (6n+2): 16/32/64 channels; params for 3 channels and 10 classes by formula,
# checked against the torch reference implementation.
$PY - "$REPO" >"$T/cifar_params" 2>&1 <<'EOF'
import sys
sys.path.insert(0, sys.argv[1] + "/tests/parity")
from cifar_resnet import cifar_resnet
for d in (20, 32, 44, 56, 110):
    for c, k in ((3, 10), (1, 10)):
        print(d, c, k, sum(p.numel() for p in cifar_resnet(d, c, k).parameters()))
EOF
for m in resnet20 resnet32 resnet44 resnet56 resnet110; do
  d=${m#resnet}
  for ck in "3 10" "1 10"; do
    read -r c k <<<"$ck"
    want=$(awk -v d="$d" -v c="$c" -v k="$k" '$1 == d && $2 == c && $3 == k {print $4}' "$T/cifar_params")
    if expect_ok "info --model $m --in-channels $c --num-classes $k --json" -- \
        "$BIN" info --model "$m" --in-channels "$c" --num-classes "$k" --json; then
      check "info $m ($c ch, $k classes): params == torch's ${want:-?}" json_check \
        "d['params'] == ${want:-0} and d['in_channels'] == $c and d['num_classes'] == $k and (d['input_h'], d['input_w']) == (32, 32)" "$T/out"
    fi
  done
done
if expect_ok "info --model resnet20 (defaults)" -- "$BIN" info --model resnet20 --json; then
  check "info resnet20 defaults: 3 channels, 10 classes, 32x32" json_check \
    "d['in_channels'] == 3 and d['num_classes'] == 10 and (d['input_h'], d['input_w']) == (32, 32)" "$T/out"
fi
if expect_ok "info resnet20 --in-channels 1 --num-classes 10 --json" -- \
    "$BIN" info --model resnet20 --in-channels 1 --num-classes 10 --json; then
  check "info resnet20 (1 ch, 10 classes): 269434 params" json_check "d['params'] == 269434" "$T/out"
fi
if expect_ok "info resnet18 --input-size 96x128" -- "$BIN" info --model resnet18 --input-size 96x128 --json; then
  check "info resnet18 96x128: H, W kept apart through the net" json_check \
    "d['macs'] == $(cat "$T/macs_resnet18_96x128") and (d['input_h'], d['input_w']) == (96, 128) and [l for l in d['layers'] if l['name'] == 'conv1'][0]['shape'] == [64, 48, 64] and [l for l in d['layers'] if l['name'] == 'layer4.1.conv2'][0]['shape'] == [512, 3, 4] and d['layers'][-1]['shape'][0] == 1000 and d['params'] == 11689512" "$T/out"
fi
expect_ok "info resnet18 (text table)" -- "$BIN" info --model resnet18 &&
  check "info text output has the totals" grep -q '^total: 11689512 parameters' "$T/out"
# Every padded conv/pool of these nets keeps a 1x1 map at 1x1 (as in PyTorch), so no input
# size in range is too small; sizes outside [1, 8192] are usage errors.
if expect_ok "info resnet50 --input-size 1" -- "$BIN" info --model resnet50 --input-size 1 --json; then
  check "info resnet50 1x1: every layer at least 1x1" json_check \
    "all(l['shape'][1] >= 1 and l['shape'][2] >= 1 for l in d['layers'])" "$T/out"
fi
expect_fail "info --input-size 0" 2 "--input-size '0'" -- "$BIN" info --model resnet50 --input-size 0
expect_fail "info --input-size 0x5" 2 "--input-size '0x5'" -- "$BIN" info --model resnet18 --input-size 0x5
expect_fail "info --input-size 5x" 2 "--input-size '5x'" -- "$BIN" info --model resnet18 --input-size 5x
expect_fail "info --input-size 8193" 2 "--input-size '8193'" -- "$BIN" info --model resnet18 --input-size 8193
expect_fail "info --input-size -3x5" 2 "--input-size '-3x5'" -- "$BIN" info --model resnet18 --input-size -3x5
expect_fail "info without a model" 2 "--model" -- "$BIN" info
expect_fail "info MODEL --num-classes" 2 "--num-classes" -- "$BIN" info "$T/r20.safetensors" --num-classes 5

# ---------------------------------------------------------------------------------------------
# 3. bad arguments
# ---------------------------------------------------------------------------------------------
section "3. bad arguments"
KNOWN="resnet18, resnet34, resnet50, resnet101, resnet152, resnet20, resnet32, resnet44, resnet56, resnet110"
expect_fail "info: unknown model lists the known ones" 2 "unknown model 'resnet99'" "$KNOWN" -- \
  "$BIN" info --model resnet99
expect_fail "bench: unknown model" 2 "unknown model 'vgg16'" "$KNOWN" -- "$BIN" bench --model vgg16
expect_fail "train: unknown model" 2 "unknown model 'resnet99'" "resnet20" -- \
  "$BIN" train --model resnet99 --out "$T/o_badmodel" --limit-train 32 --limit-test 32 --epochs 1 --threads 2
TR=("$BIN" train --out "$T/o_args" --limit-train 32 --limit-test 32 --threads 2)
expect_fail "train --epochs 0" 2 "--epochs '0'" -- "${TR[@]}" --epochs 0
expect_fail "train --epochs abc" 2 "--epochs 'abc'" -- "${TR[@]}" --epochs abc
expect_fail "train --epochs 3x" 2 "--epochs '3x'" -- "${TR[@]}" --epochs 3x
expect_fail "train --epochs 99999999999" 2 "--epochs '99999999999'" -- "${TR[@]}" --epochs 99999999999
expect_fail "train --batch -1" 2 "--batch '-1'" -- "${TR[@]}" --batch -1
expect_fail "train --batch 0" 2 "--batch '0'" -- "${TR[@]}" --batch 0
expect_fail "train --lr -1" 2 "--lr '-1'" -- "${TR[@]}" --lr -1
expect_fail "train --lr 0" 2 "--lr '0'" -- "${TR[@]}" --lr 0
expect_fail "train --lr nan" 2 "--lr 'nan'" -- "${TR[@]}" --lr nan
expect_fail "train --lr inf" 2 "--lr 'inf'" -- "${TR[@]}" --lr inf
expect_fail "train --label-smoothing 1.5" 2 "--label-smoothing '1.5'" -- "${TR[@]}" --label-smoothing 1.5
expect_fail "train --momentum 1" 2 "--momentum '1'" -- "${TR[@]}" --momentum 1
expect_fail "train --weight-decay -0.1" 2 "--weight-decay '-0.1'" -- "${TR[@]}" --weight-decay -0.1
expect_fail "train --optimizer foo" 2 "--optimizer 'foo'" -- "${TR[@]}" --optimizer foo
expect_fail "train --schedule foo" 2 "--schedule 'foo'" -- "${TR[@]}" --schedule foo
expect_fail "train --threads 0" 2 "--threads '0'" -- "${TR[@]}" --threads 0
expect_fail "train --seed -1" 2 "--seed '-1'" -- "${TR[@]}" --seed -1
# strtoull skips leading blanks and wraps negatives: " -1" must not become 2^64-1.
# (--data nosuch stops the run before training.)
expect_fail "train --seed ' -1'" 2 "--seed ' -1'" -- "${TR[@]}" --seed " -1" --data nosuch
expect_fail "train --crop-pad 65" 2 "--crop-pad '65'" -- "${TR[@]}" --crop-pad 65
expect_fail "train --warmup > epochs" 2 "--warmup" -- "${TR[@]}" --epochs 1 --warmup 5
expect_fail "train --data foo" 2 "--data 'foo'" "fashion-mnist" -- "${TR[@]}" --data foo
expect_fail "train --data mnist (no dir)" 2 "mnist:DIR" -- "${TR[@]}" --data mnist
expect_fail "train --data fashion-mnist:/nonexistent" 1 "/nonexistent" -- "${TR[@]}" --data fashion-mnist:/nonexistent/fm
for opt in --epochs --batch --lr --model --data --out --resume --optimizer --seed --threads; do
  expect_fail "train $opt without a value" 2 "$opt needs a value" -- "$BIN" train "$opt"
done
expect_fail "info --input-size without a value" 2 "--input-size needs a value" -- "$BIN" info --model resnet18 --input-size
expect_fail "eval --data without a value" 2 "--data needs a value" -- "$BIN" eval "$T/r20.safetensors" --data
expect_fail "forward --output without a value" 2 "--output needs a value" -- "$BIN" forward "$T/r20.safetensors" --input "$T/in.safetensors" --output
expect_fail "bench --runs without a value" 2 "--runs needs a value" -- "$BIN" bench --model resnet20 --runs
expect_fail "bench --runs 0" 2 "--runs '0'" -- "$BIN" bench --model resnet20 --runs 0
expect_fail "bench --batch 0" 2 "--batch '0'" -- "$BIN" bench --model resnet20 --batch 0
expect_fail "eval --threads 0" 2 "--threads '0'" -- "$BIN" eval "$T/r20.safetensors" --threads 0
expect_fail "eval --split foo" 2 "--split 'foo'" -- "$BIN" eval "$T/r20.safetensors" --split foo
expect_fail "eval --limit 0" 2 "--limit '0'" -- "$BIN" eval "$T/r20.safetensors" --limit 0
expect_fail "eval --data foo" 2 "--data 'foo'" -- "$BIN" eval "$T/r20.safetensors" --data foo --limit 8
expect_fail "eval --data fashion-mnist:/nonexistent" 1 "/nonexistent/fm" -- \
  "$BIN" eval "$T/r20.safetensors" --data fashion-mnist:/nonexistent/fm --limit 8
expect_fail "forward without --input/--output" 2 "--input and --output" -- "$BIN" forward "$T/r20.safetensors"
expect_fail "two model files" 2 "unknown option '$T/r20_plain.safetensors'" -- \
  "$BIN" info "$T/r20.safetensors" "$T/r20_plain.safetensors"
expect_fail "model file of another architecture than --model" 2 "resnet20" "resnet32" -- \
  "$BIN" info "$T/r20.safetensors" --model resnet32

# ---------------------------------------------------------------------------------------------
# 4. bad model files, for every command that opens one
# ---------------------------------------------------------------------------------------------
section "4. bad model files, for every command that opens one"
# cmd_line CMD FILE: sets CMD to the command line of CMD on model FILE, with cheap options
cmd_line() {
  case $1 in
    eval) CMD=("$BIN" eval "$2" --limit 8 --threads 2) ;;
    info) CMD=("$BIN" info "$2") ;;
    forward) CMD=("$BIN" forward "$2" --input "$T/in.safetensors" --output "$T/fwd_bad_out.safetensors" --threads 2) ;;
    bench) CMD=("$BIN" bench "$2" --runs 1 --warmup 0 --threads 2) ;;
    prune) CMD=("$BIN" prune "$2" --out "$T/prune_bad_out.safetensors" --amount 0.5 --bench-runs 1 --threads 2) ;;
  esac
}
BADFILES=(
  "nonexistent|1|$T/nonexistent.safetensors|cannot open"
  "zero-byte file|1|$T/empty.safetensors|"
  "5-byte file|1|$T/short.safetensors|"
  "truncated file|1|$T/truncated.safetensors|"
  "header length > file|1|$T/hdrlen.safetensors|"
  "header length 2^62|1|$T/hdrlen_huge.safetensors|"
  "header not JSON|1|$T/notjson.safetensors|"
  "data_offsets out of range|1|$T/offsets.safetensors|fc.weight"
  "overlapping data_offsets|1|$T/overlap.safetensors|overlap"
  "negative dimension|1|$T/negshape.safetensors|fc.bias"
  "unknown dtype|1|$T/baddtype.safetensors|F99"
  "conv1.weight of the wrong shape|1|$T/wrongshape.safetensors|conv1.weight"
  "missing tensor|1|$T/missing.safetensors|layer2.1.bn2.running_var"
  "unexpected tensor|1|$T/extra.safetensors|head.extra.weight"
  "int32 weights|1|$T/intweight.safetensors|fc.weight"
  "a directory|1|$T/data_empty|"
  "plain state_dict without --model|2|$T/r20_plain.safetensors|--model"
)
for cmd in eval info forward bench prune; do
  for spec in "${BADFILES[@]}"; do
    IFS='|' read -r what code file sub <<<"$spec"
    cmd_line "$cmd" "$file"
    if [[ -n $sub ]]; then
      expect_fail "$cmd: $what" "$code" "$file" "$sub" -- "${CMD[@]}"
    else
      expect_fail "$cmd: $what" "$code" "$file" -- "${CMD[@]}"
    fi
  done
done
# a file whose metadata names an unknown architecture is a bad file (exit 1), not a usage error
expect_fail "info: unknown architecture in the file's metadata (exit 1)" 1 "$T/badarch.safetensors" "resnet999" -- \
  "$BIN" info "$T/badarch.safetensors"
check "forward: no output file after model load failures" test ! -e "$T/fwd_bad_out.safetensors"
check "prune: no output file after model load failures" test ! -e "$T/prune_bad_out.safetensors"

# the good fixtures load
expect_ok "info of a PyTorch-written resnet20" -- "$BIN" info "$T/r20.safetensors" --json &&
  check "info of the PyTorch resnet20: 269434 params" json_check "d['params'] == 269434 and d['model'] == 'resnet20'" "$T/out"
expect_ok "info of a plain resnet20 state_dict with --model" -- "$BIN" info "$T/r20_plain.safetensors" --model resnet20 --json &&
  check "plain resnet20 state_dict: 1 channel, 10 classes from its shapes" json_check \
    "d['in_channels'] == 1 and d['num_classes'] == 10 and d['params'] == 269434" "$T/out"
expect_fail "plain resnet20 state_dict as a resnet32" 1 "$T/r20_plain.safetensors" -- \
  "$BIN" info "$T/r20_plain.safetensors" --model resnet32
if expect_ok "info of a torchvision resnet18 state_dict with --model resnet18" -- \
    "$BIN" info "$T/tv_resnet18.safetensors" --model resnet18 --json; then
  check "torchvision resnet18: 11689512 params, 3 ch, 1000 classes" json_check \
    "d['params'] == 11689512 and d['in_channels'] == 3 and d['num_classes'] == 1000" "$T/out"
fi
expect_fail "torchvision resnet18 state_dict without --model" 2 "$T/tv_resnet18.safetensors" "--model" -- \
  "$BIN" info "$T/tv_resnet18.safetensors"
# logits of the torchvision model agree with PyTorch's
compare_logits() { # convnet OUT, reference, relative tolerance
  $PY - "$REPO" "$1" "$2" "$3" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1] + "/tests/parity")
import numpy as np, st
got, want = st.load(sys.argv[2])[0]["logits"], st.load(sys.argv[3])[0]["logits"]
if got.shape != want.shape:
    sys.exit(f"shape {got.shape} != {want.shape}")
if not np.all(np.isfinite(got)):
    sys.exit("non-finite logits")
err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-6)
if err > float(sys.argv[4]):
    sys.exit(f"max relative error {err:.3e} > {sys.argv[4]}")
EOF
}
if expect_ok "forward of the torchvision resnet18 state_dict" -- "$BIN" forward "$T/tv_resnet18.safetensors" \
    --model resnet18 --input "$T/tv_in.safetensors" --output "$T/tv_out.safetensors" --threads 2; then
  check "torchvision resnet18: convnet logits == PyTorch logits" compare_logits "$T/tv_out.safetensors" "$T/tv_ref_logits.safetensors" 1e-4
fi

# ---------------------------------------------------------------------------------------------
# 5. bad IDX data
# ---------------------------------------------------------------------------------------------
section "5. bad IDX data"
EV=("$BIN" eval "$T/r20.safetensors" --limit 16 --threads 2 --data)
expect_ok "eval on an uncompressed copy of the test split" -- "${EV[@]}" "fashion-mnist:$T/data_ok"
expect_fail "IDX: wrong magic" 1 "$T/data_magic/t10k-images-idx3-ubyte" "magic" -- "${EV[@]}" "fashion-mnist:$T/data_magic"
expect_fail "IDX: truncated images" 1 "$T/data_trunc/t10k-images-idx3-ubyte" "truncated" -- "${EV[@]}" "fashion-mnist:$T/data_trunc"
expect_fail "IDX: truncated gzip images" 1 "$T/data_truncgz/t10k-images-idx3-ubyte.gz" -- "${EV[@]}" "fashion-mnist:$T/data_truncgz"
expect_fail "IDX: 9999 labels for 10000 images" 1 "$T/data_count/t10k-labels-idx1-ubyte" "9999" "10000" -- "${EV[@]}" "fashion-mnist:$T/data_count"
expect_fail "IDX: label value 10" 1 "$T/data_label/t10k-labels-idx1-ubyte" "is 10" -- "${EV[@]}" "fashion-mnist:$T/data_label"
expect_fail "IDX: trailing bytes" 1 "$T/data_trailing/t10k-images-idx3-ubyte" "trailing" -- "${EV[@]}" "fashion-mnist:$T/data_trailing"
expect_fail "IDX: empty directory" 1 "$T/data_empty" "t10k-images-idx3-ubyte" -- "${EV[@]}" "fashion-mnist:$T/data_empty"
expect_fail "train on a corrupted test split" 1 "$T/data_label/t10k-labels-idx1-ubyte" -- \
  "$BIN" train --data "fashion-mnist:$T/data_label" --out "$T/o_badidx" --limit-train 32 --limit-test 32 --epochs 1 --threads 2
check "train on corrupted data wrote no model" test ! -e "$T/o_badidx/model.safetensors"

# ---------------------------------------------------------------------------------------------
# 6. forward
# ---------------------------------------------------------------------------------------------
section "6. forward"
if expect_ok "forward round trip (2x1x28x28) --json" -- "$BIN" forward "$T/r20.safetensors" \
    --input "$T/in.safetensors" --output "$T/out_logits.safetensors" --json --threads 2; then
  cp "$T/out" "$T/fwd.json"
  check "forward --json summary" json_check "d['batch'] == 2 and d['classes'] == 10 and d['model'] == 'resnet20'" "$T/fwd.json"
  check "forward: logits (2, 10), finite, == PyTorch's" compare_logits "$T/out_logits.safetensors" "$T/r20_ref_logits.safetensors" 1e-4
fi
expect_ok "forward of a plain state_dict with --model" -- "$BIN" forward "$T/r20_plain.safetensors" --model resnet20 \
  --input "$T/in.safetensors" --output "$T/out_plain.safetensors" --threads 2 &&
  check "forward: plain state_dict gives the same logits" cmp -s "$T/out_plain.safetensors" "$T/out_logits.safetensors"
expect_ok "forward of a float64 input" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/in_f64.safetensors" --output "$T/out_f64.safetensors" --threads 2 &&
  check "forward: float64 input gives the float32 logits" compare_logits "$T/out_f64.safetensors" "$T/r20_ref_logits.safetensors" 1e-4
expect_fail "forward: int32 input" 1 "$T/in_i32.safetensors" "I32" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/in_i32.safetensors" --output "$T/o1.safetensors"
expect_fail "forward: input with N = 0" 1 "$T/in_empty.safetensors" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/in_empty.safetensors" --output "$T/o1.safetensors"
expect_fail "forward: no 'input' tensor" 1 "$T/in_noinput.safetensors" "'input'" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/in_noinput.safetensors" --output "$T/o1.safetensors"
expect_fail "forward: 3 channels into a 1-channel model" 1 "$T/in_3ch.safetensors" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/in_3ch.safetensors" --output "$T/o1.safetensors"
expect_fail "forward: 3-d input" 1 "$T/in_3d.safetensors" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/in_3d.safetensors" --output "$T/o1.safetensors"
expect_fail "forward: input file missing" 1 "$T/nope.safetensors" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/nope.safetensors" --output "$T/o1.safetensors"
expect_fail "forward: input file corrupt" 1 "$T/truncated.safetensors" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/truncated.safetensors" --output "$T/o1.safetensors"
check "forward: failures wrote no output" test ! -e "$T/o1.safetensors"
expect_fail "forward: output into a nonexistent directory" 1 "$T/no/such/dir/o.safetensors" -- \
  "$BIN" forward "$T/r20.safetensors" --input "$T/in.safetensors" --output "$T/no/such/dir/o.safetensors"
check "forward: nothing created for a nonexistent directory" test ! -e "$T/no"
mkdir -p "$T/fo/target.safetensors"
expect_fail "forward: output path is a directory" 1 "$T/fo/target.safetensors" -- \
  "$BIN" forward "$T/r20.safetensors" --input "$T/in.safetensors" --output "$T/fo/target.safetensors"
check "forward: no temporary file left after a failed write" \
  test "$(find "$T/fo" -mindepth 1 | wc -l)" -eq 1
cp "$T/out_logits.safetensors" "$T/keep.safetensors"
sum_before=$(sha "$T/keep.safetensors")
expect_fail "forward: failing run with an existing output" 1 "$T/in_3ch.safetensors" -- "$BIN" forward "$T/r20.safetensors" \
  --input "$T/in_3ch.safetensors" --output "$T/keep.safetensors"
check "forward: existing output untouched by a failing run" test "$(sha "$T/keep.safetensors")" = "$sum_before"
expect_ok "bench of a model file --json" -- "$BIN" bench "$T/r20.safetensors" --runs 2 --warmup 1 --batch 2 --threads 2 --json &&
  check "bench --json summary" json_check "d['batch'] == 2 and d['runs'] == 2 and d['median_ms'] > 0 and d['mode'] == 'inference'" "$T/out"
expect_ok "bench --train --model resnet20" -- "$BIN" bench --model resnet20 --in-channels 1 --num-classes 10 \
  --train --runs 1 --warmup 0 --batch 2 --threads 2 --json &&
  check "bench --train --json summary" json_check "d['mode'] == 'train' and d['img_per_s'] > 0" "$T/out"

# ---------------------------------------------------------------------------------------------
# 7. training, eval of its model, exact resume
# ---------------------------------------------------------------------------------------------
section "7. training, eval of its model, exact resume"
A=$T/runA B=$T/runB
if expect_ok "train run A (2 epochs) --json" -- "$BIN" train "${TRAIN_ARGS[@]}" --out "$A" --json; then
  cp "$T/out" "$T/trainA.json"
  check "train A: JSON summary" json_check "d['epochs'] == 2 and d['params'] == 269434 and 0 <= d['test_acc'] <= 1 and d['train_loss'] > 0" "$T/trainA.json"
fi
check "train A: model, checkpoint and metrics written" test -s "$A/model.safetensors" -a -s "$A/checkpoint.safetensors" -a -s "$A/metrics.csv"
check "train A: metrics.csv has a header and one row per epoch" $PY -c '
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
assert rows[0] == ["epoch","lr","train_loss","train_acc","test_loss","test_acc","seconds","img_per_s"], rows[0]
assert [r[0] for r in rows[1:]] == ["1", "2"], rows
assert all(len(r) == 8 for r in rows), rows' "$A/metrics.csv"
check "train A: final metrics row == JSON summary" $PY -c '
import csv, json, sys
row = list(csv.DictReader(open(sys.argv[1])))[-1]
d = json.load(open(sys.argv[2]))
for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
    assert abs(float(row[k]) - d[k]) <= 1e-6 * max(1, abs(d[k])), (k, row[k], d[k])' "$A/metrics.csv" "$T/trainA.json"
if expect_ok "eval of A's model (same test limit)" -- "$BIN" eval "$A/model.safetensors" --limit "$LE" --threads 2 --json; then
  cp "$T/out" "$T/evalA.json"
  check "eval accuracy == train's final test_acc" $PY -c '
import json, sys
e, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert e["samples"] == int(sys.argv[3]), e
assert e["accuracy"] == t["test_acc"], (e["accuracy"], t["test_acc"])
assert abs(e["loss"] - t["test_loss"]) <= 1e-5 * max(1, abs(t["test_loss"])), (e["loss"], t["test_loss"])' \
    "$T/evalA.json" "$T/trainA.json" "$LE"
fi
expect_ok "eval text output" -- "$BIN" eval "$A/model.safetensors" --limit 16 --threads 2 &&
  check "eval text output names the accuracy" grep -q "accuracy" "$T/out"
expect_ok "train run B (--stop-after 1)" -- "$BIN" train "${TRAIN_ARGS[@]}" --out "$B" --stop-after 1
check "train B: stopped after epoch 1 (no model yet, one metrics row)" $PY -c '
import os, sys
assert not os.path.exists(sys.argv[1] + "/model.safetensors")
assert os.path.exists(sys.argv[1] + "/checkpoint.safetensors")
assert len(open(sys.argv[1] + "/metrics.csv").read().splitlines()) == 2' "$B"
check "train B: tells how to resume" grep -qF -- "--resume $B" "$T/out"
expect_ok "train --resume B" -- "$BIN" train --resume "$B" --threads 2 --json
check "exact resume: model.safetensors of A and resumed B are byte-identical" cmp "$A/model.safetensors" "$B/model.safetensors"
check "exact resume: checkpoints are byte-identical" cmp "$A/checkpoint.safetensors" "$B/checkpoint.safetensors"
check "exact resume: metrics.csv loss/accuracy columns agree" $PY -c '
import csv, sys
a = [r[:6] for r in csv.reader(open(sys.argv[1]))]
b = [r[:6] for r in csv.reader(open(sys.argv[2]))]
assert a == b, (a, b)' "$A/metrics.csv" "$B/metrics.csv"
# resuming a finished run: nothing to do, the model stays the same
cp "$A/model.safetensors" "$T/A_model_copy"
expect_ok "train --resume of a finished run" -- "$BIN" train --resume "$A" --threads 2 --json &&
  check "resume of a finished run reports its accuracy" json_check "d['test_acc'] == $(cat "$T/trainA.json" | $PY -c 'import json,sys; print(repr(json.load(sys.stdin)["test_acc"]))')" "$T/out"
check "resume of a finished run leaves the model unchanged" cmp "$A/model.safetensors" "$T/A_model_copy"
mkdir -p "$T/nockpt"
expect_fail "resume of a directory without a checkpoint" 1 "$T/nockpt" "checkpoint.safetensors" -- \
  "$BIN" train --resume "$T/nockpt" --threads 2
mkdir -p "$T/badckpt"
if [[ -f $A/checkpoint.safetensors ]]; then
  head -c 100000 "$A/checkpoint.safetensors" >"$T/badckpt/checkpoint.safetensors"
  s=$(sha "$T/badckpt/checkpoint.safetensors")
  expect_fail "resume of a truncated checkpoint" 1 "$T/badckpt/checkpoint.safetensors" -- \
    "$BIN" train --resume "$T/badckpt" --threads 2
  check "truncated checkpoint left untouched" test "$(sha "$T/badckpt/checkpoint.safetensors")" = "$s"
  check "no model written by a failed resume" test ! -e "$T/badckpt/model.safetensors"
fi
mkdir -p "$T/modelckpt"
cp "$T/r20.safetensors" "$T/modelckpt/checkpoint.safetensors"
s=$(sha "$T/modelckpt/checkpoint.safetensors")
expect_fail "resume of a model file posing as a checkpoint" 1 "$T/modelckpt/checkpoint.safetensors" "checkpoint" -- \
  "$BIN" train --resume "$T/modelckpt" --threads 2
check "non-checkpoint left untouched" test "$(sha "$T/modelckpt/checkpoint.safetensors")" = "$s"

# A checkpoint edited after the fact: drop tensors and/or change its training configuration.
edit_ckpt() { # SRC DST_DIR JSON_UPDATES [TENSOR_TO_DROP...]
  $PY - "$REPO" "$@" <<'EOF'
import json, os, sys
sys.path.insert(0, sys.argv[1] + "/tests/parity")
import st
src, dst, upd, drop = sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5:]
t, m = st.load(src)
for k in drop:
    del t[k]
c = json.loads(m["checkpoint"])
c.update(upd)
m["checkpoint"] = json.dumps(c)
os.makedirs(dst, exist_ok=True)
st.save(os.path.join(dst, "checkpoint.safetensors"), t, m)
EOF
}
if [[ -f $B/checkpoint.safetensors ]]; then
  edit_ckpt "$B/checkpoint.safetensors" "$T/ck_noopt" '{}' optim:state0
  s=$(sha "$T/ck_noopt/checkpoint.safetensors")
  # a resume that fails after the model was built must free it (LeakSanitizer watches)
  expect_fail "resume of a checkpoint without its optimizer state" 1 "$T/ck_noopt/checkpoint.safetensors" "optim:state0" -- \
    "$BIN" train --resume "$T/ck_noopt" --threads 2
  check "checkpoint without optimizer state left untouched" test "$(sha "$T/ck_noopt/checkpoint.safetensors")" = "$s"
  edit_ckpt "$B/checkpoint.safetensors" "$T/ck_batch0" '{"batch": 0}'
  # the checkpoint's own settings are validated, with a message naming the checkpoint
  expect_fail "resume of a checkpoint with batch 0" 1 "$T/ck_batch0/checkpoint.safetensors" -- \
    "$BIN" train --resume "$T/ck_batch0" --threads 2
  edit_ckpt "$B/checkpoint.safetensors" "$T/ck_epochs0" '{"epochs": 0, "epoch": 1}'
  expect_fail "resume of a checkpoint with epochs 0" 1 "$T/ck_epochs0/checkpoint.safetensors" -- \
    "$BIN" train --resume "$T/ck_epochs0" --threads 2
fi
expect_fail "resume of a nonexistent directory" 1 "$T/no_such_run" -- "$BIN" train --resume "$T/no_such_run" --threads 2
# a mistyped --resume DIR must not leave an empty DIR behind
check "failed resume does not create the directory" test ! -e "$T/no_such_run"

# ---------------------------------------------------------------------------------------------
# 8. atomic writes: a failing train run leaves an existing model alone
# ---------------------------------------------------------------------------------------------
section "8. atomic writes: a failing train run leaves an existing model alone"
mkdir -p "$T/keepout"
cp "$T/r20.safetensors" "$T/keepout/model.safetensors"
s=$(sha "$T/keepout/model.safetensors")
expect_fail "train with bad --data into a used --out" 2 "--data 'nosuch'" -- \
  "$BIN" train "${TRAIN_ARGS[@]}" --data nosuch --out "$T/keepout"
expect_fail "train with a missing dataset dir into a used --out" 1 "/nonexistent/fm" -- \
  "$BIN" train "${TRAIN_ARGS[@]}" --data fashion-mnist:/nonexistent/fm --out "$T/keepout"
expect_fail "train with a bad --init into a used --out" 1 "$T/truncated.safetensors" -- \
  "$BIN" train "${TRAIN_ARGS[@]}" --init "$T/truncated.safetensors" --out "$T/keepout"
check "existing model.safetensors unchanged after failed runs" test "$(sha "$T/keepout/model.safetensors")" = "$s"
check "no temporary files left in --out" test "$(find "$T/keepout" -name '*.tmp*' | wc -l)" -eq 0
expect_fail "train --out under a regular file" 1 "$T/r20.safetensors" -- \
  "$BIN" train "${TRAIN_ARGS[@]}" --out "$T/r20.safetensors/sub"
# --init with a plain state_dict (as torchvision writes it): --model names the architecture
expect_ok "train --init a plain state_dict with --model" -- "$BIN" train "${TRAIN_ARGS[@]}" \
  --epochs 1 --init "$T/r20_plain.safetensors" --out "$T/initplain" &&
  check "train --init a plain state_dict: a model written" test -s "$T/initplain/model.safetensors"
expect_fail "train --init a plain state_dict without --model" 2 "$T/r20_plain.safetensors" "--model" -- \
  "$BIN" train --limit-train "$LT" --limit-test "$LE" --batch 32 --epochs 1 --threads 2 \
  --init "$T/r20_plain.safetensors" --out "$T/initplain2"
expect_fail "train --init a resnet20 file with --model resnet18" 2 "holds a resnet20" -- \
  "$BIN" train --model resnet18 --limit-train "$LT" --limit-test "$LE" --batch 32 --epochs 1 \
  --threads 2 --init "$T/r20.safetensors" --out "$T/initplain3"

# ---------------------------------------------------------------------------------------------
# 9. a convnet model loads in PyTorch and gives the same logits
# ---------------------------------------------------------------------------------------------
section "9. a convnet model loads in PyTorch and gives the same logits"
if [[ -f $REPO/tests/parity/check_torch_load.py && -f $A/model.safetensors ]]; then
  if expect_ok "forward of A's model for the PyTorch check" -- "$BIN" forward "$A/model.safetensors" \
      --input "$T/in.safetensors" --output "$T/A_logits.safetensors" --threads 2; then
    torch_check "convnet's trained model loads in PyTorch (check_torch_load.py)" "$A/model.safetensors" \
      "$T/in.safetensors" "$T/A_logits.safetensors"
  fi
else
  failed=$((failed + 1))
  echo "FAIL: PyTorch load check: no check_torch_load.py or no model from run A" >&2
fi

# ---------------------------------------------------------------------------------------------
# 10. EfficientNet: scaling options, stage table, training with dropout and drop path, exact
#     resume, PyTorch interoperability
# ---------------------------------------------------------------------------------------------
section "10. EfficientNet"
if expect_ok "info --model efficientnet --phi 2.5 --json" -- "$BIN" info --model efficientnet --phi 2.5 --json; then
  check "phi 2.5: multipliers, resolution and the stage table" json_check \
    "abs(d['width_mult'] - 1.1**2.5) < 1e-12 and abs(d['depth_mult'] - 1.2**2.5) < 1e-12 and d['input_h'] == round(224 * 1.15**2.5) and len(d['stages']) == 7 and [s['repeats'] for s in d['stages']] == [__import__('math').ceil(r * 1.2**2.5) for r in (1, 2, 2, 3, 3, 4, 1)] and sum(s['params'] for s in d['stages']) < d['params']" "$T/out"
fi
expect_ok "info efficientnet_b0 (text, stage table)" -- "$BIN" info --model efficientnet_b0 &&
  check "info text shows the stages" grep -q "^stages" "$T/out"
expect_ok "info --width-mult/--depth-mult/--resolution" -- "$BIN" info --model efficientnet --width-mult 0.5 --depth-mult 0.5 --resolution 96 --json &&
  check "explicit multipliers and resolution" json_check "d['input_h'] == 96 and d['stages'][1]['out_channels'] == 16 and d['stages'][5]['repeats'] == 2" "$T/out"
expect_fail "--phi on a ResNet" 2 "apply to EfficientNets" -- "$BIN" info --model resnet18 --phi 1
expect_fail "--phi on efficientnet_b3" 2 "compound scaling" -- "$BIN" info --model efficientnet_b3 --phi 1
expect_fail "--phi and --width-mult together" 2 "either phi" -- "$BIN" info --model efficientnet --phi 1 --width-mult 1.2
expect_fail "--dropout 1.5" 2 "--dropout '1.5'" -- "$BIN" info --model efficientnet_b0 --dropout 1.5
expect_fail "--phi nan" 2 "--phi 'nan'" -- "$BIN" info --model efficientnet --phi nan
expect_fail "--width-mult 0" 2 "--width-mult '0'" -- "$BIN" info --model efficientnet --width-mult 0
E=$T/effA EB=$T/effB
EFF_ARGS=(--model efficientnet --width-mult 0.5 --depth-mult 0.5 --dropout 0.3 --stochastic-depth 0.3
          --limit-train 64 --limit-test 32 --batch 16 --epochs 2 --threads 2 --seed 3)
if expect_ok "train a small EfficientNet (dropout, drop path)" -- "$BIN" train "${EFF_ARGS[@]}" --out "$E" --json; then
  check "EfficientNet run: JSON summary" json_check "d['epochs'] == 2 and d['train_loss'] > 0" "$T/out"
fi
expect_ok "train the same, stopped after epoch 1" -- "$BIN" train "${EFF_ARGS[@]}" --out "$EB" --stop-after 1
expect_ok "resume it" -- "$BIN" train --resume "$EB" --threads 2
check "EfficientNet exact resume (dropout and drop-path masks from seed and step)" cmp "$E/model.safetensors" "$EB/model.safetensors"
if expect_ok "eval of the EfficientNet" -- "$BIN" eval "$E/model.safetensors" --limit 32 --threads 2 --json; then
  check "eval JSON" json_check "d['samples'] == 32 and 0 <= d['accuracy'] <= 1" "$T/out"
fi
$PY - "$REPO" "$T/eff_in.safetensors" <<'EOF'
import sys, numpy as np
sys.path.insert(0, sys.argv[1] + "/tests/parity")
import st
st.save(sys.argv[2], {"input": np.random.default_rng(5).standard_normal((2, 1, 28, 28)).astype(np.float32)})
EOF
if expect_ok "forward of the EfficientNet" -- "$BIN" forward "$E/model.safetensors" \
    --input "$T/eff_in.safetensors" --output "$T/eff_logits.safetensors" --threads 2; then
  torch_check "the scaled EfficientNet loads in PyTorch with the same logits" "$E/model.safetensors" \
    "$T/eff_in.safetensors" "$T/eff_logits.safetensors"
fi
expect_fail "scaling options with a model file" 2 "describe a fresh model" -- \
  "$BIN" info "$E/model.safetensors" --phi 1

# ---------------------------------------------------------------------------------------------
# 11. prune: structured and magnitude pruning, the report, fine-tuning, sensitivity, gradual
#     pruning in train, bad options that leave the input alone
# ---------------------------------------------------------------------------------------------
section "11. prune"
PD=$T/prune
mkdir -p "$PD"
PIN=$PD/in.safetensors
if [[ -f $A/model.safetensors ]]; then
  cp "$A/model.safetensors" "$PIN"
else
  expect_ok "train a model to prune" -- "$BIN" train "${TRAIN_ARGS[@]}" --epochs 1 --out "$PD/run" &&
    cp "$PD/run/model.safetensors" "$PIN"
fi
PSUM=$(sha "$PIN")
PRUNE=("$BIN" prune "$PIN" --threads 2 --bench-runs 3)
expect_ok "info of the model to prune" -- "$BIN" info "$PIN" --json && cp "$T/out" "$PD/info_in.json"
if expect_ok "prune l2 --amount 0.5 --data --json" -- "${PRUNE[@]}" --out "$PD/l2.safetensors" --amount 0.5 \
    --data fashion-mnist --limit-test "$LE" --json; then
  cp "$T/out" "$PD/l2.json"
  check "prune --json: fewer params and MACs, a row per conv/linear layer, accuracies measured" json_check \
    "d['params_after'] < d['params_before'] == 269434 and d['macs_after'] < d['macs_before'] and len(d['layers']) == 20 and d['latency_ms_before'] > 0 and d['latency_ms_after'] > 0 and 0 <= d['acc_before'] <= 1 and 0 <= d['acc_after'] <= 1 and d['acc_finetuned'] is None and d['samples'] == $LE" "$PD/l2.json"
  check "prune --json: block-internal channels halved, residual stream and fc kept" json_check \
    "[(l['channels_before'], l['channels_after']) for l in d['layers'] if l['name'] in ('layer1.0.conv1', 'layer2.1.conv2', 'layer3.2.conv1', 'fc')] == [(16, 8), (32, 32), (64, 32), (10, 10)]" "$PD/l2.json"
  check "prune --json: the table went to stderr" grep -q "^total params" "$T/err"
fi
check "prune: OUT written" test -s "$PD/l2.safetensors"
check "prune: the CSV report (default path) has a row per layer and a TOTAL row" $PY -c '
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
d = json.load(open(sys.argv[2]))
assert len(rows) == 21 and rows[-1]["layer"] == "TOTAL", [r["layer"] for r in rows]
assert int(rows[-1]["params_after"]) == d["params_after"] and int(rows[-1]["macs_before"]) == d["macs_before"], rows[-1]
assert [r["layer"] for r in rows[:-1]] == [l["name"] for l in d["layers"]]' "$PD/l2.prune.csv" "$PD/l2.json"
if expect_ok "info of the pruned model" -- "$BIN" info "$PD/l2.safetensors" --json; then
  check "info: the pruned model has fewer params (== prune's params_after)" $PY -c '
import json, sys
a, b, p = (json.load(open(f)) for f in sys.argv[1:4])
assert b["params"] < a["params"] and b["params"] == p["params_after"], (a["params"], b["params"], p["params_after"])' \
    "$PD/info_in.json" "$T/out" "$PD/l2.json"
fi
expect_ok "eval of the pruned model" -- "$BIN" eval "$PD/l2.safetensors" --limit 16 --threads 2
if expect_ok "forward of the pruned model" -- "$BIN" forward "$PD/l2.safetensors" --input "$T/in.safetensors" \
    --output "$PD/l2_logits.safetensors" --threads 2; then
  # the pruned model is a real, smaller network: torchvision's forward with the file's widths
  # loads it with load_state_dict(strict=True) and gives convnet's logits
  torch_check "the pruned model loads in PyTorch and gives the same logits" "$PD/l2.safetensors" \
    "$T/in.safetensors" "$PD/l2_logits.safetensors"
fi
# an EfficientNet pruned (expand, depthwise, SE, stem and head channels) is a real network too
if [[ -f $E/model.safetensors ]] &&
   expect_ok "prune the EfficientNet (l2 0.3)" -- "$BIN" prune "$E/model.safetensors" --amount 0.3 \
     --out "$PD/eff.safetensors" --bench-runs 1 --threads 2 &&
   expect_ok "forward of the pruned EfficientNet" -- "$BIN" forward "$PD/eff.safetensors" \
     --input "$T/eff_in.safetensors" --output "$PD/eff_logits.safetensors" --threads 2; then
  torch_check "the pruned EfficientNet loads in PyTorch and gives the same logits" "$PD/eff.safetensors" \
    "$T/eff_in.safetensors" "$PD/eff_logits.safetensors"
fi
expect_ok "bench of the pruned model" -- "$BIN" bench "$PD/l2.safetensors" --runs 2 --warmup 1 --threads 2
if expect_ok "prune (text table) l1 global --round-to 4 --report PATH" -- "${PRUNE[@]}" --out "$PD/l1.safetensors" \
    --method l1 --amount 0.25 --scope global --round-to 4 --report "$PD/l1.csv"; then
  check "prune text output: table and totals on stdout" grep -q "^total MACs" "$T/out"
  check "prune --report PATH written" test -s "$PD/l1.csv"
fi
if expect_ok "prune --method magnitude --amount 0.8 --json" -- "${PRUNE[@]}" --out "$PD/mag.safetensors" \
    --method magnitude --amount 0.8 --json; then
  # floor(0.8 n) weights of each layer are zeroed: a hair under 0.8 overall
  check "magnitude: reported sparsity >= 0.8 (floor per layer), shapes kept" json_check \
    "d['sparsity'] >= 0.7995 and d['params_after'] == d['params_before'] and d['macs_after'] == d['macs_before']" "$T/out"
  check "magnitude: zero fraction of the conv weights in the file >= 0.8" $PY -c '
import sys
sys.path.insert(0, sys.argv[1] + "/tests/parity")
import st
t = st.load(sys.argv[2])[0]
w = [v for k, v in t.items() if k.endswith(".weight") and v.ndim == 4]
z = sum(int((v == 0).sum()) for v in w) / sum(v.size for v in w)
assert z >= 0.7995, z' "$REPO" "$PD/mag.safetensors"
fi
FT_ARGS=(--data fashion-mnist --finetune-epochs 1 --limit-train "$LT" --limit-test "$LE" --batch 32 --seed 3)
if expect_ok "prune --finetune-epochs 1 --json" -- "${PRUNE[@]}" --out "$PD/ft.safetensors" --amount 0.5 \
    "${FT_ARGS[@]}" --json; then
  check "fine-tuning: accuracy after fine-tuning reported" json_check \
    "0 <= d['acc_finetuned'] <= 1 and d['acc_after'] is not None and d['params_after'] < d['params_before']" "$T/out"
  check "fine-tuning: training progress on stderr" grep -q "epoch 1/1" "$T/err"
fi
check "fine-tuning: model, run directory, no temporary init file" \
  test -s "$PD/ft.safetensors" -a -s "$PD/ft.finetune/metrics.csv" -a ! -e "$PD/ft.prune-init.safetensors"
if expect_ok "prune --sensitivity --ratios 0.5 --json" -- "${PRUNE[@]}" --sensitivity --data fashion-mnist \
    --limit-test 200 --ratios 0.5 --report "$PD/sens.csv" --json; then
  check "sensitivity: a row per prunable group (9 in resnet20), one accuracy each" json_check \
    "len(d['layers']) == 9 and all(len(l['acc']) == 1 and 0 <= l['acc'][0] <= 1 for l in d['layers']) and d['ratios'] == [0.5] and d['samples'] == 200" "$T/out"
  check "sensitivity: a progress line per group on stderr" test "$(grep -c '^\[[0-9]/9\]' "$T/err")" -eq 9
  check "sensitivity: CSV with a row per group" test "$(grep -c 'conv1,' "$PD/sens.csv")" -eq 9
fi
# gradual pruning while training: structured l2 ends in the smaller model
if expect_ok "train --prune-method l2 --prune-to 0.5" -- "$BIN" train --model resnet20 --limit-train "$LT" \
    --limit-test "$LE" --batch 16 --epochs 1 --threads 2 --seed 7 --prune-method l2 --prune-to 0.5 \
    --prune-every 1 --out "$PD/gradual" --json; then
  check "train --prune-to 0.5: a smaller model, pruned fraction reported" json_check \
    "d['params'] < 269434 and 0.4 <= d['pruned_fraction'] <= 0.5" "$T/out"
fi
if expect_ok "info of the gradually pruned model" -- "$BIN" info "$PD/gradual/model.safetensors" --json; then
  check "the gradually pruned model file is smaller" json_check "d['params'] < 269434" "$T/out"
fi
TRP=("$BIN" train --model resnet20 --limit-train 32 --limit-test 32 --epochs 2 --threads 2 --out "$PD/tbad")
expect_fail "train --prune-to 1" 2 "--prune-to '1'" -- "${TRP[@]}" --prune-to 1
expect_fail "train --prune-end > epochs" 2 "--prune-end" -- "${TRP[@]}" --prune-to 0.5 --prune-end 3
expect_fail "train --prune-start > --prune-end" 2 "--prune-start" -- "${TRP[@]}" --prune-to 0.5 --prune-start 1.5 --prune-end 1
expect_fail "train --prune-method foo" 2 "--prune-method 'foo'" -- "${TRP[@]}" --prune-method foo --prune-to 0.5
expect_fail "train --prune-method without --prune-to" 2 "--prune-to" -- "${TRP[@]}" --prune-method l1
check "failed train --prune-* runs created nothing" test ! -e "$PD/tbad"
# bad options: a message naming the option, no output, the input untouched
BADP=$PD/bad.safetensors
expect_fail "prune --amount 1.0" 2 "--amount '1.0'" -- "${PRUNE[@]}" --out "$BADP" --amount 1.0
expect_fail "prune --amount -0.1" 2 "--amount '-0.1'" -- "${PRUNE[@]}" --out "$BADP" --amount -0.1
expect_fail "prune --threshold 5 (removes every channel of a layer)" 2 "--threshold 5" "every channel" -- \
  "${PRUNE[@]}" --out "$BADP" --threshold 5
expect_fail "prune magnitude --threshold 5 (zeroes every weight)" 2 "--threshold 5" -- \
  "${PRUNE[@]}" --out "$BADP" --method magnitude --threshold 5
expect_fail "prune --threshold -1" 2 "--threshold '-1'" -- "${PRUNE[@]}" --out "$BADP" --threshold -1
expect_fail "prune --method foo" 2 "--method 'foo'" -- "${PRUNE[@]}" --out "$BADP" --amount 0.5 --method foo
expect_fail "prune --scope foo" 2 "--scope 'foo'" -- "${PRUNE[@]}" --out "$BADP" --amount 0.5 --scope foo
expect_fail "prune --amount and --threshold" 2 "--threshold" -- "${PRUNE[@]}" --out "$BADP" --amount 0.5 --threshold 0.1
expect_fail "prune without --amount/--threshold" 2 "--amount" -- "${PRUNE[@]}" --out "$BADP"
expect_fail "prune without --out" 2 "--out" -- "${PRUNE[@]}" --amount 0.5
expect_fail "prune --finetune-epochs without --data" 2 "--finetune-epochs" -- "${PRUNE[@]}" --out "$BADP" \
  --amount 0.5 --finetune-epochs 1
expect_fail "prune --lr without --finetune-epochs" 2 "--lr" -- "${PRUNE[@]}" --out "$BADP" --amount 0.5 --lr 0.1
expect_fail "prune --out MODEL" 2 "--out $PIN" -- "${PRUNE[@]}" --out "$PIN" --amount 0.5
expect_fail "prune --report MODEL" 2 "--report $PIN" -- "${PRUNE[@]}" --out "$BADP" --amount 0.5 --report "$PIN"
expect_fail "prune --out in a missing directory" 1 "$PD/nodir" -- "${PRUNE[@]}" --out "$PD/nodir/x.safetensors" --amount 0.5
expect_fail "prune --sensitivity without --data" 2 "--data" -- "${PRUNE[@]}" --sensitivity
expect_fail "prune --sensitivity --ratios 1.5" 2 "--ratios '1.5'" -- "${PRUNE[@]}" --sensitivity --data fashion-mnist --ratios 1.5
expect_fail "prune --data nosuch" 2 "--data 'nosuch'" -- "${PRUNE[@]}" --out "$BADP" --amount 0.5 --data nosuch
expect_fail "prune of a missing MODEL file" 1 "$PD/nosuch.safetensors" -- \
  "$BIN" prune "$PD/nosuch.safetensors" --out "$BADP" --amount 0.5
cp "$T/truncated.safetensors" "$PD/corrupt.safetensors"
csum=$(sha "$PD/corrupt.safetensors")
expect_fail "prune of a corrupted MODEL file" 1 "$PD/corrupt.safetensors" -- \
  "$BIN" prune "$PD/corrupt.safetensors" --out "$BADP" --amount 0.5
check "prune: the corrupted MODEL file is untouched" test "$(sha "$PD/corrupt.safetensors")" = "$csum"
check "prune: the input model is untouched by every run" test "$(sha "$PIN")" = "$PSUM"
check "prune: failed runs wrote no model and no report" test ! -e "$BADP" -a ! -e "$PD/bad.prune.csv"
check "prune: no temporary files left" test "$(find "$PD" -name '*.tmp*' | wc -l)" -eq 0

# ---------------------------------------------------------------------------------------------
# 12. images: predict, image-folder and CIFAR datasets, bad image files
# ---------------------------------------------------------------------------------------------
section "12. images"
cat >"$T/genimg.py" <<'EOF'
import os, struct, sys, zlib
import numpy as np
import torch, torchvision
from PIL import Image
from torchvision.transforms._presets import ImageClassification

repo, out = sys.argv[1:3]
sys.path.insert(0, os.path.join(repo, "tests", "parity"))
import st

rng = np.random.default_rng(3)
P = lambda *n: os.path.join(out, *n)


def img(k, size=40):
    a = rng.normal(50 + 70 * k, 25, (size, size, 3))
    a[:, :, k] += 60
    return np.clip(a, 0, 255).astype(np.uint8)


# a tiny image folder: 3 classes with odd names, 8 training and 3 validation images each
classes = ["cat", "dog bowl", "\u00e9lan vital"]
for split, n in (("train", 8), ("val", 3)):
    for k, c in enumerate(classes):
        os.makedirs(P("imgs", split, c), exist_ok=True)
        for i in range(n):
            Image.fromarray(img(k)).save(P("imgs", split, c, f"{i}." + ("png" if i % 2 else "jpg")))
open(P("labels3.txt"), "w").write("".join(c + "\n" for c in classes))
open(P("labels2.txt"), "w").write("a\nb\n")

# a photo-like image and torchvision's softmax of the tv_resnet18 state_dict on it
y, x = np.mgrid[0:375, 0:500]
photo = np.stack([np.sin(x / 9) * 80 + 128, np.cos(y / 7) * 80 + 128, (x + y) % 256], -1).astype(np.uint8)
Image.fromarray(photo).save(P("photo.jpg"), quality=90)
Image.fromarray(photo[..., 0]).save(P("photo_gray.png"))
sd, _ = st.load(P("tv_resnet18.safetensors"))
m = torchvision.models.resnet18()
m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
m.eval()
with torch.no_grad():
    for name in ("photo.jpg", "photo_gray.png"):
        t = ImageClassification(crop_size=224)(Image.open(P(name)).convert("RGB"))
        prob = torch.softmax(m(t[None]), 1)[0].numpy()
        np.save(P(name + ".prob.npy"), prob)

# bad images
os.makedirs(P("bad"), exist_ok=True)
raw = open(P("photo.jpg"), "rb").read()
open(P("bad", "zero.jpg"), "wb").close()
open(P("bad", "trunc.jpg"), "wb").write(raw[: len(raw) // 2])
open(P("bad", "text.jpg"), "w").write("just some text\n")
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
open(P("bad", "huge.png"), "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                                       + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
# an image folder with one bad file, an empty folder
for split in ("train", "val"):
    for k, c in enumerate(classes[:2]):
        os.makedirs(P("imgs_bad", split, c), exist_ok=True)
        for i in range(4):
            Image.fromarray(img(k)).save(P("imgs_bad", split, c, f"{i}.png"))
open(P("imgs_bad", "train", "cat", "broken.jpg"), "wb").write(raw[: len(raw) // 3])
os.makedirs(P("imgs_empty"), exist_ok=True)

# CIFAR-10 binary files: 5 + 1 batches of 20 records (label, R plane, G plane, B plane)
os.makedirs(P("cifar"), exist_ok=True)
for name, seed in [(f"data_batch_{b}.bin", b) for b in range(1, 6)] + [("test_batch.bin", 9)]:
    r = np.random.default_rng(seed)
    labels = r.integers(0, 10, 20, dtype=np.uint8)
    pix = r.integers(0, 256, (20, 3072), dtype=np.uint8)
    open(P("cifar", name), "wb").write(np.concatenate([labels[:, None], pix], 1).tobytes())
print("image fixtures ok")
EOF
if ! $PY "$T/genimg.py" "$REPO" "$T" >"$T/genimg.log" 2>&1; then
  cat "$T/genimg.log" >&2
  failed=$((failed + 1))
  echo "FAIL: generating image fixtures" >&2
else
  IMG=$T/imgs
  # predict with a 1000-class torchvision state_dict: ImageNet names, torchvision's probabilities
  if expect_ok "predict: torchvision resnet18 on a JPEG and a gray PNG --json" -- "$BIN" predict \
      "$T/tv_resnet18.safetensors" --model resnet18 "$T/photo.jpg" "$T/photo_gray.png" --topk 5 --json --threads 2; then
    cp "$T/out" "$T/pred.json"
    check "predict --json == torchvision's preprocessing + softmax" $PY -c '
import json, sys, numpy as np
d = json.load(open(sys.argv[1]))
assert d["crop"] == 224 and d["resize"] == 256 and d["interpolation"] == "bilinear", d
assert len(d["images"]) == 2
for im in d["images"]:
    want = np.load(im["file"] + ".prob.npy")
    fifth = np.sort(want)[-5]
    assert len(im["top"]) == 5
    for t in im["top"]:
        assert abs(t["probability"] - want[t["index"]]) < 1e-4, (t, want[t["index"]])
        assert want[t["index"]] >= fifth - 1e-4
        assert t["label"], t
' "$T/pred.json"
  fi
  expect_ok "predict: text table" -- "$BIN" predict "$T/tv_resnet18.safetensors" --model resnet18 "$T/photo.jpg" --topk 3 --threads 2 &&
    check "predict table: ImageNet names, 3 rows" $PY -c '
import sys
lines = open(sys.argv[1]).read().splitlines()
rows = [l for l in lines if l.strip()[:1].isdigit()]
assert len(rows) == 3, lines
assert any(c.isalpha() for c in rows[0].split("%", 1)[1]), rows
' "$T/out"
  # image folder: train one epoch, eval, predict with labels
  if expect_ok "train 1 epoch on an image folder (odd class names)" -- "$BIN" train --model resnet20 \
      --data "folder:$IMG" --input-size 32 --epochs 1 --batch 8 --threads 2 --out "$T/imgrun" --json; then
    check "image-folder run: JSON summary" json_check "d['epochs'] == 1 and d['train_loss'] > 0" "$T/out"
  fi
  if expect_ok "eval on the image folder's val split" -- "$BIN" eval "$T/imgrun/model.safetensors" \
      --data "folder:$IMG" --input-size 32 --threads 2 --json; then
    check "eval of the folder: 9 samples" json_check "d['samples'] == 9 and 0 <= d['accuracy'] <= 1" "$T/out"
  fi
  expect_ok "predict with --labels" -- "$BIN" predict "$T/imgrun/model.safetensors" "$IMG/val/cat/0.jpg" \
      --labels "$T/labels3.txt" --crop 32 --topk 3 --json --threads 2 &&
    check "predict --labels: the class names" json_check \
      "sorted(t['label'] for t in d['images'][0]['top']) == sorted(['cat', 'dog bowl', '\u00e9lan vital']) and abs(sum(t['probability'] for t in d['images'][0]['top']) - 1) < 1e-5" "$T/out"
  expect_ok "predict: no labels -> indices" -- "$BIN" predict "$T/imgrun/model.safetensors" "$IMG/val/cat/0.jpg" --crop 32 --json &&
    check "predict: indices only" json_check "all('label' not in t for t in d['images'][0]['top'])" "$T/out"
  expect_fail "predict: --labels with too few names" 2 "labels2.txt" "3 classes" -- \
    "$BIN" predict "$T/imgrun/model.safetensors" "$IMG/val/cat/0.jpg" --labels "$T/labels2.txt"
  expect_fail "predict: --interpolation nearest" 2 "--interpolation 'nearest'" -- \
    "$BIN" predict "$T/imgrun/model.safetensors" "$IMG/val/cat/0.jpg" --interpolation nearest
  expect_fail "predict: no image" 2 "IMAGE" -- "$BIN" predict "$T/imgrun/model.safetensors"
  for f in zero.jpg trunc.jpg text.jpg huge.png missing.jpg; do
    expect_fail "predict: bad image $f" 1 "$T/bad/$f" -- "$BIN" predict "$T/imgrun/model.safetensors" \
      "$T/bad/$f" --crop 32
  done
  expect_fail "predict: a bad image among good ones still classifies the good" 1 "$T/bad/trunc.jpg" -- \
    "$BIN" predict "$T/imgrun/model.safetensors" "$IMG/val/cat/0.jpg" "$T/bad/trunc.jpg" --crop 32 --json
  check "predict: the good image's result is printed" json_check \
    "len(d['images']) == 2 and 'top' in d['images'][0] and 'error' in d['images'][1]" "$T/out"
  # bad datasets
  expect_fail "train: a truncated JPEG in the folder" 1 "$T/imgs_bad/train/cat/broken.jpg" "truncated" -- \
    "$BIN" train --model resnet20 --data "folder:$T/imgs_bad" --input-size 32 --epochs 1 --batch 4 --threads 2 --out "$T/badrun"
  check "train on a bad folder wrote no model" test ! -e "$T/badrun/model.safetensors"
  expect_ok "train: --skip-bad-images" -- "$BIN" train --model resnet20 --data "folder:$T/imgs_bad" \
    --input-size 32 --epochs 1 --batch 4 --threads 2 --out "$T/skiprun" --skip-bad-images &&
    check "--skip-bad-images warns naming the file" grep -qF "warning: skipping $T/imgs_bad/train/cat/broken.jpg" "$T/err"
  expect_fail "eval: an empty folder" 1 "$T/imgs_empty" "no class folders" -- \
    "$BIN" eval "$T/imgrun/model.safetensors" --data "folder:$T/imgs_empty"
  expect_fail "eval: folder:nonexistent" 1 "$T/nope" -- "$BIN" eval "$T/imgrun/model.safetensors" --data "folder:$T/nope"
  expect_fail "eval: unknown dataset kind" 2 "unknown dataset" -- "$BIN" eval "$T/imgrun/model.safetensors" --data "imagenet:$T"
  # CIFAR-10 binary
  if expect_ok "train 1 epoch on CIFAR-10 binary files" -- "$BIN" train --model resnet20 --data "cifar10:$T/cifar" \
      --epochs 1 --batch 20 --threads 2 --out "$T/cifarrun" --json; then
    check "CIFAR run: 100 training images" $PY -c '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0, rows
' "$T/cifarrun/metrics.csv"
  fi
  expect_ok "eval on CIFAR-10's test batch" -- "$BIN" eval "$T/cifarrun/model.safetensors" --data "cifar10:$T/cifar" --json &&
    check "CIFAR eval: 20 samples" json_check "d['samples'] == 20" "$T/out"
  expect_fail "cifar100 without its files" 1 "test.bin" "CIFAR-100" -- "$BIN" eval "$T/cifarrun/model.safetensors" --data "cifar100:$T/cifar"
fi


# ---------------------------------------------------------------------------------------------
# 13. quantize: fixed-point weights, the report, the integer file, the sweep, bad options
# ---------------------------------------------------------------------------------------------
section "13. quantize"
QD=$T/quant
mkdir -p "$QD"
QIN=$QD/in.safetensors
if [[ -f $A/model.safetensors ]]; then
  cp "$A/model.safetensors" "$QIN"
else
  expect_ok "train a model to quantize" -- "$BIN" train "${TRAIN_ARGS[@]}" --epochs 1 --out "$QD/run" &&
    cp "$QD/run/model.safetensors" "$QIN"
fi
QSUM=$(sha "$QIN")
expect_ok "quantize --help" -- "$BIN" quantize --help &&
  check "quantize --help names the options" grep -qF -- "--sweep A..B" "$T/out"
if expect_ok "quantize --bits 8 --data --json" -- "$BIN" quantize "$QIN" --scheme fixed --bits 8 \
    --out "$QD/q8.safetensors" --data fashion-mnist --limit-test "$LE" --threads 2 --json; then
  cp "$T/out" "$QD/q8.json"
  check "quantize --json: 20 weight tensors with f, errors, sizes and accuracies" json_check \
    "d['bits'] == 8 and len(d['tensors']) == 20 and all(isinstance(t['frac_bits'], int) for t in d['tensors']) and 0 < d['rel_rms_err'] < 0.05 and d['size_after'] < 0.35 * d['size_before'] and 0 <= d['acc_before'] <= 1 and abs(d['acc_after'] - d['acc_before']) <= 0.1" "$QD/q8.json"
  check "quantize --json: the table went to stderr" grep -q "^fc.weight" "$T/err"
fi
check "quantize: MODEL untouched" test "$(sha "$QIN")" = "$QSUM"
check "quantize: int8 weights and 'quant' metadata in OUT" $PY -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
q = json.loads(h["__metadata__"]["quant"])
assert q["scheme"] == "fixed" and q["bits"] == 8 and len(q["frac_bits"]) == 20, q
assert h["conv1.weight"]["dtype"] == "I8" and h["fc.weight"]["dtype"] == "I8" and h["fc.bias"]["dtype"] == "F32"
' "$QD/q8.safetensors"
expect_ok "eval of the quantized model" -- "$BIN" eval "$QD/q8.safetensors" --data fashion-mnist \
  --limit "$LE" --threads 2 --json &&
  check "eval of the quantized model: the accuracy quantize reported" json_check \
    "abs(d['accuracy'] - json.load(open('$QD/q8.json'))['acc_after']) < 1e-6" "$T/out"
if expect_ok "quantize --bits 4 --json" -- "$BIN" quantize "$QIN" --scheme fixed --bits 4 \
    --out "$QD/q4.safetensors" --data fashion-mnist --limit-test "$LE" --threads 2 --json; then
  cp "$T/out" "$QD/q4.json"
  check "4 bits: the file packs two weights a byte (under 60 % of the 8-bit file)" $PY -c '
import json, os, struct, sys
b = open(sys.argv[1], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
q = json.loads(h["__metadata__"]["quant"])
assert q["bits"] == 4 and q["packed"] is True, q
assert h["conv1.weight"]["dtype"] == "U8" and h["conv1.weight"]["shape"] == [72], h["conv1.weight"]
assert os.path.getsize(sys.argv[1]) < 0.6 * os.path.getsize(sys.argv[2])
' "$QD/q4.safetensors" "$QD/q8.safetensors"
  expect_ok "eval of the 4-bit model" -- "$BIN" eval "$QD/q4.safetensors" --data fashion-mnist \
    --limit "$LE" --threads 2 --json &&
    check "eval of the 4-bit model: the accuracy quantize reported" json_check \
      "abs(d['accuracy'] - json.load(open('$QD/q4.json'))['acc_after']) < 1e-6" "$T/out"
fi
if expect_ok "quantize --sweep 4..8 --json" -- "$BIN" quantize "$QIN" --scheme fixed --sweep 4..8 \
    --data fashion-mnist --limit-test "$LE" --threads 2 --json; then
  check "sweep: rows 4..8, sizes growing, errors shrinking" json_check \
    "[r['bits'] for r in d['sweep']] == [4, 5, 6, 7, 8] and all(a['packed_bytes'] < b['packed_bytes'] and a['rel_rms_err'] > b['rel_rms_err'] for a, b in zip(d['sweep'], d['sweep'][1:]))" "$T/out"
fi
expect_fail "quantize --bits 1" 2 "--bits '1'" "[2, 16]" -- "$BIN" quantize "$QIN" --scheme fixed --bits 1 --out "$QD/x.safetensors"
expect_fail "quantize --bits 17" 2 "--bits '17'" -- "$BIN" quantize "$QIN" --scheme fixed --bits 17 --out "$QD/x.safetensors"
expect_fail "quantize --scheme int8 --bits" 2 "--bits belongs to --scheme fixed" -- "$BIN" quantize "$QIN" --scheme int8 --bits 8 --data fashion-mnist --out "$QD/x.safetensors"
expect_fail "quantize --sweep without --data" 2 "--sweep needs --data" -- "$BIN" quantize "$QIN" --scheme fixed --sweep 4..8
expect_fail "quantize --sweep 8..4" 2 "--sweep '8..4'" -- "$BIN" quantize "$QIN" --scheme fixed --sweep 8..4 --data fashion-mnist
expect_fail "quantize without --out" 2 "--out" -- "$BIN" quantize "$QIN" --scheme fixed --bits 8
expect_fail "quantize --out MODEL" 2 "is the input model" -- "$BIN" quantize "$QIN" --scheme fixed --bits 8 --out "$QIN"
check "no OUT written by failed runs" test ! -e "$QD/x.safetensors"
expect_fail "quantize: a missing MODEL names the file" 1 "$QD/nope.safetensors" -- "$BIN" quantize "$QD/nope.safetensors" --scheme fixed --bits 8 --out "$QD/x.safetensors"


# ---------------------------------------------------------------------------------------------
# 14. int8: calibration, the int8 file, eval/forward/bench/info on it, what it refuses
# ---------------------------------------------------------------------------------------------
section "14. int8"
if expect_ok "quantize --scheme int8 --json" -- "$BIN" quantize "$QIN" --scheme int8 \
    --data fashion-mnist --calib 128 --limit-test "$LE" --threads 2 --out "$QD/i8.safetensors" --json; then
  cp "$T/out" "$QD/i8.json"
  check "int8 --json: accuracy within 5 points of float32 (a tiny model, few test images), file under 0.3x" json_check \
    "d['scheme'] == 'int8' and d['calibration'] == 'minmax' and d['calib_images'] == 128 and abs(d['acc_int8'] - d['acc_float']) <= 0.05 and d['size_after'] < 0.3 * d['size_before']" "$QD/i8.json"
fi
check "quantize int8: MODEL untouched" test "$(sha "$QIN")" = "$QSUM"
if expect_ok "quantize --scheme int8 of a fresh --model" -- "$BIN" quantize --model resnet20 \
    --in-channels 1 --num-classes 10 --scheme int8 --data fashion-mnist --calib 32 --limit-test 64 \
    --threads 2 --out "$QD/fresh_i8.safetensors"; then
  check "a fresh model's int8 file is sized against its float32 parameters (25-30 %)" \
    grep -qE 'file (2[5-9]|30)\.[0-9]% of the float32 parameters' "$T/out"
fi
check "int8 file: int8 weights, int32 biases, float32 scales, 'quant' scheme int8" $PY -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
q = json.loads(h["__metadata__"]["quant"])
assert q["scheme"] == "int8", q
assert h["conv1.weight"]["dtype"] == "I8" and h["conv1.weight"]["shape"] == [16, 1, 3, 3]
assert h["conv1.bias"]["dtype"] == "I32" and h["conv1.weight_scale"]["dtype"] == "F32"
assert h["fc.weight"]["dtype"] == "I8" and h["fc.bias"]["dtype"] == "F32"
assert h["quant.act_scale"]["dtype"] == "F32" and h["quant.act_zero_point"]["dtype"] == "I32"
assert not any(k.endswith("running_mean") for k in h), "batch norms are folded"
' "$QD/i8.safetensors"
expect_ok "eval of the int8 model" -- "$BIN" eval "$QD/i8.safetensors" --data fashion-mnist \
  --limit "$LE" --threads 2 --json &&
  check "eval of the int8 model: the accuracy quantize reported" json_check \
    "abs(d['accuracy'] - json.load(open('$QD/i8.json'))['acc_int8']) < 1e-6" "$T/out"
expect_ok "info of the int8 model" -- "$BIN" info "$QD/i8.safetensors" --json &&
  check "info: precision int8" json_check "d['precision'] == 'int8' and d['int8_state_bytes'] > 0" "$T/out"
expect_ok "bench of the int8 model" -- "$BIN" bench "$QD/i8.safetensors" --input-size 28 --runs 2 --json &&
  check "bench: precision int8" json_check "d['precision'] == 'int8' and d['median_ms'] > 0" "$T/out"
expect_ok "forward of the int8 model" -- "$BIN" forward "$QD/i8.safetensors" --input "$T/in.safetensors" \
  --output "$QD/i8_logits.safetensors" --threads 2
for m in percentile mse; do
  expect_ok "quantize int8 --calibration $m" -- "$BIN" quantize "$QIN" --scheme int8 --calibration "$m" \
    --data fashion-mnist --calib 64 --limit-test 200 --threads 2 --out "$QD/i8_$m.safetensors"
done
expect_fail "bench --train of an int8 model" 2 "inference only" -- "$BIN" bench "$QD/i8.safetensors" --train --input-size 28 --runs 1
expect_fail "int8 of an int8 model" 2 "already an int8 model" -- "$BIN" quantize "$QD/i8.safetensors" --scheme int8 --data fashion-mnist --out "$QD/x.safetensors"
expect_fail "fixed of an int8 model" 2 "is an int8 model" -- "$BIN" quantize "$QD/i8.safetensors" --scheme fixed --bits 8 --out "$QD/x.safetensors"
expect_fail "prune of an int8 model" 2 "cannot be pruned" -- "$BIN" prune "$QD/i8.safetensors" --amount 0.3 --out "$QD/x.safetensors"
expect_fail "int8 without --data" 2 "needs --data" -- "$BIN" quantize "$QIN" --scheme int8 --out "$QD/x.safetensors"
expect_fail "int8 --calib 0" 2 "--calib '0'" -- "$BIN" quantize "$QIN" --scheme int8 --calib 0 --data fashion-mnist --out "$QD/x.safetensors"
expect_fail "int8 --calibration foo" 2 "--calibration 'foo'" -- "$BIN" quantize "$QIN" --scheme int8 --calibration foo --data fashion-mnist --out "$QD/x.safetensors"
expect_fail "fixed --calib" 2 "belong to --scheme int8" -- "$BIN" quantize "$QIN" --scheme fixed --bits 8 --calib 10 --out "$QD/x.safetensors"
check "no OUT written by failed int8 runs" test ! -e "$QD/x.safetensors"
# a corrupted scale: the loader names the file and the tensor
$PY - "$QD/i8.safetensors" "$QD/i8_bad.safetensors" <<'PYEOF'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
o = h["layer1.0.conv1.weight_scale"]["data_offsets"][0] + 8 + n
b[o:o + 4] = struct.pack("<f", -1.0)
open(sys.argv[2], "wb").write(b)
PYEOF
expect_fail "eval of an int8 model with a negative scale" 1 "i8_bad.safetensors" "layer1.0.conv1.weight_scale" -- "$BIN" eval "$QD/i8_bad.safetensors" --data fashion-mnist --limit 10

# quantization-aware training from the float model, then int8 without calibration
if expect_ok "train --qat --init" -- "$BIN" train "${TRAIN_ARGS[@]}" --epochs 1 --lr 0.001 --qat \
    --init "$QIN" --out "$QD/qat"; then
  check "the QAT model keeps its ranges" $PY -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
assert "qat" in h["__metadata__"] and h["qat:act_lo"]["dtype"] == "F32", list(h)[:5]
' "$QD/qat/model.safetensors"
  expect_ok "quantize a QAT model without --data" -- "$BIN" quantize "$QD/qat/model.safetensors" \
    --scheme int8 --out "$QD/qat_i8.safetensors" --json &&
    check "QAT int8: calibration 'qat'" json_check "d['calibration'] == 'qat'" "$T/out"
  expect_ok "eval of the QAT int8 model" -- "$BIN" eval "$QD/qat_i8.safetensors" --data fashion-mnist --limit "$LE" --threads 2
fi
expect_fail "train --qat with gradual pruning" 2 "--qat and gradual pruning" -- "$BIN" train "${TRAIN_ARGS[@]}" --epochs 1 --qat --prune-to 0.5 --out "$QD/qatp"

# QAT resumes exactly: stopped after epoch 1 and resumed, the same bits as one run
expect_ok "train --qat (2 epochs)" -- "$BIN" train "${TRAIN_ARGS[@]}" --qat --lr 0.01 --out "$QD/qr1" &&
  expect_ok "train --qat --stop-after 1" -- "$BIN" train "${TRAIN_ARGS[@]}" --qat --lr 0.01 --stop-after 1 --out "$QD/qr2" &&
  expect_ok "train --resume (QAT)" -- "$BIN" train --resume "$QD/qr2" --threads 2 &&
  check "QAT: the resumed run's model is the uninterrupted one's" test "$(sha "$QD/qr1/model.safetensors")" = "$(sha "$QD/qr2/model.safetensors")"

summary
