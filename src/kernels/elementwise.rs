//! `shaders/elementwise.wgsl`: axpby, affine, clamp, mul over flat buffers,
//! in the tensors' element type (f32, or f16 where the adapter has `shader-f16`).

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, ELEMENTWISE, WG1D};
use crate::tensor::Tensor;

bindings! {
    /// The updates y = f(x, y): axpby, affine, clamp, mul, abs, sign-mul.
    pub struct Update for ELEMENTWISE: ["axpby", "affine", "clamp_range", "mul", "abs_value", "sign_mul"] {
        p: uniform,
        x: read T,
        y: read_write T,
    }
    /// y = T(xf): into a half-precision plan.
    pub struct FromF32 for ELEMENTWISE: ["from_f32"] {
        p: uniform,
        xf: read f32,
        y: read_write T,
    }
    /// yf = f32(x): out of a half-precision plan.
    pub struct ToF32 for ELEMENTWISE: ["to_f32"] {
        p: uniform,
        x: read T,
        yf: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[Update::SIG, FromF32::SIG, ToF32::SIG];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ElementwiseParams {
    pub n: u32,
    pub per: u32,
    pub a: f32,
    pub b: f32,
}

impl ElementwiseParams {
    /// `n` elements with scalars `a`, `b` (one sample: `per` = `n`).
    pub fn new(n: u32, a: f32, b: f32) -> ElementwiseParams {
        ElementwiseParams { n, per: n, a, b }
    }
}

/// Which elementwise update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// y = a x + b y
    Axpby,
    /// y = a x + b
    Affine,
    /// y = clamp(x, a, b)
    Clamp,
    /// y = x * y
    Mul,
    /// y = |x|
    Abs,
    /// y = sign(x) y (0 where x = 0)
    SignMul,
}

impl Op {
    fn entry(self) -> &'static str {
        match self {
            Op::Axpby => "axpby",
            Op::Affine => "affine",
            Op::Clamp => "clamp_range",
            Op::Mul => "mul",
            Op::Abs => "abs_value",
            Op::SignMul => "sign_mul",
        }
    }
}

/// One planned elementwise update; `set` changes its scalars between
/// submissions without rebuilding anything.
pub struct Elementwise {
    pub dispatch: Dispatch,
    params: wgpu::Buffer,
    n: u32,
}

impl Elementwise {
    /// `x` and `y` must share an element type; `a`, `b` are rounded to it.
    pub fn new(gpu: &Gpu, op: Op, x: &Tensor, y: &Tensor, a: f32, b: f32) -> Result<Elementwise, GpuError> {
        if x.dtype != y.dtype {
            return Err(GpuError::Other(format!(
                "elementwise {op:?}: x is {:?} but y is {:?}",
                x.dtype, y.dtype
            )));
        }
        if x.numel() != y.numel() {
            return Err(GpuError::Shape {
                what: format!("elementwise {op:?}"),
                expected: y.shape.clone(),
                got: x.shape.clone(),
            });
        }
        let n = x.numel() as u32;
        let params = gpu.uniform("elementwise params", &ElementwiseParams::new(n, a, b));
        let dispatch = Dispatch::typed(
            gpu,
            op.entry(),
            &[],
            &Update { p: &params, x, y },
            dispatch_groups(n as usize, WG1D),
        )?;
        Ok(Elementwise { dispatch, params, n })
    }

    pub fn set(&self, gpu: &Gpu, a: f32, b: f32) {
        gpu.queue.write_buffer(
            &self.params,
            0,
            bytemuck::bytes_of(&ElementwiseParams::new(self.n, a, b)),
        );
    }
}

/// y = x converted between f32 and another element type (`from_f32` /
/// `to_f32`; a plain copy when both are f32): the edges of a half-precision
/// plan. Shapes must hold the same number of elements.
pub fn cast(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Dispatch, GpuError> {
    use crate::tensor::DType;
    if x.numel() != y.numel() {
        return Err(GpuError::Shape {
            what: "cast".into(),
            expected: y.shape.clone(),
            got: x.shape.clone(),
        });
    }
    let n = x.numel() as u32;
    let p = &gpu.uniform("cast params", &ElementwiseParams::new(n, 1.0, 0.0));
    let groups = dispatch_groups(n as usize, WG1D);
    match (x.dtype, y.dtype) {
        (DType::F32, DType::F32) => Dispatch::typed(gpu, "affine", &[], &Update { p, x, y }, groups),
        (DType::F32, _) => Dispatch::typed(gpu, "from_f32", &[], &FromF32 { p, xf: x, y }, groups),
        (_, DType::F32) => Dispatch::typed(gpu, "to_f32", &[], &ToF32 { p, x, yf: y }, groups),
        (a, b) => Err(GpuError::Other(format!("cast: {a:?} to {b:?} (one side must be f32)"))),
    }
}
