"""PyTorch reference trainer for convnet's recipes: ResNet-20 / EfficientNet-B0 on Fashion-MNIST.

It is the baseline convnet's C trainer is measured against (accuracy and
images/s), so it gives PyTorch its best on this CPU.  Run it through
bench/train_pytorch.sh, which sets

    OMP_PROC_BIND=true                  pin the OpenMP threads (no migration)
    ATEN_CPU_CAPABILITY=avx512          Debian's build defaults to AVX2 kernels
    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184
                                        keep freed activation buffers in the heap
                                        instead of mmap/munmap-ing them every step

Default recipe (--model resnet20, unchanged since issue 2): cifar_resnet(20,
in_channels=1, num_classes=10); inputs normalised with mean 0.2860 / std 0.3530;
random crop 28 with 2 px of zero padding plus horizontal flip; SGD lr 0.1,
momentum 0.9, Nesterov, weight decay 5e-4 (on all parameters, as plain
torch.optim.SGD does); batch 128 with the last partial batch kept
(DataLoader's default); cosine decay to 0 stepped every iteration.

--model efficientnet_b0: torchvision's efficientnet_b0(num_classes=10) with the
stem convolution replaced by a 1-channel one (what `convnet train --model
efficientnet_b0` builds for Fashion-MNIST: same state_dict names and shapes),
dropout 0.2 and stochastic depth 0.2 as torchvision defines them; same inputs
and augmentation.
Its recipe (bench/compare_training_effnet.sh, which runs convnet beside it):
    --model efficientnet_b0 --epochs 5 --optimizer adamw --lr 3e-3 --weight-decay 0.05
    --warmup 1 --label-smoothing 0.1 --drop-last
about 2 minutes an epoch on 2 quiet cores (83.1 % after 5 epochs, seed 1).

The optimizer and schedule options follow `convnet train` (src/train/optim.c):
  --optimizer sgd      torch.optim.SGD (momentum, Nesterov, L2 weight decay)
  --optimizer adamw    torch.optim.AdamW (decoupled decay: p *= 1 - lr * wd);
                       betas 0.9/0.999, eps 1e-8
  weight decay applies to every parameter (BN scales and biases included).
  --warmup E           lr(step) = lr * (0.01 + 0.99 * step / W) for step < W,
                       W = round(E * steps_per_epoch); then cosine from lr to 0
                       over the remaining steps: lr * (1 + cos(pi * t / (T - W))) / 2,
                       t = step - W.  (E = 0: plain CosineAnnealingLR, as before)
  --drop-last          drop the last partial batch, as convnet's loader does
                       (468 steps per epoch at batch 128 instead of 469)

usage: bench/train_pytorch.sh [--model resnet20|efficientnet_b0] [--epochs 10]
                              [--batch 128] [--optimizer sgd|adamw] [--lr LR]
                              [--momentum 0.9] [--no-nesterov] [--weight-decay WD]
                              [--warmup E] [--label-smoothing 0] [--drop-last]
                              [--threads 2] [--seed 0] [--no-channels-last]
                              [--dropout 0.2] [--stochastic-depth 0.2] [--no-augment]
                              [--json] [--max-steps N [--compute-only]]
                              [--limit-train N] [--limit-test N] [--data DIR]
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
import torch.nn as nn
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


def augment(padded, gen, enabled=True):
    """Per-sample random 28x28 crop of the pre-padded batch, then random h-flip.

    Done with one gather on the whole batch: a Python loop over samples or
    torchvision transforms per image would dominate the step time on 2 cores.
    """
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * PAD, wp - 2 * PAD
    if not enabled:  # the centre crop: the images as they are
        return padded[:, :, PAD : PAD + h, PAD : PAD + w]
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


def efficientnet_b0_1ch(num_classes=10, dropout=0.2, stochastic_depth=0.2):
    """torchvision's EfficientNet-B0 taking 1-channel input (convnet's `--in-channels 1`)."""
    import torchvision

    # the builder fixes the classifier's dropout (0.2); the module's p is set after
    model = torchvision.models.efficientnet_b0(num_classes=num_classes,
                                               stochastic_depth_prob=stochastic_depth)
    model.classifier[0].p = dropout
    stem = nn.Conv2d(1, 32, kernel_size=3, stride=2, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out")  # as torchvision initialises its convs
    model.features[0][0] = stem
    return model


def make_model(args):
    if args.model == "resnet20":
        return cifar_resnet(20, in_channels=1, num_classes=10)
    return efficientnet_b0_1ch(10, args.dropout, args.stochastic_depth)


def convnet_lr_lambda(warmup_steps, total_steps, warmup_start=0.01):
    """convnet's cn_schedule_lr (cosine kind, min_lr 0) as a factor of the peak lr."""

    def f(step):
        if warmup_steps > 0 and step < warmup_steps:
            return warmup_start + (1.0 - warmup_start) * step / warmup_steps
        t, n = step - warmup_steps, total_steps - warmup_steps
        if n <= 0:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(t, n) / n))

    return f


