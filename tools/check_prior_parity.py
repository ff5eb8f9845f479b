#!/usr/bin/env python3
"""Compares tweedie's U-Net forward with the training script's own PyTorch forward
on a stored checkpoint (the diffusion prior or the flow prior: the network is
built from the model's own config.json): a batch of random inputs at several
network times, max abs error.

    python3 tools/check_prior_parity.py [--model weights/fashion-mnist-32 | weights/fashion-mnist-32-flow] [--tweedie target/release/tweedie]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_prior  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="weights/fashion-mnist-32")
    ap.add_argument("--tweedie", default="target/release/tweedie")
    a = ap.parse_args()
    with open(os.path.join(a.model, "config.json")) as f:
        m = train_prior.UNetModel(json.load(f))
    m.load_state_dict({k: v.float() for k, v in load_file(os.path.join(a.model, "model.safetensors")).items()})
    m.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 32, 32, generator=g)
    t = torch.tensor([10.0, 250.0, 600.0, 999.0])
    with torch.no_grad():
        ref = m(x, t)
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.safetensors"), os.path.join(d, "out.safetensors")
        save_file({"x": x, "t": t}, inp)
        subprocess.run([a.tweedie, "unet", "--model", a.model, "--input", inp, "--out", out], check=True)
        got = load_file(out)["out"]
    print(f"max abs error {(got - ref).abs().max().item():.3g} (outputs up to {ref.abs().max().item():.3g})")


if __name__ == "__main__":
    main()
