"""Write the PyTorch reference files that convnet's C parity tests compare against.

usage: /usr/bin/python3 tests/parity/make_refs.py [--f64] OUTDIR

Every file holds the model's initial state_dict under torchvision's own names
(float32, OIHW conv weights, I64 num_batches_tracked), the input, and the
results PyTorch 1.13 computes from them: eval logits, or for the training cases
the train-mode loss/logits/gradients/BN-buffer updates and the parameters after
two SGD and two AdamW steps (and, as `sgd1.*` / `adamw1.*`, after the first).
The training results come from a float64 run (stored as float32): PyTorch's
float32 kernels are less accurate on some CPUs (see train_case).

How well float32 determines each result (measured with --f64, worst
max|a-b|/max|b| against a float64 rerun):
  eval logits                  3e-6 .. 1.1e-5 (resnet50)
  loss, logits, grad, buffers  <= 1e-5 everywhere
  sgd1                         <= 4e-6;  sgd (2 steps) 1e-6, except
                               resnet18_train 3e-3: its second step amplifies
                               rounding (lr=0.1 on a batch of 2 overshoots);
                               resnet18_train_small's flips between 5e-6
                               and 4e-2 with the draw of a 1e-6 .. 3e-6
                               perturbation
                               (see second_step_chaos)
  adamw1, adamw                2e-4 (resnet20) .. 1.6e-2 (resnet18): Adam's
                               first step is lr*g/(|g|+eps), so the handful of
                               elements with |g| ~ eps = 1e-8 move by a
                               rounding-dependent fraction of lr.  Compare AdamW
                               results elementwise with that in mind.
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
OPTIMIZERS = (("sgd", torch.optim.SGD, SGD_KW), ("adamw", torch.optim.AdamW, ADAMW_KW))
TRAIN_META = {
    "label_smoothing": str(LABEL_SMOOTHING),
    "sgd": "lr=0.1,momentum=0.9,nesterov=1,wd=5e-4,steps=2",
    "adamw": "lr=1e-3,b1=0.9,b2=0.999,eps=1e-8,wd=0.05,steps=2",
}
# Std of the calibrated eval logits: O(1), like a trained network's.
LOGIT_STD = 1.5
# Most that fc calibration may amplify float32 rounding error (see calibrate_fc).
MAX_CANCELLATION = 8.0
CALIB_BATCH = 8


# EfficientNet cases run with these (dropout, stochastic depth) overrides and, when on, with
# masks drawn here and handed to both sides (see share_masks).
NOISE = {}


def build(name, in_channels, num_classes):
    if name.startswith("efficientnet"):
        model = torchvision.models.__dict__[name](num_classes=num_classes)
        if in_channels != 3:  # what convnet's in_channels gives: the same stem with C inputs
            old = model.features[0][0]
            model.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, 2, 1, bias=False)
            nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
        drop, sd = NOISE.get("rates", (None, None))
        if drop is not None:
            model.classifier[0].p = drop
            for m in model.modules():
                if isinstance(m, torchvision.ops.StochasticDepth):
                    m.p = m.p * sd / 0.2
        if "masks" in NOISE:
            share_masks(model, NOISE["masks"])
        return model
    if hasattr(torchvision.models, name):
        assert in_channels == 3
        return torchvision.models.__dict__[name](num_classes=num_classes)
    depth = int(name[len("resnet") :])
    return cifar_resnet(depth, in_channels=in_channels, num_classes=num_classes)


class MaskMul(nn.Module):
    """Dropout / StochasticDepth with a fixed mask in training (identity in eval)."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        if not self.training:
            return x
        m = self.mask.to(x.dtype)
        if m.dim() == 1:
            m = m.view((-1,) + (1,) * (x.dim() - 1))
        return x * m


def draw_masks(model, batch, gen):
    """Masks as torch draws them: Bernoulli(1 - p) scaled by 1 / (1 - p), one per sample for
    stochastic depth ("row" mode), one per element for the classifier's dropout."""
    masks = {}
    for mname, m in model.named_modules():
        if isinstance(m, torchvision.ops.StochasticDepth) and m.p > 0:
            keep = 1.0 - m.p
            masks[mname] = torch.bernoulli(torch.full((batch,), keep), generator=gen) / keep
    drop = model.classifier[0]
    feats = model.classifier[1].in_features
    keep = 1.0 - drop.p
    masks["classifier.0"] = torch.bernoulli(torch.full((batch, feats), keep), generator=gen) / keep
    return masks


def share_masks(model, masks):
    for mname, mask in masks.items():
        parent, _, child = mname.rpartition(".")
        setattr(model.get_submodule(parent), child, MaskMul(mask))


