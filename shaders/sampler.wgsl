// The reverse-step kernels shared by the samplers (src/samplers/). Per-step
// scalars arrive in one uniform block the sampler rewrites before each
// submission; one thread per element, no shared memory.
// Notation: x_t = a x0 + b eps (VP: a = sqrt(abar_t), b = sqrt(1 - abar_t); flow:
// a = 1 - t, b = t). The model's output o (called eps in the buffer names: the
// noise for an eps-model, else x0, v or a velocity) maps to the estimates
// x0hat = x0_x x + x0_out o and epshat = eps_x x + eps_out o (src/process.rs).

// Mirrors `StepParams` in src/samplers/mod.rs. The head is the same for every
// method (`Core::base_params`, plus the guidance and residual scale the method
// sets); `method` is a union: each method lays its own block over it (`DmpsStep`
// in dmps.rs, `CdpsStep` in cdps.rs) and reads it through the accessors beside
// its kernels below.
struct Step {
    n: u32,          // elements in x (batch * per)
    per: u32,        // elements per sample of x
    m_per: u32,      // elements per sample of the measurement
    flags: u32,      // 1: clip x0hat to [-1, 1]; 2: add noise; 4: learned sigma (v)
    a_t: f32,
    b_t: f32,
    coef1: f32,      // posterior mean coefficient on x0hat
    coef2: f32,      // posterior mean coefficient on x_t
    log_var_min: f32,   // log beta~ (clipped)
    log_var_max: f32,   // log beta
    log_var_fixed: f32, // fixed-small / fixed-large log variance
    guide: f32,         // ddpm_step: coefficient of g (set by the method, 0 for DDPM)
    guide2: f32,        // ddpm_step: coefficient of h
    resid_scale: f32,   // residual: r = y - resid_scale * (A x)
    x0_x: f32,          // x0hat = x0_x x + x0_out o
    x0_out: f32,
    eps_x: f32,         // epshat = eps_x x + eps_out o
    eps_out: f32,
    _pad0: u32,
    _pad1: u32,
    method: array<vec4<f32>, 3>, // the method's own block (12 words)
}

const WG: u32 = 256u;
const CLIP: u32 = 1u;
const NOISE: u32 = 2u;
const LEARNED: u32 = 4u;

@group(0) @binding(0) var<uniform> s: Step;

//!include grid

fn raw_x0(x: f32, o: f32) -> f32 {
    return s.x0_x * x + s.x0_out * o;
}

fn tweedie_x0(x: f32, e: f32) -> f32 {
    let x0 = raw_x0(x, e);
    if ((s.flags & CLIP) != 0u) {
        return clamp(x0, -1.0, 1.0);
    }
    return x0;
}

fn log_variance(v: f32) -> f32 {
    if ((s.flags & LEARNED) != 0u) {
        let frac = (v + 1.0) * 0.5;
        return frac * s.log_var_max + (1.0 - frac) * s.log_var_min;
    }
    return s.log_var_fixed;
}

fn noise_on() -> f32 {
    return select(0.0, 1.0, (s.flags & NOISE) != 0u);
}

// ---- ddpm_step: x <- mean + sigma z + guide g + guide2 h (in place) ----
@group(0) @binding(1) var<storage, read> d_eps: array<f32>;
@group(0) @binding(2) var<storage, read> d_v: array<f32>;
@group(0) @binding(3) var<storage, read> d_z: array<f32>;
@group(0) @binding(4) var<storage, read> d_g: array<f32>;
@group(0) @binding(5) var<storage, read> d_h: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_x: array<f32>;

@compute @workgroup_size(256)
fn ddpm_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    let x = d_x[i];
    let mean = s.coef1 * tweedie_x0(x, d_eps[i]) + s.coef2 * x;
    let sigma = exp(0.5 * log_variance(d_v[min(i, arrayLength(&d_v) - 1u)]));
    d_x[i] = mean + noise_on() * sigma * d_z[i] + s.guide * d_g[i] + s.guide2 * d_h[i];
}

// ---- epshat = eps_x x + eps_out o, for a method that needs the noise estimate
// itself of a model that predicts something else (C-DPS's A eps) ----
@group(0) @binding(1) var<storage, read> e_x: array<f32>;
@group(0) @binding(2) var<storage, read> e_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> e_eps: array<f32>;

@compute @workgroup_size(256)
fn eps_estimate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    e_eps[i] = s.eps_x * e_x[i] + s.eps_out * e_out[i];
}

