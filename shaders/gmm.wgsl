// Exact prediction of a Gaussian-mixture prior with diagonal covariances, and its
// vector-Jacobian product, for a VP diffusion (the noise eps; a = sqrt(abar_t),
// b = sqrt(1 - abar_t), t a timestep index) or a flow (the velocity
// u = E[eps - x0 | x_t]; a = 1 - t, b = t, t in [0, 1]):
//   p_t(x) = sum_k w_k N(x; a mu_k, diag(var_kt)),   var_kt = a^2 Sigma_k + b^2
//   s_k = -(x - a mu_k) / var_kt,   r_k = responsibilities,   s = sum_k r_k s_k
// Both outputs are sum_k r_k f_k with f_k = c_k (x - a mu_k) + m mu_k:
//   eps:      c_k = b / var_kt,                 m = 0   (eps = -b s)
//   velocity: c_k = (b - a Sigma_k) / var_kt,   m = -1  (E[eps|x,k] - E[x0|x,k]),
// finite at a = 0 where the flow starts. The responsibilities move with x
// (grad r_k = r_k (s_k - s)), so
//   (d out / dx)^T g = sum_k r_k [ c_k g + (s_k - s) (f_k . g) ].
// gmm_logits is one thread per sample (it normalises the responsibilities in
// place), the others one thread per (sample, component) or (sample, element);
// no shared memory: K and d are small and lavapipe barriers are slow.
//
// prior buffer: [ log w (K) | means (K*d) | Sigma diagonals (K*d) ].

struct Params {
    batch: u32,
    d: u32,
    k: u32,
    steps: u32,  // entries in the abar table (timesteps are clamped into it)
    flow: u32,   // 1: flow process, velocity output; 0: VP, eps output
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> prior: array<f32>;
@group(0) @binding(2) var<storage, read> abar: array<f32>;
@group(0) @binding(3) var<storage, read> tsteps: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> logits: array<f32>;

// (a_t, b_t) of sample n's timestep.
fn coeffs(n: u32) -> vec2<f32> {
    if (p.flow != 0u) {
        let t = clamp(tsteps[n], 0.0, 1.0);
        return vec2<f32>(1.0 - t, t);
    }
    let ti = u32(clamp(round(tsteps[n]), 0.0, f32(p.steps - 1u)));
    let ab = abar[ti];
    return vec2<f32>(sqrt(ab), sqrt(1.0 - ab));
}

fn mean_at(k: u32, j: u32) -> f32 {
    return prior[p.k + k * p.d + j];
}

fn sigma_at(k: u32, j: u32) -> f32 {
    return prior[p.k + p.k * p.d + k * p.d + j];
}

fn var_at(k: u32, j: u32, ab: vec2<f32>) -> f32 {
    return ab.x * ab.x * sigma_at(k, j) + ab.y * ab.y;
}

// c_k of the output's per-component map (see the top).
fn out_coef(k: u32, j: u32, ab: vec2<f32>) -> f32 {
    if (p.flow != 0u) {
        return (ab.y - ab.x * sigma_at(k, j)) / var_at(k, j, ab);
    }
    return ab.y / var_at(k, j, ab);
}

// f_k(x)_j, component k's output.
fn out_k(k: u32, j: u32, xj: f32, ab: vec2<f32>) -> f32 {
    let f = out_coef(k, j, ab) * (xj - ab.x * mean_at(k, j));
    return select(f, f - mean_at(k, j), p.flow != 0u);
}

// logits[n, k] <- responsibilities r_k(x_n): one thread per sample computes
// the K log-densities (up to the shared 2 pi term) and normalises them, so
// the per-element kernels below need no exp.
@compute @workgroup_size(WG_SMALL)
fn gmm_logits(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if (n >= p.batch) { return; }
    let ab = coeffs(n);
    var lmax = -3.4e38;
    for (var k = 0u; k < p.k; k++) {
        var q = 0.0;
        for (var j = 0u; j < p.d; j++) {
            let v = var_at(k, j, ab);
            let r = x[n * p.d + j] - ab.x * mean_at(k, j);
            q += r * r / v + log(v);
        }
        let l = prior[k] - 0.5 * q;
        logits[n * p.k + k] = l;
        lmax = max(lmax, l);
    }
    var total = 0.0;
    for (var k = 0u; k < p.k; k++) {
        let e = exp(logits[n * p.k + k] - lmax);
        logits[n * p.k + k] = e;
        total += e;
    }
    for (var k = 0u; k < p.k; k++) {
        logits[n * p.k + k] = logits[n * p.k + k] / total;
    }
}

fn resp(n: u32, k: u32) -> f32 {
    return logits[n * p.k + k];
}

// Element idx = (n, j) of x, with its sample's (a_t, b_t): what the
// per-element kernels start from.
struct Elem {
    n: u32,
    j: u32,
    ab: vec2<f32>,
    x: f32,
}

fn elem_at(idx: u32) -> Elem {
    let n = idx / p.d;
    return Elem(n, idx % p.d, coeffs(n), x[idx]);
}

@group(0) @binding(6) var<storage, read_write> eps: array<f32>;

// eps[n, j] (or the velocity) = sum_k r_k f_k
@compute @workgroup_size(WG)
fn gmm_eps(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = index(gid, nwg);
    if (idx >= p.batch * p.d) { return; }
    let e = elem_at(idx);
    var o = 0.0;
    for (var k = 0u; k < p.k; k++) {
        o += resp(e.n, k) * out_k(k, e.j, e.x, e.ab);
    }
    eps[idx] = o;
}

@group(0) @binding(6) var<storage, read> cot: array<f32>;
@group(0) @binding(7) var<storage, read_write> dots: array<f32>;

// dots[n, k] = r_k (f_k . g)
@compute @workgroup_size(WG)
fn gmm_vjp_dots(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = index(gid, nwg);
    if (idx >= p.batch * p.k) { return; }
    let n = idx / p.k;
    let k = idx % p.k;
    let ab = coeffs(n);
    var c = 0.0;
    for (var j = 0u; j < p.d; j++) {
        c += out_k(k, j, x[n * p.d + j], ab) * cot[n * p.d + j];
    }
    dots[idx] = resp(n, k) * c;
}

@group(0) @binding(7) var<storage, read> dots_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

// dx[n, j] = sum_k r_k c_k g_j + (s_k - s)_j dots[n, k]
@compute @workgroup_size(WG)
fn gmm_vjp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = index(gid, nwg);
    if (idx >= p.batch * p.d) { return; }
    let e = elem_at(idx);
    let g = cot[idx];
    var s = 0.0;
    for (var k = 0u; k < p.k; k++) {
        s -= resp(e.n, k) * (e.x - e.ab.x * mean_at(k, e.j)) / var_at(k, e.j, e.ab);
    }
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        let v = var_at(k, e.j, e.ab);
        let sk = -(e.x - e.ab.x * mean_at(k, e.j)) / v;
        acc += resp(e.n, k) * out_coef(k, e.j, e.ab) * g + (sk - s) * dots_in[e.n * p.k + k];
    }
    dx[idx] = acc;
}
