//! The SMC kernels (shaders/smc.wgsl) against plain-Rust references: the
//! log-sum-exp normalisation and ESS, the prefix sum, systematic ancestors and
//! the gather, on particle counts that are not multiples of the workgroup
//! size, several populations at once, and a weight vector with one dominant
//! particle; the twisted-diffusion weight update and proposal (in
//! shaders/sampler.wgsl, on the shared step uniform).

mod common;
use common::*;

use rand::Rng;
use tweedie::gpu::{dispatch_groups, Dispatch, Plan, SAMPLER, WG1D};
use tweedie::kernels::smc::{Population, STATS, STAT_ESS, STAT_ESS_SUM, STAT_EVENTS, STAT_RESAMPLED};
use tweedie::samplers::smc::SmcStep;
use tweedie::samplers::smc_spectral::SpectralStep;
use tweedie::samplers::{MethodBlock, StepParams};
use tweedie::Tensor;

/// Normalised weights, ESS / P, and the inclusive cdf of one population (f64).
fn normalise_cpu(logw: &[f32]) -> (Vec<f64>, f64, Vec<f64>) {
    let m = logw.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let total: f64 = logw.iter().map(|&v| (v as f64 - m).exp()).sum();
    let w: Vec<f64> = logw.iter().map(|&v| (v as f64 - m).exp() / total).collect();
    let ess = 1.0 / w.iter().map(|v| v * v).sum::<f64>() / logw.len() as f64;
    let mut acc = 0.0;
    let cdf = w
        .iter()
        .map(|v| {
            acc += v;
            acc
        })
        .collect();
    (w, ess, cdf)
}

/// Systematic resampling: particle j takes the first k with cdf_k > (j + u) / P.
fn systematic_cpu(cdf: &[f64], u: f64) -> Vec<usize> {
    let p = cdf.len();
    let u = u.fract();
    let last = cdf[p - 1];
    (0..p)
        .map(|j| {
            let target = (j as f64 + u) / p as f64 * last;
            cdf.iter().position(|&c| c > target).unwrap_or(p - 1)
        })
        .collect()
}

fn run(plan: &Plan) {
    plan.run(&gpu()).unwrap();
}

/// Log-weights for `g` populations of `p`: random, or with one particle far ahead.
fn log_weights(p: usize, g: usize, dominant: bool, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let mut v: Vec<f32> = (0..p * g).map(|_| 3.0 * r.random::<f32>() - 40.0).collect();
    if dominant {
        for k in 0..g {
            v[k * p + (7 * k + 3) % p] = 60.0;
        }
    }
    v
}