// ---- x0hat and the clamp's derivative mask (DPS) ----
@group(0) @binding(1) var<storage, read> w_x: array<f32>;
@group(0) @binding(2) var<storage, read> w_eps: array<f32>;
@group(0) @binding(3) var<storage, read_write> w_x0: array<f32>;
@group(0) @binding(4) var<storage, read_write> w_mask: array<f32>;

@compute @workgroup_size(256)
fn x0_and_mask(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    let raw = raw_x0(w_x[i], w_eps[i]);
    var inside = true;
    if ((s.flags & CLIP) != 0u) {
        inside = raw >= -1.0 && raw <= 1.0;
    }
    w_x0[i] = tweedie_x0(w_x[i], w_eps[i]);
    w_mask[i] = select(0.0, 1.0, inside);
}

// ---- measurement-space kernels (m elements per sample) ----
@group(0) @binding(1) var<storage, read> r_y: array<f32>;
@group(0) @binding(2) var<storage, read> r_ax: array<f32>;
@group(0) @binding(3) var<storage, read_write> r_out: array<f32>;

// r = y - resid_scale * A x
@compute @workgroup_size(256)
fn residual(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&r_out)) { return; }
    r_out[i] = r_y[i] - s.resid_scale * r_ax[i];
}

// DPS: in place, r <- -r / |r|_n (the gradient of |y - A x0| with respect to A x0)
@group(0) @binding(1) var<storage, read> q_norm: array<f32>;
@group(0) @binding(2) var<storage, read_write> q_r: array<f32>;

@compute @workgroup_size(256)
fn dps_direction(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&q_r)) { return; }
    let nrm = q_norm[i / s.m_per];
    q_r[i] = select(0.0, -q_r[i] / nrm, nrm > 0.0);
}

// DMPS's block (`DmpsStep` in src/samplers/dmps.rs).
fn dmps_sigma_y2() -> f32 { return s.method[0].x; } // sigma_y^2
fn dmps_gamma() -> f32 { return s.method[0].y; }    // (b / a)^2
fn dmps_gain_cap() -> f32 { return s.method[0].z; } // the largest gain a direction takes

// DMPS via the SVD: in place on the spectral coefficients of r,
// c_i <- c_i s_i / (sigma_y^2 + gamma s_i^2), times min(1, cap / gain_i): the
// step then moves each measured direction at most onto the measurement at the
// level it steps to. gain_i = guide resid_scale s_i^2 / (sigma_y^2 + gamma s_i^2)
// is how far the update moves x_t's component along direction i per unit of
// its residual, cap = min(a_{t-1} / a_t, the base step's carry + 1/2 where x0hat
// is clipped, + 1 where not) (`gain` and `carried_gain_cap` in
// src/samplers/dmps.rs); in a 1000-step run no gain reaches the cap and the
// paper's update is unchanged.
@group(0) @binding(1) var<storage, read> k_sing: array<f32>;
@group(0) @binding(2) var<storage, read_write> k_c: array<f32>;

@compute @workgroup_size(256)
fn dmps_spectral(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&k_c)) { return; }
    let sv = k_sing[i % s.m_per];
    let den = dmps_sigma_y2() + dmps_gamma() * sv * sv;
    let gain = abs(s.guide * s.resid_scale) * sv * sv / den;
    let cap = select(1.0, dmps_gain_cap() / gain, gain > dmps_gain_cap());
    k_c[i] = select(0.0, k_c[i] * sv / den * cap, den > 0.0);
}

// C-DPS's block (`CdpsStep` in src/samplers/cdps.rs).
// The chain's bridge: y_{t-1} = y_coef0 y_0 + y_coef1 y_t + y_std z.
fn cdps_y_coef0() -> f32 { return s.method[0].x; }
fn cdps_y_coef1() -> f32 { return s.method[0].y; }
fn cdps_y_std() -> f32 { return s.method[0].z; }
// Sigma_{y|x} = abar_{t-1} sigma_y^2 + 1 - abar_{t-1} = noise_var + diffusion_var
fn cdps_meas_var() -> f32 { return s.method[0].w; }
// (1 - abar_{t-1}) / b, so b_meas = -tw_coef A eps
fn cdps_tw_coef() -> f32 { return s.method[1].x; }
fn cdps_noise_var() -> f32 { return s.method[1].y; }     // abar_{t-1} sigma_y^2
fn cdps_diffusion_var() -> f32 { return s.method[1].z; } // 1 - abar_{t-1}
fn cdps_prec() -> f32 { return s.method[1].w; }   // forward-kernel reading: c = (1 - beta) / beta
fn cdps_h_coef() -> f32 { return s.method[2].x; } // forward-kernel reading: sqrt(1 - beta) / beta
fn cdps_variant() -> u32 { return bitcast<u32>(s.method[2].y); } // 0 reverse kernel, 1 forward kernel

