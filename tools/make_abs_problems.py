#!/usr/bin/env python3
"""Gaussian-mixture problems with a non-linear measurement, y = |A x| + sigma_y n
(elementwise absolute value: a real-valued phase retrieval, the signs of A x
lost), and their exact posterior samples.

    python3 tools/make_abs_problems.py tests/fixtures/gmm

writes `d8_m3_abs.safetensors` and `d20_m4_abs.safetensors` (the linear
problems' tensors plus `abs` = [1]) with `<name>.ref.safetensors` beside each
(`reference` [4000, d] exact posterior samples, `x0` the signal that made y).

The posterior is exact. Where sign(A x) = s, |A x| = S A x (S = diag(s)), so
p(x | y) = sum over components k and sign patterns s of
w_k N(x; mu_k, Sigma_k) N(S y; A x, sigma_y^2 I) 1[sign(A x) = s]: per (k, s)
the linear problem's Gaussian posterior with y replaced by S y, restricted to
its region. Drawing (k, s) with probability proportional to
w_k N(S y; A mu_k, A Sigma_k A^T + sigma_y^2 I) (the untruncated evidence),
x from that Gaussian, and keeping x only when sign(A x) = s samples it
exactly (rejection: each accepted (k, s, x) has density proportional to the
summand). The prior is the linear fixtures' (a 5 x 5 grid of components,
means (i, j) * 4 / sqrt(d / 8) repeated over the coordinates, variances and
weights random); A = U diag(s) V^T with random orthonormal U, V and singular
values uniform in [0.1, 1]. Needs numpy and safetensors.
"""
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def make(d, m, seed, sigma_y=0.05):
    rng = np.random.default_rng(seed)
    scale = 4.0 / np.sqrt(d / 8.0)
    grid = [(i, j) for i in range(-2, 3) for j in range(-2, 3)]
    means = np.array([[scale * (i if c % 2 == 0 else j) for c in range(d)] for i, j in grid])
    means += 0.1 * rng.standard_normal(means.shape)
    variances = np.repeat(rng.uniform(0.5, 1.5, (len(grid), 1)), d, axis=1)
    weights = rng.uniform(0.2, 1.0, len(grid))
    weights /= weights.sum()
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.sort(rng.uniform(0.1, 1.0, m))[::-1]
    a = u @ np.diag(s) @ v[:, :m].T
    k0 = rng.choice(len(grid), p=weights)
    x0 = means[k0] + np.sqrt(variances[k0]) * rng.standard_normal(d)
    y = np.abs(a @ x0) + sigma_y * rng.standard_normal(m)
    return weights, means, variances, a, y, sigma_y, x0


def exact_posterior(weights, means, variances, a, y, sigma_y, n, seed):
    rng = np.random.default_rng(seed)
    k_count, d = means.shape
    m = a.shape[0]
    s2 = sigma_y**2
    patterns = np.array([[1.0 if (p >> r) & 1 else -1.0 for r in range(m)] for p in range(2**m)])
    comps, logw = [], []
    for k in range(k_count):
        sig = np.diag(variances[k])
        prec = np.diag(1.0 / variances[k]) + a.T @ a / s2
        cov = np.linalg.inv(prec)
        chol = np.linalg.cholesky((cov + cov.T) / 2)
        ev = a @ sig @ a.T + s2 * np.eye(m)
        ev_inv = np.linalg.inv(ev)
        _, logdet = np.linalg.slogdet(ev)
        for sgn in patterns:
            sy = sgn * y
            mean = cov @ (means[k] / variances[k] + a.T @ sy / s2)
            r = sy - a @ means[k]
            logw.append(np.log(weights[k]) - 0.5 * r @ ev_inv @ r - 0.5 * logdet)
            comps.append((mean, chol, sgn))
    logw = np.array(logw)
    p = np.exp(logw - logw.max())
    p /= p.sum()
    out = []
    tried = 0
    while len(out) < n:
        picks = rng.choice(len(comps), size=4 * n, p=p)
        for c in picks:
            mean, chol, sgn = comps[c]
            x = mean + chol @ rng.standard_normal(d)
            tried += 1
            if np.all(np.sign(a @ x) == sgn):
                out.append(x)
                if len(out) == n:
                    break
    return np.array(out), len(out) / tried


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    for d, m, seed in [(8, 3, 80301), (20, 4, 200401)]:
        weights, means, variances, a, y, sigma_y, x0 = make(d, m, seed)
        ref, acc = exact_posterior(weights, means, variances, a, y, sigma_y, 4000, seed + 1)
        name = f"d{d}_m{m}_abs"
        f32 = lambda v: np.ascontiguousarray(np.asarray(v, dtype=np.float32))
        save_file(
            {
                "prior.weights": f32(weights),
                "prior.means": f32(means),
                "prior.vars": f32(variances),
                "A": f32(a),
                "y": f32(y),
                "sigma_y": f32([sigma_y]),
                "abs": f32([1.0]),
            },
            str(out / f"{name}.safetensors"),
        )
        save_file({"reference": f32(ref), "x0": f32(x0)}, str(out / f"{name}.ref.safetensors"))
        print(f"{name}: acceptance {acc:.3f}, y {np.round(y, 3)}")


if __name__ == "__main__":
    main()
