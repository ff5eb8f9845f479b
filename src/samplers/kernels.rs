//! The bind groups of `shaders/sampler.wgsl`'s entry points, the step
//! kernels every method plans through [`super::Core::launch`]: each binds
//! the step uniform `s` first, then its own buffers (WGSL names after the
//! entry's prefix: `eps` binds `d_eps`).

use crate::bindings;
use crate::gpu::{Bindings, KernelSig, SAMPLER};

bindings! {
    /// `eps_estimate`: the noise estimate from x_t and the model's output.
    pub struct EpsEstimate for SAMPLER: ["eps_estimate"] {
        s: uniform,
        x: read f32,
        out: read f32,
        eps: read_write f32,
    }

    /// `x0_and_mask`: x0hat (clamped when clipping) and the clamp's derivative.
    pub struct X0AndMask for SAMPLER: ["x0_and_mask"] {
        s: uniform,
        x: read f32,
        eps: read f32,
        x0: read_write f32,
        mask: read_write f32,
    }

    /// `residual`: r = y - resid_scale (A x).
    pub struct Residual for SAMPLER: ["residual"] {
        s: uniform,
        y: read f32,
        ax: read f32,
        out: read_write f32,
    }

    /// `dps_direction`: r <- -r / |r| with |r| per sample from a reduction.
    pub struct DpsDirection for SAMPLER: ["dps_direction"] {
        s: uniform,
        norm: read f32,
        r: read_write f32,
    }

    /// `dps_direction_rows`: r <- -r / |r|, one thread per sample.
    pub struct DpsDirectionRows for SAMPLER: ["dps_direction_rows"] {
        s: uniform,
        r: read_write f32,
    }

    /// `dmps_spectral` and `cdps_whiten`: a per-component scaling of
    /// spectral coefficients `c` by the singular values.
    pub struct Spectral for SAMPLER: ["dmps_spectral", "cdps_whiten"] {
        s: uniform,
        sing: read f32,
        c: read_write f32,
    }

    /// `reddiff_diffuse`: x_t = a_t mu + b_t z.
    pub struct RedDiffDiffuse for SAMPLER: ["reddiff_diffuse"] {
        s: uniform,
        mu: read f32,
        z: read f32,
        x: read_write f32,
    }

    /// `reddiff_adam`: one Adam step on RED-diff's loss, then x <- mu.
    pub struct RedDiffAdam for SAMPLER: ["reddiff_adam"] {
        s: uniform,
        out: read f32,
        z: read f32,
        g: read f32,
        x: read_write f32,
        mu: read_write f32,
        m1: read_write f32,
        m2: read_write f32,
    }

    /// `ddnm_spectral` and `ddrm_spectral`: DDNM+'s and DDRM's correction of
    /// a step, per spectral component.
    pub struct DdnmSpectral for SAMPLER: ["ddnm_spectral", "ddrm_spectral"] {
        s: uniform,
        sing: read f32,
        ytil: read f32,
        vx: read f32,
        zeta: read f32,
        c: read_write f32,
    }

    /// `cdps_rhs`: the CG's right-hand side D m + sqrt(D) e1 + A^T w and D.
    pub struct CdpsRhs for SAMPLER: ["cdps_rhs"] {
        s: uniform,
        x: read f32,
        eps: read f32,
        v: read f32,
        e1: read f32,
        atw: read f32,
        rhs: read_write f32,
        diag: read_write f32,
    }

    /// `spectral_mean`: the reverse kernel's mean coef1 x0hat + coef2 x.
    pub struct SpectralMean for SAMPLER: ["spectral_mean"] {
        s: uniform,
        x: read f32,
        eps: read f32,
        mu: read_write f32,
    }

    /// `spectral_weigh`: the spectral SMC's log-weight terms per component.
    pub struct SpectralWeigh for SAMPLER: ["spectral_weigh"] {
        s: uniform,
        sing: read f32,
        ybar: read f32,
        vmu: read f32,
        vx: read f32,
        lw: read_write f32,
    }

    /// `spectral_propose`: the spectral SMC's proposal correction per component.
    pub struct SpectralPropose for SAMPLER: ["spectral_propose"] {
        s: uniform,
        sing: read f32,
        ybar: read f32,
        vmu: read f32,
        zeta: read f32,
        delta: read_write f32,
    }

    /// `spectral_move`: x = mu + sqrt(var) z + g.
    pub struct SpectralMove for SAMPLER: ["spectral_move"] {
        s: uniform,
        mu: read f32,
        z: read f32,
        g: read f32,
        x: read_write f32,
    }

    /// `tds_geometry`: the twist's per-component scaling in the SVD basis.
    pub struct TdsGeometry for SAMPLER: ["tds_geometry"] {
        s: uniform,
        sing: read f32,
        q: read_write f32,
    }

    /// `tds_weigh`: the SMC log-weight update of one weighing.
    pub struct TdsWeigh for SAMPLER: ["tds_weigh"] {
        s: uniform,
        rr: read f32,
        lpq: read f32,
        twist_in: read f32,
        twist_out: read_write f32,
        logw: read_write f32,
    }
}