// C-DPS measurement side: step the measurement chain y_t -> y_{t-1} (a draw
// of q(y_{t-1} | y_t, y_0)) and form w = (y_{t-1} - b_meas) / S + e2 / sqrt(S),
// b_meas = (1 - abar_{t-1}) A s = -tw_coef A eps.
@group(0) @binding(1) var<storage, read> c_y0: array<f32>;
@group(0) @binding(2) var<storage, read> c_zy: array<f32>;
@group(0) @binding(3) var<storage, read> c_e2: array<f32>;
@group(0) @binding(4) var<storage, read> c_aeps: array<f32>;
@group(0) @binding(5) var<storage, read_write> c_ycur: array<f32>;
@group(0) @binding(6) var<storage, read_write> c_w: array<f32>;

fn chain_step(i: u32) -> f32 {
    let yp = cdps_y_coef0() * c_y0[i] + cdps_y_coef1() * c_ycur[i] + cdps_y_std() * c_zy[i];
    c_ycur[i] = yp;
    return yp;
}

@compute @workgroup_size(256)
fn cdps_measure(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&c_w)) { return; }
    let yp = chain_step(i);
    c_w[i] = (yp + cdps_tw_coef() * c_aeps[i]) / cdps_meas_var() + noise_on() * c_e2[i] / sqrt(cdps_meas_var());
}

// The same in the spectral basis (y0 = y~ = U^T y / s, aeps = V^T eps): the
// measurement variance is per component, Sigma_k = abar' sigma_y^2 / s_k^2 + 1 - abar',
// so its precision pi_k = s_k^2 / (noise_var + diffusion_var s_k^2) with
// noise_var = abar' sigma_y^2 and diffusion_var = 1 - abar' (DMPS's denominator);
// s_k = 0 carries no information (pi_k = 0). pi goes to `c_pi` for the CG's weight.
@group(0) @binding(7) var<storage, read> c_sing: array<f32>;
@group(0) @binding(8) var<storage, read_write> c_pi: array<f32>;

@compute @workgroup_size(256)
fn cdps_measure_spectral(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&c_w)) { return; }
    let yp = chain_step(i);
    let sv = c_sing[i % s.m_per];
    let den = cdps_noise_var() + cdps_diffusion_var() * sv * sv;
    let pi = select(0.0, sv * sv / den, den > 0.0);
    c_pi[i] = pi;
    c_w[i] = pi * (yp + cdps_tw_coef() * c_aeps[i]) + noise_on() * sqrt(pi) * c_e2[i];
}

// y~ = U^T y / s on the components with s > 0 (0 elsewhere), in place on the
// spectral coefficients c = U^T y.
@group(0) @binding(1) var<storage, read> u_sing: array<f32>;
@group(0) @binding(2) var<storage, read_write> u_c: array<f32>;

@compute @workgroup_size(256)
fn cdps_whiten(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&u_c)) { return; }
    let sv = u_sing[i % s.m_per];
    u_c[i] = select(0.0, u_c[i] / sv, sv > 0.0);
}

// C-DPS x side: the diagonal D of the posterior precision and the right-hand
// side D m + sqrt(D) e1 + A^T w (A^T w precomputed in `atw`).
//   reverse-kernel reading: D = 1 / sigma_t^2, m = the DDPM posterior mean m_theta
//   forward-kernel reading: D = (1 - beta) / beta, D m = sqrt(1 - beta) / beta x_t
@group(0) @binding(1) var<storage, read> h_x: array<f32>;
@group(0) @binding(2) var<storage, read> h_eps: array<f32>;
@group(0) @binding(3) var<storage, read> h_v: array<f32>;
@group(0) @binding(4) var<storage, read> h_e1: array<f32>;
@group(0) @binding(5) var<storage, read> h_atw: array<f32>;
@group(0) @binding(6) var<storage, read_write> h_rhs: array<f32>;
@group(0) @binding(7) var<storage, read_write> h_diag: array<f32>;

