//! Separable operators A = I_C (x) A_h (x) A_w and their SVD from the SVDs of
//! the 1-D factors (Kronecker): A_h = U_h S_h V_h^T, A_w = U_w S_w V_w^T give
//! A = (I (x) U_h (x) U_w) diag(s_h[p] s_w[q]) (I (x) V_h^T (x) V_w^T). The
//! spectral index is (c, p, q) in that order for every channel, the order the
//! kernels really lay the data out (DDRM's `Deblurring` pairs singulars with
//! another channel order).

use crate::gpu::Plan;
use crate::kernels::axis_matmul::{axis_matmul, Axis, AxisFactor, AxisMatrix};
use crate::kernels::PlaneShape;
use crate::operators::{batch_of, OperatorError, SvdForm};
use crate::tensor::Tensor;
use crate::Gpu;

/// Thin SVD of a [rows, cols] matrix (rows <= cols): U [rows, rows], s [rows]
/// (non-increasing), V^T [rows, cols].
pub struct Svd1d {
    pub rows: usize,
    pub cols: usize,
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    pub vt: Vec<f64>,
}

pub fn svd_1d(task: &str, a: &[f64], rows: usize, cols: usize) -> Result<Svd1d, OperatorError> {
    assert!(
        rows <= cols && a.len() == rows * cols,
        "svd_1d expects a wide or square matrix"
    );
    let m = faer::Mat::<f64>::from_fn(rows, cols, |i, j| a[i * cols + j]);
    let svd = m.thin_svd().map_err(|e| OperatorError::Invalid {
        task: task.into(),
        message: format!("SVD of the {rows}x{cols} 1-D factor failed: {e:?}"),
    })?;
    let (u, v, s) = (svd.U(), svd.V(), svd.S().column_vector());
    Ok(Svd1d {
        rows,
        cols,
        u: (0..rows * rows).map(|k| u[(k / rows, k % rows)]).collect(),
        s: (0..rows).map(|k| s[k]).collect(),
        vt: (0..rows * cols).map(|k| v[(k % cols, k / cols)]).collect(),
    })
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Plans dst = (M_h along H) then (M_w along W) of src, each plain or
/// transposed: src [N, C, h, w] -> tmp [N, C, h', w] -> dst [N, C, h', w'].
/// `factors` is [along H, along W].
pub fn separable_apply(
    gpu: &Gpu,
    task: &str,
    factors: [AxisFactor<'_>; 2],
    src: &Tensor,
    src_shape: [usize; 3],
    dst: &Tensor,
) -> Result<Plan, OperatorError> {
    let [fh, fw] = factors;
    let (mh, th, mw, tw) = (fh.m, fh.transpose, fw.m, fw.transpose);
    let [c, h, w] = src_shape;
    let n = batch_of(task, "input", src, src_shape)?;
    let (kh, qh) = mh.lengths(th);
    let (kw, qw) = mw.lengths(tw);
    assert!(kh == h && kw == w, "separable_apply factor sizes");
    if dst.numel() != n * c * qh * qw {
        return Err(OperatorError::Shape {
            task: task.into(),
            what: "output".into(),
            got: dst.shape.clone(),
            expected: vec![n, c, qh, qw],
        });
    }
    let tmp = Tensor::zeros(gpu, &format!("{task} temporary"), &[n, c, qh, w])?;
    let mut plan = Plan::new();
    plan.push(axis_matmul(
        gpu,
        fh,
        Axis::H,
        src,
        &tmp,
        PlaneShape { planes: n * c, h, w },
    )?);
    plan.push(axis_matmul(
        gpu,
        fw,
        Axis::W,
        &tmp,
        dst,
        PlaneShape {
            planes: n * c,
            h: qh,
            w,
        },
    )?);
    Ok(plan)
}

/// The Kronecker SVD form of a separable operator.
pub struct KroneckerSvd {
    task: String,
    channels: usize,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    uh: AxisMatrix,
    vth: AxisMatrix,
    uw: AxisMatrix,
    vtw: AxisMatrix,
    singulars: Tensor,
}

impl KroneckerSvd {
    /// From the 1-D factor matrices A_h [h', h] and A_w [w', w] (row-major).
    pub fn new(
        gpu: &Gpu,
        task: &str,
        channels: usize,
        ah: (&[f64], usize, usize),
        aw: (&[f64], usize, usize),
    ) -> Result<KroneckerSvd, OperatorError> {
        let sh = svd_1d(task, ah.0, ah.1, ah.2)?;
        // Square images with the same factor on both axes share one SVD.
        let sw = if ah == aw {
            None
        } else {
            Some(svd_1d(task, aw.0, aw.1, aw.2)?)
        };
        let sw = sw.as_ref().unwrap_or(&sh);
        let mut singulars = Vec::with_capacity(channels * sh.rows * sw.rows);
        for _ in 0..channels {
            for p in 0..sh.rows {
                for q in 0..sw.rows {
                    singulars.push((sh.s[p] * sw.s[q]) as f32);
                }
            }
        }
        let up = |label: &str, d: &[f64], r: usize, c: usize| {
            AxisMatrix::new(gpu, &format!("{task} {label}"), &f32s(d), r, c)
        };
        Ok(KroneckerSvd {
            task: task.into(),
            channels,
            in_hw: [sh.cols, sw.cols],
            out_hw: [sh.rows, sw.rows],
            uh: up("U_h", &sh.u, sh.rows, sh.rows)?,
            vth: up("V_h^T", &sh.vt, sh.rows, sh.cols)?,
            uw: up("U_w", &sw.u, sw.rows, sw.rows)?,
            vtw: up("V_w^T", &sw.vt, sw.rows, sw.cols)?,
            singulars: Tensor::from_slice(
                gpu,
                &format!("{task} singulars"),
                &[channels, sh.rows, sw.rows],
                &singulars,
            )?,
        })
    }

    fn out_shape(&self) -> [usize; 3] {
        [self.channels, self.out_hw[0], self.out_hw[1]]
    }
}

impl SvdForm for KroneckerSvd {
    fn singulars(&self) -> &Tensor {
        &self.singulars
    }
    fn vt(&self, gpu: &Gpu, x: &Tensor, s: &Tensor) -> Result<Plan, OperatorError> {
        let shape = [self.channels, self.in_hw[0], self.in_hw[1]];
        separable_apply(
            gpu,
            &self.task,
            [AxisFactor::new(&self.vth, false), AxisFactor::new(&self.vtw, false)],
            x,
            shape,
            s,
        )
    }
    fn v(&self, gpu: &Gpu, s: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        separable_apply(
            gpu,
            &self.task,
            [AxisFactor::new(&self.vth, true), AxisFactor::new(&self.vtw, true)],
            s,
            self.out_shape(),
            x,
        )
    }
    fn ut(&self, gpu: &Gpu, y: &Tensor, s: &Tensor) -> Result<Plan, OperatorError> {
        separable_apply(
            gpu,
            &self.task,
            [AxisFactor::new(&self.uh, true), AxisFactor::new(&self.uw, true)],
            y,
            self.out_shape(),
            s,
        )
    }
    fn u(&self, gpu: &Gpu, s: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        separable_apply(
            gpu,
            &self.task,
            [AxisFactor::new(&self.uh, false), AxisFactor::new(&self.uw, false)],
            s,
            self.out_shape(),
            y,
        )
    }
}
