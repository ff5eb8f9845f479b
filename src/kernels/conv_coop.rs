//! `shaders/conv2d_coop.wgsl`: the convolution GEMMs on tensor cores through
//! wgpu's experimental cooperative matrices (f16 operands, f32 sums,
//! 16x16x16 fragments). The parameters, bindings and split-K fix-up are the
//! SIMT kernel's ([`crate::kernels::conv2d`]); only the GEMM dispatch
//! differs. Chosen by [`crate::kernels::conv_choice`] only where the adapter
//! reports the configuration ([`supported`]).
//!
//! The kernel file has a second instance, `emulated`, in which the fragment
//! operations are plain loops ([`emulated`] launches it), so that the
//! kernel's own indexing runs where cooperative matrices do not (lavapipe).

use std::cell::Cell;

use crate::gpu::{Bindings, Dispatch, Gpu, GpuError, KernelSig, Shader, CONV2D_COOP};
use crate::kernels::conv2d::{ConvBwdData, ConvFwd};
use crate::tensor::DType;

/// The binding signatures of this module's kernels: the SIMT kernel's structs
/// ([`ConvFwd`], [`ConvBwdData`]) on this shader's entry points.
pub const BINDINGS: &[KernelSig] = &[
    KernelSig {
        shader: &CONV2D_COOP,
        entries: &["conv2d_coop"],
        slots: ConvFwd::SIG.slots,
    },
    KernelSig {
        shader: &CONV2D_COOP,
        entries: &["conv2d_coop_bwd_data"],
        slots: ConvBwdData::SIG.slots,
    },
];

/// Output tile and K step of a workgroup (mirror `TM`, `TN`, `TK`).
pub const TM: u32 = 64;
pub const TN: u32 = 64;
pub const TK: u32 = 16;
/// Invocations per workgroup, and the subgroup size the quadrant layout
/// assumes (four subgroups of 32).
pub const WG: u32 = 128;
pub const SUBGROUP: u32 = 32;
/// Workgroup memory the kernel declares: W and gather slices in f16, the
/// f32 output tile.
pub const WORKGROUP_BYTES: u32 = (1536 + 1152) * 2 + 4096 * 4;

thread_local! {
    static EMULATED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's cooperative-matrix launches built from the
/// kernel's `emulated` instance, on any adapter with shader-f16 and the
/// workgroup memory: the tests of the kernel's indexing where the hardware
/// path cannot run. Scoped to the thread, so parallel tests do not see it.
pub fn emulated<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            EMULATED.with(|e| e.set(self.0));
        }
    }
    let _restore = Restore(EMULATED.with(|e| e.replace(true)));
    f()
}

/// The kernel instance launches on this thread use.
fn shader(dtype: DType) -> Shader {
    if EMULATED.with(|e| e.get()) {
        CONV2D_COOP.variant("emulated").typed(dtype)
    } else {
        CONV2D_COOP.typed(dtype)
    }
}

/// Why the cooperative path cannot run on this adapter, or `None` when it can:
/// the feature, a 16x16x16 f16 x f16 -> f32 configuration, shader-f16,
/// subgroups (the kernel's fragments follow the subgroup ids) of exactly 32
/// and the workgroup memory.
pub fn unsupported(gpu: &Gpu) -> Option<String> {
    if let Some(why) = gpu.f16_cooperative_matrix_missing() {
        return Some(why);
    }
    if !gpu.features.contains(wgpu::Features::SUBGROUP) {
        return Some("the adapter has no subgroup builtins".into());
    }
    let (lo, hi) = (gpu.info.subgroup_min_size, gpu.info.subgroup_max_size);
    if (lo, hi) != (SUBGROUP, SUBGROUP) {
        return Some(format!("subgroups of {lo}..{hi} invocations, not exactly {SUBGROUP}"));
    }
    workgroup_memory(gpu)
}

fn workgroup_memory(gpu: &Gpu) -> Option<String> {
    (gpu.limits.max_compute_workgroup_storage_size < WORKGROUP_BYTES).then(|| {
        format!(
            "{} bytes of workgroup memory, the kernel needs {WORKGROUP_BYTES}",
            gpu.limits.max_compute_workgroup_storage_size
        )
    })
}

/// Why the emulated instance cannot run here: it needs shader-f16 and the
/// kernel's workgroup memory, nothing else.
pub fn emulation_unsupported(gpu: &Gpu) -> Option<String> {
    if !gpu.features.contains(wgpu::Features::SHADER_F16) {
        return Some("the adapter has no shader-f16".into());
    }
    workgroup_memory(gpu)
}

pub fn supported(gpu: &Gpu) -> bool {
    unsupported(gpu).is_none()
}

fn check(gpu: &Gpu) -> Result<(), GpuError> {
    let why = if EMULATED.with(|e| e.get()) {
        emulation_unsupported(gpu)
    } else {
        unsupported(gpu)
    };
    match why {
        None => Ok(()),
        Some(why) => Err(GpuError::Other(format!("cooperative-matrix convolution: {why}"))),
    }
}

/// The GEMM of signature `sig` (one of [`BINDINGS`]) on `values` (the SIMT
/// kernel's bindings, parameters with the split already set) over a [rows,
/// pixels] output in `splits` K-slices, on this thread's instance (real or
/// emulated), its dtype from the tensors; its fix-up is the SIMT kernel's.
pub(crate) fn gemm(
    gpu: &Gpu,
    sig: &KernelSig,
    values: &[&dyn crate::gpu::Bindable],
    [rows, pixels]: [usize; 2],
    splits: u32,
) -> Result<Dispatch, GpuError> {
    check(gpu)?;
    let groups = [(pixels as u32).div_ceil(TN), (rows as u32).div_ceil(TM), splits];
    Dispatch::typed_sig(gpu, sig, &shader(DType::F32), sig.entries[0], &[], values, groups)
}
