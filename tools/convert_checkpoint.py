#!/usr/bin/env python3
"""Convert a guided-diffusion (ADM) .pt state dict into what tweedie loads:
<out>/model.safetensors (upstream key names) and <out>/config.json
(UNetModel constructor arguments + "architecture": "guided-diffusion").

The model options come from DPS / DMPS style flags or their model YAML
(configs/model_config.yaml); the defaults are DPS's FFHQ prior (ffhq_10m.pt):

    python tools/convert_checkpoint.py ffhq_10m.pt --out weights/ffhq256
    python tools/convert_checkpoint.py ffhq_10m.pt --yaml configs/model_config.yaml --out weights/ffhq256
    tweedie info weights/ffhq256      # checks every key and shape against the config

Needs torch and safetensors; never needed at run time. create_model's rules are
applied: channel_mult "" picks the default for image_size, attention_resolutions
(pixels, "32,16,8") become downsample rates image_size // res, learn_sigma
doubles out_channels.
"""

import argparse
import json
import os
import sys

DEFAULTS = dict(
    image_size=256,
    num_channels=128,
    num_res_blocks=1,
    channel_mult="",
    learn_sigma=True,
    class_cond=False,
    use_checkpoint=False,
    attention_resolutions="16",
    num_heads=4,
    num_head_channels=64,
    num_heads_upsample=-1,
    use_scale_shift_norm=True,
    dropout=0.0,
    resblock_updown=True,
    use_fp16=False,
    use_new_attention_order=False,
)

DEFAULT_MULT = {
    512: [0.5, 1, 1, 2, 2, 4, 4],
    256: [1, 1, 2, 2, 4, 4],
    128: [1, 1, 2, 3, 4],
    64: [1, 2, 3, 4],
}


def read_yaml(path):
    """The flat `key: value` model YAML of DPS / DMPS (PyYAML when present)."""
    try:
        import yaml  # type: ignore

        with open(path) as f:
            return yaml.safe_load(f)
    except ImportError:
        pass
    out = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line or ":" not in line:
                continue
            k, v = (s.strip() for s in line.split(":", 1))
            v = v.strip("'\"")
            if v.lower() in ("true", "false"):
                out[k] = v.lower() == "true"
            else:
                try:
                    out[k] = int(v)
                except ValueError:
                    try:
                        out[k] = float(v)
                    except ValueError:
                        out[k] = v
    return out


def unet_config(o):
    """create_model(...) -> UNetModel(...) arguments."""
    size = int(o["image_size"])
    mult = o["channel_mult"]
    if mult in ("", None):
        if size not in DEFAULT_MULT:
            sys.exit(f"error: channel_mult is empty and image_size {size} has no default")
        mult = DEFAULT_MULT[size]
    elif isinstance(mult, str):
        mult = [float(m) if "." in m else int(m) for m in mult.split(",")]
    res = o["attention_resolutions"]
    res = [int(r) for r in str(res).split(",") if str(r).strip()] if not isinstance(res, list) else res
    if o.get("class_cond"):
        sys.exit("error: class-conditional models are not supported")
    in_ch = int(o.get("in_channels", 3))
    return {
        "architecture": "guided-diffusion",
        "image_size": size,
        "in_channels": in_ch,
        "model_channels": int(o["num_channels"]),
        "out_channels": in_ch * (2 if o["learn_sigma"] else 1),
        "num_res_blocks": int(o["num_res_blocks"]),
        "attention_resolutions": [size // r for r in res],
        "dropout": float(o.get("dropout", 0.0)),
        "channel_mult": mult,
        "num_classes": None,
        "use_checkpoint": False,
        "use_fp16": False,
        "num_heads": int(o["num_heads"]),
        "num_head_channels": int(o["num_head_channels"]),
        "num_heads_upsample": int(o["num_heads_upsample"]),
        "use_scale_shift_norm": bool(o["use_scale_shift_norm"]),
        "resblock_updown": bool(o["resblock_updown"]),
        "use_new_attention_order": bool(o["use_new_attention_order"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="guided-diffusion .pt state dict")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--yaml", help="DPS/DMPS model YAML with the model flags")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32", help="stored weight type")
    for k, v in DEFAULTS.items():
        t = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(v, bool) else type(v)
        ap.add_argument("--" + k, type=t, default=None)
    a = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    opts = dict(DEFAULTS)
    if a.yaml:
        opts.update({k: v for k, v in read_yaml(a.yaml).items() if k in DEFAULTS or k == "in_channels"})
    opts.update({k: getattr(a, k) for k in DEFAULTS if getattr(a, k) is not None})
    config = unet_config(opts)

    sd = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "ema"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    tensors = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        tensors[k] = v.detach().to(dtype).contiguous()

    os.makedirs(a.out, exist_ok=True)
    save_file(tensors, os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {len(tensors)} tensors ({n / 1e6:.1f} M parameters, {a.dtype}) and config.json to {a.out}")
    print(f"check it with: tweedie info {a.out}")


if __name__ == "__main__":
    main()
