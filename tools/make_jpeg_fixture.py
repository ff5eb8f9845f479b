#!/usr/bin/env python3
"""The reference for `--task jpeg`: small uint8 images of awkward sizes (grey
and RGB) written as JPEG by Pillow (libjpeg-turbo; `Image.save(quality=Q)`,
its defaults: 4:2:0 chroma for RGB, the IJG tables scaled by Q, the islow DCT)
at qualities 10, 50 and 90, and decoded back by Pillow (fancy upsampling).

    pip install pillow numpy
    python3 tools/make_jpeg_fixture.py --out tests/fixtures/jpeg/pillow.safetensors

Tensors (float16, exact on 0..255): `NAME.input` [C, H, W] and `NAME.q{Q}`
[C, H, W] for each image NAME; the metadata records Pillow's version.
"""
import argparse
import io
import json
import struct

import numpy as np
import PIL
from PIL import Image

QUALITIES = [10, 50, 90]


def picture(rng, c, h, w):
    """Smooth shading, an edge, stripes and noise: every DCT band is busy."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for k in range(c):
        shade = 60 + 120 * (xx / max(w - 1, 1)) * (0.5 + 0.5 * np.cos(yy / h * np.pi * (k + 1)))
        edge = np.where(xx + 0.7 * yy > 0.6 * (w + h) + 3 * k, 70.0, 0.0)
        stripes = 25 * np.sin(xx * (0.9 + 0.3 * k) + yy * 0.4)
        noise = rng.normal(0, 12, (h, w))
        planes.append(shade + edge + stripes + noise)
    return np.clip(np.rint(np.stack(planes)), 0, 255).astype(np.uint8)


def round_trip(img, quality):
    c = img.shape[0]
    pil = Image.fromarray(img[0]) if c == 1 else Image.fromarray(np.transpose(img, (1, 2, 0)), "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    return back[None] if c == 1 else np.transpose(back, (2, 0, 1))


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, arr in tensors:
        data = np.ascontiguousarray(arr, dtype="<f2").tobytes()
        header[name] = {"dtype": "F16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.RandomState(22)
    # (name, C, H, W): sides that are and are not multiples of 8 and 16.
    images = [("grey32", 1, 32, 32), ("grey29x37", 1, 29, 37), ("rgb40x48", 3, 40, 48), ("rgb19x23", 3, 19, 23)]
    tensors = []
    for name, c, h, w in images:
        img = picture(rng, c, h, w)
        tensors.append((f"{name}.input", img))
        for q in QUALITIES:
            tensors.append((f"{name}.q{q}", round_trip(img, q)))
    write_safetensors(a.out, tensors, {"pillow": PIL.__version__, "qualities": ",".join(map(str, QUALITIES))})


if __name__ == "__main__":
    main()
