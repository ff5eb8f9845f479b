#!/usr/bin/env python3
"""Make the process fixtures: a flow model and a v-prediction model with their
own process files, the forward + VJP, and the first sampler steps, in float64.

    python3 tools/make_process_fixtures.py [--out tests/fixtures/unet]

- `adm_flow/`: a small guided-diffusion-layout U-Net (tools/train_prior.py's
  `UNetModel`, which matches guided-diffusion's) as a flow in torchcfm's
  convention: x_s = s x1 + (1 - s) noise, data at s = 1, the network predicts
  dx/ds and is fed 999 s (`config.json`: "process": "flow", "flow_data_time": 1,
  "time_scale": "(N-1)t"). `steps.safetensors`: x_T and the first 3 Euler steps
  of a 10-step run written in that convention, x_{s+ds} = x_s + ds model(x_s, 999 s).
- `ddpm_vpred_cosine/`: a small diffusers `UNet2DModel` saved by
  `save_pretrained` (config.json + diffusion_pytorch_model.safetensors) with
  diffusers' own `scheduler_config.json` for `DDIMScheduler(beta_schedule=
  "squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False)`.
  `steps.safetensors`: x_T and the first 3 steps of that scheduler's own
  `step` (1000 inference steps, eta 0: timesteps 999, 998, 997), its
  alphas_cumprod recomputed in float64.

Both `steps.safetensors` also hold single steps from fresh N(0, 1) states in
the middle of the run (where a_t and b_t are both of order 1; at timestep 999
of the cosine schedule sqrt(abar) is ~5e-5) and at its last step:
`single_time` [2] (the model's own time at the start of the step: s for the
flow, the diffusers timestep for the VP run), `x_single` [2,N,C,H,W] and
`x_single_next` [2,N,C,H,W]. The flow's are s = 0.5 and s = 0.9 (the last
step, to s = 1); the VP run's timesteps 500 and 0 (the last step, to
alphas_cumprod 1, diffusers' `set_alpha_to_one`).

Every parameter is drawn at random (the zero-initialised output convolutions
too) and stored as float32; everything is then run in float64 on exactly those
weights. `io.safetensors` holds x, t (network times), out = model(x, t),
cotangent and vjp = (d out / d x)^T cotangent, as the other U-Net fixtures.
"""
import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_prior import CONFIG, UNetModel  # noqa: E402

STEPS_RUN = 3


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def io_tensors(fwd, x, t, seed):
    """out, cotangent and the input VJP of fwd at (x, t), float64."""
    g = torch.Generator().manual_seed(seed)
    x = x.clone().requires_grad_(True)
    out = fwd(x, t)
    cot = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (vjp,) = torch.autograd.grad((out * cot).sum(), x)
    f = lambda v: v.detach().float().contiguous()
    return {"x": f(x), "t": f(t), "out": f(out), "cotangent": f(cot), "vjp": f(vjp)}


# ---------------------------------------------------------------- the ADM flow model
# The shipped prior's layout, smaller, as a data-at-1 flow.
ADM_FLOW = dict(
    CONFIG,
    image_size=16,
    out_channels=1,
    attention_resolutions=[2],
    channel_mult=[1, 1],
    num_head_channels=16,
    process="flow",
    prediction_type="velocity",
    flow_data_time=1,
    time_scale="(N-1)t",
    diffusion_steps=1000,
)