@compute @workgroup_size(256)
fn cdps_rhs(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    let x = h_x[i];
    var dm = 0.0;
    var dg = 0.0;
    if (cdps_variant() == 0u) {
        let mean = s.coef1 * tweedie_x0(x, h_eps[i]) + s.coef2 * x;
        dg = exp(-log_variance(h_v[min(i, arrayLength(&h_v) - 1u)]));
        dm = dg * mean;
    } else {
        dg = cdps_prec();
        dm = cdps_h_coef() * x;
    }
    h_diag[i] = dg;
    h_rhs[i] = dm + noise_on() * sqrt(dg) * h_e1[i] + h_atw[i];
}

// DPS for small measurements (m_per <= 1024): one thread per sample computes
// |r| and scales its row, r <- -r / |r| (no shared-memory reduction).
@group(0) @binding(1) var<storage, read_write> o_r: array<f32>;

@compute @workgroup_size(64)
fn dps_direction_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if (n * s.m_per >= arrayLength(&o_r)) { return; }
    let base = n * s.m_per;
    var ss = 0.0;
    for (var i = 0u; i < s.m_per; i++) {
        ss += o_r[base + i] * o_r[base + i];
    }
    let nrm = sqrt(ss);
    for (var i = 0u; i < s.m_per; i++) {
        o_r[base + i] = select(0.0, -o_r[base + i] / nrm, nrm > 0.0);
    }
}

// ---- SMC, the twisted diffusion sampler (src/samplers/smc.rs) ----
// Twist: log p~_t(y | x_t) = -|q|^2 / (2 v_t) with q = y - A x0hat(x_t), or its
// whitened U^T form (`tds_geometry`); its method block holds 1 / v_t
// (1 / sigma_y^2 for the final, exact weighing), the ratio b_t^2 / a_t^2 (0 at
// the final weighing) and sigma_y^2.
fn smc_inv_twist_var() -> f32 { return s.method[0].x; }
fn smc_ratio() -> f32 { return s.method[0].y; }
fn smc_sigma_y2() -> f32 { return s.method[0].z; }

// The operator's geometry in the SVD basis (--smc-twist operator): the twist's
// covariance is sigma_y^2 I + (b^2 / a^2) A A^T, diagonal there with
// sigma_y^2 + ratio s_i^2 per component, so with q = U^T r each component is
// scaled by sqrt(v_t / (sigma_y^2 + ratio s_i^2)): |q|^2 / v_t is then the
// twist's quadratic form, and a second pass gives v_t Sigma^{-1} U^T r (its
// gradient through U and A^T, divided by v_t as the isotropic one is).
// Components with s_i = 0 (y's part outside A's range, the same for every
// particle at every level) are set to 0: a constant dropped from every
// log-weight, and no huge sqrt(v_t / sigma_y^2) factor for U's rounding to
// leak into A^T.
@group(0) @binding(1) var<storage, read> tg_sing: array<f32>;
@group(0) @binding(2) var<storage, read_write> tg_q: array<f32>;

@compute @workgroup_size(256)
fn tds_geometry(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&tg_q)) { return; }
    let sv = tg_sing[i % s.m_per];
    if (sv <= 0.0) {
        tg_q[i] = 0.0;
        return;
    }
    let cov = smc_sigma_y2() + smc_ratio() * sv * sv;
    tg_q[i] *= inverseSqrt(smc_inv_twist_var() * cov);
}

// One thread per particle: logw += twist_t(x_t) - twist_{t+1}(x_{t+1}) + log p/q of
// the last proposal (lpq, summed per particle); twist_out <- twist_t(x_t).
// rr = |y - A x0hat|^2 per particle; twist_in is the last step's twist, resampled.
@group(0) @binding(1) var<storage, read> tw_rr: array<f32>;
@group(0) @binding(2) var<storage, read> tw_lpq: array<f32>;
@group(0) @binding(3) var<storage, read> tw_twist_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> tw_twist_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> tw_logw: array<f32>;

@compute @workgroup_size(256)
fn tds_weigh(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = index(gid, nwg);
    if (k >= arrayLength(&tw_logw)) { return; }
    let twist = -0.5 * tw_rr[k] * smc_inv_twist_var();
    tw_logw[k] += twist - tw_twist_in[k] + tw_lpq[k];
    tw_twist_out[k] = twist;
}