def final_linear(model):
    return model.fc if hasattr(model, "fc") else model.classifier[1]


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
    hook = final_linear(probe).register_forward_hook(lambda mod, inp, out: feats.append(inp[0]))
    gen = torch.Generator().manual_seed(seed)
    probe(torch.randn((CALIB_BATCH,) + tuple(sample_shape), generator=gen))
    hook.remove()
    f = feats[0]
    mu = f.mean(0)
    fc = final_linear(model)
    w = fc.weight
    common = w @ mu  # [classes], identical for every input
    spread = ((f - mu) @ w.T).std()
    ratio = common.pow(2).mean().sqrt() / spread
    alpha = 1.0 if ratio <= MAX_CANCELLATION else 1.0 - 1.0 / MAX_CANCELLATION
    logits = f @ w.T + (fc.bias - alpha * common)
    scale = LOGIT_STD / logits.std()
    fc.bias.sub_(alpha * common).mul_(scale)
    w.mul_(scale)


def initial_model(name, in_channels, num_classes, input_shape, train, seed):
    torch.manual_seed(seed)
    model = build(name, in_channels, num_classes)
    perturb_bn(model)
    x = torch.randn(input_shape)
    # Training cases keep nn.Linear's default fc: in train mode BN already keeps
    # the logits O(1) and input-dependent (std 0.4-1.1), and a larger fc makes
    # the first lr=0.1 SGD step overshoot so far that the two-step results
    # become chaotic (float32 vs float64 differing by up to 1e-1).
    if not train:
        calibrate_fc(model, input_shape[1:], train, seed + 1)
    return model, x


def state_tensors(model):
    # clone(): state_dict() aliases the live parameters, which later steps modify.
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fresh(name, in_channels, num_classes, state, dtype):
    model = build(name, in_channels, num_classes)
    model.load_state_dict(state)
    return model.to(dtype)


def rel_err(a, b):
    """The parity metric: max|a-b| / max(max|b|, 1e-6)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()


def conditioning(results32, results64):
    """Per group (text before the first '.'), the worst float32-vs-float64 error.

    Recorded in the metadata so a C test can tell a real mismatch from what
    float32 rounding alone produces on that case.
    """
    worst = {}
    for k, v in results32.items():
        if not v.is_floating_point():
            continue
        group = k.split(".", 1)[0]
        worst[group] = max(worst.get(group, 0.0), rel_err(v, results64[k]))
    return {f"f64_relerr.{g}": f"{e:.1e}" for g, e in sorted(worst.items())}


def f32_beyond(res32, res64, params):
    """{"f32_beyond.<prefix>": count} for each optimizer result prefix (sgd1., sgd., adamw1.,
    adamw.): the parameter elements of the float32 run more than 1e-3 * max|float64| of their
    tensor away from the float64 run."""
    out = {}
    for prefix in ("sgd1.", "sgd.", "adamw1.", "adamw."):
        n = sum(beyond(res32[prefix + name], res64[prefix + name]) for name in params)
        out["f32_beyond." + prefix] = str(n)
    return out


def beyond(a, b):
    """The elements of a more than 1e-3 * max|b| away from b (as test_parity.c counts them)."""
    a, b = a.detach().double(), b.detach().double()
    mb = max(b.abs().max().item(), 1e-6)
    return int(((a - b).abs() > 1e-3 * mb).sum().item())


def eval_results(model, x):
    with torch.no_grad():
        return {"logits": model.eval()(x.to(next(model.parameters()).dtype))}


def eval_case(path, name, num_classes, input_shape, seed, shadow):
    model, x = initial_model(name, 3, num_classes, input_shape, False, seed)
    init = state_tensors(model)
    res = eval_results(model, x)
    meta = {"model": name, "mode": "eval", "num_classes": str(num_classes), "in_channels": "3"}
    if shadow:
        res64 = eval_results(fresh(name, 3, num_classes, init, torch.float64), x)
        meta.update(conditioning(res, res64))
    st.save(path, {**init, "input": x, **res}, meta)
    return meta


def loss_fn(logits, labels):
    return F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)


def train_results(make_model, x, labels):
    """Everything a training case records, computed in make_model()'s dtype."""
    out = {}
    model = make_model().train()
    x = x.to(next(model.parameters()).dtype)
    logits = model(x)
    loss = loss_fn(logits, labels)
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    out["logits"] = logits.detach()
    for pname, p in model.named_parameters():
        out["grad." + pname] = p.grad.clone()
    for bname, b in model.named_buffers():
        out["after_fwd." + bname] = b.clone()

    # Each optimizer starts from a fresh copy of the initial state and the same
    # batch, so each result isolates that optimizer's update rule.  The state
    # after the first step is kept too ("sgd1." / "adamw1."): the second step
    # is far less well-conditioned (see the f64_relerr.* metadata).
    for tag, opt_cls, kw in OPTIMIZERS:
        for step, model in optimizer_steps(make_model, x, labels, opt_cls, kw):
            prefix = f"{tag}." if step == OPT_STEPS else f"{tag}{step}."
            for pname, p in model.named_parameters():
                out[prefix + pname] = p.detach().clone()
    return out