def make_adm_flow(out):
    d = os.path.join(out, "adm_flow")
    os.makedirs(d, exist_ok=True)
    m = UNetModel(ADM_FLOW)
    randomize(m, 1)
    save_file({k: v.detach().float().contiguous() for k, v in m.state_dict().items()}, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(ADM_FLOW, f, indent=2)
    m = m.double().eval()
    fwd = m
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 311.7, 999.0], dtype=torch.float64)
    save_file(io_tensors(fwd, x, t, 3), os.path.join(d, "io.safetensors"))
    # The first Euler steps, in the model's own convention (data at s = 1).
    k = 10
    xs = torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64)
    x_t, steps = xs.clone(), []
    with torch.no_grad():
        for j in range(STEPS_RUN):
            s = j / k
            xs = xs + (1.0 / k) * fwd(xs, torch.full((3,), 999.0 * s, dtype=torch.float64))
            steps.append(xs.clone())
    # Single steps from s = 0.5 and s = 0.9 (the last one), fresh states.
    g1 = torch.Generator().manual_seed(7)
    single_s = [0.5, 0.9]
    x1 = torch.randn(len(single_s), 3, 1, 16, 16, generator=g1, dtype=torch.float64)
    with torch.no_grad():
        nxt = torch.stack(
            [x1[i] + (1.0 / k) * fwd(x1[i], torch.full((3,), 999.0 * s, dtype=torch.float64)) for i, s in enumerate(single_s)]
        )
    save_file(
        {
            "x_T": x_t.float(),
            "x_steps": torch.stack(steps).float().contiguous(),
            "K": torch.tensor([float(k)]),
            "single_time": torch.tensor(single_s, dtype=torch.float32),
            "x_single": x1.float().contiguous(),
            "x_single_next": nxt.float().contiguous(),
        },
        os.path.join(d, "steps.safetensors"),
    )


# ---------------------------------------------------------------- the diffusers v-prediction model
def make_diffusers_vpred(out):
    from diffusers import DDIMScheduler, UNet2DModel

    d = os.path.join(out, "ddpm_vpred_cosine")
    os.makedirs(d, exist_ok=True)
    m = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=16,
        norm_num_groups=32,
    )
    randomize(m, 4)
    m.save_pretrained(d, safe_serialization=True)
    sched = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False
    )
    sched.save_config(d)
    m = m.double().eval()
    fwd = lambda x, t: m(x, t).sample
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 457.0, 999.0], dtype=torch.float64)
    save_file(io_tensors(fwd, x, t, 6), os.path.join(d, "io.safetensors"))
    # diffusers' DDIM on its own cosine schedule, recomputed in float64.
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - f((i + 1) / 1000) / f(i / 1000), 0.999) for i in range(1000)], dtype=torch.float64)
    sched.betas = betas
    sched.alphas = 1.0 - betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(1000)
    xs = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    x_t, steps = xs.clone(), []
    with torch.no_grad():
        for ts in sched.timesteps[:STEPS_RUN]:
            out = fwd(xs, torch.full((3,), float(ts), dtype=torch.float64))
            xs = sched.step(out, ts, xs, eta=0.0).prev_sample
            steps.append(xs.clone())
    # Single steps from timestep 500 and 0 (the last one), fresh states.
    g1 = torch.Generator().manual_seed(8)
    single_t = [500, 0]
    x1 = torch.randn(len(single_t), 3, 3, 16, 16, generator=g1, dtype=torch.float64)
    with torch.no_grad():
        nxt = []
        for i, ts in enumerate(single_t):
            ts = sched.timesteps[sched.timesteps == ts][0]
            out = fwd(x1[i], torch.full((3,), float(ts), dtype=torch.float64))
            nxt.append(sched.step(out, ts, x1[i], eta=0.0).prev_sample)
    save_file(
        {
            "x_T": x_t.float(),
            "x_steps": torch.stack(steps).float().contiguous(),
            "K": torch.tensor([1000.0]),
            "single_time": torch.tensor(single_t, dtype=torch.float32),
            "x_single": x1.float().contiguous(),
            "x_single_next": torch.stack(nxt).float().contiguous(),
        },
        os.path.join(d, "steps.safetensors"),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/unet")
    a = ap.parse_args()
    torch.set_num_threads(1)
    make_adm_flow(a.out)
    make_diffusers_vpred(a.out)
    print(f"wrote {a.out}/adm_flow and {a.out}/ddpm_vpred_cosine")


if __name__ == "__main__":
    main()
