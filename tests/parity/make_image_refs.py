"""Write the images and torchvision 0.14 preprocessing references that tests/test_image.c
compares convnet's decoders and transforms against.

usage: /usr/bin/python3 tests/parity/make_image_refs.py OUTDIR

Writes OUTDIR/*.jpg, *.png (odd sizes; baseline and progressive JPEG, gray and RGB; PNG RGB,
RGBA, palette, gray, gray+alpha, 16-bit) and OUTDIR/image_refs.safetensors holding, per image,
  "<file>|raw"                     uint8 (H, W, 3): Image.open(file).convert("RGB")
  "<file>|<resize>|<crop>|<interp>" float32 (crop, crop, 3): ImageClassification(...) of it
  "<file>|box|i,j,h,w|size"         uint8 (size, size, 3): img.crop(box).resize(size, BILINEAR)
and in the metadata "exact": the keys where no resize happens (the test then wants equality).

16-bit grayscale: PIL opens it as mode "I" and convert("RGB") clips the 16-bit values at 255, so
nearly every pixel becomes white; convnet keeps the high byte (as PIL does for 16-bit RGB). The
reference of that file is built from the high byte.
"""

import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(1)


def photo(h, w, c=3):
    """Smooth gradients, blobs and some noise: compresses like a photograph."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for k in range(c):
        f = (np.sin(x / (7 + 3 * k) + k) * np.cos(y / (5 + 2 * k)) * 60 + 128
             + 50 * np.sin((x + y) / (13 + k)) + rng.normal(0, 12, (h, w)))
        chans.append(f)
    a = np.stack(chans, -1)
    a[h // 3: h // 2, w // 4: w // 2] = [230, 40, 20][:c]  # a sharp-edged patch
    return np.clip(a, 0, 255).astype(np.uint8)


def png_raw(path, w, h, ctype, depth, rows):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + r for r in rows)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    open(path, "wb").write(data)


files = {}
P = lambda n: os.path.join(out, n)

Image.fromarray(photo(61, 37)).save(P("rgb_37x61.jpg"), quality=90)
Image.fromarray(photo(200, 300)[..., 0]).save(P("gray_300x200.jpg"), quality=85)
Image.fromarray(photo(427, 640)).save(P("rgb_640x427_prog.jpg"), quality=88, progressive=True)
Image.fromarray(photo(37, 61)[..., 1]).save(P("gray_61x37_prog.jpg"), quality=80, progressive=True)
Image.fromarray(photo(200, 300)).save(P("rgb_300x200.png"))
rgba = np.concatenate([photo(61, 37), rng.integers(0, 256, (61, 37, 1), dtype=np.uint8)], -1)
Image.fromarray(rgba, "RGBA").save(P("rgba_37x61.png"))
Image.fromarray(photo(427, 640)).convert("P", palette=Image.ADAPTIVE, colors=200).save(P("pal_640x427.png"))
Image.fromarray(photo(200, 300)[..., 2]).save(P("gray_300x200.png"))
la = np.stack([photo(33, 45)[..., 0], rng.integers(0, 256, (33, 45), dtype=np.uint8)], -1)
Image.fromarray(la, "LA").save(P("la_45x33.png"))
rgb16 = (photo(61, 37).astype(np.uint16) * 257 + rng.integers(0, 257, (61, 37, 3))).astype(">u2")
png_raw(P("rgb16_37x61.png"), 37, 61, 2, 16, [rgb16[y].tobytes() for y in range(61)])
g16 = (photo(37, 61)[..., 0].astype(np.uint16) * 257 + 100).astype(">u2")
png_raw(P("gray16_61x37.png"), 61, 37, 0, 16, [g16[y].tobytes() for y in range(37)])
Image.fromarray(photo(224, 224)).save(P("rgb_224x224.png"))
Image.fromarray(photo(300, 256)).save(P("rgb_256x300.png"))


def open_rgb(name):
    if name == "gray16_61x37.png":
        return Image.fromarray((g16.astype(np.uint16) >> 8).astype(np.uint8)).convert("RGB")
    return Image.open(P(name)).convert("RGB")


IM = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
presets = [(256, 224, "bilinear"), (256, 224, "bicubic"), (255, 240, "bilinear"), (320, 300, "bicubic"),
           (100, 128, "bilinear")]
names = sorted(f for f in os.listdir(out) if f.endswith((".jpg", ".png")))
refs, exact = {}, []
for n in names:
    img = open_rgb(n)
    refs[n + "|raw"] = np.asarray(img)
    cases = list(presets)
    if n == "rgb_224x224.png":
        cases.append((224, 224, "bilinear"))
    if n == "rgb_256x300.png":
        cases.append((256, 224, "bicubic"))
    for resize, crop, interp in cases:
        t = ImageClassification(crop_size=crop, resize_size=resize, interpolation=IM[interp])(img)
        key = f"{n}|{resize}|{crop}|{interp}"
        refs[key] = t.permute(1, 2, 0).contiguous().numpy()
        w, h = img.size
        if min(w, h) == resize:
            exact.append(key)
    # a RandomResizedCrop box resized as torchvision's resized_crop does on a PIL image
    w, h = img.size
    i, j, bh, bw = h // 5, w // 7, max(1, h // 2), max(1, (2 * w) // 3)
    refs[f"{n}|box|{i},{j},{bh},{bw}|32"] = np.asarray(img.crop((j, i, j + bw, i + bh)).resize((32, 32), Image.BILINEAR))

st.save(P("image_refs.safetensors"), refs, {"exact": json.dumps(exact), "files": json.dumps(names)})
print(f"{len(names)} images, {len(refs)} references, {len(exact)} exact")
