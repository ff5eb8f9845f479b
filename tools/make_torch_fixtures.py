#!/usr/bin/env python3
"""Write tests/fixtures/torch/: small checkpoints saved by torch itself for
tweedie's Python-free .pt reader (src/io/torch/), and hostile or broken ones
it must refuse. Run once; the tests read the files and need no Python.

    python3 tools/make_torch_fixtures.py [--out tests/fixtures/torch]

Files:
  values_zip.pt, values_legacy.pt   one state dict (f32, f16, bf16, f64, a
                                    parameter, a transposed view, a strided view
                                    with an offset), zip and legacy formats
  nested_ema.pt                     {"step": 7, "ema": that state dict}
  values.safetensors                the same tensors, contiguous, as float32
  tiny.pt                           a small guided-diffusion U-Net (the
                                    training script's twin of UNetModel), f16, zip
  tiny_legacy_f32.pt                the same weights widened to f32, legacy format
  tiny/model.safetensors, tiny/config.json   the same weights and its config
  hostile_*.pt                      what must be refused (see HOSTILE below)
"""

import argparse
import io
import json
import math
import os
import pickle
import sys
import zipfile
from collections import OrderedDict

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_prior import CONFIG, UNetModel  # noqa: E402

# The payload of the code-running pickles; the tests check it never appears.
MARKER = "/tmp/tweedie-torch-fixture-pwned"


def values():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    sd = OrderedDict()
    sd["a.weight"] = torch.randn(3, 4, generator=g)
    sd["b.half"] = torch.randn(5, generator=g).half()
    sd["c.bf16"] = torch.randn(2, 3, generator=g).bfloat16()
    sd["d.double"] = torch.randn(2, 2, generator=g, dtype=torch.float64)
    sd["e.param"] = torch.nn.Parameter(torch.randn(2, 2, 3, generator=g))
    sd["f.transposed"] = base.t()  # strides (1, 6)
    sd["g.strided"] = base[1:, 1::2]  # offset 7, strides (6, 2)
    sd["module.h.bias"] = torch.randn(3, generator=g)  # DataParallel's prefix is stripped
    return sd


def expected(sd):
    return {k.removeprefix("module."): v.detach().float().contiguous() for k, v in sd.items()}


class Call:
    """An object that pickles as a call of `f(*args)`: what a hostile file holds."""

    def __init__(self, f, *args):
        self.f, self.args = f, args

    def __reduce__(self):
        return (self.f, self.args)


def rewrite_zip(src, dst, edit):
    """Copies a torch zip archive, passing each entry through edit(name, data) (None drops it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


def legacy_with_object_pickle(path, object_pickle):
    """A legacy-format file whose object pickle is given raw (no storages)."""
    with open(path, "wb") as f:
        for head in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(head, f, protocol=2)
        f.write(object_pickle)
        pickle.dump([], f, protocol=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "torch"))
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)

    sd = values()
    torch.save(sd, p("values_zip.pt"))
    torch.save(sd, p("values_legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save({"step": 7, "ema": sd}, p("nested_ema.pt"))
    save_file(expected(sd), p("values.safetensors"))

    # A small U-Net in guided-diffusion's layout, stored in f16, and its safetensors twin.
    cfg = dict(CONFIG, image_size=16, in_channels=1, out_channels=2, channel_mult=[1],
               attention_resolutions=[1], num_head_channels=16, num_heads=2)
    m = UNetModel(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, q in m.named_parameters():
            if q.dim() >= 2:
                q.copy_(torch.randn(q.shape, generator=g) / math.sqrt(q[0].numel()))
            else:
                q.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(q.shape, generator=g))
    # The module's own state_dict: an OrderedDict with its `_metadata`
    # attribute, which the pickle sets with BUILD, as in real checkpoints.
    half = m.half().state_dict()
    assert hasattr(half, "_metadata")
    torch.save(half, p("tiny.pt"))
    # Widening f16 to f32 is exact: the same model in the other format and dtype.
    torch.save(OrderedDict((k, v.float()) for k, v in half.items()), p("tiny_legacy_f32.pt"),
               _use_new_zipfile_serialization=False)
    os.makedirs(p("tiny"), exist_ok=True)
    save_file({k: v.contiguous() for k, v in half.items()}, p("tiny/model.safetensors"))
    with open(p("tiny/config.json"), "w") as f:
        json.dump(dict(cfg, architecture="guided-diffusion"), f, indent=2, sort_keys=True)
        f.write("\n")
    missing = m.state_dict()
    del missing["middle_block.1.qkv.weight"]
    torch.save(missing, p("hostile_missing_key.pt"))

    # Code in the pickle: refused by name, never run.
    torch.save({"x": Call(os.system, f"touch {MARKER}")}, p("hostile_os_system_zip.pt"))
    torch.save({"x": Call(os.system, f"touch {MARKER}")}, p("hostile_os_system_legacy.pt"),
               _use_new_zipfile_serialization=False)
    torch.save({"x": Call(eval, f"__import__('os').system('touch {MARKER}')")}, p("hostile_eval.pt"))

    # Views that reach outside their storage.
    small = torch.arange(6, dtype=torch.float32)
    rebuild = torch._utils._rebuild_tensor_v2
    torch.save({"w": Call(rebuild, small.storage(), 2, (2, 3), (3, 1), False, OrderedDict())}, p("hostile_oob_view.pt"))
    torch.save({"w": Call(rebuild, small.storage(), 0, (1 << 20, 1 << 20), (1 << 20, 1), False, OrderedDict())},
               p("hostile_huge.pt"))

    # Broken archives.
    rewrite_zip(p("values_zip.pt"), p("hostile_missing_storage.pt"),
                lambda n, d: None if n.endswith("/data/0") else d)
    rewrite_zip(p("values_zip.pt"), p("hostile_short_storage.pt"),
                lambda n, d: d[: len(d) // 2] if n.endswith("/data/0") else d)
    whole = open(p("values_zip.pt"), "rb").read()
    open(p("hostile_truncated.pt"), "wb").write(whole[: len(whole) * 2 // 3])
    open(p("hostile_empty.pt"), "wb").close()
    open(p("hostile_random.pt"), "wb").write(bytes(torch.randint(0, 256, (512,), generator=g).to(torch.uint8).tolist()))

    # 5000 lists, each appended into the one below it: nesting no recursion may follow.
    n = 5_000
    legacy_with_object_pickle(p("hostile_deep.pt"), b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")

    for name in sorted(os.listdir(out)):
        path = p(name)
        if os.path.isfile(path):
            print(f"{os.path.getsize(path):>8}  {name}")


if __name__ == "__main__":
    main()