// The proposal: x' ~ N(mean + shift, sigma^2) with shift = sigma^2 (x0_x g + x0_out h) / v_t,
// g = mask A^T r and h = J_o^T g (so (x0_x g + x0_out h) / v_t is the twist's gradient),
// and per element log p(x'|x) - log q(x'|x) = -shift^2 / (2 sigma^2) - shift z / sigma.
// With noise off (the last step) the move is the plain mean and log p/q = 0.
// x_in (the resampled population) and x are separate.
@group(0) @binding(1) var<storage, read> tp_eps: array<f32>;
@group(0) @binding(2) var<storage, read> tp_v: array<f32>;
@group(0) @binding(3) var<storage, read> tp_z: array<f32>;
@group(0) @binding(4) var<storage, read> tp_g: array<f32>;
@group(0) @binding(5) var<storage, read> tp_h: array<f32>;
@group(0) @binding(6) var<storage, read> tp_xin: array<f32>;
@group(0) @binding(7) var<storage, read_write> tp_x: array<f32>;
@group(0) @binding(8) var<storage, read_write> tp_lpq: array<f32>;

@compute @workgroup_size(256)
fn tds_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    let x = tp_xin[i];
    let mean = s.coef1 * tweedie_x0(x, tp_eps[i]) + s.coef2 * x;
    if (noise_on() == 0.0) {
        tp_x[i] = mean;
        tp_lpq[i] = 0.0;
        return;
    }
    let var_ = exp(log_variance(tp_v[min(i, arrayLength(&tp_v) - 1u)]));
    let sigma = sqrt(var_);
    let shift = var_ * smc_inv_twist_var() * (s.x0_x * tp_g[i] + s.x0_out * tp_h[i]);
    let z = tp_z[i];
    tp_x[i] = mean + shift + sigma * z;
    tp_lpq[i] = -(shift * shift) / (2.0 * var_) - shift * z / sigma;
}

// ---- SMC, the spectral sampler (src/samplers/smc_spectral.rs) ----
// In the SVD basis of A = U diag(s) V^T, per measured component i (s_i > 0)
// with ybar = U^T y and c = V^T of a per-particle vector, the potential at a
// level is g(x) = N(ybar_i; s_i kappa (V^T x)_i, s_i^2 rho + sigma_y^2): y's
// likelihood given x_t when x0's component has prior variance v0, so that
// x0 | x_t ~ N(kappa c, rho) (kappa = a v0 / (a^2 v0 + b^2), rho = v0 b^2 /
// (a^2 v0 + b^2); kappa = 1, rho = 0 at the data). Its block: the next level's
// kappa and rho, the step's variance (0 at the last step), sigma_y^2, this
// level's kappa and rho, and whether the weighing divides by the potential at
// x_t (0 at the first, where x_T's potential and its division cancel).
fn sp_kappa_next() -> f32 { return s.method[0].x; }
fn sp_rho_next() -> f32 { return s.method[0].y; }
fn sp_var() -> f32 { return s.method[0].z; }
fn sp_sigma_y2() -> f32 { return s.method[0].w; }
fn sp_kappa() -> f32 { return s.method[1].x; }
fn sp_rho() -> f32 { return s.method[1].y; }
fn sp_twist_on() -> f32 { return s.method[1].z; }

// The potential's variance for singular value sv at a level with rho.
fn sp_pot_var(sv: f32, rho: f32) -> f32 {
    return sv * sv * rho + sp_sigma_y2();
}

// mu = coef1 x0hat + coef2 x: the reverse kernel's mean.
@group(0) @binding(1) var<storage, read> sm_x: array<f32>;
@group(0) @binding(2) var<storage, read> sm_eps: array<f32>;
@group(0) @binding(3) var<storage, read_write> sm_mu: array<f32>;

@compute @workgroup_size(256)
fn spectral_mean(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    let x = sm_x[i];
    sm_mu[i] = s.coef1 * tweedie_x0(x, sm_eps[i]) + s.coef2 * x;
}

// Per spectral component, the log-weight term of the weighing at x_t:
// log Z_i - log g_t,i(x_t), Z_i = N(ybar; s kappa' (V^T mu)_i, s^2 kappa'^2 var + D'_i)
// the next level's potential integrated against the reverse kernel
// (D'_i = s^2 rho' + sigma_y^2), less the constants every particle shares (the
// log-determinants). 0 where s = 0.
@group(0) @binding(1) var<storage, read> sw_sing: array<f32>;
@group(0) @binding(2) var<storage, read> sw_ybar: array<f32>;
@group(0) @binding(3) var<storage, read> sw_vmu: array<f32>;
@group(0) @binding(4) var<storage, read> sw_vx: array<f32>;
@group(0) @binding(5) var<storage, read_write> sw_lw: array<f32>;

