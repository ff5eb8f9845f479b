#!/usr/bin/env python3
"""Train tweedie's shipped priors: a small guided-diffusion (ADM) U-Net on Fashion-MNIST.

Data: Debian's `dataset-fashion-mnist` package (training split only; the test
split stays for evaluation), 28x28 images zero-padded to 32x32 (background is
-1 after scaling to [-1, 1]).
Model: the guided-diffusion `UNetModel` layout (same module tree and state-dict
key names, so tweedie's loader reads it directly), learned sigma (out = [eps, v]).
Loss: improved-DDPM's hybrid loss, L_simple + 0.001 * L_vlb (the variance
head learns from L_vlb with the mean stopped), linear betas, 1000 steps.
With --objective flow the same U-Net (one output channel) learns the velocity
of the flow x_t = (1 - t) x0 + t eps (conditional flow matching / rectified
flow, data at t = 0, the network sees 1000 t): loss |u(x_t, t) - (eps - x0)|^2,
t ~ U(0, 1). --init DIR starts from another prior's weights (every tensor of
matching shape; the output convolution keeps its first channel).
Writes model.safetensors (float16 by default) + config.json in tweedie's format.

This file is a self-contained re-implementation of guided-diffusion's UNetModel
for the configuration options the shipped prior uses; it is never needed at
run time.

    python3 tools/train_prior.py --out weights/fashion-mnist-32 --steps 20000
    python3 tools/train_prior.py --objective flow --init weights/fashion-mnist-32 \
        --out weights/fashion-mnist-32-flow --steps 20000
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"


def load_split(kind):
    with gzip.open(os.path.join(DATA, f"{kind}-images-idx3-ubyte.gz"), "rb") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    x = raw.astype(np.float32) / 127.5 - 1.0
    return np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)[:, None]


# ---------------------------------------------------------------- the U-Net
def at_least_f32(x):
    """x in float32, or float64 when it is (the fixtures run the network in float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(at_least_f32(x)).type(x.dtype)


def norm(ch):
    return GroupNorm32(32, ch)


def zero(m):
    for p in m.parameters():
        p.detach().zero_()
    return m


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Upsample(nn.Module):
    def __init__(self, ch, use_conv):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, ch, use_conv):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.op(x)


