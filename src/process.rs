//! The forward process a model was trained on and what its network predicts.
//!
//! Two families, both of the form x_t = a_t x0 + b_t eps:
//!
//! - **VP diffusion** (DDPM, ADM, diffusers' `DDPMScheduler`): a_t = sqrt(abar_t),
//!   b_t = sqrt(1 - abar_t) over `train_steps` discrete timesteps, with linear,
//!   scaled-linear or cosine betas. The network sees the timestep index and
//!   predicts eps, x0 (`sample`) or v = a eps - b x0 (`v_prediction`).
//! - **Flow** (rectified flow / conditional flow matching): a_t = 1 - t, b_t = t,
//!   t in [0, 1], data at t = 0; the network predicts the velocity
//!   dx_t/dt = eps - x0. Models trained with data at t = 1 (torchcfm,
//!   x_s = s x1 + (1 - s) noise) see s = 1 - t and predict -dx_t/dt; the network
//!   time is `time_scale` times its own t (1 for t, 1000 for diffusers'
//!   `FlowMatchEulerDiscreteScheduler`, N - 1 for some guided-diffusion ports).
//!
//! Inside tweedie every sampler works in the first convention (data at t = 0).
//! Whatever the network outputs, o, enters the step kernels through two linear
//! maps fixed per step ([`Process::coefficients`]): x0hat = cx x + co o and
//! epshat = ex x + eo o. For a flow both stay finite at t = 1 (a_t = 0), where
//! x0hat = x - u would otherwise be written (x - b eps) / a.
//!
//! A model directory says which process it uses: diffusers'
//! `scheduler_config.json` beside the model when present (its `beta_schedule`,
//! `beta_start`, `beta_end`, `num_train_timesteps`, `prediction_type` and
//! `variance_type`; `FlowMatchEulerDiscreteScheduler` is a flow fed
//! `num_train_timesteps` t), else these fields of
//! `config.json` (all optional; without them a model is VP, linear betas, 1000
//! steps, eps-prediction):
//!
//! | field | values |
//! | --- | --- |
//! | `process` | `"vp"` (default), `"flow"` |
//! | `prediction_type` | `"epsilon"`, `"sample"`, `"v_prediction"` (VP); `"velocity"` (flow) |
//! | `noise_schedule` / `beta_schedule` | `"linear"`, `"scaled_linear"`, `"cosine"` / `"squaredcos_cap_v2"` |
//! | `beta_start`, `beta_end` | diffusers' linear betas (default 1e-4, 0.02) |
//! | `diffusion_steps` / `num_train_timesteps` | training timesteps (default 1000) |
//! | `flow_data_time` | 0 (default) or 1: where the data sits on the model's time axis |
//! | `time_scale` | the network's time is `time_scale` t: a number, or `"t"`, `"1000t"`, `"(N-1)t"` |

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;

use crate::schedule::{Schedule, ScheduleError, VarianceType};

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// What the network outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// the noise eps
    Epsilon,
    /// the clean sample x0
    Sample,
    /// v = a_t eps - b_t x0 (VP only)
    V,
    /// the velocity dx_t/dt (flow only)
    Velocity,
}

impl Prediction {
    /// diffusers' `prediction_type` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::Sample => "sample",
            Prediction::V => "v_prediction",
            Prediction::Velocity => "velocity",
        }
    }

    fn parse(s: &str) -> Option<Prediction> {
        Some(match s {
            "epsilon" | "eps" => Prediction::Epsilon,
            "sample" | "x0" => Prediction::Sample,
            "v_prediction" | "v" => Prediction::V,
            "velocity" | "flow_prediction" => Prediction::Velocity,
            _ => return None,
        })
    }
}

/// How the VP betas are laid out over the training timesteps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Betas {
    /// guided-diffusion's "linear": 1e-4..0.02 at 1000 steps, scaled by 1000 / T otherwise.
    GuidedLinear,
    /// diffusers' "linear": linspace(start, end, T).
    Linear { start: f64, end: f64 },
    /// diffusers' "scaled_linear": linspace(sqrt(start), sqrt(end), T)^2.
    ScaledLinear { start: f64, end: f64 },
    /// Nichol & Dhariwal's cosine abar (guided-diffusion "cosine", diffusers "squaredcos_cap_v2"), betas capped at 0.999.
    Cosine,
}