def optimizer_steps(make_model, x, labels, opt_cls, kw):
    """OPT_STEPS optimizer steps on (x, labels) from a fresh make_model(), yielding (step, model)
    after each (the caller may change the model before the next)."""
    model = make_model().train()
    x = x.to(next(model.parameters()).dtype)
    opt = opt_cls(model.parameters(), **kw)
    for step in range(1, OPT_STEPS + 1):
        opt.zero_grad()
        loss_fn(model(x), labels).backward()
        opt.step()
        yield step, model


# The second optimizer step can be chaotic: on resnet18_train_small, moving every parameter
# after the first SGD step by up to 1e-6 .. 3e-6 of its tensor's largest value (a few dozen
# float32 ulps) moves 0 to 39770 elements of the second step's result beyond 1e-3, depending on
# the size and the draw (worst 5e-6 .. 4.2e-2), as a ReLU, max-pool or low-variance BN channel falls one way or the
# other. So the reference also records how many elements such a rounding-level difference moves:
# the float64 run with the state after the first step perturbed by up to CHAOS_DELTA of each
# tensor's largest value (uniform, CHAOS_SEEDS draws; a float32 implementation's first step is
# about that far off: convnet's 1.1e-5 with Winograd in the forward), the most over the draws.
CHAOS_DELTA = 1e-5
CHAOS_SEEDS = (1, 2, 3)


def second_step_chaos(make_model, x, labels, res64):
    """{"chaos_beyond.<tag>.": count}: the most elements of the second step's parameters, over
    CHAOS_SEEDS, more than 1e-3 * max|float64| of their tensor away from res64 when the state
    after the first step is perturbed as described at CHAOS_DELTA."""
    out = {}
    for tag, opt_cls, kw in OPTIMIZERS:
        most = 0
        for seed in CHAOS_SEEDS:
            for step, model in optimizer_steps(make_model, x, labels, opt_cls, kw):
                if step == 1:
                    gen = torch.Generator().manual_seed(seed)
                    with torch.no_grad():
                        for p in model.parameters():
                            u = torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1
                            p.add_(u * (CHAOS_DELTA * p.abs().max()))
            n = sum(beyond(p, res64[f"{tag}.{pname}"]) for pname, p in model.named_parameters())
            most = max(most, n)
        out[f"chaos_beyond.{tag}."] = str(most)
    return out


def train_case(path, name, in_channels, num_classes, input_shape, seed, shadow, noise=None):
    """noise: for EfficientNets, None (dropout and stochastic depth off) or "masks" (on, with
    masks shared with the C side through the file as mask.<module>)."""
    NOISE.clear()
    extra, masks = {}, {}
    if name.startswith("efficientnet"):
        NOISE["rates"] = (0.0, 0.0) if noise is None else (0.2, 0.2)
        extra = {"dropout": NOISE["rates"][0], "stochastic_depth": NOISE["rates"][1]}
    model, x = initial_model(name, in_channels, num_classes, input_shape, True, seed)
    labels = torch.randint(0, num_classes, (input_shape[0],))
    if noise == "masks":
        masks = draw_masks(model, input_shape[0], torch.Generator().manual_seed(seed + 100))
        NOISE["masks"] = masks
        model = fresh(name, in_channels, num_classes, model.state_dict(), torch.float32)
    init = state_tensors(model)

    def make(dtype):
        return lambda: fresh(name, in_channels, num_classes, init, dtype)

    # The training results are PyTorch's float64 run, stored in float32: its float32 kernels are
    # not equally accurate on every CPU (on an AVX2-only Zen 3, resnet20's float32 gradients were
    # 1.5e-2 and, nonsquare, 2.1e-1 off their float64 values, while convnet's float32 ones were
    # within 2.4e-6 of them), so the float64 run is the reference a float32 implementation is
    # held to; the bounds of test_parity.c allow for what float32 rounding alone moves.
    res64 = train_results(make(torch.float64), x, labels)
    res = {k: (v.float() if v.is_floating_point() else v) for k, v in res64.items()}
    meta = {
        "model": name,
        "mode": "train",
        "num_classes": str(num_classes),
        "in_channels": str(in_channels),
        **{k: str(v) for k, v in extra.items()},
        **TRAIN_META,
    }
    meta["reference"] = "float64"
    # How far float32 rounding alone moves the optimizer results on this case: PyTorch's own
    # float32 run against the float64 one, counted as test_parity.c counts (elements more than
    # 1e-3 of their tensor's largest value off). A second step can amplify rounding a lot
    # (resnet18_train_small's SGD: 4e-2 on an AVX2 Zen 3), and the C test allows twice this.
    res32 = train_results(make(torch.float32), x, labels)
    meta.update(f32_beyond(res32, res64, [n for n, _ in make(torch.float32)().named_parameters()]))
    meta.update(second_step_chaos(make(torch.float64), x, labels, res64))
    if shadow:
        meta.update(conditioning(res32, res64))
    mask_t = {"mask." + k: v.float().contiguous() for k, v in masks.items()}
    st.save(path, {**init, "input": x, "labels": labels, **res, **mask_t}, meta)
    NOISE.clear()
    return meta