class ResBlock(nn.Module):
    def __init__(self, ch, emb_ch, out_ch, scale_shift, up=False, down=False):
        super().__init__()
        self.in_layers = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(ch, False), Upsample(ch, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(ch, False), Downsample(ch, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.scale_shift = scale_shift
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(norm(out_ch), nn.SiLU(), nn.Dropout(0.0), zero(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Legacy QKV order (use_new_attention_order = False)."""

    def __init__(self, ch, heads):
        super().__init__()
        self.heads = heads
        self.norm = norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = zero(nn.Conv1d(ch, ch, 1))

    def forward(self, x):
        b, c, hh, ww = x.shape
        xf = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(xf))
        bs, width, length = qkv.shape
        ch = width // (3 * self.heads)
        q, k, v = qkv.reshape(bs * self.heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        w = torch.softmax(at_least_f32(w), dim=-1).type(w.dtype)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(bs, -1, length)
        return (xf + self.proj_out(a)).reshape(b, c, hh, ww)


class Seq(nn.Sequential):
    def forward(self, x, emb):
        for m in self:
            x = m(x, emb) if isinstance(m, ResBlock) else m(x)
        return x


class UNetModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        mc, mult = cfg["model_channels"], cfg["channel_mult"]
        nrb, ss, updown = cfg["num_res_blocks"], cfg["use_scale_shift_norm"], cfg["resblock_updown"]
        attn = set(cfg["attention_resolutions"])
        hc = cfg["num_head_channels"]
        heads = lambda ch: ch // hc if hc > 0 else cfg["num_heads"]
        self.mc = mc
        emb = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = mc
        self.input_blocks = nn.ModuleList([Seq(nn.Conv2d(cfg["in_channels"], ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [ResBlock(ch, emb, m * mc, ss)]
                ch = m * mc
                if ds in attn:
                    layers.append(AttentionBlock(ch, heads(ch)))
                self.input_blocks.append(Seq(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(Seq(ResBlock(ch, emb, ch, ss, down=True) if updown else Downsample(ch, cfg["conv_resample"])))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq(ResBlock(ch, emb, ch, ss), AttentionBlock(ch, heads(ch)), ResBlock(ch, emb, ch, ss))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), emb, m * mc, ss)]
                ch = m * mc
                if ds in attn:
                    layers.append(AttentionBlock(ch, heads(ch)))
                if level and i == nrb:
                    layers.append(ResBlock(ch, emb, ch, ss, up=True) if updown else Upsample(ch, cfg["conv_resample"]))
                    ds //= 2
                self.output_blocks.append(Seq(*layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), zero(nn.Conv2d(mc, cfg["out_channels"], 3, padding=1)))

    def forward(self, x, t):
        # The sinusoids in float32 as guided-diffusion computes them, then the network's dtype.
        emb = self.time_embed(timestep_embedding(t, self.mc).to(x.dtype))
        hs, h = [], x
        for m in self.input_blocks:
            h = m(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for m in self.output_blocks:
            h = m(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


# ---------------------------------------------------------------- diffusion
def normal_kl(m1, lv1, m2, lv2):
    return 0.5 * (-1.0 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))


def approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def disc_gauss_loglik(x, mean, log_scale):
    cx = x - mean
    inv = torch.exp(-log_scale)
    cdf_plus = approx_std_normal_cdf(inv * (cx + 1 / 255))
    cdf_min = approx_std_normal_cdf(inv * (cx - 1 / 255))
    lp = torch.log(cdf_plus.clamp(min=1e-12))
    l1m = torch.log((1 - cdf_min).clamp(min=1e-12))
    delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, lp, torch.where(x > 0.999, l1m, torch.log(delta.clamp(min=1e-12))))


class Diffusion:
    def __init__(self, T=1000):
        b = np.linspace(1e-4, 0.02, T, dtype=np.float64)
        a = np.cumprod(1 - b)
        ap = np.append(1.0, a[:-1])
        self.T = T
        t = lambda v: torch.tensor(v, dtype=torch.float32)
        self.sqrt_ab, self.sqrt_1mab = t(np.sqrt(a)), t(np.sqrt(1 - a))
        self.sqrt_recip_ab, self.sqrt_recipm1_ab = t(np.sqrt(1 / a)), t(np.sqrt(1 / a - 1))
        pv = b * (1 - ap) / (1 - a)
        self.post_logvar = t(np.log(np.append(pv[1], pv[1:])))
        self.log_beta = t(np.log(b))
        self.c1, self.c2 = t(b * np.sqrt(ap) / (1 - a)), t((1 - ap) * np.sqrt(1 - b) / (1 - a))

    def loss(self, model, x0):
        n = x0.shape[0]
        t = torch.randint(0, self.T, (n,))
        noise = torch.randn_like(x0)
        g = lambda v: v[t][:, None, None, None]
        xt = g(self.sqrt_ab) * x0 + g(self.sqrt_1mab) * noise
        out = model(xt, t)
        eps, v = out.chunk(2, dim=1)
        mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
        # L_vlb with the mean stopped: only the variance head learns from it.
        frac = (v + 1) / 2
        logvar = frac * g(self.log_beta) + (1 - frac) * g(self.post_logvar)
        x0_pred = (g(self.sqrt_recip_ab) * xt - g(self.sqrt_recipm1_ab) * eps.detach()).clamp(-1, 1)
        mean_pred = g(self.c1) * x0_pred + g(self.c2) * xt
        mean_true = g(self.c1) * x0 + g(self.c2) * xt
        kl = normal_kl(mean_true, g(self.post_logvar), mean_pred, logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -disc_gauss_loglik(x0, mean_pred, 0.5 * logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
        vlb = torch.where(t == 0, nll, kl) * self.T
        return (mse + 0.001 * vlb).mean(), mse.mean().item()


class Flow:
    """Conditional flow matching: x_t = (1 - t) x0 + t eps, target u = eps - x0."""

    TIME_SCALE = 1000.0

    def loss(self, model, x0):
        n = x0.shape[0]
        t = torch.rand(n, device=x0.device)
        noise = torch.randn_like(x0)
        tt = t[:, None, None, None]
        xt = (1 - tt) * x0 + tt * noise
        out = model(xt, t * self.TIME_SCALE)
        mse = ((out - (noise - x0)) ** 2).mean()
        return mse, mse.item()


FLOW_FIELDS = {"process": "flow", "prediction_type": "velocity", "flow_data_time": 0, "time_scale": 1000}

CONFIG = {
    "architecture": "guided-diffusion",
    "image_size": 32,
    "in_channels": 1,
    "model_channels": 32,
    "out_channels": 2,
    "num_res_blocks": 1,
    "attention_resolutions": [4],
    "dropout": 0.0,
    "channel_mult": [1, 2, 2],
    "conv_resample": True,
    "dims": 2,
    "num_classes": None,
    "use_checkpoint": False,
    "use_fp16": False,
    "num_heads": 4,
    "num_head_channels": 32,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_new_attention_order": False,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=0, help="stop after this wall time (0: no limit)")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--objective", choices=["diffusion", "flow"], default="diffusion")
    ap.add_argument("--init", metavar="DIR", help="start from DIR's model.safetensors (tensors of matching shape)")
    ap.add_argument(
        "--resume",
        metavar="DIR",
        help="continue from DIR's model.safetensors and training.json (model and EMA start from the stored EMA "
        "weights; the optimizer state is not stored, so AdamW starts afresh); --steps counts the total",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    data = torch.from_numpy(load_split("train")).to(dev)
    global CONFIG
    if args.objective == "flow":
        CONFIG = dict(CONFIG, out_channels=1, **FLOW_FIELDS)
    model = UNetModel(CONFIG).to(dev)
    if args.init and not args.resume:
        from safetensors.torch import load_file

        src = load_file(os.path.join(args.init, "model.safetensors"))
        own = model.state_dict()
        for k, v in src.items():
            if k in own and own[k].shape == v.shape:
                own[k] = v.float()
            elif k in own and k.startswith("out.2."):
                own[k] = v.float()[: own[k].shape[0]]
        model.load_state_dict(own)
        print(f"initialised from {args.init}", flush=True)
    step0, seconds0, history = 0, 0.0, []
    if args.resume:
        from safetensors.torch import load_file

        with open(os.path.join(args.resume, "training.json")) as f:
            prev = json.load(f)
        state = load_file(os.path.join(args.resume, "model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in state.items()})
        step0, seconds0 = prev["steps"], float(prev["seconds"])
        history = prev.get("segments", [{"steps": step0, "seconds": prev["seconds"], "device": prev["device"]}])
        print(f"resumed from {args.resume} at step {step0}", flush=True)
    if step0:
        # A resumed run draws other batches than the run it continues.
        torch.manual_seed(args.seed + step0)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{nparams} parameters on {dev}, {len(data)} training images", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if args.objective == "flow":
        diff = Flow()
    else:
        diff = Diffusion()
        for k in ("sqrt_ab", "sqrt_1mab", "sqrt_recip_ab", "sqrt_recipm1_ab", "post_logvar", "log_beta", "c1", "c2"):
            setattr(diff, k, getattr(diff, k).to(dev))
    start, step, running = time.time(), step0, None
    os.makedirs(args.out, exist_ok=True)
    while step < args.steps:
        idx = torch.randint(0, len(data), (args.batch,), device=dev)
        x0 = data[idx]
        x0 = torch.where(torch.rand(args.batch, 1, 1, 1, device=dev) < 0.5, x0, x0.flip(3))
        loss, mse = diff.loss(model, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(args.ema).add_(v.detach(), alpha=1 - args.ema)
        step += 1
        running = mse if running is None else 0.99 * running + 0.01 * mse
        elapsed = time.time() - start
        if step % 200 == 0:
            print(f"step {step} mse {running:.4f} {elapsed / (step - step0):.3f}s/step", flush=True)
        if step % 1000 == 0 or step == args.steps or (args.minutes and elapsed > args.minutes * 60):
            seg = {"steps": step - step0, "seconds": round(elapsed), "device": device_name(dev)}
            save(args, ema, step, seconds0 + elapsed, running, nparams, dev, history + [seg])
        if args.minutes and elapsed > args.minutes * 60:
            break


LOSS = {
    "diffusion": "hybrid: L_simple + 0.001 L_vlb (improved DDPM), linear betas 1e-4..0.02, 1000 steps",
    "flow": "conditional flow matching: |u(x_t, 1000 t) - (eps - x0)|^2, x_t = (1 - t) x0 + t eps, t ~ U(0, 1)",
}


def device_name(dev):
    return dev + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else f" ({torch.get_num_threads()} threads)")


def save(args, ema, step, elapsed, mse, nparams, dev, segments):
    from safetensors.torch import save_file

    dt = torch.float16 if args.dtype == "float16" else torch.float32
    tensors = {k: v.detach().to("cpu", dt).contiguous() for k, v in ema.items()}
    tmp = os.path.join(args.out, ".model.safetensors.tmp")
    save_file(tensors, tmp)
    os.replace(tmp, os.path.join(args.out, "model.safetensors"))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(
            {
                "data": "Fashion-MNIST training split (60000 images, Debian dataset-fashion-mnist), 28x28 padded to 32x32 with -1, random horizontal flips",
                "loss": LOSS[args.objective],
                "init": args.init,
                "optimizer": f"AdamW lr {args.lr}, batch {args.batch}, grad clip 1.0, EMA {args.ema}",
                "steps": step,
                "seconds": round(elapsed),
                "device": device_name(dev),
                "segments": segments,
                "final_running_mse": round(mse, 5),
                "parameters": nparams,
                "stored_dtype": args.dtype,
                "seed": args.seed,
            },
            f,
            indent=2,
        )
    print(f"saved step {step} to {args.out}", flush=True)


if __name__ == "__main__":
    main()