def save_init(model, path):
    """The freshly initialised state_dict, torchvision's names, for `convnet train --init`."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                    "parity"))
    import st  # tests/parity/st.py: numpy safetensors writer

    st.save(path, {k: v.detach().contiguous().numpy() for k, v in model.state_dict().items()})


def build(args, steps_total, steps_per_epoch):
    model = make_model(args)
    if args.save_init:
        save_init(model, args.save_init)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                              nesterov=args.nesterov and args.momentum > 0,
                              weight_decay=args.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=args.weight_decay)
    warmup_steps = math.floor(args.warmup * steps_per_epoch + 0.5)  # C's llround
    if warmup_steps == 0:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps_total, 1))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, convnet_lr_lambda(warmup_steps, steps_total))
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
    model, opt, sched = build(args, WARMUP_STEPS + args.max_steps, WARMUP_STEPS + args.max_steps)
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
        print(json.dumps({"mode": "speed", "model": args.model, "steps": args.max_steps,
                          "batch": args.batch,
                          "threads": args.threads, "channels_last": args.channels_last,
                          "train_img_per_s": round(rate, 1)}))


def full_run(args, x_pad, y, x_test, y_test):
    n = len(x_pad)
    # convnet's loader drops the last partial batch (when there is a full one)
    drop_last = args.drop_last and n >= args.batch
    steps_per_epoch = n // args.batch if drop_last else math.ceil(n / args.batch)
    n_used = steps_per_epoch * args.batch if drop_last else n
    model, opt, sched = build(args, args.epochs * steps_per_epoch, steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    wall0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        t0 = time.perf_counter()
        for i in range(0, n_used, args.batch):
            idx = perm[i : i + args.batch]
            yb = y[idx]
            xb = to_device_layout(augment(x_pad[idx], gen, args.augment), args.channels_last)
            logits, loss = train_step(model, opt, sched, xb, yb, args.label_smoothing)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        train_time = time.perf_counter() - t0
        test_acc = evaluate(model, x_test, y_test, args.channels_last)
        rec = {"epoch": epoch, "train_loss": loss_sum / n_used, "train_acc": correct / n_used,
               "test_acc": test_acc, "img_per_s": n_used / train_time, "epoch_train_s": train_time}
        history.append(rec)
        print(f"epoch {epoch} train_loss {rec['train_loss']:.4f} train_acc {rec['train_acc']:.4f} "
              f"test_acc {test_acc:.4f} img_per_s {rec['img_per_s']:.1f}", flush=True)
    if args.json:
        print(json.dumps({"mode": "train", "model": args.model, "epochs": args.epochs,
                          "batch": args.batch, "optimizer": args.optimizer, "lr": args.lr,
                          "momentum": args.momentum, "nesterov": args.nesterov,
                          "weight_decay": args.weight_decay, "warmup": args.warmup,
                          "drop_last": args.drop_last, "threads": args.threads,
                          "seed": args.seed, "label_smoothing": args.label_smoothing,
                          "channels_last": args.channels_last, "torch": torch.__version__,
                          "final_test_acc": history[-1]["test_acc"] if history else None,
                          "wall_s": round(time.perf_counter() - wall0, 2), "history": history}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("resnet20", "efficientnet_b0"), default="resnet20")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=None, help="peak lr (default 0.1 SGD, 1e-3 AdamW)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--weight-decay", type=float, default=None,
                   help="default 5e-4 (SGD), 0.05 (AdamW), as convnet train")
    p.add_argument("--warmup", type=float, default=0.0, help="linear warm-up epochs")
    p.add_argument("--drop-last", action="store_true", help="drop the last partial batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.2, help="efficientnet_b0: classifier dropout")
    p.add_argument("--stochastic-depth", type=float, default=0.2,
                   help="efficientnet_b0: the last block's drop-path probability")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random crop + flip (--no-augment: the images as they are)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", action="store_true", help="print a JSON summary line at the end")
    p.add_argument("--compute-only", action="store_true",
                   help="with --max-steps: time one prepared batch, without data preparation")
    p.add_argument("--max-steps", type=int, default=0,
                   help="speed-only run: images/s over N steps after 5 warm-up steps")
    p.add_argument("--limit-train", type=int, default=0, help="use only the first N training samples")
    p.add_argument("--limit-test", type=int, default=0, help="use only the first N test samples")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--save-init", default="",
                   help="write the initial weights (state_dict, safetensors) to this file, for "
                        "`convnet train --init FILE --model NAME`: both sides then start alike")
    args = p.parse_args()
    if args.lr is None:
        args.lr = 0.1 if args.optimizer == "sgd" else 1e-3
    if args.weight_decay is None:
        args.weight_decay = 5e-4 if args.optimizer == "sgd" else 0.05

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = load_split(args.data, "train")
    if args.limit_train > 0:
        x, y = x[: args.limit_train], y[: args.limit_train]
    # Pad once for the whole run; each batch then only gathers its crops.
    x_pad = F.pad(x, (PAD, PAD, PAD, PAD))
    if args.max_steps > 0:
        speed_run(args, x_pad, y)
        return
    x_test, y_test = load_split(args.data, "t10k")
    if args.limit_test > 0:
        x_test, y_test = x_test[: args.limit_test], y_test[: args.limit_test]
    full_run(args, x_pad, y, x_test, y_test)


if __name__ == "__main__":
    main()
