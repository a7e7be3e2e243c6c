"""Write the PyTorch reference files that convnet's C parity tests compare against.

usage: /usr/bin/python3 tests/parity/make_refs.py OUTDIR

Every file holds the model's initial state_dict under torchvision's own names
(float32, OIHW conv weights, I64 num_batches_tracked), the input, and the
results PyTorch 1.13 computes from them: eval logits, or for the training cases
the train-mode loss/logits/gradients/BN-buffer updates and the parameters after
two SGD and two AdamW steps.
"""

import copy
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from cifar_resnet import cifar_resnet  # noqa: E402

LABEL_SMOOTHING = 0.1
SGD_KW = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
ADAMW_KW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
OPT_STEPS = 2
TRAIN_META = {
    "label_smoothing": str(LABEL_SMOOTHING),
    "sgd": "lr=0.1,momentum=0.9,nesterov=1,wd=5e-4,steps=2",
    "adamw": "lr=1e-3,b1=0.9,b2=0.999,eps=1e-8,wd=0.05,steps=2",
}
# Std of the calibrated logits: large enough to carry information, small enough
# that softmax does not saturate in the training cases.
LOGIT_STD = 1.5
# Most that fc calibration may amplify float32 rounding error (see calibrate_fc).
MAX_CANCELLATION = 8.0
CALIB_BATCH = 8


def build(name, in_channels, num_classes):
    if hasattr(torchvision.models, name):
        assert in_channels == 3
        return torchvision.models.__dict__[name](num_classes=num_classes)
    depth = int(name[len("resnet") :])
    return cifar_resnet(depth, in_channels=in_channels, num_classes=num_classes)


@torch.no_grad()
def perturb_bn(model):
    """Give every BN non-trivial affine parameters and running statistics.

    Fresh BNs (weight 1, bias 0, mean 0, var 1) would hide bugs that swap or
    drop any of those four tensors.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)


@torch.no_grad()
def calibrate_fc(model, sample_shape, train, seed):
    """Rescale and re-centre fc so the logits depend visibly on the input.

    A random network's pooled features are post-ReLU averages with a large
    common component, so every input gets nearly the same logits (same argmax;
    in eval mode, where the random BN statistics do not match the activations,
    magnitudes in the hundreds for resnet50).  Subtracting fc's response to the
    mean feature of a separate random batch exposes the input-dependent part.

    That subtraction is a cancellation: it multiplies the relative float32
    error of the logits by roughly |common| / |spread| (about 100x for resnet50
    in eval mode, which would push PyTorch's own error past the 1e-4 parity
    tolerance).  So the common part is removed entirely only when that ratio is
    at most MAX_CANCELLATION, and otherwise shrunk by that factor.
    """
    probe = copy.deepcopy(model)  # a train-mode forward would move running stats
    probe.train(train)
    feats = []
    hook = probe.fc.register_forward_hook(lambda mod, inp, out: feats.append(inp[0]))
    gen = torch.Generator().manual_seed(seed)
    probe(torch.randn((CALIB_BATCH,) + tuple(sample_shape), generator=gen))
    hook.remove()
    f = feats[0]
    mu = f.mean(0)
    w = model.fc.weight
    common = w @ mu  # [classes], identical for every input
    spread = ((f - mu) @ w.T).std()
    ratio = common.pow(2).mean().sqrt() / spread
    alpha = 1.0 if ratio <= MAX_CANCELLATION else 1.0 - 1.0 / MAX_CANCELLATION
    logits = f @ w.T + (model.fc.bias - alpha * common)
    scale = LOGIT_STD / logits.std()
    model.fc.bias.sub_(alpha * common).mul_(scale)
    w.mul_(scale)


def initial_model(name, in_channels, num_classes, input_shape, train, seed):
    torch.manual_seed(seed)
    model = build(name, in_channels, num_classes)
    perturb_bn(model)
    x = torch.randn(input_shape)
    calibrate_fc(model, input_shape[1:], train, seed + 1)
    return model, x


def state_tensors(model):
    # clone(): state_dict() aliases the live parameters, which later steps modify.
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def eval_case(path, name, num_classes, input_shape, seed):
    model, x = initial_model(name, 3, num_classes, input_shape, False, seed)
    out = state_tensors(model)
    with torch.no_grad():
        logits = model.eval()(x)
    out["input"] = x
    out["logits"] = logits
    meta = {"model": name, "mode": "eval", "num_classes": str(num_classes), "in_channels": "3"}
    st.save(path, out, meta)


def train_step(model, opt, x, labels):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), labels, label_smoothing=LABEL_SMOOTHING)
    loss.backward()
    opt.step()


def train_case(path, name, in_channels, num_classes, input_shape, seed):
    model, x = initial_model(name, in_channels, num_classes, input_shape, True, seed)
    labels = torch.randint(0, num_classes, (input_shape[0],))
    init = state_tensors(model)
    out = dict(init)
    out["input"] = x
    out["labels"] = labels

    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    out["logits"] = logits
    for pname, p in model.named_parameters():
        out["grad." + pname] = p.grad.clone()
    for bname, b in model.named_buffers():
        out["after_fwd." + bname] = b.clone()

    # Both optimizers start from the identical initial state and batch, so each
    # result isolates that optimizer's update rule.
    for tag, make_opt in (
        ("sgd", lambda ps: torch.optim.SGD(ps, **SGD_KW)),
        ("adamw", lambda ps: torch.optim.AdamW(ps, **ADAMW_KW)),
    ):
        model.load_state_dict(init)
        opt = make_opt(model.parameters())
        for _ in range(OPT_STEPS):
            train_step(model, opt, x, labels)
        for pname, p in model.named_parameters():
            out[f"{tag}.{pname}"] = p.detach().clone()

    meta = {
        "model": name,
        "mode": "train",
        "num_classes": str(num_classes),
        "in_channels": str(in_channels),
        **TRAIN_META,
    }
    st.save(path, out, meta)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_refs.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(2)
    t0 = time.time()
    cases = [
        ("resnet18_eval", lambda p: eval_case(p, "resnet18", 1000, (1, 3, 224, 224), 1)),
        ("resnet50_eval", lambda p: eval_case(p, "resnet50", 1000, (1, 3, 224, 224), 2)),
        ("resnet18_eval_nonsquare", lambda p: eval_case(p, "resnet18", 10, (3, 3, 96, 128), 3)),
        ("resnet18_train", lambda p: train_case(p, "resnet18", 3, 1000, (2, 3, 224, 224), 4)),
        ("resnet20_train", lambda p: train_case(p, "resnet20", 1, 10, (4, 1, 28, 28), 5)),
        ("resnet20_train_nonsquare", lambda p: train_case(p, "resnet20", 1, 10, (3, 1, 28, 36), 6)),
        ("resnet18_train_small", lambda p: train_case(p, "resnet18", 3, 10, (3, 3, 64, 80), 7)),
    ]
    for stem, run in cases:
        path = os.path.join(outdir, stem + ".safetensors")
        t = time.time()
        run(path)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB, {time.time() - t:.1f} s)")
    print(f"make_refs: {len(cases)} files in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
