//! Schedules against values computed here from the formulas (guided-diffusion's
//! `get_named_beta_schedule("linear")`, `space_timesteps`, `SpacedDiffusion`,
//! `GaussianDiffusion.__init__`).

use tweedie::schedule::{linear_betas, space_timesteps, Schedule, VarianceType};

fn close(what: &str, got: f64, want: f64, rtol: f64) {
    assert!(
        (got - want).abs() <= rtol * want.abs().max(1e-300),
        "{what}: got {got}, want {want}"
    );
}

#[test]
fn linear_betas_match_linspace() {
    let b = linear_betas(1000);
    assert_eq!(b.len(), 1000);
    close("beta_0", b[0], 1e-4, 1e-12);
    close("beta_999", b[999], 0.02, 1e-12);
    close("beta_500", b[500], 1e-4 + (0.02 - 1e-4) * 500.0 / 999.0, 1e-12);
    // Other step counts scale both ends by 1000 / N.
    let b = linear_betas(250);
    close("beta_0 (250)", b[0], 4e-4, 1e-12);
    close("beta_249 (250)", b[249], 0.08, 1e-12);
}

#[test]
fn space_timesteps_as_guided_diffusion() {
    let t = space_timesteps(1000, &[250]).unwrap();
    assert_eq!(t.len(), 250);
    // frac_stride = 999 / 249; index k -> round(k * stride)
    let stride = 999.0 / 249.0;
    for (k, &v) in t.iter().enumerate() {
        assert_eq!(v, (k as f64 * stride).round() as usize, "k = {k}");
    }
    assert_eq!((t[0], t[1], t[24], t[249]), (0, 4, 96, 999));
    // Several sections: sizes 334, 333, 333.
    let t = space_timesteps(1000, &[10, 15, 20]).unwrap();
    assert_eq!(t.len(), 45);
    assert_eq!(t[0], 0);
    assert_eq!(t[9], 333);
    assert_eq!(t[10], 334);
    assert_eq!(t[24], 666);
    assert_eq!(t[25], 667);
    assert_eq!(t[44], 999);
    assert_eq!(space_timesteps(1000, &[1000]).unwrap(), (0..1000).collect::<Vec<_>>());
    assert!(space_timesteps(10, &[11]).is_err());
    assert!(Schedule::linear(1000, 0).is_err());
    assert!(Schedule::linear(1000, 1001).is_err());
}

#[test]
fn respaced_schedule_keeps_alphas_cumprod_and_posterior_formulas() {
    let base = Schedule::linear(1000, 1000).unwrap();
    // abar by direct product
    let mut abar = 1.0;
    for (i, b) in linear_betas(1000).iter().enumerate() {
        abar *= 1.0 - b;
        close("abar", base.alphas_cumprod[i], abar, 1e-12);
    }
    for k in [1000usize, 250, 100, 37] {
        let s = Schedule::linear(1000, k).unwrap();
        assert_eq!(s.len(), k);
        for i in 0..k {
            let t = s.timestep_map[i];
            close("respaced abar", s.alphas_cumprod[i], base.alphas_cumprod[t], 1e-9);
            let prev = if i == 0 {
                1.0
            } else {
                base.alphas_cumprod[s.timestep_map[i - 1]]
            };
            close("respaced beta", s.betas[i], 1.0 - base.alphas_cumprod[t] / prev, 1e-9);
            let ab = s.alphas_cumprod[i];
            let pv = s.betas[i] * (1.0 - prev) / (1.0 - ab);
            if i > 0 {
                close("posterior variance", s.posterior_variance[i], pv, 1e-9);
                close(
                    "log variance clipped",
                    s.posterior_log_variance_clipped[i],
                    pv.ln(),
                    1e-9,
                );
                close(
                    "fixed large",
                    s.fixed_log_variance(VarianceType::FixedLarge, i),
                    s.betas[i].ln(),
                    1e-12,
                );
            } else {
                assert_eq!(s.posterior_variance[0], 0.0);
                close(
                    "clipped at 0",
                    s.posterior_log_variance_clipped[0],
                    s.posterior_variance[1].ln(),
                    1e-12,
                );
                close(
                    "fixed large at 0",
                    s.fixed_log_variance(VarianceType::FixedLarge, 0),
                    s.posterior_variance[1].ln(),
                    1e-12,
                );
            }
            close(
                "coef1",
                s.posterior_mean_coef1[i],
                s.betas[i] * prev.sqrt() / (1.0 - ab),
                1e-9,
            );
            close(
                "coef2",
                s.posterior_mean_coef2[i],
                (1.0 - prev) * (1.0 - s.betas[i]).sqrt() / (1.0 - ab),
                1e-9,
            );
            close(
                "fixed small",
                s.fixed_log_variance(VarianceType::FixedSmall, i),
                s.posterior_log_variance_clipped[i],
                1e-12,
            );
            // learned range: v = -1 -> beta~ (clipped), v = 1 -> beta, v = 0 -> geometric mean
            close(
                "learned v=-1",
                s.learned_log_variance(i, -1.0),
                s.posterior_log_variance_clipped[i],
                1e-12,
            );
            close("learned v=1", s.learned_log_variance(i, 1.0), s.betas[i].ln(), 1e-12);
            close(
                "learned v=0",
                s.learned_log_variance(i, 0.0),
                0.5 * (s.betas[i].ln() + s.posterior_log_variance_clipped[i]),
                1e-12,
            );
        }
        // the posterior mean of x0 itself is x0 (coef1 + coef2 * sqrt(abar)/... identity):
        // coef1 * x0 + coef2 * (sqrt(abar) x0) = sqrt(abar_prev) x0 when noise-free
        for i in 0..k {
            let prev = s.alphas_cumprod_prev[i];
            close(
                "mean identity",
                s.posterior_mean_coef1[i] + s.posterior_mean_coef2[i] * s.alphas_cumprod[i].sqrt(),
                prev.sqrt(),
                1e-9,
            );
        }
    }
}
