#!/usr/bin/env python3
"""Score `tweedie gmm` samples against a mixture problem's exact posterior.

    python3 tools/score_gmm.py tests/fixtures/gmm/d8_m2 samples.safetensors [more.safetensors ...]

Prints, for each samples file, the sliced Wasserstein-2 distance to the
fixture's exact posterior samples (`<problem>.ref.safetensors`, key
`reference`): 1000 random unit directions, sorted projections read at common
quantile levels, root-mean-square difference. Beside it: the same distance for
fresh samples from the prior (the unconditioned end) and for an equal number
of the reference's own samples against the rest (the sampling floor), and the
fraction of the prior-to-floor gap the samples close. Needs numpy and
safetensors (pip install numpy safetensors).
"""
import sys

import numpy as np
from safetensors.numpy import load_file


def sliced_w2(a, b, seed=0, dirs=1000):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((dirs, a.shape[1]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    n = min(len(a), len(b))
    levels = (np.arange(n) + 0.5) / n
    qa = np.quantile(a @ u.T, levels, axis=0)
    qb = np.quantile(b @ u.T, levels, axis=0)
    return float(np.sqrt(((qa - qb) ** 2).mean()))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    stem = sys.argv[1].removesuffix(".safetensors")
    problem = load_file(stem + ".safetensors")
    ref = load_file(stem + ".ref.safetensors")["reference"].astype(np.float64)
    rng = np.random.default_rng(1)
    w = problem["prior.weights"].astype(np.float64)
    for path in sys.argv[2:]:
        x = load_file(path)["samples"].astype(np.float64)
        n = len(x)
        k = rng.choice(len(w), size=n, p=w / w.sum())
        prior = problem["prior.means"][k] + np.sqrt(problem["prior.vars"][k]) * rng.standard_normal(x.shape)
        half = len(ref) // 2
        held, rest = ref[: min(n, half)], ref[half:]
        v, p, f = sliced_w2(x, ref), sliced_w2(prior, ref), sliced_w2(held, rest)
        print(f"{path}: sliced W2 {v:.3f}  prior {p:.3f}  exact floor {f:.3f}  gap closed {100 * (p - v) / (p - f):.1f}%"
              f"  ({n} samples, {len(np.unique(x, axis=0))} distinct)")


if __name__ == "__main__":
    main()