def main():
    args = sys.argv[1:]
    # --f64 also reruns every case in float64 and records the float32 error in
    # the metadata (f64_relerr.<group>); off by default as it takes ~5x longer.
    shadow = "--f64" in args
    args = [a for a in args if a != "--f64"]
    if len(args) != 1:
        sys.exit("usage: make_refs.py [--f64] OUTDIR")
    outdir = args[0]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(2)
    t0 = time.time()
    cases = [
        ("resnet18_eval", eval_case, ("resnet18", 1000, (1, 3, 224, 224), 1)),
        ("resnet50_eval", eval_case, ("resnet50", 1000, (1, 3, 224, 224), 2)),
        ("resnet18_eval_nonsquare", eval_case, ("resnet18", 10, (3, 3, 96, 128), 3)),
        # 112x112 rather than 224: at 224 with batch 2 one BN output lands within an ulp of 0,
        # so float32 rounding alone decides whether its ReLU passes the gradient, and the early
        # layers' gradients then differ from float64 by ~5e-3 in any float32 implementation.
        ("resnet18_train", train_case, ("resnet18", 3, 1000, (2, 3, 112, 112), 4)),
        ("resnet20_train", train_case, ("resnet20", 1, 10, (4, 1, 28, 28), 5)),
        ("resnet20_train_nonsquare", train_case, ("resnet20", 1, 10, (3, 1, 28, 36), 6)),
        ("resnet18_train_small", train_case, ("resnet18", 3, 10, (3, 3, 64, 80), 7)),
        ("efficientnet_b0_eval", eval_case, ("efficientnet_b0", 1000, (1, 3, 224, 224), 8)),
        ("efficientnet_b3_eval", eval_case, ("efficientnet_b3", 1000, (1, 3, 300, 300), 9)),
        # B5-B7 use BatchNorm eps 1e-3 (momentum 0.01): a small input keeps the file quick
        ("efficientnet_b5_eval", eval_case, ("efficientnet_b5", 1000, (2, 3, 96, 96), 12)),
        ("efficientnet_b0_train", train_case, ("efficientnet_b0", 3, 10, (4, 3, 64, 64), 10)),
        ("efficientnet_b0_train_masks", train_case,
         ("efficientnet_b0", 3, 10, (4, 3, 64, 64), 11, "masks")),
    ]
    for stem, run, case_args in cases:
        path = os.path.join(outdir, stem + ".safetensors")
        t = time.time()
        meta = run(path, *case_args[:5], shadow, *case_args[5:]) if run is train_case else \
            run(path, *case_args, shadow)
        cond = " ".join(f"{k[len('f64_relerr.'):]}={v}" for k, v in meta.items() if k.startswith("f64_relerr."))
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB, {time.time() - t:.1f} s) {cond}".rstrip())
    # the state_dict order and shapes of every architecture, for tests/test_models.c
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                 "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"):
        model = build(name, 3, 1000 if hasattr(torchvision.models, name) else 10)
        with open(os.path.join(outdir, f"names_{name}.txt"), "w") as f:
            for k, v in model.state_dict().items():
                f.write(f"{k} {','.join(str(d) for d in v.shape)}\n")
    for name in ("efficientnet_b%d" % i for i in range(8)):
        model = build(name, 3, 1000)
        with open(os.path.join(outdir, f"names_{name}.txt"), "w") as f:
            for k, v in model.state_dict().items():
                f.write(f"{k} {','.join(str(d) for d in v.shape)}\n")
    # compound scaling: torchvision's EfficientNet built with phi's multipliers
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    with open(os.path.join(outdir, "phi_table.txt"), "w") as f:
        for phi in range(8):
            conf, last = _efficientnet_conf("efficientnet_b0", width_mult=1.1 ** phi, depth_mult=1.2 ** phi)
            model = EfficientNet(conf, 0.2, last_channel=last)
            f.write(f"{phi} {sum(p.numel() for p in model.parameters())}\n")
    print(f"make_refs: {len(cases)} files in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
