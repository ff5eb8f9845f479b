//! The f16 home: a `T`-generic shader instantiated for f16 validates in naga,
//! and on an adapter with `shader-f16` the f16 elementwise kernels agree with
//! a CPU reference (and with the f32 instance) within f16 rounding.

mod common;
use common::*;

use half::f16;
use tweedie::gpu::{Plan, ALIAS_F32, ALL_SHADERS, ELEMENTWISE};
use tweedie::kernels::elementwise::{Elementwise, Op};
use tweedie::tensor::DType;
use tweedie::Tensor;

fn validate(name: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
}

#[test]
fn generic_shaders_validate_for_f16() {
    assert!(ELEMENTWISE.is_generic(), "elementwise.wgsl declares `{ALIAS_F32}`");
    let mut generic = 0;
    for s in ALL_SHADERS {
        // The f32 instance is the source as written.
        assert_eq!(s.typed(DType::F32).wgsl(), s.source, "{}", s.name);
        if !s.is_generic() {
            continue;
        }
        generic += 1;
        let f16 = s.typed(DType::F16).wgsl();
        assert!(
            f16.starts_with("enable f16;") && f16.contains("alias T = f16;"),
            "{}",
            s.name
        );
        assert!(!f16.contains(ALIAS_F32), "{}", s.name);
        validate(&format!("{}.wgsl as f16", s.name), &f16);
    }
    assert!(generic >= 1);
}

#[test]
#[should_panic(expected = "cannot run on F16")]
fn non_generic_shader_refuses_f16() {
    let _ = tweedie::gpu::CG.typed(DType::F16);
}

/// 1,000,003 elements: odd (the f16 buffer's last word is half used) and not a
/// multiple of the workgroup.
const N: usize = 1_000_003;

#[test]
fn elementwise_f16_matches_cpu_and_f32() {
    let gpu = gpu();
    if !gpu.features.contains(wgpu::Features::SHADER_F16) {
        eprintln!("skipping: {} has no shader-f16", gpu.describe());
        return;
    }
    let mut r = rng(16);
    // Inputs representable in f16, so both instances see the same values.
    let x16: Vec<f16> = randn(&mut r, N).into_iter().map(f16::from_f32).collect();
    let y16: Vec<f16> = randn(&mut r, N).into_iter().map(f16::from_f32).collect();
    let x: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
    let y0: Vec<f32> = y16.iter().map(|v| v.to_f32()).collect();
    type Case = (Op, f32, f32, fn(f64, f64, f64, f64) -> (f64, f64));
    // (op, a, b, |x, y, a, b| (exact result, magnitude the f16 rounding scales with))
    let cases: [Case; 4] = [
        (Op::Axpby, 0.7, -1.3, |x, y, a, b| {
            (a * x + b * y, (a * x).abs() + (b * y).abs())
        }),
        (Op::Affine, 2.1, 0.3, |x, _, a, b| (a * x + b, (a * x).abs() + b.abs())),
        (Op::Clamp, -0.55, 0.35, |x, _, a, b| (x.clamp(a, b), a.abs() + b.abs())),
        (Op::Mul, 0.0, 0.0, |x, y, _, _| (x * y, (x * y).abs())),
    ];
    for (op, a, b, f) in cases {
        let run = |dtype: DType| -> Vec<f32> {
            let (tx, ty) = match dtype {
                DType::F16 => (
                    Tensor::from_f16(&gpu, "x", &[N], &x16).unwrap(),
                    Tensor::from_f16(&gpu, "y", &[N], &y16).unwrap(),
                ),
                DType::F32 => (
                    Tensor::from_slice(&gpu, "x", &[N], &x).unwrap(),
                    Tensor::from_slice(&gpu, "y", &[N], &y0).unwrap(),
                ),
            };
            assert_eq!(ty.dtype, dtype);
            assert_eq!(ty.size_bytes(), N * dtype.size_bytes());
            let k = Elementwise::new(&gpu, op, &tx, &ty, a, b).unwrap();
            let mut plan = Plan::new();
            plan.push(k.dispatch.clone());
            plan.run(&gpu).unwrap();
            match dtype {
                DType::F16 => ty.read_f16(&gpu).unwrap().iter().map(|v| v.to_f32()).collect(),
                DType::F32 => ty.read(&gpu).unwrap(),
            }
        };
        let got16 = run(DType::F16);
        let got32 = run(DType::F32);
        // f16 unit roundoff is 2^-11: a handful of roundings (a, b, the
        // products, the sum) stay below 2^-9 of the terms' magnitude; the
        // absolute floor covers flushed subnormals.
        let (mut worst16, mut worst32) = (0f64, 0f64);
        for i in 0..N {
            let (want, mag) = f(x[i] as f64, y0[i] as f64, a as f64, b as f64);
            let e16 = (got16[i] as f64 - want).abs();
            let e32 = (got32[i] as f64 - want).abs();
            let tol16 = 2f64.powi(-9) * (mag + want.abs()) + 1e-4;
            let tol32 = 1e-6 * (mag + want.abs()) + 1e-7;
            assert!(
                e16 <= tol16,
                "{op:?} f16 at {i}: got {}, want {want} (x {}, y {}), err {e16} > {tol16}",
                got16[i],
                x[i],
                y0[i]
            );
            assert!(
                e32 <= tol32,
                "{op:?} f32 at {i}: got {}, want {want}, err {e32}",
                got32[i]
            );
            worst16 = worst16.max(e16);
            worst32 = worst32.max(e32);
        }
        eprintln!("{op:?} n={N}: max err f16 {worst16:.2e}, f32 {worst32:.2e}");
        // The f16 instance really ran in f16 (its rounding shows).
        assert!(
            worst16 > worst32,
            "{op:?}: f16 error {worst16} not above f32's {worst32}"
        );
    }
}

#[test]
fn f16_tensors_refuse_f32_reads_and_mixed_ops() {
    let gpu = gpu();
    let t = Tensor::zeros_typed(&gpu, "h", &[3, 5], DType::F16).unwrap();
    assert_eq!(t.dtype, DType::F16);
    assert_eq!(t.reshaped(&[15]).dtype, DType::F16);
    assert!(t.read(&gpu).is_err());
    let f = Tensor::zeros(&gpu, "f", &[15]).unwrap();
    assert_eq!(f.dtype, DType::F32);
    assert!(Elementwise::new(&gpu, Op::Affine, &f, &t, 1.0, 0.0).is_err());
}
