#!/usr/bin/env python3
"""Export held-out Fashion-MNIST test images (Debian's dataset-fashion-mnist,
t10k split, never seen in training) as 32x32 grayscale PNGs, padded like the
training data, for `tweedie demo` and `tweedie eval`.

    python3 tools/export_test_images.py --count 100 --out weights/fashion-mnist-32/test-images
"""
import argparse
import gzip
import os
import struct
import zlib

DATA = "/usr/share/datasets/fashion-mnist"
LABELS = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def png_gray(path, rows):
    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--start", type=int, default=0, help="first test-split index (e.g. 100 for a tuning set beside the shipped 100)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")) as f:
        img = f.read()[16:]
    with gzip.open(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")) as f:
        lab = f.read()[8:]
    os.makedirs(a.out, exist_ok=True)
    for i in range(a.start, a.start + a.count):
        px = img[i * 784 : (i + 1) * 784]
        rows = [[0] * 32 for _ in range(32)]
        for r in range(28):
            for c in range(28):
                rows[r + 2][c + 2] = px[r * 28 + c]
        png_gray(os.path.join(a.out, f"{i:04d}-{LABELS[lab[i]]}.png"), rows)


if __name__ == "__main__":
    main()
