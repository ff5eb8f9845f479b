//! Sampler options shared by `restore`, `eval`, `demo` and `gmm`: the run's
//! own flags (steps, base step, seed) and one flag per method setting, made
//! from the samplers' registry ([`crate::samplers::option_specs`]) so a new
//! method's settings need no line here.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::parser::ValueSource;
use clap::{value_parser, Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use super::common::PriorArgs;
use crate::operators::gain::largest_gain;
use crate::operators::task::TaskSpec;
use crate::operators::Operator;
use crate::process::Process;
use crate::restore::NoiseModel;
pub use crate::samplers::dps::default_zeta;
use crate::samplers::dps::ZetaRule;
use crate::samplers::options::{Choice, Kind, MethodOptions, OptionSpec};
use crate::samplers::{cdps, cg, dmps, dps, option_specs, smc, BaseSampler, Method, SamplerOptions};
use crate::schedule::VarianceType;

/// ||A||_2 of `op` where it is linear, None where it is not: the cap of
/// DPS's default step size ([`default_zeta`]), measured once per operator.
pub fn linear_gain(gpu: &crate::Gpu, op: &dyn Operator) -> anyhow::Result<Option<f32>> {
    Ok(op.linear().map(|l| largest_gain(gpu, l)).transpose()?)
}

/// `--noise`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NoiseKind {
    /// y = A x + sigma_y n
    Gaussian,
    /// DPS's shot noise: y = Poisson(255 R (A x + 1) / 2) / (255 R) * 2 - 1, clamped
    Poisson,
}

/// How the measurement made from a clean image is corrupted (`degrade`,
/// `restore --input`, `eval`).
#[derive(Args, Clone, Debug)]
pub struct NoiseArgs {
    /// Measurement noise model.
    #[arg(long, value_enum, default_value = "gaussian")]
    pub noise: NoiseKind,
    /// gaussian: sigma_y on the [-1, 1] scale (default 0.05, as DPS and DMPS).
    #[arg(long)]
    pub sigma: Option<f32>,
    /// poisson: the rate R (default 1, DPS's); the samplers' likelihood takes
    /// the Gaussian approximation sigma_y^2 = 2 / (255 R) (docs/methods.md).
    #[arg(long, value_name = "R")]
    pub poisson_rate: Option<f32>,
}

impl NoiseArgs {
    /// The noise model, or the one-line refusal of a flag for the other model
    /// or of a bad level.
    pub fn model(&self) -> anyhow::Result<NoiseModel> {
        let model = match self.noise {
            NoiseKind::Gaussian => {
                if self.poisson_rate.is_some() {
                    anyhow::bail!("--poisson-rate needs --noise poisson");
                }
                NoiseModel::Gaussian {
                    sigma: self.sigma.unwrap_or(0.05),
                }
            }
            NoiseKind::Poisson => {
                if self.sigma.is_some() {
                    anyhow::bail!("--sigma is the Gaussian noise's; --noise poisson takes --poisson-rate");
                }
                NoiseModel::Poisson {
                    rate: self.poisson_rate.unwrap_or(1.0),
                }
            }
        };
        model.validate().map_err(anyhow::Error::msg)?;
        Ok(model)
    }
}

#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Reverse steps: a VP model's training steps at most (fewer respaces its schedule as
    /// guided-diffusion does); a flow model's Euler steps from t = 1 to 0.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Base step of a VP diffusion model: DDPM's ancestral step or DDIM (a flow model always
    /// takes Euler steps of its ODE).
    #[arg(long, value_parser = base_sampler_parser())]
    pub sampler: Option<BaseSampler>,
    /// DDIM's noise level (0: deterministic, 1: DDPM-like); needs --sampler ddim.
    #[arg(long)]
    pub eta: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub method: MethodArgs,
}

/// Parses `--sampler ddpm|ddim`.
pub fn base_sampler_parser() -> impl TypedValueParser<Value = BaseSampler> {
    choices(BaseSampler::CHOICES).map(|s: String| BaseSampler::from_choice(&s).expect("a listed choice"))
}

/// A clap parser of one of `choices`, each with its help in `--help`.
pub fn choices(choices: &'static [Choice]) -> PossibleValuesParser {
    PossibleValuesParser::new(choices.iter().map(|c| PossibleValue::new(c.name).help(c.help)))
}