/// Kernels that bind the same leading slots, each then its own (a step and
/// its twisted variant, the measurement chain and its spectral variant, the
/// mixture prior's passes): the shared slots are written once, as the
/// struct `Lead` (`for SHADER, Lead { slots } Kernel: "entry" { slots } ...`),
/// and each kernel's bindings struct is made with `Kernel::new(lead, own...)`.
macro_rules! with_leading_slots {
    (for $shader:path, $lead:ident $lead_slots:tt $($(#[$meta:meta])* $name:ident: $entry:literal $own:tt)+) => {
        $crate::samplers::kernels::with_leading_slots!(@lead $lead $lead_slots);
        $($crate::samplers::kernels::with_leading_slots!(
            @one $shader, $lead, $lead_slots, $(#[$meta])* $name: $entry $own
        );)+
    };
    (@lead $lead:ident { $($f:ident : $access:ident $($elem:ident)?),+ $(,)? }) => {
        /// The slots these kernels share, bound first.
        #[derive(Clone, Copy)]
        pub struct $lead<'a> {
            $(pub $f: &'a dyn $crate::gpu::Bindable,)+
        }
    };
    (@one $shader:path, $lead:ident, { $($f:ident : $access:ident $($elem:ident)?),+ $(,)? },
        $(#[$meta:meta])* $name:ident: $entry:literal { $($g:ident : $gaccess:ident $($gelem:ident)?),* $(,)? }) => {
        $crate::bindings! {
            $(#[$meta])*
            pub struct $name for $shader: [$entry] {
                $($f: $access $($elem)?,)+
                $($g: $gaccess $($gelem)?,)*
            }
        }
        impl<'a> $name<'a> {
            /// The shared slots, then this kernel's own.
            pub fn new(lead: $lead<'a>, $($g: &'a dyn $crate::gpu::Bindable),*) -> Self {
                $name { $($f: lead.$f,)+ $($g,)* }
            }
        }
    };
}
pub(crate) use with_leading_slots;

with_leading_slots! {
    for SAMPLER, StepSlots { s: uniform, eps: read f32, v: read f32, z: read f32, g: read f32, h: read f32 }

    /// `ddpm_step`: x <- mean + sigma z + guide g + guide2 h (in place).
    DdpmStep: "ddpm_step" {
        x: read_write f32,
    }

    /// `tds_step`: the twisted proposal and its log p/q per element.
    TdsStep: "tds_step" {
        xin: read f32,
        x: read_write f32,
        lpq: read_write f32,
    }
}

with_leading_slots! {
    for SAMPLER, MeasureSlots {
        s: uniform, y0: read f32, zy: read f32, e2: read f32, aeps: read f32, ycur: read_write f32, w: read_write f32
    }

    /// `cdps_measure`: the measurement chain's bridge step and the right-hand side w.
    CdpsMeasure: "cdps_measure" {}

    /// `cdps_measure_spectral`: as `cdps_measure` in the spectral basis, with
    /// the per-component precision pi.
    CdpsMeasureSpectral: "cdps_measure_spectral" {
        sing: read f32,
        pi: read_write f32,
    }
}

/// The binding signatures of `shaders/sampler.wgsl` (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[
    DdpmStep::SIG,
    EpsEstimate::SIG,
    X0AndMask::SIG,
    Residual::SIG,
    DpsDirection::SIG,
    DpsDirectionRows::SIG,
    Spectral::SIG,
    CdpsMeasure::SIG,
    CdpsMeasureSpectral::SIG,
    CdpsRhs::SIG,
    TdsWeigh::SIG,
    TdsGeometry::SIG,
    TdsStep::SIG,
    SpectralMean::SIG,
    SpectralWeigh::SIG,
    SpectralPropose::SIG,
    SpectralMove::SIG,
    RedDiffDiffuse::SIG,
    RedDiffAdam::SIG,
    DdnmSpectral::SIG,
    DapsTime::SIG,
    DapsLangevin::SIG,
];

bindings! {
    /// `daps_time`: every sample's timestep <- an ODE substep's network time.
    pub struct DapsTime for SAMPLER: ["daps_time"] {
        s: uniform,
        t: read_write f32,
    }

    /// `daps_langevin`: one Langevin step of DAPS's x0 update.
    pub struct DapsLangevin for SAMPLER: ["daps_langevin"] {
        s: uniform,
        x0: read f32,
        g: read f32,
        xi: read f32,
        x: read_write f32,
    }
}
