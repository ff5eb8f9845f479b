#!/usr/bin/env python3
"""PyTorch figures for a tweedie model config, as `tweedie bench --model --json`
records: the memory a forward pass and a forward + input-VJP pass add beyond
the weights, their median times, one reverse step of each sampler (the
PyTorch equivalent of tweedie's step: the network pass plus the step's
elementwise work), and, with --shapes, every layer row of a `tweedie bench
--json` file run as the same PyTorch op on the same shape.

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
does. Prints one JSON record per row (with --json) or a table;
tools/bench_compare.py puts them beside tweedie's:

    tweedie bench --model configs/ffhq256-dps --image-size 64 --json > tweedie.jsonl
    python3 tools/bench_torch.py --config configs/ffhq256-dps/config.json --image-size 64 \
        --shapes tweedie.jsonl --json > torch.jsonl
    python3 tools/bench_compare.py tweedie.jsonl torch.jsonl
"""

import argparse
import math
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
    # GroupNorm runs in float32 (GroupNorm32 upcasts its input), so its
    # parameters stay float32, as guided-diffusion's convert_to_fp16 leaves them.
    for m in model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.float()
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


def precision_name(dtype):
    return {"float32": "f32", "float16": "f16"}[dtype]


def timed(fn, iters, sync):
    """Median seconds of `iters` calls after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(max(iters, 1)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def record(args, name, kind, seconds, flops=0.0, bytes_moved=0.0, shape=None, **extra):
    import torch

    r = {
        "engine": "torch " + torch.__version__ + (" compile" if args.compile else " eager"),
        "device": torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu",
        "name": name,
        "kind": kind,
        "image_size": args.image_size,
        "batch": args.batch,
        "precision": precision_name(args.dtype),
        "median_ms": None if seconds is None else seconds * 1e3,
        "flops": flops,
        "bytes_moved": bytes_moved,
        "tflops": flops / seconds / 1e12 if flops and seconds else None,
        "gbps": bytes_moved / seconds / 1e9 if bytes_moved and seconds else None,
        "peak_fraction": None,
        "shape": shape,
    }
    r.update(extra)
    return r


def layer_op(shape, kind, dtype, dev):
    """A closure running PyTorch's version of one tweedie layer row."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(2)
    rnd = lambda *s: torch.randn(*s, generator=g).to(dev, dtype)
    op = shape["op"]
    if op == "conv":
        n, cin, h, w, cout, k, st = (shape[x] for x in ["n", "cin", "h", "w", "cout", "k", "stride"])
        top, left, bottom, right = shape["pad"]
        x, wt, b = rnd(n, cin, h, w), rnd(cout, cin, k, k), rnd(cout)
        if kind == "conv":
            if top == bottom and left == right:
                return lambda: F.conv2d(x, wt, b, st, (top, left))
            return lambda: F.conv2d(F.pad(x, (left, right, top, bottom)), wt, b, st)
        ho = (h + top + bottom - k) // st + 1
        wo = (w + left + right - k) // st + 1
        dy = rnd(n, cout, ho, wo)
        if top == bottom and left == right:
            return lambda: torch.nn.grad.conv2d_input((n, cin, h, w), wt, dy, st, (top, left))
        padded = (n, cin, h + top + bottom, w + left + right)
        return lambda: torch.nn.grad.conv2d_input(padded, wt, dy, st, 0)[:, :, top : top + h, left : left + w]
    if op == "groupnorm":
        n, c, hw, groups = shape["n"], shape["c"], shape["hw"], shape["groups"]
        x, gamma, beta = rnd(n, c, hw), rnd(c), rnd(c)
        ss = rnd(n, 2 * c, 1)

        def gn():
            y = F.group_norm(x, groups, gamma, beta)
            if shape["scale_shift"]:
                scale, shift = ss.chunk(2, dim=1)
                y = y * (1 + scale) + shift
            return F.silu(y) if shape["silu"] else y

        return gn
    if op == "attention":
        n, heads, ch, t = shape["n"], shape["heads"], shape["ch"], shape["t"]
        qkv = rnd(n, 3 * heads * ch, t)
        scale = 1 / math.sqrt(math.sqrt(ch))

        def attn(q):
            qq, kk, vv = q.reshape(n * heads, 3 * ch, t).split(ch, dim=1)
            wts = torch.softmax((torch.einsum("bct,bcs->bts", qq * scale, kk * scale)).float(), dim=-1).to(q.dtype)
            return torch.einsum("bts,bcs->bct", wts, vv).reshape(n, heads * ch, t)

        if kind == "attention":
            return lambda: attn(qkv)
        dy = rnd(n, heads * ch, t)

        def attn_bwd():
            q = qkv.detach().requires_grad_(True)
            return torch.autograd.grad(attn(q), q, dy)[0]

        return attn_bwd
    if op == "linear":
        x, wt, b = rnd(shape["n"], shape["din"]), rnd(shape["dout"], shape["din"]), rnd(shape["dout"])
        return lambda: F.linear(x, wt, b)
    return None


