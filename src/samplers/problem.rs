//! An inverse problem with a Gaussian-mixture prior (the exactness
//! fixtures): `prior.weights` [K], `prior.means` [K,d], `prior.vars` [K,d],
//! `A` [m,d], `y` [m], `sigma_y` [1], and optionally `abs` [1]: 1 for the
//! non-linear y = |A x| + sigma_y n (elementwise), 0 or absent for y = A x + sigma_y n.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::io::{IoError, TensorFile};
use crate::operators::dense::Dense;
use crate::operators::magnitude::Magnitude;
use crate::operators::{Operator, OperatorError};
use crate::tensor::HostTensor;
use crate::Gpu;

#[derive(Debug, Error)]
pub enum ProblemError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The mixture prior, the operator matrix, the measurement and its noise level.
#[derive(Clone, Debug)]
pub struct GmmProblem {
    pub weights: Vec<f32>,
    /// [K, d]
    pub means: Vec<f32>,
    /// [K, d], diagonal covariances
    pub vars: Vec<f32>,
    /// [m, d]
    pub a: HostTensor,
    /// [m]
    pub y: Vec<f32>,
    pub sigma_y: f32,
    /// y = |A x| + noise (the signs of A x lost) instead of A x + noise.
    pub abs: bool,
    pub k: usize,
    pub d: usize,
    pub m: usize,
}

impl GmmProblem {
    /// Reads and validates a problem file; every refusal names the tensor.
    pub fn load(path: impl AsRef<Path>) -> Result<GmmProblem, ProblemError> {
        let path = path.as_ref();
        let f = TensorFile::open(path)?;
        let bad = |message: String| ProblemError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let w = f.get("prior.weights")?;
        let mu = f.get("prior.means")?;
        let var = f.get("prior.vars")?;
        let a = f.get("A")?;
        let y = f.get("y")?;
        let sy = f.get("sigma_y")?;
        if w.shape.len() != 1 || w.shape[0] == 0 {
            return Err(bad(format!("prior.weights must be [K] with K >= 1, got {:?}", w.shape)));
        }
        let k = w.shape[0];
        if mu.shape.len() != 2 || mu.shape[0] != k || mu.shape[1] == 0 {
            return Err(bad(format!("prior.means must be [K={k}, d], got {:?}", mu.shape)));
        }
        let d = mu.shape[1];
        if var.shape != [k, d] {
            return Err(bad(format!(
                "prior.vars must be [{k}, {d}] like prior.means, got {:?}",
                var.shape
            )));
        }
        if a.shape.len() != 2 || a.shape[1] != d || a.shape[0] == 0 {
            return Err(bad(format!("A must be [m, d={d}], got {:?}", a.shape)));
        }
        let m = a.shape[0];
        if y.numel() != m || !(y.shape.len() == 1 || (y.shape.len() == 2 && y.shape[0] == 1)) {
            return Err(bad(format!("y must be [m={m}], got {:?}", y.shape)));
        }
        if sy.numel() != 1 {
            return Err(bad(format!("sigma_y must hold one value, got shape {:?}", sy.shape)));
        }
        let check_finite = |name: &str, t: &HostTensor| match t.data.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(bad(format!("{name} has a non-finite value at flat index {i}"))),
            None => Ok(()),
        };
        for (name, t) in [
            ("prior.weights", &w),
            ("prior.means", &mu),
            ("prior.vars", &var),
            ("A", &a),
            ("y", &y),
            ("sigma_y", &sy),
        ] {
            check_finite(name, t)?;
        }
        if let Some(i) = w.data.iter().position(|&v| v <= 0.0) {
            return Err(bad(format!("prior.weights[{i}] = {} is not positive", w.data[i])));
        }
        if let Some(i) = var.data.iter().position(|&v| v <= 0.0) {
            return Err(bad(format!(
                "prior.vars[{}, {}] = {} is not positive",
                i / d,
                i % d,
                var.data[i]
            )));
        }
        let sigma_y = sy.data[0];
        if sigma_y < 0.0 {
            return Err(bad(format!("sigma_y = {sigma_y} is negative")));
        }
        let abs = if f.has("abs") {
            let t = f.get("abs")?;
            match t.data[..] {
                [v] if v == 0.0 || v == 1.0 => v == 1.0,
                _ => {
                    return Err(bad(format!(
                        "abs must be one value, 1 (y = |A x| + noise) or 0, got {:?} of shape {:?}",
                        t.data, t.shape
                    )))
                }
            }
        } else {
            false
        };
        Ok(GmmProblem {
            weights: w.data,
            means: mu.data,
            vars: var.data,
            a,
            y: y.data,
            sigma_y,
            abs,
            k,
            d,
            m,
        })
    }
}

impl GmmProblem {
    /// The measurement's operator on d-vectors (shaped [d, 1, 1]): the dense
    /// A, or |A x| when the problem says `abs`.
    pub fn operator(&self, gpu: &Gpu) -> Result<Box<dyn Operator>, OperatorError> {
        let dense = Dense::new(gpu, &self.a, [self.d, 1, 1])?;
        Ok(if self.abs {
            Box::new(Magnitude::new(Box::new(dense)))
        } else {
            Box::new(dense)
        })
    }
}