impl Betas {
    pub fn betas(self, steps: usize) -> Vec<f64> {
        let lin = |a: f64, b: f64| -> Vec<f64> {
            if steps == 1 {
                return vec![a];
            }
            (0..steps)
                .map(|i| a + (b - a) * i as f64 / (steps - 1) as f64)
                .collect()
        };
        match self {
            Betas::GuidedLinear => crate::schedule::linear_betas(steps),
            Betas::Linear { start, end } => lin(start, end),
            Betas::ScaledLinear { start, end } => lin(start.sqrt(), end.sqrt()).into_iter().map(|v| v * v).collect(),
            Betas::Cosine => {
                let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..steps)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
                        (1.0 - f(t2) / f(t1)).min(0.999)
                    })
                    .collect()
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Betas::GuidedLinear | Betas::Linear { .. } => "linear",
            Betas::ScaledLinear { .. } => "scaled_linear",
            Betas::Cosine => "cosine",
        }
    }
}

/// The process family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Vp { betas: Betas, train_steps: usize },
    Flow { data_at_one: bool, time_scale: f64 },
}

/// A model's process and parameterisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Process {
    pub kind: Kind,
    pub prediction: Prediction,
    /// The reverse-step variance a diffusers scheduler names (`variance_type`:
    /// fixed_small / fixed_large); None: the sampler's choice (tweedie uses
    /// fixed-large, as DPS does). A learned variance comes from the model's
    /// output channels, not from here.
    pub variance: Option<VarianceType>,
}

impl Default for Process {
    /// DDPM: VP, guided-diffusion's linear betas, 1000 steps, eps-prediction.
    fn default() -> Self {
        Process::ddpm(1000)
    }
}

/// The linear maps from (x_t, network output o) to x0hat and epshat at one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coefficients {
    pub x0_x: f64,
    pub x0_out: f64,
    pub eps_x: f64,
    pub eps_out: f64,
}

/// The reverse-time grid of a run: index i over the K kept steps (the sampler
/// runs i = K-1 down to 0), step i going from (a[i], b[i]) to (a_next[i], b_next[i]).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub a_next: Vec<f64>,
    pub b_next: Vec<f64>,
    /// the time the network is fed at step i
    pub net_time: Vec<f32>,
}

impl Process {
    /// VP, guided-diffusion's linear betas over `train_steps`, eps-prediction.
    pub fn ddpm(train_steps: usize) -> Process {
        Process {
            kind: Kind::Vp {
                betas: Betas::GuidedLinear,
                train_steps,
            },
            prediction: Prediction::Epsilon,
            variance: None,
        }
    }

    /// Rectified flow, data at t = 0, velocity prediction, network time `time_scale` t.
    pub fn flow(time_scale: f64) -> Process {
        Process {
            kind: Kind::Flow {
                data_at_one: false,
                time_scale,
            },
            prediction: Prediction::Velocity,
            variance: None,
        }
    }

    pub fn is_flow(&self) -> bool {
        matches!(self.kind, Kind::Flow { .. })
    }

