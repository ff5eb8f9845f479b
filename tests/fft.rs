//! The WGSL FFT against a plain f64 DFT (exact-index twiddles) on every side
//! 1..=130 along either axis (batch 3) and as a square (batch 2), and on
//! awkward 2-D shapes (batch 2): forward, inverse, both norms, the centring
//! shifts, round trips and Parseval. Errors are measured against the largest
//! output modulus.

mod common;
use common::fft::*;
use common::*;

use tweedie::kernels::fft::{radices, Fft2, FftOptions, Norm};
use tweedie::Tensor;

/// Random complex data, interleaved (re, im), for `numel` complex values.
fn random_complex(seed: u64, numel: usize) -> Vec<f32> {
    randn(&mut rng(seed), 2 * numel)
}

/// Runs the GPU transform of x, shaped [planes, h, w] complex.
fn gpu_fft(x: &[f32], (planes, h, w): (usize, usize, usize), opts: FftOptions) -> Vec<f32> {
    let gpu = gpu();
    let t = Tensor::from_slice(&gpu, "x", &[planes, h, w, 2], x).unwrap();
    let f = Fft2::new(&gpu, &t, opts).unwrap();
    f.plan.run(&gpu).unwrap();
    f.out.read(&gpu).unwrap()
}

/// max |got - want| over components, relative to the largest |want|.
fn rel_err(got: &[f32], want: &[C]) -> f64 {
    assert_eq!(got.len(), 2 * want.len());
    let scale = want.iter().map(|v| v.0.hypot(v.1)).fold(0.0, f64::max).max(1e-30);
    let err = complex(got)
        .iter()
        .zip(want)
        .map(|(g, w)| (g.0 - w.0).abs().max((g.1 - w.1).abs()))
        .fold(0.0, f64::max);
    err / scale
}

const TOL: f64 = 1e-4;

/// Forward (backward norm) and inverse (ortho) against the f64 DFT, the
/// backward-norm round trip back to x, and Parseval for ortho; returns the
/// worst relative error seen.
fn check_shape(shape: (usize, usize, usize), seed: u64) -> f64 {
    let (planes, h, w) = shape;
    let x = random_complex(seed, planes * h * w);
    let mut worst = 0f64;
    for opts in [
        FftOptions::new(false, Norm::Backward),
        FftOptions::new(true, Norm::Ortho),
    ] {
        let got = gpu_fft(&x, shape, opts);
        let err = rel_err(&got, &reference(&x, (h, w), opts));
        assert!(err <= TOL, "{shape:?} {opts:?}: relative error {err:e}");
        worst = worst.max(err);
        if opts.norm == Norm::Ortho {
            let (ex, ey) = (norm64(&x).powi(2), norm64(&got).powi(2));
            assert!((ex - ey).abs() <= 1e-5 * ex, "{shape:?}: Parseval {ex} vs {ey}");
        }
    }
    let fwd = gpu_fft(&x, shape, FftOptions::new(false, Norm::Backward));
    let back = gpu_fft(&fwd, shape, FftOptions::new(true, Norm::Backward));
    let err = rel_err(&back, &complex(&x));
    assert!(err <= TOL, "{shape:?}: round trip relative error {err:e}");
    worst.max(err)
}

#[test]
fn every_side_1_to_130_along_either_axis_batch_3() {
    let mut worst = 0f64;
    for n in 1..=130 {
        worst = worst.max(check_shape((3, 1, n), n as u64));
        worst = worst.max(check_shape((3, n, 1), 1000 + n as u64));
    }
    eprintln!("1-D sides 1..=130: worst relative error {worst:e}");
}

#[test]
fn every_square_side_1_to_130_batch_2() {
    let worst = (1..=130)
        .map(|n| check_shape((2, n, n), 2000 + n as u64))
        .fold(0.0, f64::max);
    eprintln!("square sides 1..=130: worst relative error {worst:e}");
}

#[test]
fn awkward_2d_shapes_batch_2() {
    let shapes = [
        (1, 1),
        (7, 13),
        (48, 48),
        (42, 42),
        (97, 5),
        (5, 97),
        (1, 17),
        (17, 1),
        (127, 128),
        (130, 130),
    ];
    let mut worst = 0f64;
    for (i, &(h, w)) in shapes.iter().enumerate() {
        worst = worst.max(check_shape((2, h, w), 77 + i as u64));
    }
    eprintln!("2-D shapes: worst relative error {worst:e}");
}

#[test]
fn centring_shifts_match_fftshift_and_ifftshift() {
    for (i, &(h, w)) in [(7, 13), (48, 42), (5, 1), (1, 6), (4, 4)].iter().enumerate() {
        let shape = (2, h, w);
        let x = random_complex(500 + i as u64, 2 * h * w);
        let fwd = FftOptions {
            shift_output: true,
            ..FftOptions::new(false, Norm::Ortho)
        };
        let inv = FftOptions {
            ishift_input: true,
            ..FftOptions::new(true, Norm::Ortho)
        };
        let y = gpu_fft(&x, shape, fwd);
        let err = rel_err(&y, &reference(&x, (h, w), fwd));
        assert!(err <= TOL, "{h}x{w} fftshift(F x): relative error {err:e}");
        let err = rel_err(&gpu_fft(&x, shape, inv), &reference(&x, (h, w), inv));
        assert!(err <= TOL, "{h}x{w} F^H ifftshift(x): relative error {err:e}");
        let err = rel_err(&gpu_fft(&y, shape, inv), &complex(&x));
        assert!(err <= TOL, "{h}x{w} shifted round trip: relative error {err:e}");
    }
}

#[test]
fn radices_multiply_to_the_length() {
    assert_eq!(radices(1), vec![1]);
    assert_eq!(radices(48), vec![4, 4, 3]);
    assert_eq!(radices(42), vec![2, 3, 7]);
    assert_eq!(radices(127), vec![127]);
    for n in 2..=2000usize {
        let r = radices(n);
        assert_eq!(r.iter().product::<usize>(), n, "{n}: {r:?}");
        for &f in &r {
            assert!(f == 4 || (2..f).all(|d| f % d != 0), "{n}: {f} is neither 4 nor prime");
        }
    }
}

#[test]
fn non_complex_shapes_are_refused() {
    let gpu = gpu();
    for shape in [vec![2, 3, 4], vec![1, 2, 2, 3], vec![0, 2, 2, 2]] {
        let t = Tensor::zeros(&gpu, "x", &shape).unwrap();
        let e = Fft2::new(&gpu, &t, FftOptions::new(false, Norm::Ortho)).err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("[N, H, W, 2]"), "{shape:?}: {msg:?}");
    }
}
