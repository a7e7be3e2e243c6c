"""Write reference cases of PyTorch's quantized conv2d for tests/test_qkernels.c, under both the
onednn and the qnnpack engines (torch.backends.quantized.engine; Debian's torch 1.13 has no
fbgemm).

usage: /usr/bin/python3 tests/parity/make_qconv_refs.py OUTDIR

Each case: quint8 input (scale, zero point), qint8 weights quantized per output channel (zero
point 0; per tensor when an engine refuses per channel, recorded in the file), float bias, output
scale and zero point, through torch.ao.nn.quantized.functional.conv2d. OUTDIR/index.txt lists
"engine file" per line; each file, little-endian:
    b"QCV1"
    int32 n, h, w, c, oc, kh, kw, sh, sw, ph, pw, oh, ow, groups, per_channel, zp_in, zp_out
    float64 s_in, s_out
    float64 s_w[oc]            (per-tensor: the one scale repeated)
    float32 bias[oc]
    uint8 input (n, h, w, c)   (NHWC)
    int8 weight (oc, kh, kw, c / groups)
    uint8 output (n, oh, ow, oc)
"""

import os
import struct
import sys

import numpy as np
import torch
import torch.ao.nn.quantized.functional as qF

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)

# n, c, h, w, oc, k, stride, pad, groups
CASES = [
    (1, 3, 16, 16, 8, 3, 1, 1, 1),
    (2, 16, 9, 11, 32, 3, 2, 1, 1),
    (1, 32, 8, 8, 64, 1, 1, 0, 1),
    (1, 24, 10, 10, 20, 1, 2, 0, 1),
    (1, 8, 13, 7, 16, 5, 1, 2, 1),
    (1, 3, 21, 21, 16, 7, 2, 3, 1),
    (1, 64, 7, 7, 100, 3, 1, 1, 1),
    (1, 24, 12, 12, 24, 3, 1, 1, 24),
    (1, 40, 11, 11, 40, 5, 2, 2, 40),
    (2, 17, 9, 8, 17, 3, 2, 1, 17),
]


def run_case(engine, idx, case, rng):
    n, c, h, w, oc, k, s, p, g = case
    x = torch.from_numpy(rng.normal(0.0, 1.0, (n, c, h, w)).astype(np.float32))
    s_in = float(rng.uniform(0.01, 0.03))
    zp_in = int(rng.integers(0, 200))
    qx = torch.quantize_per_tensor(x, s_in, zp_in, torch.quint8)
    wf = torch.from_numpy(rng.normal(0.0, 0.2, (oc, c // g, k, k)).astype(np.float32))
    # per-channel scales spread over a factor 4
    wf = wf * torch.from_numpy(rng.uniform(0.5, 2.0, (oc, 1, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.5, (oc,)).astype(np.float32))
    # output scale: spread the float result over most of the uint8 range
    ref = torch.nn.functional.conv2d(qx.dequantize(), wf, bias, s, p, 1, g)
    s_out = float((ref.max() - ref.min()) / 240.0)
    zp_out = int(np.clip(round(-float(ref.min()) / s_out) + 8, 0, 255))

    def try_conv(per_channel):
        if per_channel:
            sw = (wf.abs().amax(dim=(1, 2, 3)) / 127.0).double().clamp(min=1e-8)
            qw = torch.quantize_per_channel(wf, sw, torch.zeros(oc, dtype=torch.long), 0,
                                            torch.qint8)
        else:
            sw = torch.full((oc,), float(wf.abs().max() / 127.0), dtype=torch.double)
            qw = torch.quantize_per_tensor(wf, float(sw[0]), 0, torch.qint8)
        y = qF.conv2d(qx, qw, bias, stride=s, padding=p, groups=g, scale=s_out,
                      zero_point=zp_out, dtype=torch.quint8)
        return qw, sw, y

    per_channel = 1
    try:
        qw, sw, y = try_conv(True)
    except RuntimeError as e:
        print(f"{engine}: per-channel refused ({str(e).splitlines()[0]}); per tensor",
              file=sys.stderr)
        per_channel = 0
        qw, sw, y = try_conv(False)
    oh, ow = y.shape[2], y.shape[3]
    name = f"qconv_{engine}_{idx}.bin"
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(b"QCV1")
        f.write(struct.pack("<17i", n, h, w, c, oc, k, k, s, s, p, p, oh, ow, g, per_channel,
                            zp_in, zp_out))
        f.write(struct.pack("<2d", s_in, s_out))
        f.write(sw.numpy().astype("<f8").tobytes())
        f.write(bias.numpy().astype("<f4").tobytes())
        f.write(qx.int_repr().permute(0, 2, 3, 1).contiguous().numpy().astype(np.uint8).tobytes())
        f.write(qw.int_repr().permute(0, 2, 3, 1).contiguous().numpy().astype(np.int8).tobytes())
        f.write(y.int_repr().permute(0, 2, 3, 1).contiguous().numpy().astype(np.uint8).tobytes())
    return name, per_channel


def main():
    lines = []
    engines = [e for e in ("onednn", "qnnpack") if e in torch.backends.quantized.supported_engines]
    for engine in engines:
        torch.backends.quantized.engine = engine
        rng = np.random.default_rng(7)  # the same data for both engines
        for i, case in enumerate(CASES):
            name, pc = run_case(engine, i, case, rng)
            lines.append(f"{engine} {name}\n")
            print(f"{engine} case {i} {case}: weights per-{'channel' if pc else 'tensor'}",
                  file=sys.stderr)
    with open(os.path.join(out_dir, "index.txt"), "w") as f:
        f.writelines(lines)


main()