    /// One line for messages and reports ("VP cosine (1000 steps), v_prediction").
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Vp { betas, train_steps } => {
                format!(
                    "VP {} betas ({train_steps} steps), {}",
                    betas.name(),
                    self.prediction.name()
                )
            }
            Kind::Flow {
                data_at_one,
                time_scale,
            } => format!(
                "flow (data at t = {}, network time {}t), velocity",
                u8::from(data_at_one),
                time_scale
            ),
        }
    }

    /// The VP schedule respaced to `steps` (guided-diffusion's `space_timesteps`), or None for a flow.
    pub fn schedule(&self, steps: usize) -> Result<Option<Schedule>, ScheduleError> {
        match self.kind {
            Kind::Vp { betas, train_steps } => {
                if steps == 0 || train_steps == 0 {
                    return Err(ScheduleError::NoSteps);
                }
                let base = betas.betas(train_steps);
                let keep = crate::schedule::space_timesteps(train_steps, &[steps])?;
                Ok(Some(Schedule::respaced(&base, &keep)))
            }
            Kind::Flow { .. } => Ok(None),
        }
    }

    /// alphas_cumprod of the training schedule (VP), indexed by timestep.
    pub fn train_alphas_cumprod(&self) -> Option<Vec<f64>> {
        match self.kind {
            Kind::Vp { betas, train_steps } => {
                Some(Schedule::from_betas(betas.betas(train_steps), vec![]).alphas_cumprod)
            }
            Kind::Flow { .. } => None,
        }
    }

    /// The most reverse steps a run may take (a VP model's training steps; a flow: any).
    pub fn max_steps(&self) -> Option<usize> {
        match self.kind {
            Kind::Vp { train_steps, .. } => Some(train_steps),
            Kind::Flow { .. } => None,
        }
    }

    /// The grid of a `steps`-step run. VP: the respaced schedule (`schedule`
    /// must be `self.schedule(steps)`); flow: t_i = (i + 1) / K down to t = 0.
    pub fn grid(&self, steps: usize, schedule: Option<&Schedule>) -> Grid {
        match (self.kind, schedule) {
            (Kind::Vp { .. }, Some(s)) => Grid {
                a: s.alphas_cumprod.iter().map(|v| v.sqrt()).collect(),
                b: s.alphas_cumprod.iter().map(|v| (1.0 - v).sqrt()).collect(),
                a_next: s.alphas_cumprod_prev.iter().map(|v| v.sqrt()).collect(),
                b_next: s.alphas_cumprod_prev.iter().map(|v| (1.0 - v).sqrt()).collect(),
                net_time: s.timestep_map.iter().map(|&t| t as f32).collect(),
            },
            (Kind::Vp { .. }, None) => panic!("a VP grid needs its schedule"),
            (
                Kind::Flow {
                    data_at_one,
                    time_scale,
                },
                _,
            ) => {
                let k = steps as f64;
                let t: Vec<f64> = (0..steps).map(|i| (i + 1) as f64 / k).collect();
                let tn: Vec<f64> = (0..steps).map(|i| i as f64 / k).collect();
                Grid {
                    a: t.iter().map(|t| 1.0 - t).collect(),
                    b: t.clone(),
                    a_next: tn.iter().map(|t| 1.0 - t).collect(),
                    b_next: tn.clone(),
                    net_time: t
                        .iter()
                        .map(|&t| (time_scale * if data_at_one { 1.0 - t } else { t }) as f32)
                        .collect(),
                }
            }
        }
    }

    /// x0hat and epshat as linear maps of (x_t, o) at (a, b).
    pub fn coefficients(&self, a: f64, b: f64) -> Coefficients {
        let c = |x0_x, x0_out, eps_x, eps_out| Coefficients {
            x0_x,
            x0_out,
            eps_x,
            eps_out,
        };
        match self.prediction {
            Prediction::Epsilon => c(1.0 / a, -b / a, 0.0, 1.0),
            Prediction::Sample => c(0.0, 1.0, 1.0 / b, -a / b),
            Prediction::V => c(a, -b, b, a),
            Prediction::Velocity => {
                // x0 = x - b u, eps = x + a u (a + b = 1); a data-at-1 model outputs -u.
                let sign = match self.kind {
                    Kind::Flow { data_at_one: true, .. } => -1.0,
                    _ => 1.0,
                };
                c(1.0, -b * sign, 1.0, a * sign)
            }
        }
    }

    /// Reads the process of the model whose `config.json` is `config_path`:
    /// `scheduler_config.json` beside it when present, else `config.json`'s own fields.
    pub fn for_model(config_path: &Path) -> Result<Process, ProcessError> {
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let sched = dir.join("scheduler_config.json");
        if sched.is_file() {
            let text = std::fs::read_to_string(&sched).map_err(|source| ProcessError::Read {
                path: sched.clone(),
                source,
            })?;
            return Process::from_scheduler_json(&text, &sched);
        }
        let text = std::fs::read_to_string(config_path).map_err(|source| ProcessError::Read {
            path: config_path.to_path_buf(),
            source,
        })?;
        Process::from_config_json(&text, config_path)
    }

    /// The process fields of a model `config.json` (see the module docs).
    pub fn from_config_json(text: &str, path: &Path) -> Result<Process, ProcessError> {
        let obj = object(text, path)?;
        let r = Fields { obj: &obj, path };
        let train_steps = r.usize_either(&["diffusion_steps", "num_train_timesteps"], 1000)?;
        match r.str_or("process", "vp")? {
            "vp" | "ddpm" | "diffusion" => {
                for k in ["flow_data_time", "time_scale"] {
                    if obj.contains_key(k) {
                        return Err(r.bad(format!("{k:?} applies to a flow model, but \"process\" is \"vp\"")));
                    }
                }
                let betas = r.betas()?;
                let prediction = r.prediction(Prediction::Epsilon)?;
                check(Kind::Vp { betas, train_steps }, prediction, path)
            }
            "flow" => {
                for k in ["noise_schedule", "beta_schedule", "beta_start", "beta_end"] {
                    if obj.contains_key(k) {
                        return Err(r.bad(format!("{k:?} applies to a VP diffusion, but \"process\" is \"flow\"")));
                    }
                }
                let data_at_one = match r.obj.get("flow_data_time") {
                    None => false,
                    Some(v) => match v.as_f64() {
                        Some(0.0) => false,
                        Some(1.0) => true,
                        _ => return Err(r.bad(format!("\"flow_data_time\" must be 0 or 1, got {v}"))),
                    },
                };
                let time_scale = r.time_scale(train_steps)?;
                let prediction = r.prediction(Prediction::Velocity)?;
                check(
                    Kind::Flow {
                        data_at_one,
                        time_scale,
                    },
                    prediction,
                    path,
                )
            }
            other => Err(r.bad(format!("unknown \"process\" {other:?} (expected \"vp\" or \"flow\")"))),
        }
    }

    /// diffusers' `scheduler_config.json`.
    pub fn from_scheduler_json(text: &str, path: &Path) -> Result<Process, ProcessError> {
        let obj = object(text, path)?;
        let r = Fields { obj: &obj, path };
        let class = r.str_or("_class_name", "")?;
        let train_steps = r.usize_either(&["num_train_timesteps"], 1000)?;
        if class.starts_with("FlowMatch") {
            let shift = obj.get("shift").and_then(Value::as_f64).unwrap_or(1.0);
            if shift != 1.0 {
                return Err(r.bad(format!(
                    "\"shift\" = {shift}: only the unshifted flow (1.0) is supported"
                )));
            }
            if obj.get("use_dynamic_shifting").and_then(Value::as_bool) == Some(true) {
                return Err(r.bad("\"use_dynamic_shifting\" is not supported".into()));
            }
            return check(
                Kind::Flow {
                    data_at_one: false,
                    time_scale: train_steps as f64,
                },
                Prediction::Velocity,
                path,
            );
        }
        for (k, why) in [
            ("thresholding", "dynamic thresholding"),
            ("rescale_betas_zero_snr", "zero-terminal-SNR betas"),
        ] {
            if obj.get(k).and_then(Value::as_bool) == Some(true) {
                return Err(r.bad(format!("\"{k}\": true ({why}) is not supported")));
            }
        }
        if obj.get("trained_betas").is_some_and(|v| !v.is_null()) {
            return Err(r.bad("\"trained_betas\" is not supported".into()));
        }
        let betas = r.betas()?;
        let prediction = r.prediction(Prediction::Epsilon)?;
        let variance = match r.str_or("variance_type", "")? {
            "" | "learned" | "learned_range" => None,
            "fixed_small" | "fixed_small_log" => Some(VarianceType::FixedSmall),
            "fixed_large" | "fixed_large_log" => Some(VarianceType::FixedLarge),
            other => return Err(r.bad(format!("variance_type {other:?} is not supported"))),
        };
        let mut p = check(Kind::Vp { betas, train_steps }, prediction, path)?;
        p.variance = variance;
        Ok(p)
    }
}