/// The methods' settings given on the command line, as written (each
/// checked by its spec when the options are built): one `--<name>` flag per
/// [`OptionSpec`] of the registry.
#[derive(Clone, Debug, Default)]
pub struct MethodArgs {
    given: Vec<(&'static str, String)>,
}

impl MethodArgs {
    /// Settings as if given on the command line (`demo`'s fixed choices).
    pub fn given(settings: &[(&'static str, String)]) -> MethodArgs {
        MethodArgs {
            given: settings.to_vec(),
        }
    }

    /// The settings given that `method` reads: `compare` takes one command
    /// line for several methods, each reading its own.
    pub fn only_for(&self, method: Method) -> MethodArgs {
        MethodArgs {
            given: self.given.iter().filter(|(n, _)| method.takes(n)).cloned().collect(),
        }
    }

    /// The names of the settings given.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.given.iter().map(|(n, _)| *n)
    }

    /// The library's settings: each given value parsed and range-checked.
    pub fn options(&self) -> anyhow::Result<MethodOptions> {
        let mut out = MethodOptions::default();
        for (name, text) in &self.given {
            out.set(name, text)?;
        }
        out.validate()?;
        Ok(out)
    }
}

/// The flag of one method setting.
fn flag(spec: &'static OptionSpec) -> Arg {
    // The value name derive would give a field of this name (`CG_TOL`);
    // clap keeps names as &'static str, and the flags are built once per run.
    let value_name: &'static str = Box::leak(spec.name.to_uppercase().replace('-', "_").into_boxed_str());
    let arg = Arg::new(spec.name)
        .long(spec.name)
        .help(spec.help)
        .value_name(value_name)
        .action(ArgAction::Set);
    let arg = match spec.kind {
        Kind::Number => arg.value_parser(value_parser!(f32)),
        Kind::Count => arg.value_parser(value_parser!(usize)),
        Kind::Choice(c) => arg.value_parser(choices(c)),
    };
    match spec.default {
        Some(d) => arg.default_value(d),
        None => arg,
    }
}

impl FromArgMatches for MethodArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for spec in option_specs() {
            if m.value_source(spec.name) != Some(ValueSource::CommandLine) {
                continue;
            }
            if let Some(text) = m.get_raw(spec.name).and_then(|mut v| v.next()) {
                given.push((spec.name, text.to_string_lossy().into_owned()));
            }
        }
        Ok(MethodArgs { given })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = MethodArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for MethodArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        option_specs().into_iter().fold(cmd, |cmd, spec| cmd.arg(flag(spec)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        MethodArgs::augment_args(cmd)
    }
}

impl SamplingArgs {
    /// Checks the ranges, and that every method setting given is one
    /// `method` reads; one clear line on failure.
    pub fn validate(&self, method: Method) -> anyhow::Result<()> {
        if self.steps == 0 {
            anyhow::bail!("--steps must be at least 1");
        }
        if self.eta.is_some_and(|e| !(e.is_finite() && e >= 0.0)) {
            anyhow::bail!("--eta must be a non-negative number");
        }
        method.check_given(&self.method.options()?)?;
        Ok(())
    }

    /// The sampler options for a model of `process`; DPS's step size
    /// defaults to `default_zeta` at `--steps` when `--zeta` is not given.
    pub fn options(
        &self,
        default_zeta: impl Into<ZetaRule>,
        clip: bool,
        variance: VarianceType,
    ) -> anyhow::Result<SamplerOptions> {
        let mut method = self.method.options()?;
        if !method.is_set(dps::ZETA.name) {
            method.set(dps::ZETA.name, &default_zeta.into().at(self.steps).to_string())?;
        }
        Ok(SamplerOptions {
            steps: self.steps,
            sampler: self.sampler,
            eta: self.eta,
            seed: self.seed,
            variance,
            clip,
            method,
        })
    }
}

/// The settings a run used, for report.json and results.json (settings
/// `opts` on a model of `process`): the base step and the methods' settings,
/// each the value given or the one the method uses.
pub fn settings_json(opts: &SamplerOptions, process: &Process) -> serde_json::Value {
    let m = &opts.method;
    serde_json::json!({
        "zeta": m.number(dps::ZETA.name),
        "lambda": dmps::lambda(m, process),
        "sampler": opts.sampler.map(BaseSampler::name),
        "eta": opts.eta,
        "cg": {"tol": m.number(cg::TOL.name), "max_iters": m.count(cg::ITERS.name)},
        "cdps_variant": m.choice(cdps::VARIANT.name),
        "cdps_basis": m.choice(cdps::BASIS.name),
        "particles": m.count(smc::PARTICLES.name),
        "ess_threshold": m.number(smc::ESS_THRESHOLD.name),
    })
}

/// Merges `settings` ([`settings_json`]) into `report`.
pub fn with_settings(mut report: serde_json::Value, settings: serde_json::Value) -> serde_json::Value {
    if let (Some(r), serde_json::Value::Object(s)) = (report.as_object_mut(), settings) {
        for (k, v) in s {
            match (r.get_mut(&k), v) {
                // Nested objects ("cg") gain the setting keys beside their own.
                (Some(serde_json::Value::Object(inner)), serde_json::Value::Object(extra)) => inner.extend(extra),
                (_, v) => {
                    r.insert(k, v);
                }
            }
        }
    }
    report
}

/// What `restore` and `eval` sample: the prior, the measurement task and the
/// method.
#[derive(Args)]
pub struct ProblemArgs {
    #[command(flatten)]
    pub prior: PriorArgs,
    #[command(flatten)]
    pub spec: TaskSpec,
    #[arg(long, value_parser = method_parser())]
    pub method: Method,
}

/// Parses `--method NAME` against the registry: clap's own "invalid value"
/// error lists the names.
pub fn method_parser() -> impl TypedValueParser<Value = Method> {
    PossibleValuesParser::new(Method::all().iter().map(|m| PossibleValue::new(m.name())))
        .map(|s: String| Method::from_name(&s).expect("a listed method"))
}