def layer_rows(args, path):
    import torch

    dev = torch.device(args.device)
    dtype = {"float32": torch.float32, "float16": torch.float16}[args.dtype]
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    out = []
    with open(path) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    with torch.no_grad():
        for r in rows:
            if not r.get("shape"):
                continue
            fn = layer_op(r["shape"], r["kind"], dtype, dev)
            if fn is None:
                continue
            if r["kind"] == "attention_bwd":
                with torch.enable_grad():
                    s = timed(fn, args.iters, sync)
            else:
                s = timed(fn, args.iters, sync)
            out.append(record(args, r["name"], r["kind"], s, r.get("flops", 0.0), r.get("bytes_moved", 0.0), r["shape"], layers=r.get("layers", 1)))
    return out


def step_rows(args):
    """One reverse step of each sampler: the network pass and the step's own
    elementwise work (DDPM update; DPS's gradient of ||y - A x0hat|| through
    the network; DMPS's and C-DPS's closed-form box-inpainting guidance)."""
    import torch

    dev = torch.device(args.device)
    dtype = {"float32": torch.float32, "float16": torch.float16}[args.dtype]
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    model, cfg = build(args.config, dtype, dev)
    if args.compile:
        model = torch.compile(model)
    n, s, c = args.batch, args.image_size, cfg["in_channels"]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, c, s, s, generator=gen).to(dev, dtype)
    mask = torch.ones(1, 1, s, s, device=dev, dtype=dtype)
    mask[..., s // 4 : s // 2, s // 4 : s // 2] = 0
    y = torch.randn(n, c, s, s, generator=gen).to(dev, dtype) * mask
    z = torch.randn_like(x)
    t = torch.full((n,), 500.0, device=dev)
    a, b, c1, c2, sig = 0.6, 0.8, 0.99, 0.05, 0.1
    flops = None

    def ddpm_update(xx, eps):
        x0 = ((xx - b * eps) / a).clamp(-1, 1)
        return c1 * x0 + c2 * xx + sig * z, x0

    def ddpm():
        with torch.no_grad():
            eps = model(x, t)[:, :c]
            return ddpm_update(x, eps)[0]

    def dps():
        xx = x.detach().requires_grad_(True)
        eps = model(xx, t)[:, :c]
        x0 = (xx - b * eps) / a
        loss = ((y - mask * x0) ** 2).sum().sqrt()
        (g,) = torch.autograd.grad(loss, xx)
        with torch.no_grad():
            return ddpm_update(xx, eps)[0] - 0.5 * g

    def dmps():
        with torch.no_grad():
            eps = model(x, t)[:, :c]
            xn, x0 = ddpm_update(x, eps)
            return xn + 0.3 * mask * (y - mask * x0)

    out = []
    for name, fn in [("step ddpm", ddpm), ("step dps", dps), ("step dmps", dmps), ("step cdps", dmps)]:
        out.append(record(args, name, "step", timed(fn, args.iters, sync), note="PyTorch equivalent of the step's work"))
    return out


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
    return record(
        args,
        mode,
        "model",
        statistics.median(times) if times else None,
        weights_bytes=weights,
        bytes=extra,
        iters=args.iters,
    )


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
    ap.add_argument("--shapes", metavar="JSONL", help="also run the layer rows of this `tweedie bench --json` output")
    ap.add_argument("--no-steps", action="store_true", help="skip the sampler-step rows")
    ap.add_argument("--only", choices=["forward", "forward_vjp"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        print(json.dumps(measure(args, args.only)))
        return
    records = []
    for mode in ["forward", "forward_vjp"]:
        cmd = [sys.executable, os.path.abspath(__file__)] + sys.argv[1:] + ["--only", mode]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.stderr.write(run.stderr)
            sys.exit(f"bench_torch.py: the {mode} pass failed (its error is above)")
        out = run.stdout
        records.append(json.loads(out.strip().splitlines()[-1]))
    if args.shapes:
        records = layer_rows(args, args.shapes) + records
    if args.iters > 0 and not args.no_steps:
        records += step_rows(args)
    for r in records:
        if args.json:
            print(json.dumps(r))
        else:
            ms = "-" if r["median_ms"] is None else f"{r['median_ms']:.3f} ms"
            mem = f"{r['bytes'] / 2**20:8.1f} MiB" if "bytes" in r else ""
            print(f"{r['engine']} on {r['device']}: {r['name']:<44} {ms:>14} {mem}")


if __name__ == "__main__":
    main()