fn object(text: &str, path: &Path) -> Result<Map<String, Value>, ProcessError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ProcessError::Invalid {
        path: path.to_path_buf(),
        message: format!("not valid JSON ({e})"),
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ProcessError::Invalid {
            path: path.to_path_buf(),
            message: "top level is not an object".into(),
        }),
    }
}

/// Refuses the combinations tweedie cannot run, naming them.
fn check(kind: Kind, prediction: Prediction, path: &Path) -> Result<Process, ProcessError> {
    let bad = |message: String| ProcessError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    match (kind, prediction) {
        (Kind::Vp { .. }, Prediction::Velocity) => Err(bad(
            "prediction_type \"velocity\" needs \"process\": \"flow\" (a VP diffusion predicts epsilon, sample or v_prediction)".into(),
        )),
        (Kind::Flow { .. }, p) if p != Prediction::Velocity => Err(bad(format!(
            "a flow model with prediction_type {:?} is not supported (only \"velocity\")",
            p.name()
        ))),
        (Kind::Vp { train_steps: 0, .. }, _) => Err(bad("the number of training timesteps must be at least 1".into())),
        (Kind::Flow { time_scale, .. }, _) if !(time_scale.is_finite() && time_scale > 0.0) => {
            Err(bad(format!("\"time_scale\" must be a positive number, got {time_scale}")))
        }
        _ => Ok(Process {
            kind,
            prediction,
            variance: None,
        }),
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn bad(&self, message: String) -> ProcessError {
        ProcessError::Invalid {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn str_or<'s>(&'s self, k: &str, d: &'s str) -> Result<&'s str, ProcessError> {
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.bad(format!("{k:?} must be a string, got {v}"))),
        }
    }

    fn f64_or(&self, k: &str, d: f64) -> Result<f64, ProcessError> {
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.bad(format!("{k:?} must be a number, got {v}"))),
        }
    }

    fn usize_either(&self, keys: &[&str], d: usize) -> Result<usize, ProcessError> {
        for k in keys {
            match self.obj.get(*k) {
                None | Some(Value::Null) => continue,
                Some(v) => {
                    return v
                        .as_u64()
                        .map(|n| n as usize)
                        .ok_or_else(|| self.bad(format!("{k:?} must be a non-negative integer, got {v}")))
                }
            }
        }
        Ok(d)
    }

    fn prediction(&self, d: Prediction) -> Result<Prediction, ProcessError> {
        match self.obj.get("prediction_type") {
            None | Some(Value::Null) => Ok(d),
            Some(Value::String(s)) => Prediction::parse(s).ok_or_else(|| {
                self.bad(format!(
                    "unknown prediction_type {s:?} (expected \"epsilon\", \"sample\", \"v_prediction\" or \"velocity\")"
                ))
            }),
            Some(v) => Err(self.bad(format!("\"prediction_type\" must be a string, got {v}"))),
        }
    }

    fn betas(&self) -> Result<Betas, ProcessError> {
        let (key, name) = match (self.obj.get("noise_schedule"), self.obj.get("beta_schedule")) {
            (Some(_), Some(_)) => {
                return Err(self.bad("give either \"noise_schedule\" or \"beta_schedule\", not both".into()))
            }
            (Some(_), None) => ("noise_schedule", self.str_or("noise_schedule", "linear")?),
            (None, Some(_)) => ("beta_schedule", self.str_or("beta_schedule", "linear")?),
            (None, None) => ("", "linear"),
        };
        let explicit = self.obj.contains_key("beta_start") || self.obj.contains_key("beta_end");
        let start = self.f64_or("beta_start", 1e-4)?;
        let end = self.f64_or("beta_end", 0.02)?;
        if !(start > 0.0 && end >= start && end < 1.0) {
            return Err(self.bad(format!("betas from {start} to {end} are not a valid schedule")));
        }
        Ok(match name {
            // guided-diffusion's "linear" scales with the step count; diffusers' is as given.
            "linear" if key == "beta_schedule" || explicit => Betas::Linear { start, end },
            "linear" => Betas::GuidedLinear,
            "scaled_linear" => Betas::ScaledLinear { start, end },
            "cosine" | "squaredcos_cap_v2" => Betas::Cosine,
            other => {
                return Err(self.bad(format!(
                    "unknown {key} {other:?} (expected \"linear\", \"scaled_linear\" or \"cosine\")"
                )))
            }
        })
    }

    fn time_scale(&self, train_steps: usize) -> Result<f64, ProcessError> {
        match self.obj.get("time_scale") {
            None | Some(Value::Null) => Ok(1.0),
            Some(Value::String(s)) => match s.replace(' ', "").as_str() {
                "t" => Ok(1.0),
                "1000t" => Ok(1000.0),
                "(N-1)t" => Ok(train_steps.saturating_sub(1) as f64),
                other => Err(self.bad(format!(
                    "unknown time_scale {other:?} (expected a number, \"t\", \"1000t\" or \"(N-1)t\")"
                ))),
            },
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.bad(format!("\"time_scale\" must be a number or a string, got {v}"))),
        }
    }
}

