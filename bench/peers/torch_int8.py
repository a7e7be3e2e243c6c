"""PyTorch's int8 inference for bench/bench_int8.sh: torchvision's model quantized post-training
(FX graph mode, the engine's default qconfig: per-channel int8 weights, calibrated uint8
activations, BN folded), timed beside its float32 model in one process. One JSON object on
stdout. Run with /usr/bin/python3 (Debian's torch 1.13, built with the onednn and qnnpack
engines, not fbgemm).

  torch_int8.py --model resnet50 --batch 1 --threads 2 --runs 30 --engine onednn
"""

import argparse
import json
import statistics
import time

import torch
import torchvision
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx


def timed(f, x, runs, warmup):
    with torch.inference_mode():
        for _ in range(warmup):
            f(x)
        t = []
        for _ in range(runs):
            t0 = time.perf_counter()
            f(x)
            t.append(time.perf_counter() - t0)
    return statistics.median(t) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--engine", default="onednn")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    torch.backends.quantized.engine = a.engine
    m = getattr(torchvision.models, a.model)().eval()
    x = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    with torch.no_grad():
        p = prepare_fx(m, get_default_qconfig_mapping(a.engine), example_inputs=(x,))
        for _ in range(4):
            p(torch.rand(4, 3, a.size, a.size) * 2 - 1)
        q = convert_fx(p)
    fp = torch.jit.freeze(torch.jit.trace(m, x))
    qi = torch.jit.freeze(torch.jit.trace(q, x))
    # alternate, so that both see the same machine
    f_ms, q_ms = [], []
    for _ in range(3):
        f_ms.append(timed(fp, x, a.runs // 3 + 1, a.warmup))
        q_ms.append(timed(qi, x, a.runs // 3 + 1, a.warmup))
    print(json.dumps({"model": a.model, "batch": a.batch, "threads": a.threads,
                      "engine": a.engine, "float_ms": min(f_ms), "int8_ms": min(q_ms)}))


if __name__ == "__main__":
    main()
