//! The dense operator: GPU vs CPU matvec, exact adjoint, U S V^T = A, on odd
//! sizes (m < d, m > d, m = d) with batch > 1.

mod common;
use common::*;

use tweedie::operators::dense::Dense;
use tweedie::operators::{LinearOperator, Operator};
use tweedie::{HostTensor, Tensor};

const CASES: &[(usize, usize, usize, [usize; 3])] = &[
    // (m, d, batch, in_shape)
    (3, 7, 2, [7, 1, 1]),
    (5, 12, 3, [3, 2, 2]),
    (13, 5, 2, [1, 1, 5]),
    (9, 9, 1, [1, 3, 3]),
    (37, 301, 5, [1, 7, 43]),
];

fn matvec(a: &[f32], m: usize, d: usize, x: &[f32]) -> Vec<f32> {
    let n = x.len() / d;
    let mut y = vec![0f32; n * m];
    for b in 0..n {
        for i in 0..m {
            y[b * m + i] = (0..d).map(|j| a[i * d + j] as f64 * x[b * d + j] as f64).sum::<f64>() as f32;
        }
    }
    y
}

fn matvec_t(a: &[f32], m: usize, d: usize, y: &[f32]) -> Vec<f32> {
    let n = y.len() / m;
    let mut x = vec![0f32; n * d];
    for b in 0..n {
        for j in 0..d {
            x[b * d + j] = (0..m).map(|i| a[i * d + j] as f64 * y[b * m + i] as f64).sum::<f64>() as f32;
        }
    }
    x
}

#[test]
fn forward_and_adjoint_match_cpu_and_are_adjoint() {
    let gpu = gpu();
    let mut r = rng(11);
    for &(m, d, n, shape) in CASES {
        let a = randn(&mut r, m * d);
        let op = Dense::new(&gpu, &HostTensor::new(vec![m, d], a.clone()), shape).unwrap();
        assert_eq!(op.out_shape(), [m, 1, 1]);
        let u = randn(&mut r, n * d);
        let v = randn(&mut r, n * m);
        let tu = Tensor::from_slice(&gpu, "u", &[n, shape[0], shape[1], shape[2]], &u).unwrap();
        let tv = Tensor::from_slice(&gpu, "v", &[n, m, 1, 1], &v).unwrap();
        let au = Tensor::zeros(&gpu, "Au", &[n, m, 1, 1]).unwrap();
        let atv = Tensor::zeros(&gpu, "ATv", &[n, shape[0], shape[1], shape[2]]).unwrap();
        op.forward(&gpu, &tu, &au).unwrap().run(&gpu).unwrap();
        op.adjoint(&gpu, &tv, &atv).unwrap().run(&gpu).unwrap();
        let au = au.read(&gpu).unwrap();
        let atv = atv.read(&gpu).unwrap();
        assert_close(&format!("A u (m={m}, d={d})"), &au, &matvec(&a, m, d, &u), 1e-4, 1e-4);
        assert_close(
            &format!("A^T v (m={m}, d={d})"),
            &atv,
            &matvec_t(&a, m, d, &v),
            1e-4,
            1e-4,
        );
        let lhs = dot64(&au, &v);
        let rhs = dot64(&u, &atv);
        let bound = 1e-5 * norm64(&au) * norm64(&v);
        assert!(
            (lhs - rhs).abs() <= bound,
            "adjointness m={m} d={d}: <Au,v>={lhs} <u,A^T v>={rhs}"
        );
    }
}