@compute @workgroup_size(256)
fn spectral_weigh(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&sw_lw)) { return; }
    let sv = sw_sing[i % s.m_per];
    if (sv <= 0.0) {
        sw_lw[i] = 0.0;
        return;
    }
    let y = sw_ybar[i];
    let gain = sv * sp_kappa_next();
    let rn = y - gain * sw_vmu[i];
    var lw = -0.5 * rn * rn / (gain * gain * sp_var() + sp_pot_var(sv, sp_rho_next()));
    if (sp_twist_on() > 0.0) {
        let r = y - sv * sp_kappa() * sw_vx[i];
        lw += 0.5 * r * r / sp_pot_var(sv, sp_rho());
    }
    sw_lw[i] = lw;
}

// Per spectral component, the proposal's correction delta (added through V):
// the reverse kernel N(c, var) times the next potential N(ybar; s kappa' c, D')
// is Gaussian with mean c + k (ybar - s kappa' c), k = var s kappa' / S,
// S = s^2 kappa'^2 var + D', and variance var D' / S, so with zeta = V^T z the
// component moves by k (ybar - s kappa' c) + (sqrt(var D' / S) - sqrt(var)) zeta.
// 0 where s = 0.
@group(0) @binding(1) var<storage, read> sq_sing: array<f32>;
@group(0) @binding(2) var<storage, read> sq_ybar: array<f32>;
@group(0) @binding(3) var<storage, read> sq_vmu: array<f32>;
@group(0) @binding(4) var<storage, read> sq_zeta: array<f32>;
@group(0) @binding(5) var<storage, read_write> sq_delta: array<f32>;

@compute @workgroup_size(256)
fn spectral_propose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&sq_delta)) { return; }
    let sv = sq_sing[i % s.m_per];
    if (sv <= 0.0) {
        sq_delta[i] = 0.0;
        return;
    }
    let var_ = sp_var();
    let gain = sv * sp_kappa_next();
    let dn = sp_pot_var(sv, sp_rho_next());
    let big_s = gain * gain * var_ + dn;
    let rn = sq_ybar[i] - gain * sq_vmu[i];
    sq_delta[i] = var_ * gain / big_s * rn + (sqrt(var_ * dn / big_s) - sqrt(var_)) * sq_zeta[i];
}

// x = mu + sqrt(var) z + g: the reverse kernel's draw, corrected through V.
@group(0) @binding(1) var<storage, read> sx_mu: array<f32>;
@group(0) @binding(2) var<storage, read> sx_z: array<f32>;
@group(0) @binding(3) var<storage, read> sx_g: array<f32>;
@group(0) @binding(4) var<storage, read_write> sx_x: array<f32>;

@compute @workgroup_size(256)
fn spectral_move(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    sx_x[i] = sx_mu[i] + sqrt(sp_var()) * sx_z[i] + sx_g[i];
}

// ---- RED-diff (src/samplers/reddiff.rs) ----
// Its block: Adam's settings, the two loss terms' weights and the bias corrections.
fn reddiff_lr() -> f32 { return s.method[0].x; }
fn reddiff_beta1() -> f32 { return s.method[0].y; }
fn reddiff_beta2() -> f32 { return s.method[0].z; }
fn reddiff_eps() -> f32 { return s.method[0].w; }
fn reddiff_obs() -> f32 { return s.method[1].x; }   // the measurement term's weight, 1 / m
fn reddiff_prior() -> f32 { return s.method[1].y; } // the denoiser term's, lambda w_t / d
fn reddiff_bias1() -> f32 { return s.method[1].z; } // 1 - beta1^k at Adam step k
fn reddiff_bias2() -> f32 { return s.method[1].w; } // 1 - beta2^k

// x_t = a_t mu + b_t z: the point the denoiser is asked about this step.
@group(0) @binding(1) var<storage, read> rf_mu: array<f32>;
@group(0) @binding(2) var<storage, read> rf_z: array<f32>;
@group(0) @binding(3) var<storage, read_write> rf_x: array<f32>;

@compute @workgroup_size(256)
fn reddiff_diffuse(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    rf_x[i] = s.a_t * rf_mu[i] + s.b_t * rf_z[i];
}

