#!/usr/bin/env python3
"""PyTorch eager figures for a tweedie model config: the memory a forward pass
and a forward + input-VJP pass add beyond the weights, and their median time.

The network is tools/train_prior.py's U-Net (guided-diffusion's ADM, which the
engine matches to 3e-6), built from the model's config.json with random weights,
so a config alone is enough, e.g. DPS's FFHQ-256 configuration:

    python3 tools/bench_torch.py --config configs/ffhq256-dps/config.json \
        --image-size 256 --batch 1 --device cpu --json

Memory: on CUDA, torch.cuda.max_memory_allocated() during the pass minus what
was allocated before it (weights, inputs). On the CPU, the growth of the
process's peak resident set (ru_maxrss) across the pass, each pass in a fresh
child process so one pass's peak does not hide the next's. `forward` runs under
torch.no_grad(); `forward_vjp` keeps the graph and takes d(out . g)/dx, as DPS
does. Prints one JSON record per pass (with --json) or a table.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def build(config_path, dtype, device):
    import torch

    sys.path.insert(0, HERE)
    from train_prior import UNetModel

    with open(config_path) as f:
        cfg = json.load(f)
    cfg.setdefault("conv_resample", True)
    torch.manual_seed(0)
    model = UNetModel(cfg).to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cfg


def one_pass(model, x, t, g, mode):
    import torch

    if mode == "forward":
        with torch.no_grad():
            return model(x, t)
    x = x.detach().requires_grad_(True)
    out = model(x, t)
    (dx,) = torch.autograd.grad(out, x, g)
    return dx


def measure(args, mode):
    """Runs in a child process: one pass's memory, then its median time."""
    import torch

    dev = torch.device(args.device)
    dtype = {"float32": torch.float32, "float16": torch.float16}[args.dtype]
    model, cfg = build(args.config, dtype, dev)
    n, s = args.batch, args.image_size
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, cfg["in_channels"], s, s, generator=gen).to(dev, dtype)
    t = torch.full((n,), 500.0, device=dev)
    g = torch.randn(n, cfg["out_channels"], s, s, generator=gen).to(dev, dtype)
    if args.compile:
        model = torch.compile(model)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        one_pass(model, x, t, g, mode)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        one_pass(model, x, t, g, mode)
        extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    times = []
    for _ in range(args.iters):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        one_pass(model, x, t, g, mode)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "engine": "torch " + torch.__version__ + (" compile" if args.compile else " eager"),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "name": mode,
        "image_size": s,
        "batch": n,
        "precision": args.dtype,
        "weights_bytes": weights,
        "bytes": extra,
        "median_ms": statistics.median(times) * 1e3 if times else None,
        "iters": args.iters,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a model's config.json (guided-diffusion form)")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--iters", type=int, default=3, help="timed passes after the measured one (0: memory only)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model first")
    ap.add_argument("--json", action="store_true", help="one JSON record per line")
    ap.add_argument("--only", choices=["forward", "forward_vjp"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        print(json.dumps(measure(args, args.only)))
        return
    records = []
    for mode in ["forward", "forward_vjp"]:
        cmd = [sys.executable, os.path.abspath(__file__)] + sys.argv[1:] + ["--only", mode]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        records.append(json.loads(out.strip().splitlines()[-1]))
    for r in records:
        if args.json:
            print(json.dumps(r))
        else:
            ms = "-" if r["median_ms"] is None else f"{r['median_ms']:.1f} ms"
            print(f"{r['engine']} on {r['device']}, {r['name']:<12} {r['bytes'] / 2**20:8.1f} MiB  {ms}")


if __name__ == "__main__":
    main()