/// The config.json keys [`Process::from_config_json`] reads (the U-Net config
/// parsers accept them beside their own).
pub const CONFIG_KEYS: &[&str] = &[
    "process",
    "prediction_type",
    "noise_schedule",
    "beta_schedule",
    "beta_start",
    "beta_end",
    "diffusion_steps",
    "flow_data_time",
    "time_scale",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Process, ProcessError> {
        Process::from_config_json(text, Path::new("config.json"))
    }

    #[test]
    fn defaults_are_ddpm() {
        assert_eq!(cfg("{}").unwrap(), Process::default());
    }

    #[test]
    fn cosine_betas_follow_improved_ddpm() {
        let b = Betas::Cosine.betas(1000);
        // improved-DDPM: beta_0 ~ 4.1e-5, last capped at 0.999
        assert!((b[0] - 4.1e-5).abs() < 2e-6, "{}", b[0]);
        assert_eq!(b[999], 0.999);
    }

    #[test]
    fn flow_coefficients_are_finite_at_the_noise_end() {
        let p = cfg(r#"{"process": "flow", "time_scale": "1000t"}"#).unwrap();
        let g = p.grid(4, None);
        assert_eq!(g.a[3], 0.0);
        assert_eq!(g.net_time, vec![250.0, 500.0, 750.0, 1000.0]);
        let c = p.coefficients(g.a[3], g.b[3]);
        assert!(c.x0_x.is_finite() && c.x0_out.is_finite());
    }

    #[test]
    fn bad_combinations_are_named() {
        for (text, needle) in [
            (r#"{"prediction_type": "noise"}"#, "unknown prediction_type \"noise\""),
            (r#"{"prediction_type": "velocity"}"#, "needs \"process\": \"flow\""),
            (
                r#"{"process": "flow", "prediction_type": "epsilon"}"#,
                "only \"velocity\"",
            ),
            (r#"{"process": "flow", "noise_schedule": "cosine"}"#, "applies to a VP"),
            (r#"{"process": "sde"}"#, "unknown \"process\""),
        ] {
            let e = cfg(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn diffusers_scheduler_configs() {
        let p = Process::from_scheduler_json(
            r#"{"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2",
                "prediction_type": "v_prediction", "variance_type": "fixed_small", "clip_sample": true}"#,
            Path::new("scheduler_config.json"),
        )
        .unwrap();
        assert_eq!(
            p.kind,
            Kind::Vp {
                betas: Betas::Cosine,
                train_steps: 1000
            }
        );
        assert_eq!(p.prediction, Prediction::V);
        assert_eq!(p.variance, Some(VarianceType::FixedSmall));
        let f = Process::from_scheduler_json(
            r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0}"#,
            Path::new("scheduler_config.json"),
        )
        .unwrap();
        assert_eq!(f, Process::flow(1000.0));
        let e = Process::from_scheduler_json(
            r#"{"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": true}"#,
            Path::new("scheduler_config.json"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("zero-terminal-SNR"), "{e}");
    }

    #[test]
    fn v_prediction_maps_back_to_x0_and_eps() {
        let p = cfg(r#"{"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2"}"#).unwrap();
        let (a, b): (f64, f64) = (0.6, 0.8);
        let (x0, eps) = (0.3, -1.2);
        let x = a * x0 + b * eps;
        let v = a * eps - b * x0;
        let c = p.coefficients(a, b);
        assert!((c.x0_x * x + c.x0_out * v - x0).abs() < 1e-12);
        assert!((c.eps_x * x + c.eps_out * v - eps).abs() < 1e-12);
    }
}