// One Adam step on mu with the gradient
//   -obs g + prior (epshat(x_t) - z),  g = J_A(mu)^T (y - A(mu)),
// the network output held fixed (no VJP); then x <- mu, the run's sample.
@group(0) @binding(1) var<storage, read> ra_out: array<f32>;
@group(0) @binding(2) var<storage, read> ra_z: array<f32>;
@group(0) @binding(3) var<storage, read> ra_g: array<f32>;
@group(0) @binding(4) var<storage, read_write> ra_x: array<f32>;
@group(0) @binding(5) var<storage, read_write> ra_mu: array<f32>;
@group(0) @binding(6) var<storage, read_write> ra_m1: array<f32>;
@group(0) @binding(7) var<storage, read_write> ra_m2: array<f32>;

@compute @workgroup_size(256)
fn reddiff_adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    let eps = s.eps_x * ra_x[i] + s.eps_out * ra_out[i];
    let grad = -reddiff_obs() * ra_g[i] + reddiff_prior() * (eps - ra_z[i]);
    let m1 = reddiff_beta1() * ra_m1[i] + (1.0 - reddiff_beta1()) * grad;
    let m2 = reddiff_beta2() * ra_m2[i] + (1.0 - reddiff_beta2()) * grad * grad;
    let mu = ra_mu[i] - reddiff_lr() * (m1 / reddiff_bias1()) / (sqrt(m2 / reddiff_bias2()) + reddiff_eps());
    ra_m1[i] = m1;
    ra_m2[i] = m2;
    ra_mu[i] = mu;
    ra_x[i] = mu;
}

// ---- DDNM+ (src/samplers/ddnm.rs) ----
// Its block: the level stepped to and the noise split.
fn ddnm_a_next() -> f32 { return s.method[0].x; }  // a_{t-1}
fn ddnm_sigma() -> f32 { return s.method[0].y; }   // sigma_t = b_{t-1}, the noise x_{t-1} carries
fn ddnm_eta() -> f32 { return s.method[0].z; }     // the fresh-noise share of it
fn ddnm_sigma_y() -> f32 { return s.method[0].w; }

// In place on c = V^T x0hat: the spectral coefficients delta the step adds
// through V. The base step is x' = a' x0hat + sigma eta z + sigma sqrt(1 - eta^2) e
// (e = (x - a x0hat) / b); on a measured component (s > 0) DDNM+ moves x0hat
// by lambda (y~ - c) and replaces the noise: with lim = a' sigma_y / s (y's
// noise at level t-1), lambda = 1 and fresh noise sqrt(sigma^2 - lim^2) where
// sigma > lim; lambda = s sigma sqrt(1 - eta^2) / (a' sigma_y) and fresh noise
// sigma eta where sigma < lim (Wang et al.'s eq. 19 in the SVD basis, as
// their `Lambda` and `Lambda_noise` write it); e drops out of both.
@group(0) @binding(1) var<storage, read> dn_sing: array<f32>;
@group(0) @binding(2) var<storage, read> dn_ytil: array<f32>;
@group(0) @binding(3) var<storage, read> dn_vx: array<f32>;
@group(0) @binding(4) var<storage, read> dn_zeta: array<f32>;
@group(0) @binding(5) var<storage, read_write> dn_c: array<f32>;

@compute @workgroup_size(256)
fn ddnm_spectral(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&dn_c)) { return; }
    let sv = dn_sing[i % s.m_per];
    if (sv <= 0.0) {
        dn_c[i] = 0.0;
        return;
    }
    let st = ddnm_sigma();
    let an = ddnm_a_next();
    let sy = ddnm_sigma_y();
    var lambda = 1.0;
    var d1 = svd_fresh();
    var d2 = svd_kept();
    if (an > 0.0 && sy > 0.0) {
        let lim = an * sy / sv;
        if (st < lim) {
            lambda = sv * svd_kept() / (an * sy);
            d2 = 0.0;
        } else if (st > lim) {
            d1 = sqrt(st * st - lim * lim);
            d2 = 0.0;
        }
    }
    dn_c[i] = svd_delta(i, lambda, d1, d2);
}

// The base step's noise split: sigma eta fresh, sigma sqrt(1 - eta^2) from e.
fn svd_fresh() -> f32 { return ddnm_sigma() * ddnm_eta(); }
fn svd_kept() -> f32 { return ddnm_sigma() * sqrt(max(1.0 - ddnm_eta() * ddnm_eta(), 0.0)); }

