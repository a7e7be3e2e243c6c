"""PyTorch reference trainer for convnet's headline recipe: ResNet-20 on Fashion-MNIST.

It is the baseline convnet's C trainer is measured against (accuracy and
images/s), so it gives PyTorch its best on this CPU.  Run it through
bench/train_pytorch.sh, which sets

    OMP_PROC_BIND=true                  pin the OpenMP threads (no migration)
    ATEN_CPU_CAPABILITY=avx512          Debian's build defaults to AVX2 kernels
    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184
                                        keep freed activation buffers in the heap
                                        instead of mmap/munmap-ing them every step

Recipe: cifar_resnet(20, in_channels=1, num_classes=10); inputs normalised with
mean 0.2860 / std 0.3530; random crop 28 with 2 px of zero padding plus
horizontal flip; SGD lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4 (on all
parameters, as plain torch.optim.SGD does); batch 128 with the last partial
batch kept (DataLoader's default); cosine decay to 0 stepped every iteration.

usage: bench/train_pytorch.sh [--epochs 10] [--batch 128] [--lr 0.1] [--threads 2]
                              [--seed 0] [--label-smoothing 0] [--no-channels-last]
                              [--json] [--max-steps N] [--data DIR]
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
from cifar_resnet import cifar_resnet  # noqa: E402

MEAN, STD = 0.2860, 0.3530
PAD = 2
WARMUP_STEPS = 5


def read_idx(path):
    """Read an IDX file (gzip or plain, decided by its magic bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:  # 0x08: unsigned byte, all FMNIST uses
        raise ValueError(f"{path}: not a uint8 IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find(data_dir, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{stem}[.gz] not in {data_dir} (apt-get install dataset-fashion-mnist)")


def load_split(data_dir, prefix):
    images = read_idx(find(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(data_dir, f"{prefix}-labels-idx1-ubyte"))
    # Pixels stay in [0, 1] until after augmentation so the crop padding is
    # black (raw 0), as torchvision's RandomCrop before Normalize would pad it.
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def normalise(x):
    return (x - MEAN) / STD


def augment(padded, gen):
    """Per-sample random 28x28 crop of the pre-padded batch, then random h-flip.

    Done with one gather on the whole batch: a Python loop over samples or
    torchvision transforms per image would dominate the step time on 2 cores.
    """
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * PAD, wp - 2 * PAD
    oy = torch.randint(0, 2 * PAD + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * PAD + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = oy[:, None] + torch.arange(h)  # [n, h]
    cols = torch.arange(w).expand(n, w)  # [n, w]
    # A flipped crop reads its columns right to left.
    cols = torch.where(flip[:, None], cols.flip(1), cols) + ox[:, None]
    idx_n = torch.arange(n)[:, None, None]
    out = padded[idx_n, :, rows[:, :, None], cols[:, None, :]]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2)


def to_device_layout(x, channels_last):
    x = normalise(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def evaluate(model, x, y, channels_last, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(to_device_layout(x[i : i + batch], channels_last))
            correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(x)


def build(args, steps_total):
    model = cifar_resnet(20, in_channels=1, num_classes=10)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps_total, 1))
    return model, opt, sched


def train_step(model, opt, sched, xb, yb, label_smoothing):
    logits = model(xb)
    loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return logits, loss


def speed_run(args, x_pad, y):
    """Images/s over args.max_steps steps after WARMUP_STEPS, no evaluation."""
    model, opt, sched = build(args, WARMUP_STEPS + args.max_steps)
    model.train()
    gen = torch.Generator().manual_seed(args.seed)
    n = len(x_pad)
    t0 = None
    # --compute-only times forward + backward + step on one prepared batch, as convnet's
    # `bench --train` does (its data loader runs on another thread during training)
    fixed_idx = torch.randint(0, n, (args.batch,), generator=gen)
    fixed_x = to_device_layout(augment(x_pad[fixed_idx], gen), args.channels_last)
    for step in range(WARMUP_STEPS + args.max_steps):
        if step == WARMUP_STEPS:
            t0 = time.perf_counter()
        if args.compute_only:
            xb, idx = fixed_x, fixed_idx
        else:
            idx = torch.randint(0, n, (args.batch,), generator=gen)
            xb = to_device_layout(augment(x_pad[idx], gen), args.channels_last)
        train_step(model, opt, sched, xb, y[idx], args.label_smoothing)
    rate = args.max_steps * args.batch / (time.perf_counter() - t0)
    print(f"train_img_per_s {rate:.1f}")
    if args.json:
        print(json.dumps({"mode": "speed", "steps": args.max_steps, "batch": args.batch,
                          "threads": args.threads, "channels_last": args.channels_last,
                          "train_img_per_s": round(rate, 1)}))


def full_run(args, x_pad, y, x_test, y_test):
    n = len(x_pad)
    steps_per_epoch = math.ceil(n / args.batch)
    model, opt, sched = build(args, args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    wall0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        t0 = time.perf_counter()
        for i in range(0, n, args.batch):
            idx = perm[i : i + args.batch]
            yb = y[idx]
            xb = to_device_layout(augment(x_pad[idx], gen), args.channels_last)
            logits, loss = train_step(model, opt, sched, xb, yb, args.label_smoothing)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        train_time = time.perf_counter() - t0
        test_acc = evaluate(model, x_test, y_test, args.channels_last)
        rec = {"epoch": epoch, "train_loss": loss_sum / n, "train_acc": correct / n,
               "test_acc": test_acc, "img_per_s": n / train_time, "epoch_train_s": train_time}
        history.append(rec)
        print(f"epoch {epoch} train_loss {rec['train_loss']:.4f} train_acc {rec['train_acc']:.4f} "
              f"test_acc {test_acc:.4f} img_per_s {rec['img_per_s']:.1f}", flush=True)
    if args.json:
        print(json.dumps({"mode": "train", "model": "resnet20", "epochs": args.epochs,
                          "batch": args.batch, "lr": args.lr, "threads": args.threads,
                          "seed": args.seed, "label_smoothing": args.label_smoothing,
                          "channels_last": args.channels_last, "torch": torch.__version__,
                          "final_test_acc": history[-1]["test_acc"] if history else None,
                          "wall_s": round(time.perf_counter() - wall0, 2), "history": history}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", action="store_true", help="print a JSON summary line at the end")
    p.add_argument("--compute-only", action="store_true",
                   help="with --max-steps: time one prepared batch, without data preparation")
    p.add_argument("--max-steps", type=int, default=0,
                   help="speed-only run: images/s over N steps after 5 warm-up steps")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = load_split(args.data, "train")
    # Pad once for the whole run; each batch then only gathers its crops.
    x_pad = F.pad(x, (PAD, PAD, PAD, PAD))
    if args.max_steps > 0:
        speed_run(args, x_pad, y)
        return
    x_test, y_test = load_split(args.data, "t10k")
    full_run(args, x_pad, y, x_test, y_test)


if __name__ == "__main__":
    main()
