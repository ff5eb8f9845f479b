#!/usr/bin/env python3
"""Held-out measure of a shipped prior: its training objective on the Fashion-MNIST
test split (never seen in training), per noise level.

Diffusion prior: the mean squared error of the predicted noise, E |eps_theta(x_t, t) - eps|^2,
at t = 50, 150, ..., 950 (of 1000). Flow prior: the velocity error E |u_theta(x_t, 1000 t) - (eps - x0)|^2
at t = 0.05, 0.15, ..., 0.95. The same test images and the same noise draws (seeded) for every
model, so two checkpoints compare point by point.

    python3 tools/eval_prior.py weights/fashion-mnist-32 --images 1000 --out prior-heldout.json
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_prior as tp  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a directory holding model.safetensors and config.json")
    ap.add_argument("--images", type=int, default=1000, help="test images (the first N of the split)")
    ap.add_argument("--levels", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", help="write the JSON here as well as to stdout")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from safetensors.torch import load_file

    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    flow = cfg.get("process") == "flow"
    model = tp.UNetModel(dict(tp.CONFIG, **{k: cfg[k] for k in cfg if k in tp.CONFIG}))
    state = load_file(os.path.join(args.model, "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    data = torch.from_numpy(tp.load_split("t10k"))[: args.images]
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(data.shape, generator=gen)
    diff = tp.Diffusion()
    levels = []
    with torch.no_grad():
        for j in range(args.levels):
            total = 0.0
            for s in range(0, len(data), args.batch):
                x0, eps = data[s : s + args.batch], noise[s : s + args.batch]
                n = len(x0)
                if flow:
                    t = (j + 0.5) / args.levels
                    xt = (1 - t) * x0 + t * eps
                    out = model(xt, torch.full((n,), t * tp.Flow.TIME_SCALE))
                    err = (out - (eps - x0)) ** 2
                else:
                    t = int((j + 0.5) * diff.T / args.levels)
                    xt = diff.sqrt_ab[t] * x0 + diff.sqrt_1mab[t] * eps
                    out = model(xt, torch.full((n,), t, dtype=torch.long))
                    err = (out[:, :1] - eps) ** 2
                total += err.mean(dim=(1, 2, 3)).sum().item()
            levels.append({"t": t, "mse": round(total / len(data), 6)})
    with open(os.path.join(args.model, "training.json")) as f:
        steps = json.load(f).get("steps")
    report = {
        "model": args.model,
        "objective": "velocity mse" if flow else "eps mse",
        "training_steps": steps,
        "test_images": len(data),
        "seed": args.seed,
        "mean": round(sum(lv["mse"] for lv in levels) / len(levels), 6),
        "levels": levels,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