#[test]
fn svd_form_reproduces_a() {
    let gpu = gpu();
    let mut r = rng(12);
    for &(m, d, n, shape) in CASES {
        let a = randn(&mut r, m * d);
        let op = Dense::new(&gpu, &HostTensor::new(vec![m, d], a.clone()), shape).unwrap();
        let svd = op.svd().expect("dense has an SVD form");
        let s = svd.singulars().read(&gpu).unwrap();
        assert_eq!(s.len(), m);
        assert!(s.iter().all(|&v| v >= 0.0));
        assert!(
            s[m.min(d)..].iter().all(|&v| v == 0.0),
            "padding singulars must be zero"
        );
        let x = randn(&mut r, n * d);
        let tx = Tensor::from_slice(&gpu, "x", &[n, d], &x).unwrap();
        let spec = Tensor::zeros(&gpu, "spec", &[n, m, 1, 1]).unwrap();
        let y = Tensor::zeros(&gpu, "y", &[n, m, 1, 1]).unwrap();
        svd.vt(&gpu, &tx, &spec).unwrap().run(&gpu).unwrap();
        let mut sv = spec.read(&gpu).unwrap();
        for (i, v) in sv.iter_mut().enumerate() {
            *v *= s[i % m];
        }
        spec.write(&gpu, &sv).unwrap();
        svd.u(&gpu, &spec, &y).unwrap().run(&gpu).unwrap();
        let want = matvec(&a, m, d, &x);
        let got = y.read(&gpu).unwrap();
        let err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| ((g - w) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            err <= 1e-4 * norm64(&want),
            "U S V^T x vs A x (m={m}, d={d}): rel err {}",
            err / norm64(&want)
        );

        // V V^T and U U^T round trips: V^T then V is the projection on the row
        // space, U^T then U is the identity.
        let back = Tensor::zeros(&gpu, "back", &[n, m, 1, 1]).unwrap();
        let ty = Tensor::from_slice(&gpu, "y", &[n, m, 1, 1], &want).unwrap();
        svd.ut(&gpu, &ty, &spec).unwrap().run(&gpu).unwrap();
        svd.u(&gpu, &spec, &back).unwrap().run(&gpu).unwrap();
        assert_close("U U^T y", &back.read(&gpu).unwrap(), &want, 1e-3, 1e-4);
        let xv = Tensor::zeros(&gpu, "xv", &[n, d]).unwrap();
        svd.vt(&gpu, &tx, &spec).unwrap().run(&gpu).unwrap();
        svd.v(&gpu, &spec, &xv).unwrap().run(&gpu).unwrap();
        // A (V V^T x) = A x
        let proj = xv.read(&gpu).unwrap();
        assert_close("A V V^T x", &matvec(&a, m, d, &proj), &want, 1e-3, 1e-3);
    }
}

#[test]
fn bad_matrices_are_refused() {
    let gpu = gpu();
    let a = HostTensor::new(vec![2, 3], vec![1.0, 2.0, f32::NAN, 0.0, 1.0, 2.0]);
    assert!(Dense::new(&gpu, &a, [3, 1, 1]).is_err());
    let a = HostTensor::new(vec![2, 3], vec![0.0; 6]);
    assert!(Dense::new(&gpu, &a, [2, 2, 1]).is_err());
    let a = HostTensor::new(vec![6], vec![0.0; 6]);
    assert!(Dense::new(&gpu, &a, [6, 1, 1]).is_err());
}

#[test]
fn from_file_reads_the_matrix_and_names_a_missing_key() {
    let gpu = gpu();
    let mut r = rng(13);
    let (m, d) = (4, 6);
    let a = randn(&mut r, m * d);
    let path = std::env::temp_dir().join(format!("tweedie-dense-{}.safetensors", std::process::id()));
    tweedie::io::write_tensors(&path, &[("A", &HostTensor::new(vec![m, d], a.clone()))]).unwrap();
    let op = Dense::from_file(&gpu, &path, "A", [1, 2, 3]).unwrap();
    assert_eq!(op.matrix().data, a);
    assert_eq!((op.in_shape(), op.out_shape()), ([1, 2, 3], [m, 1, 1]));
    let err = Dense::from_file(&gpu, &path, "B", [1, 2, 3])
        .err()
        .expect("missing key refused")
        .to_string();
    assert!(err.contains("\"B\""), "{err}");
    let _ = std::fs::remove_file(&path);
}
