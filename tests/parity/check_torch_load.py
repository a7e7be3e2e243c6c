"""Check that a model file written by convnet loads and runs in PyTorch.

usage: /usr/bin/python3 tests/parity/check_torch_load.py MODEL.safetensors REF.safetensors

MODEL is convnet's output; its __metadata__ has "arch", a JSON string with at
least "name" (e.g. "resnet18", "resnet20", "efficientnet_b0"; "efficientnet" also
has "width_mult" and "depth_mult").  REF holds `input` (NCHW) and the
`logits` convnet computed for it.  The model is rebuilt from torchvision or
cifar_resnet, loaded with load_state_dict(strict=True) and run in eval mode.
Exit status 0 when max|torch - ref| / max(max|ref|, 1e-6) <= 1e-4, else 1.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from cifar_resnet import cifar_resnet  # noqa: E402

TOLERANCE = 1e-4
# Names torchvision owns; any other "resnetN" is the CIFAR family (N = 6n+2).
TORCHVISION_RESNETS = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}


def parse_arch(meta):
    """The arch JSON as a dict; tolerate it being absent or not JSON."""
    raw = meta.get("arch", "")
    try:
        arch = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        arch = {"name": raw}
    if not isinstance(arch, dict):
        arch = {"name": str(arch)}
    return arch


def infer_int(arch, meta, key, fallback):
    """Prefer the arch JSON, then a top-level metadata key, then the tensors."""
    for source in (arch, meta):
        if source.get(key) not in (None, ""):
            return int(source[key])
    return fallback


def build_efficientnet(name, arch, in_channels, num_classes):
    """torchvision's EfficientNet; "efficientnet" (compound scaling) from the arch's multipliers."""
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    if name == "efficientnet":
        conf, last = _efficientnet_conf("efficientnet_b0", width_mult=float(arch["width_mult"]),
                                        depth_mult=float(arch["depth_mult"]))
        model = EfficientNet(conf, float(arch.get("dropout", 0.2)), last_channel=last, num_classes=num_classes)
    else:
        model = torchvision.models.__dict__[name](num_classes=num_classes)
    if in_channels != 3:
        old = model.features[0][0]
        model.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, 2, 1, bias=False)
    return model


def build_model(arch, meta, tensors):
    name = str(arch.get("name") or meta.get("model") or "").lower()
    effnet = name.startswith("efficientnet")
    first, last = ("features.0.0.weight", "classifier.1.weight") if effnet else ("conv1.weight", "fc.weight")
    # Shapes in the file are the ground truth when the metadata omits a field.
    in_channels = infer_int(arch, meta, "in_channels", tensors[first].shape[1])
    num_classes = infer_int(arch, meta, "num_classes", tensors[last].shape[0])
    if effnet:
        return build_efficientnet(name, arch, in_channels, num_classes), name, in_channels, num_classes
    if name in TORCHVISION_RESNETS:
        model = torchvision.models.__dict__[name](num_classes=num_classes)
        if in_channels != 3:
            # torchvision hard-codes 3 input channels; keep its stem otherwise.
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model, name, in_channels, num_classes
    if name.startswith("resnet") and name[len("resnet") :].isdigit():
        depth = int(name[len("resnet") :])
        return cifar_resnet(depth, in_channels, num_classes), name, in_channels, num_classes
    raise SystemExit(f"unknown architecture {name!r} (arch={arch})")


def apply_widths(model, tensors):
    """A pruned model (arch "widths"): give every convolution, batch norm and linear layer the
    shapes of the file's tensors, so that torchvision's own forward runs the pruned network."""
    changed = 0
    for name, mod in list(model.named_modules()):
        w = tensors.get(f"{name}.weight")
        if w is None:
            continue
        new = None
        if isinstance(mod, nn.Conv2d) and tuple(w.shape) != tuple(mod.weight.shape):
            depthwise = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
            out_c = w.shape[0]
            in_c = out_c if depthwise else w.shape[1] * mod.groups
            new = nn.Conv2d(in_c, out_c, mod.kernel_size, mod.stride, mod.padding,
                            groups=out_c if depthwise else mod.groups, bias=mod.bias is not None)
        elif isinstance(mod, nn.BatchNorm2d) and w.shape[0] != mod.num_features:
            new = nn.BatchNorm2d(w.shape[0], eps=mod.eps, momentum=mod.momentum)
        elif isinstance(mod, nn.Linear) and tuple(w.shape) != tuple(mod.weight.shape):
            new = nn.Linear(w.shape[1], w.shape[0], bias=mod.bias is not None)
        if new is not None:
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], new)
            changed += 1
    return changed


def to_torch_state(tensors, expected):
    """Map the file's tensors onto the model's state_dict dtypes.

    Keys the model does not have are dropped here (and reported) so that a
    training checkpoint with extra optimizer tensors still loads; missing or
    misshapen keys are left for load_state_dict(strict=True) to reject.
    """
    state, extra = {}, []
    for k, v in tensors.items():
        if k not in expected:
            extra.append(k)
            continue
        state[k] = torch.from_numpy(np.ascontiguousarray(v)).to(expected[k].dtype)
    if extra:
        print(f"note: ignoring {len(extra)} tensors that are not model state, e.g. {extra[:3]}")
    return state


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check_torch_load.py MODEL.safetensors INPUT_AND_LOGITS.safetensors")
    torch.set_num_threads(2)
    tensors, meta = st.load(sys.argv[1])
    ref, _ = st.load(sys.argv[2])
    arch = parse_arch(meta)
    model, name, in_channels, num_classes = build_model(arch, meta, tensors)
    if arch.get("widths"):
        print(f"pruned model: {apply_widths(model, tensors)} layers reshaped to the file's widths")
    try:
        model.load_state_dict(to_torch_state(tensors, model.state_dict()), strict=True)
    except RuntimeError as e:
        print(f"FAIL: load_state_dict(strict=True) for {name}: {e}")
        return 1

    x = torch.from_numpy(ref["input"]).float()
    want = torch.from_numpy(ref["logits"]).float()
    with torch.no_grad():
        got = model.eval()(x)
    if got.shape != want.shape:
        print(f"FAIL: logits shape {tuple(got.shape)} != reference {tuple(want.shape)}")
        return 1
    err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()
    verdict = "ok" if err <= TOLERANCE else "FAIL"
    print(
        f"{verdict}: {name} in_channels={in_channels} num_classes={num_classes} "
        f"input={tuple(x.shape)} max relative error {err:.3e} (tolerance {TOLERANCE:g})"
    )
    return 0 if err <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
