"""PyTorch side of bench/bench_peers.sh: one workload per process, one JSON object on stdout.

Run with /usr/bin/python3 (Debian's python3-torch 1.13) and the environment bench_peers.sh
sets for PyTorch's fastest mode (OMP_PROC_BIND=true, ATEN_CPU_CAPABILITY=avx512 where the CPU has it (else avx2), glibc malloc
tunables that keep freed buffers in the heap).

  torch_bench.py macs   --model NAME [--in-channels C --num-classes K --input-size S]
  torch_bench.py export --model NAME --batch N --out FILE.onnx [--opset 17]
  torch_bench.py infer  --model NAME --batch N --threads T --runs R --warmup W --variant V[,V...]
  torch_bench.py train  --model NAME --batch N --threads T --runs R --warmup W --variant V[,V...]

Inference variants (every one a TorchScript trace, frozen, run under torch.inference_mode):
  freeze        torch.jit.freeze, NCHW-contiguous weights and input
  freeze_cl     the same in channels-last
  ofi           torch.jit.optimize_for_inference (freezes, then folds conv+BN and moves the
                convolutions to oneDNN's blocked layout), NCHW input
  ofi_cl        optimize_for_inference of the channels-last model, channels-last input
Training variants (eager mode, BatchNorm in train mode, cross-entropy, SGD step):
  eager         NCHW-contiguous
  eager_cl      channels-last model and input

With several variants, all are prepared, warmed up (W runs each) and timed round-robin (R runs
each), and the JSON names the fastest with its median and lists every variant's median;
bench_peers.sh uses that as a probe and then times the winner alone in a fresh process (so
its peak memory is the winner's alone).

The input is the same tensor `convnet bench` feeds its models: element i (in NHWC order) is
((i * 2654435761) mod 2^32 mod 1000) / 500 - 1; the labels are i mod num_classes.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "parity"))

CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}


def default_size(name):
    return 32 if name in CIFAR_DEPTHS else 224


def build(name, in_channels, num_classes):
    torch.manual_seed(0)
    if name in CIFAR_DEPTHS:
        from cifar_resnet import cifar_resnet

        return cifar_resnet(CIFAR_DEPTHS[name], in_channels=in_channels, num_classes=num_classes)
    import torchvision

    ctor = getattr(torchvision.models, name, None)
    if ctor is None:
        raise SystemExit(f"torch_bench: unknown model '{name}'")
    m = ctor(weights=None, num_classes=num_classes)
    if in_channels != 3:
        raise SystemExit(f"torch_bench: {name}: only 3 input channels")
    return m


def convnet_input(n, c, h, w):
    """The batch `convnet bench` uses, as an NCHW tensor."""
    i = np.arange(n * h * w * c, dtype=np.uint64)
    v = ((i * np.uint64(2654435761)) % np.uint64(2**32) % np.uint64(1000)).astype(np.float32)
    nhwc = (v / np.float32(500.0) - np.float32(1.0)).reshape(n, h, w, c)
    return torch.from_numpy(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))


def count_macs(model, x):
    """Multiply-accumulates of Conv2d and Linear layers for one forward pass of x."""
    total = [0]

    def conv_hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total[0] += out.numel() * k

    def linear_hook(mod, inp, out):
        total[0] += out.numel() * mod.in_features

    hooks = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return total[0]


def time_runs(fns, warmup, runs):
    """Time each function `runs` times after `warmup` untimed calls. With several functions the
    timed calls go round-robin, so drift of the (shared) machine hits them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return times


def infer_step(model, x, variant):
    cl = variant.endswith("_cl")
    if cl:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        if variant.startswith("ofi"):
            m = torch.jit.optimize_for_inference(traced)
        elif variant.startswith("freeze"):
            m = torch.jit.freeze(traced)
        else:
            raise SystemExit(f"torch_bench: unknown inference variant '{variant}'")

    def step():
        with torch.inference_mode():
            m(x)

    return step


def train_step(model, x, labels, variant):
    if variant not in ("eager", "eager_cl"):
        raise SystemExit(f"torch_bench: unknown training variant '{variant}'")
    if variant == "eager_cl":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    # convnet bench's optimizer: SGD with its defaults (momentum 0.9, Nesterov, weight decay
    # 5e-4) at lr 1e-3
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["macs", "export", "infer", "train"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variant", default="")
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--input-size", type=int, default=0)
    ap.add_argument("--out", default="")
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    size = a.input_size or default_size(a.model)
    x = convnet_input(a.batch, a.in_channels, size, size)
    out = {"model": a.model, "batch": a.batch, "input_size": size, "threads": torch.get_num_threads(),
           "torch": torch.__version__}

    if a.cmd == "macs":
        model = build(a.model, a.in_channels, a.num_classes)
        out["macs"] = count_macs(model, convnet_input(1, a.in_channels, size, size))
    elif a.cmd == "export":
        model = build(a.model, a.in_channels, a.num_classes).eval()
        with torch.no_grad():
            torch.onnx.export(model, x, a.out, opset_version=a.opset, do_constant_folding=True,
                              input_names=["input"], output_names=["logits"])
        out.update(out_file=a.out, opset=a.opset)
    else:
        variants = [v for v in a.variant.split(",") if v] or (["freeze"] if a.cmd == "infer" else ["eager"])
        labels = torch.arange(a.batch) % a.num_classes
        steps = []
        for v in variants:
            m = build(a.model, a.in_channels, a.num_classes)
            if a.cmd == "infer":
                steps.append(infer_step(m.eval(), x, v))
            else:
                steps.append(train_step(m, x, labels, v))
        times = time_runs(steps, a.warmup, a.runs)
        medians = {v: statistics.median(ts) for v, ts in zip(variants, times)}
        if len(variants) == 1:
            out.update(min_ms=min(times[0]) * 1e3, max_ms=max(times[0]) * 1e3)
        best = min(medians, key=medians.get)
        out.update(mode=a.cmd, runs=a.runs, warmup=a.warmup, variant=best,
                   median_ms=medians[best] * 1e3, img_per_s=a.batch / medians[best],
                   variant_median_ms={k: v * 1e3 for k, v in medians.items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
