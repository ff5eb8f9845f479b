//! Noise schedules as guided-diffusion builds them: linear betas, timestep
//! respacing (`space_timesteps`), and the posterior / model variances.
//!
//! Everything is computed in f64 on the CPU once; samplers upload the per-step
//! scalars they need.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScheduleError {
    #[error("the schedule needs at least 1 diffusion step, got 0")]
    NoSteps,
    #[error("cannot respace {base} diffusion steps to {wanted}: {why}")]
    Respacing { base: usize, wanted: String, why: String },
}

/// How the reverse-step variance is chosen (guided-diffusion's `ModelVarType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    /// log var = f log beta_t + (1 - f) log beta~_t (clipped), f = (v + 1) / 2
    LearnedRange,
    /// beta~_t, the true posterior variance (clipped log at t = 0)
    FixedSmall,
    /// beta_t, with beta~_1 in place of beta_0
    FixedLarge,
}

/// The betas of guided-diffusion's "linear" schedule for `steps` steps:
/// 1e-4..0.02 at 1000 steps, both ends scaled by 1000 / steps otherwise.
pub fn linear_betas(steps: usize) -> Vec<f64> {
    let scale = 1000.0 / steps as f64;
    let (start, end) = (scale * 1e-4, scale * 0.02);
    if steps == 1 {
        return vec![start];
    }
    (0..steps)
        .map(|i| start + (end - start) * i as f64 / (steps - 1) as f64)
        .collect()
}

/// guided-diffusion's `space_timesteps(num_timesteps, section_counts)`: the
/// original timesteps kept when respacing. `sections` is a list of step counts,
/// one per equal section of the original process (e.g. [250] or [10, 15, 20]).
pub fn space_timesteps(num_timesteps: usize, sections: &[usize]) -> Result<Vec<usize>, ScheduleError> {
    let err = |why: String| ScheduleError::Respacing {
        base: num_timesteps,
        wanted: format!("{sections:?}"),
        why,
    };
    if sections.is_empty() {
        return Err(err("no section counts".into()));
    }
    let size_per = num_timesteps / sections.len();
    let extra = num_timesteps % sections.len();
    let mut start_idx = 0usize;
    let mut all = Vec::new();
    for (i, &count) in sections.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(err(format!("cannot divide section of {size} steps into {count}")));
        }
        let frac_stride = if count <= 1 {
            1.0
        } else {
            (size - 1) as f64 / (count - 1) as f64
        };
        let mut cur_idx = 0.0f64;
        for _ in 0..count {
            // Python's round() rounds half to even; the strides here never land
            // exactly on .5 except where both choices agree with upstream tests.
            all.push(start_idx + round_half_even(cur_idx));
            cur_idx += frac_stride;
        }
        start_idx += size;
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

fn round_half_even(x: f64) -> usize {
    let r = x.round();
    if (x - x.trunc() - 0.5).abs() < 1e-12 && (r as i64) % 2 != 0 {
        (r - 1.0) as usize
    } else {
        r as usize
    }
}

/// A (possibly respaced) diffusion schedule with every per-step quantity the
/// samplers use. Index i runs over the kept steps; `timestep_map[i]` is the
/// original timestep the model sees.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f64>,
    pub timestep_map: Vec<usize>,
    pub posterior_variance: Vec<f64>,
    pub posterior_log_variance_clipped: Vec<f64>,
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
}

impl Schedule {
    /// The linear schedule with `base_steps` steps, respaced to `steps` kept
    /// steps (one section; `steps == base_steps` keeps them all).
    pub fn linear(base_steps: usize, steps: usize) -> Result<Schedule, ScheduleError> {
        if base_steps == 0 || steps == 0 {
            return Err(ScheduleError::NoSteps);
        }
        let base = linear_betas(base_steps);
        let keep = space_timesteps(base_steps, &[steps])?;
        Ok(Self::respaced(&base, &keep))
    }

    /// guided-diffusion's `SpacedDiffusion`: new betas from the kept
    /// alphas_cumprod, beta_i = 1 - abar_i / abar_{prev kept}.
    pub fn respaced(base_betas: &[f64], keep: &[usize]) -> Schedule {
        let mut betas = Vec::with_capacity(keep.len());
        let mut map = Vec::with_capacity(keep.len());
        let mut last = 1.0f64;
        let mut abar = 1.0f64;
        let mut k = 0;
        for (i, b) in base_betas.iter().enumerate() {
            abar *= 1.0 - b;
            if k < keep.len() && keep[k] == i {
                betas.push(1.0 - abar / last);
                last = abar;
                map.push(i);
                k += 1;
            }
        }
        Self::from_betas(betas, map)
    }

    /// guided-diffusion's `GaussianDiffusion.__init__` quantities.
    pub fn from_betas(betas: Vec<f64>, timestep_map: Vec<usize>) -> Schedule {
        let n = betas.len();
        let mut acp = Vec::with_capacity(n);
        let mut a = 1.0;
        for b in &betas {
            a *= 1.0 - b;
            acp.push(a);
        }
        let acp_prev: Vec<f64> = (0..n).map(|i| if i == 0 { 1.0 } else { acp[i - 1] }).collect();
        let pv: Vec<f64> = (0..n)
            .map(|i| betas[i] * (1.0 - acp_prev[i]) / (1.0 - acp[i]))
            .collect();
        // log(beta~) with beta~_0 = 0 replaced by beta~_1 (upstream's clipping).
        let plv: Vec<f64> = (0..n)
            .map(|i| if i == 0 && n > 1 { pv[1].ln() } else { pv[i].ln() })
            .collect();
        let c1 = (0..n).map(|i| betas[i] * acp_prev[i].sqrt() / (1.0 - acp[i])).collect();
        let c2 = (0..n)
            .map(|i| (1.0 - acp_prev[i]) * (1.0 - betas[i]).sqrt() / (1.0 - acp[i]))
            .collect();
        Schedule {
            betas,
            alphas_cumprod: acp,
            alphas_cumprod_prev: acp_prev,
            timestep_map,
            posterior_variance: pv,
            posterior_log_variance_clipped: plv,
            posterior_mean_coef1: c1,
            posterior_mean_coef2: c2,
        }
    }

    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// The log variance of a fixed-variance model at step i (for
    /// `LearnedRange` this is the lower end, beta~ clipped).
    pub fn fixed_log_variance(&self, kind: VarianceType, i: usize) -> f64 {
        match kind {
            VarianceType::FixedLarge => {
                // append(posterior_variance[1], betas[1:])
                if i == 0 && self.len() > 1 {
                    self.posterior_variance[1].ln()
                } else {
                    self.betas[i].ln()
                }
            }
            VarianceType::FixedSmall | VarianceType::LearnedRange => self.posterior_log_variance_clipped[i],
        }
    }

    /// log var of the learned-range model at step i for model output v.
    pub fn learned_log_variance(&self, i: usize, v: f64) -> f64 {
        let frac = (v + 1.0) / 2.0;
        frac * self.betas[i].ln() + (1.0 - frac) * self.posterior_log_variance_clipped[i]
    }
}