// What the step adds to component i (c = V^T x0hat) so that x_{t-1}'s
// component is a' (c + lambda (y~ - c)) + d1 zeta + d2 e instead of the base
// step's a' c + fresh zeta + kept e (DDNM+'s and DDRM's kernels).
fn svd_delta(i: u32, lambda: f32, d1: f32, d2: f32) -> f32 {
    let c = dn_c[i];
    let e = (dn_vx[i] - s.a_t * c) / s.b_t;
    return ddnm_a_next() * lambda * (dn_ytil[i] - c) + (d1 - svd_fresh()) * dn_zeta[i] + (d2 - svd_kept()) * e;
}

// ---- DDRM (src/samplers/ddrm.rs) ----
// Its block is DDNM+'s (a', sigma = b', eta, sigma_y) and eta_b.
fn ddrm_eta_b() -> f32 { return s.method[1].x; }

// In place on c = V^T x0hat, as `ddnm_spectral`, with DDRM's three cases
// (Kawar et al.'s `efficient_generalized_steps`) in x0's units, where x_{t-1}
// / a' has noise sigma' = b' / a': s = 0 (unmeasured) and s sigma' = sigma_y
// keep the base step; s sigma' > sigma_y (noisier than y) takes
// eta_b y~ + (1 - eta_b) c and fresh noise sqrt(sigma'^2 - (eta_b sigma_y / s)^2);
// s sigma' < sigma_y moves c by sigma' sqrt(1 - eta^2) s (y~ - c) / sigma_y
// with fresh noise sigma' eta. Both compare s b' with a' sigma_y (a' > 0).
@compute @workgroup_size(256)
fn ddrm_spectral(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&dn_c)) { return; }
    let sv = dn_sing[i % s.m_per];
    let noisy = sv * ddnm_sigma();
    let lim = ddnm_a_next() * ddnm_sigma_y();
    var lambda = 0.0;
    var d1 = svd_fresh();
    var d2 = svd_kept();
    if (sv > 0.0 && noisy > lim) {
        let kept_y = lim * ddrm_eta_b() / sv;
        lambda = ddrm_eta_b();
        d1 = sqrt(max(ddnm_sigma() * ddnm_sigma() - kept_y * kept_y, 0.0));
        d2 = 0.0;
    } else if (sv > 0.0 && noisy < lim) {
        lambda = sv * svd_kept() / lim;
        d2 = 0.0;
    }
    dn_c[i] = svd_delta(i, lambda, d1, d2);
}

// ---- DAPS (src/samplers/daps.rs) ----
// An ODE substep's own uniform (one per substep, laid out as `Step`) carries
// the network time of the level it evaluates the model at.
fn daps_net_time() -> f32 { return s.method[0].x; }
// The step uniform's block: the Langevin update's scalars.
fn daps_lr() -> f32 { return s.method[0].x; }         // step size eta_t
fn daps_data_weight() -> f32 { return s.method[0].y; } // 1 / tau^2
fn daps_prior_prec() -> f32 { return s.method[0].z; }  // 1 / r_t^2
fn daps_noise() -> f32 { return s.method[0].w; }       // sqrt(2 eta_t)

// Every sample's timestep <- the substep's network time, so the model call
// replayed after it evaluates at that level.
@group(0) @binding(1) var<storage, read_write> dt_t: array<f32>;

@compute @workgroup_size(256)
fn daps_time(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= arrayLength(&dt_t)) { return; }
    dt_t[i] = daps_net_time();
}

// One Langevin step on x0 toward p(x0 | x_t, y) with p(x0 | x_t) ~ N(x0hat, r_t^2):
// x <- x + eta (g / tau^2 + (x0hat - x) / r_t^2) + sqrt(2 eta) xi, g = J_A(x)^T (y - A(x)).
@group(0) @binding(1) var<storage, read> dl_x0: array<f32>;
@group(0) @binding(2) var<storage, read> dl_g: array<f32>;
@group(0) @binding(3) var<storage, read> dl_xi: array<f32>;
@group(0) @binding(4) var<storage, read_write> dl_x: array<f32>;

@compute @workgroup_size(256)
fn daps_langevin(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= s.n) { return; }
    let x = dl_x[i];
    let drift = daps_data_weight() * dl_g[i] + daps_prior_prec() * (dl_x0[i] - x);
    dl_x[i] = x + daps_lr() * drift + daps_noise() * dl_xi[i];
}