#[test]
fn normalise_cumsum_and_ancestors_match_cpu() {
    let gpu = gpu();
    for &(p, g, dominant, threshold) in &[
        (1usize, 1usize, false, 0.5f32),
        (7, 3, false, 2.0), // threshold above 1: always resampled
        (257, 2, false, 0.5),
        (1000, 1, true, 0.5),
        (1025, 3, true, 0.5),
        (300, 2, false, 0.0), // never resampled
    ] {
        let what = format!("P {p} G {g} dominant {dominant} threshold {threshold}");
        let pop = Population::new(&gpu, p, g, threshold, 1).unwrap();
        pop.reset(&gpu).unwrap();
        let lw = log_weights(p, g, dominant, p as u64);
        pop.logw.write(&gpu, &lw).unwrap();
        let u = 0.37f32;
        pop.set(&gpu, 0, u, false);
        run(&pop.weigh);
        let cdf_gpu = pop.cdf.read(&gpu).unwrap();
        let logw_after = pop.logw.read(&gpu).unwrap();
        let stats = pop.stats.read(&gpu).unwrap();
        let anc: Vec<u32> = gpu.read(&pop.ancestors, 0, p * g).unwrap();
        for k in 0..g {
            let (w, ess, cdf) = normalise_cpu(&lw[k * p..(k + 1) * p]);
            let cdf32: Vec<f32> = cdf.iter().map(|&v| v as f32).collect();
            assert_close(
                &format!("{what}: cdf of population {k}"),
                &cdf_gpu[k * p..(k + 1) * p],
                &cdf32,
                2e-5,
                1e-4,
            );
            let s = &stats[k * STATS..(k + 1) * STATS];
            assert!(
                (s[STAT_ESS] as f64 - ess).abs() <= 1e-4 * ess.max(1e-3),
                "{what}: ESS {} vs {ess}",
                s[STAT_ESS]
            );
            assert!(
                (s[STAT_ESS_SUM] as f64 - ess).abs() <= 1e-4 * ess.max(1e-3),
                "{what}: ESS sum"
            );
            let resampled = (ess as f32) < threshold;
            assert_eq!(s[STAT_RESAMPLED] == 1.0, resampled, "{what}: the decision");
            assert_eq!(s[STAT_EVENTS], resampled as u32 as f32, "{what}: events");
            if dominant {
                assert!(ess < 1.5 / p as f64, "{what}: one dominant particle, ESS {ess}");
            }
            let want_anc: Vec<u32> = if resampled {
                systematic_cpu(&cdf, (u + k as f32 * 0.618_034) as f64)
                    .iter()
                    .map(|&a| (k * p + a) as u32)
                    .collect()
            } else {
                (k * p..(k + 1) * p).map(|a| a as u32).collect()
            };
            let got = &anc[k * p..(k + 1) * p];
            // Ties at a cdf step can go either way in f32: allow a neighbour.
            let off = got
                .iter()
                .zip(&want_anc)
                .filter(|(a, b)| (**a as i64 - **b as i64).abs() > 1)
                .count();
            let near = got.iter().zip(&want_anc).filter(|(a, b)| a != b).count();
            assert_eq!(off, 0, "{what}: ancestors of population {k}: {got:?} vs {want_anc:?}");
            assert!(near <= p / 50 + 1, "{what}: {near} ancestors off by one");
            if dominant && resampled {
                let d = (k * p + (7 * k + 3) % p) as u32;
                assert!(
                    got.iter().all(|&a| a == d),
                    "{what}: every particle descends from the dominant one"
                );
            }
            // Log-weights: normalised (log w), or zero after resampling.
            for (j, &l) in logw_after[k * p..(k + 1) * p].iter().enumerate() {
                let want = if resampled { 0.0 } else { w[j].ln() as f32 };
                if want.is_finite() {
                    assert!(
                        (l - want).abs() <= 1e-3 * want.abs().max(1.0),
                        "{what}: log w[{j}] {l} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn forced_resampling_is_not_counted_and_stats_accumulate() {
    let gpu = gpu();
    let (p, g) = (33, 2);
    let pop = Population::new(&gpu, p, g, 0.0, 3).unwrap();
    pop.reset(&gpu).unwrap();
    let lw = log_weights(p, g, false, 5);
    for step in 0..3 {
        pop.logw.write(&gpu, &lw).unwrap();
        pop.set(&gpu, step, 0.5, step == 2);
        run(&pop.weigh);
    }
    let st = pop.stats(&gpu, 2).unwrap();
    for k in 0..g {
        let (_, ess, _) = normalise_cpu(&lw[k * p..(k + 1) * p]);
        assert!(
            (st.mean_ess[k] - ess).abs() < 1e-4,
            "mean ESS {} vs {ess}",
            st.mean_ess[k]
        );
        assert_eq!(
            st.events[k], 0,
            "threshold 0 never resamples; the forced draw is not counted"
        );
    }
    // The ESS history holds every weighing's (the same weights each time),
    // and the distinct ancestors are the forced systematic draw's.
    for k in 0..g {
        let (_, ess, cdf) = normalise_cpu(&lw[k * p..(k + 1) * p]);
        assert_eq!(st.ess_history[k].len(), 3, "one row per weighing");
        for (i, &h) in st.ess_history[k].iter().enumerate() {
            assert!(
                (h as f64 - ess).abs() < 1e-4,
                "population {k}, weighing {i}: ESS {h} vs {ess}"
            );
        }
        let anc = systematic_cpu(&cdf, 0.5 + k as f64 * 0.618_033_988_7);
        let distinct = anc.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert_eq!(st.distinct[k] as usize, distinct, "population {k}: distinct ancestors");
    }
    let s = pop.stats.read(&gpu).unwrap();
    assert!(
        s.chunks(STATS).all(|r| r[STAT_RESAMPLED] == 1.0),
        "the forced draw resampled"
    );
    assert!(
        pop.logw.read(&gpu).unwrap().iter().all(|&v| v == 0.0),
        "equal weights after it"
    );
}

#[test]
fn gather_moves_rows_to_their_ancestors() {
    let gpu = gpu();
    for &(p, g, per) in &[(5usize, 1usize, 3usize), (257, 2, 7), (1000, 1, 1)] {
        let n = p * g;
        let pop = Population::new(&gpu, p, g, 2.0, 1).unwrap();
        let mut r = rng(n as u64);
        let anc: Vec<u32> = (0..n).map(|k| ((k / p) * p + r.random_range(0..p)) as u32).collect();
        gpu.queue.write_buffer(&pop.ancestors, 0, bytemuck::cast_slice(&anc));
        let src_data = randn(&mut r, n * per);
        let src = Tensor::from_slice(&gpu, "src", &[n, per], &src_data).unwrap();
        let dst = Tensor::zeros(&gpu, "dst", &[n, per]).unwrap();
        let (d, _keep) = pop.gather(&gpu, &src, &dst).unwrap();
        run(&Plan { steps: vec![d] });
        let want: Vec<f32> = (0..n * per)
            .map(|i| src_data[anc[i / per] as usize * per + i % per])
            .collect();
        assert_eq!(dst.read(&gpu).unwrap(), want, "P {p} G {g} per {per}");
    }
}

#[test]
fn tds_weigh_and_step_match_cpu() {
    let gpu = gpu();
    let (n_part, per) = (37usize, 29usize);
    let n = n_part * per;
    let mut r = rng(11);
    let mut vec = |k: usize| randn(&mut r, k);
    let (eps, v, z, g, h, x) = (vec(n), vec(n), vec(n), vec(n), vec(n), vec(n));
    let (rr, lpq, prev, logw): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) = (
        vec(n_part).iter().map(|a| a * a).collect(),
        vec(n_part),
        vec(n_part),
        vec(n_part),
    );
    for flags in [1u32 | 2, 2 | 4, 0, 1] {
        let inv_twist_var = 2.5f32;
        let params = StepParams {
            n: n as u32,
            per: per as u32,
            flags,
            a_t: 0.6,
            b_t: 0.8,
            // an eps-model: x0hat = (x - b eps) / a
            x0_x: 1.0 / 0.6,
            x0_out: -0.8 / 0.6,
            coef1: 0.3,
            coef2: 0.9,
            log_var_min: -4.0,
            log_var_max: -2.0,
            log_var_fixed: -3.0,
            method: MethodBlock::of(&SmcStep {
                inv_twist_var,
                ..SmcStep::default()
            }),
            ..StepParams::default()
        };
        let u = gpu.uniform("tds", &params);
        let t = |name: &str, d: &[f32]| Tensor::from_slice(&gpu, name, &[d.len()], d).unwrap();
        let (te, tv, tz, tg, th, tx) = (
            t("eps", &eps),
            t("v", &v),
            t("z", &z),
            t("g", &g),
            t("h", &h),
            t("x", &x),
        );
        let tl = Tensor::zeros(&gpu, "lpq", &[n]).unwrap();
        let tout = Tensor::zeros(&gpu, "x out", &[n]).unwrap();
        let ttw = Tensor::zeros(&gpu, "twist out", &[n_part]).unwrap();
        let (trr, tlpq, tprev, tlogw) = (t("rr", &rr), t("lpq", &lpq), t("prev", &prev), t("logw", &logw));
        let plan = Plan {
            steps: vec![
                Dispatch::new(
                    &gpu,
                    &SAMPLER,
                    "tds_step",
                    &[],
                    &[
                        &u,
                        &te.buffer,
                        &tv.buffer,
                        &tz.buffer,
                        &tg.buffer,
                        &th.buffer,
                        &tx.buffer,
                        &tout.buffer,
                        &tl.buffer,
                    ],
                    dispatch_groups(n, WG1D),
                )
                .unwrap(),
                Dispatch::new(
                    &gpu,
                    &SAMPLER,
                    "tds_weigh",
                    &[],
                    &[&u, &trr.buffer, &tlpq.buffer, &tprev.buffer, &ttw.buffer, &tlogw.buffer],
                    dispatch_groups(n_part, WG1D),
                )
                .unwrap(),
            ],
        };
        plan.run(&gpu).unwrap();
        // CPU reference, f64.
        let (mut want_x, mut want_l) = (vec![0f32; n], vec![0f32; n]);
        for i in 0..n {
            let (a, b) = (params.a_t as f64, params.b_t as f64);
            let xi = x[i] as f64;
            let mut x0 = (xi - b * eps[i] as f64) / a;
            if flags & 1 != 0 {
                x0 = x0.clamp(-1.0, 1.0);
            }
            let mean = params.coef1 as f64 * x0 + params.coef2 as f64 * xi;
            let lv = if flags & 4 != 0 {
                let f = (v[i] as f64 + 1.0) / 2.0;
                f * params.log_var_max as f64 + (1.0 - f) * params.log_var_min as f64
            } else {
                params.log_var_fixed as f64
            };
            if flags & 2 == 0 {
                want_x[i] = mean as f32;
                continue;
            }
            let var = lv.exp();
            let shift = var * inv_twist_var as f64 * (g[i] as f64 - b * h[i] as f64) / a;
            let xn = mean + shift + var.sqrt() * z[i] as f64;
            // log N(xn; mean, var) - log N(xn; mean + shift, var), written out
            let lp = -(xn - mean).powi(2) / (2.0 * var) + (xn - mean - shift).powi(2) / (2.0 * var);
            want_x[i] = xn as f32;
            want_l[i] = lp as f32;
        }
        let what = format!("tds_step flags {flags}");
        assert_close(&format!("{what}: x"), &tout.read(&gpu).unwrap(), &want_x, 1e-5, 1e-5);
        assert_close(
            &format!("{what}: log p/q"),
            &tl.read(&gpu).unwrap(),
            &want_l,
            1e-4,
            1e-4,
        );
        let twist: Vec<f32> = rr.iter().map(|&q| -0.5 * q * inv_twist_var).collect();
        let want_w: Vec<f32> = (0..n_part).map(|k| logw[k] + twist[k] - prev[k] + lpq[k]).collect();
        assert_close("tds_weigh: log w", &tlogw.read(&gpu).unwrap(), &want_w, 1e-5, 1e-5);
        assert_close(
            "tds_weigh: the twist kept",
            &ttw.read(&gpu).unwrap(),
            &twist,
            1e-6,
            1e-6,
        );
    }
}

/// `tds_geometry` scales each component of q = U^T r by
/// sqrt(v_t / (sigma_y^2 + ratio s_i^2)), s_i the component's singular value,
/// and zeroes those with s_i = 0 (37 rows of 29 components; a step and the
/// final weighing).
#[test]
fn tds_geometry_matches_cpu() {
    let gpu = gpu();
    let (rows, m) = (37usize, 29usize);
    let mut r = rng(12);
    let q = randn(&mut r, rows * m);
    let sing: Vec<f32> = (0..m)
        .map(|i| {
            if i % 7 == 3 {
                0.0
            } else {
                0.05 + (i as f32 * 0.37) % 1.9
            }
        })
        .collect();
    for (inv_twist_var, ratio, sigma_y2) in [(0.31f32, 2.9f32, 0.0025f32), (400.0, 0.0, 0.0025)] {
        let params = StepParams {
            n: (rows * m) as u32,
            m_per: m as u32,
            method: MethodBlock::of(&SmcStep {
                inv_twist_var,
                ratio,
                sigma_y2,
                _pad: 0.0,
            }),
            ..StepParams::default()
        };
        let u = gpu.uniform("tds geometry", &params);
        let tq = Tensor::from_slice(&gpu, "q", &[rows, m], &q).unwrap();
        let ts = Tensor::from_slice(&gpu, "s", &[m], &sing).unwrap();
        Plan {
            steps: vec![Dispatch::new(
                &gpu,
                &SAMPLER,
                "tds_geometry",
                &[],
                &[&u, &ts.buffer, &tq.buffer],
                dispatch_groups(rows * m, WG1D),
            )
            .unwrap()],
        }
        .run(&gpu)
        .unwrap();
        let want: Vec<f32> = (0..rows * m)
            .map(|i| {
                let sv = sing[i % m] as f64;
                let cov = sigma_y2 as f64 + ratio as f64 * sv * sv;
                if sv == 0.0 {
                    return 0.0;
                }
                (q[i] as f64 * (1.0 / (inv_twist_var as f64 * cov)).sqrt()) as f32
            })
            .collect();
        assert_close(
            &format!("tds_geometry ratio {ratio}"),
            &tq.read(&gpu).unwrap(),
            &want,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn row_reductions_match_cpu_short_and_long_rows() {
    use tweedie::kernels::smc::{RowReduce, ROWS_MAX};
    let gpu = gpu();
    for &(rows, per) in &[(37usize, 7usize), (300, 1), (5, ROWS_MAX + 476)] {
        let data = randn(&mut rng((rows * per) as u64), rows * per);
        let a = Tensor::from_slice(&gpu, "a", &[rows, per], &data).unwrap();
        for square in [false, true] {
            let r = RowReduce::new(&gpu, &a, rows, square).unwrap();
            run(&r.plan);
            let want: Vec<f32> = data
                .chunks(per)
                .map(|c| {
                    c.iter()
                        .map(|&v| if square { v as f64 * v as f64 } else { v as f64 })
                        .sum::<f64>() as f32
                })
                .collect();
            assert_close(
                &format!("{rows} rows of {per}, square {square}"),
                &r.out.read(&gpu).unwrap(),
                &want,
                1e-4 * (per as f32).sqrt(),
                1e-5,
            );
        }
    }
}

/// The spectral SMC's kernels (shaders/sampler.wgsl, `spectral_*`) against
/// float64: the reverse mean, the log-weight terms and the proposal's
/// correction per spectral component (some singular values 0: unmeasured),
/// and the move, on 37 particles of 29 elements and 11 components, for a
/// middle step, the first (no potential divided out) and the last (var 0).
#[test]
fn spectral_kernels_match_cpu() {
    let gpu = gpu();
    let (n_part, per, m_per) = (37usize, 29usize, 11usize);
    let (n, nm) = (n_part * per, n_part * m_per);
    let mut r = rng(12);
    let mut vec = |k: usize| randn(&mut r, k);
    let (x, eps, z, g) = (vec(n), vec(n), vec(n), vec(n));
    let (ybar, vmu, vx, zeta) = (vec(nm), vec(nm), vec(nm), vec(nm));
    let sing: Vec<f32> = (0..m_per)
        .map(|i| if i % 4 == 3 { 0.0 } else { 0.1 + 0.09 * i as f32 })
        .collect();
    let (a, b) = (0.6f64, 0.8f64);
    // (kappa', rho') of the next level, the step's variance, whether the
    // potential at x_t is divided out, clipping; this level's (kappa, rho).
    let (kappa, rho) = (1.1f32, 0.3f32);
    for (kn, rn_, var, twist_on, clip) in [
        (1.2f32, 0.25f32, 0.02f32, 1.0f32, true),
        (1.2, 0.25, 0.02, 0.0, false),
        (1.0, 0.0, 0.0, 1.0, false),
    ] {
        let sigma_y2 = 0.0025f32;
        let params = StepParams {
            n: n as u32,
            per: per as u32,
            m_per: m_per as u32,
            flags: if clip { 1 } else { 0 },
            a_t: a as f32,
            b_t: b as f32,
            x0_x: (1.0 / a) as f32,
            x0_out: (-b / a) as f32,
            coef1: 0.3,
            coef2: 0.9,
            method: MethodBlock::of(&SpectralStep {
                kappa_next: kn,
                rho_next: rn_,
                var,
                sigma_y2,
                kappa,
                rho,
                twist_on,
                _pad: 0.0,
            }),
            ..StepParams::default()
        };
        let u = gpu.uniform("spectral", &params);
        let t = |name: &str, d: &[f32]| Tensor::from_slice(&gpu, name, &[d.len()], d).unwrap();
        let (tx, te, tz, tg) = (t("x", &x), t("eps", &eps), t("z", &z), t("g", &g));
        let (ts, ty, tvm, tvx, tze) = (
            t("sing", &sing),
            t("ybar", &ybar),
            t("vmu", &vmu),
            t("vx", &vx),
            t("zeta", &zeta),
        );
        let tmu = Tensor::zeros(&gpu, "mu", &[n]).unwrap();
        let tout = Tensor::zeros(&gpu, "x out", &[n]).unwrap();
        let tlw = Tensor::zeros(&gpu, "lw", &[nm]).unwrap();
        let tdelta = Tensor::zeros(&gpu, "delta", &[nm]).unwrap();
        let d = |entry: &str, bufs: &[&wgpu::Buffer], threads: usize| {
            Dispatch::new(&gpu, &SAMPLER, entry, &[], bufs, dispatch_groups(threads, WG1D)).unwrap()
        };
        let plan = Plan {
            steps: vec![
                d("spectral_mean", &[&u, &tx.buffer, &te.buffer, &tmu.buffer], n),
                d(
                    "spectral_weigh",
                    &[&u, &ts.buffer, &ty.buffer, &tvm.buffer, &tvx.buffer, &tlw.buffer],
                    nm,
                ),
                d(
                    "spectral_propose",
                    &[&u, &ts.buffer, &ty.buffer, &tvm.buffer, &tze.buffer, &tdelta.buffer],
                    nm,
                ),
                d(
                    "spectral_move",
                    &[&u, &tmu.buffer, &tz.buffer, &tg.buffer, &tout.buffer],
                    n,
                ),
            ],
        };
        plan.run(&gpu).unwrap();
        let (mut want_mu, mut want_x) = (vec![0f32; n], vec![0f32; n]);
        for i in 0..n {
            let mut x0 = (x[i] as f64 - b * eps[i] as f64) / a;
            if clip {
                x0 = x0.clamp(-1.0, 1.0);
            }
            let mu = 0.3 * x0 + 0.9 * x[i] as f64;
            want_mu[i] = mu as f32;
            want_x[i] = (mu + (var as f64).sqrt() * z[i] as f64 + g[i] as f64) as f32;
        }
        let (mut want_lw, mut want_delta) = (vec![0f32; nm], vec![0f32; nm]);
        let (kn, rn_, var, sy2) = (kn as f64, rn_ as f64, var as f64, sigma_y2 as f64);
        for i in 0..nm {
            let s = sing[i % m_per] as f64;
            if s == 0.0 {
                continue;
            }
            let y = ybar[i] as f64;
            // log N(y; s kappa' vmu, s^2 kappa'^2 var + D') - log N(y; s kappa vx, D),
            // less the log-determinants
            let dn = s * s * rn_ + sy2;
            let rn = y - s * kn * vmu[i] as f64;
            let mut lw = -0.5 * rn * rn / (s * s * kn * kn * var + dn);
            if twist_on > 0.0 {
                let dd = s * s * rho as f64 + sy2;
                lw += 0.5 * (y - s * kappa as f64 * vx[i] as f64).powi(2) / dd;
            }
            want_lw[i] = lw as f32;
            // the product of N(c; vmu, var) and N(y; s kappa' c, D'): its mean and variance
            let post_var = 1.0 / (if var > 0.0 { 1.0 / var } else { f64::INFINITY } + s * s * kn * kn / dn);
            let post_mean = if var > 0.0 {
                post_var * (vmu[i] as f64 / var + s * kn * y / dn)
            } else {
                vmu[i] as f64
            };
            want_delta[i] = (post_mean - vmu[i] as f64 + (post_var.sqrt() - var.sqrt()) * zeta[i] as f64) as f32;
        }
        let what = format!("kappa' {kn}, var {var}, twist {twist_on}, clip {clip}");
        assert_close(&format!("{what}: mu"), &tmu.read(&gpu).unwrap(), &want_mu, 1e-5, 1e-5);
        assert_close(
            &format!("{what}: log-weight terms"),
            &tlw.read(&gpu).unwrap(),
            &want_lw,
            1e-4,
            1e-5,
        );
        assert_close(
            &format!("{what}: delta"),
            &tdelta.read(&gpu).unwrap(),
            &want_delta,
            1e-5,
            1e-5,
        );
        assert_close(&format!("{what}: x"), &tout.read(&gpu).unwrap(), &want_x, 1e-5, 1e-5);
    }
}

/// `mean_gain2` (the TDS twist's g^2 where the operator has no SVD form)
/// estimates ||A||_F^2 / m: against the exact value from A^T applied to every
/// unit vector of the output, on motion blur (the operator that needs it,
/// odd sizes), x4 SR and a random inpainting mask, within 5%.
#[test]
fn mean_gain_estimates_the_frobenius_norm() {
    use tweedie::operators::task::{build_linear, TaskSpec};
    use tweedie::samplers::smc::mean_gain2;
    let gpu = gpu();
    let spec = |task: &str| TaskSpec::new(task.parse().unwrap());
    for (s, shape) in [
        (
            TaskSpec {
                kernel_size: Some(9),
                ..spec("deblur-motion")
            },
            [1usize, 23, 17],
        ),
        (
            TaskSpec {
                factor: Some(4),
                ..spec("sr")
            },
            [3, 16, 12],
        ),
        (spec("inpaint-random"), [1, 19, 21]),
    ] {
        let op = build_linear(&gpu, &s, shape, 3).unwrap();
        let m: usize = op.out_shape().iter().product();
        let d: usize = shape.iter().product();
        let mut eye = vec![0f32; m * m];
        (0..m).for_each(|i| eye[i * m + i] = 1.0);
        let e = Tensor::from_slice(&gpu, "e", &[m, m], &eye).unwrap();
        let cols = Tensor::zeros(&gpu, "A^T e", &[m, shape[0], shape[1], shape[2]]).unwrap();
        op.adjoint(&gpu, &e, &cols).unwrap().run(&gpu).unwrap();
        let exact = cols
            .read(&gpu)
            .unwrap()
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            / m as f64;
        let est = mean_gain2(&gpu, op.as_ref(), &[1, shape[0], shape[1], shape[2]], m).unwrap();
        println!(
            "{} {shape:?} (d {d}, m {m}): ||A||_F^2 / m {exact:.5}, estimated {est:.5}",
            s.task
        );
        assert!(
            (est - exact).abs() <= 0.05 * exact,
            "{}: estimated {est}, exact {exact}",
            s.task
        );
    }
}
