//! An f64 reference for the 2-D DFT with the options of `Fft2` (exact-index
//! twiddles), shared by the FFT and phase-retrieval tests.

use tweedie::kernels::fft::{FftOptions, Norm};

/// A complex value (re, im).
pub type C = (f64, f64);

/// Interleaved (re, im) f32 values as complex f64.
pub fn complex(x: &[f32]) -> Vec<C> {
    x.chunks(2).map(|c| (c[0] as f64, c[1] as f64)).collect()
}

/// The 1-D DFT along H (`along_h`) or W of [planes, h, w] complex data,
/// unscaled; exp(-+2 pi i k j / n) from the exact index k j mod n.
pub fn dft_axis(x: &[C], (h, w): (usize, usize), along_h: bool, inverse: bool) -> Vec<C> {
    let (n, inner) = if along_h { (h, w) } else { (w, 1) };
    let sign = if inverse { 1.0 } else { -1.0 };
    let table: Vec<C> = (0..n)
        .map(|t| {
            let (s, c) = (sign * std::f64::consts::TAU * t as f64 / n as f64).sin_cos();
            (c, s)
        })
        .collect();
    let mut out = vec![(0.0, 0.0); x.len()];
    for line in 0..x.len() / n {
        let base = (line / inner) * n * inner + line % inner;
        for k in 0..n {
            let mut acc = (0.0, 0.0);
            for j in 0..n {
                let (wr, wi) = table[(k * j) % n];
                let (vr, vi) = x[base + j * inner];
                acc.0 += vr * wr - vi * wi;
                acc.1 += vr * wi + vi * wr;
            }
            out[base + k * inner] = acc;
        }
    }
    out
}

/// out[p, (i + sh) % h, (j + sw) % w] = x[p, i, j].
pub fn roll(x: &[C], (h, w): (usize, usize), sh: usize, sw: usize) -> Vec<C> {
    let mut out = x.to_vec();
    for (e, &v) in x.iter().enumerate() {
        let (p, i, j) = (e / (h * w), (e / w) % h, e % w);
        out[p * h * w + ((i + sh) % h) * w + (j + sw) % w] = v;
    }
    out
}

/// What `Fft2` with `opts` should compute, in f64.
pub fn reference(x: &[f32], hw: (usize, usize), opts: FftOptions) -> Vec<C> {
    let (h, w) = hw;
    let mut z = complex(x);
    if opts.ishift_input {
        z = roll(&z, hw, h - h / 2, w - w / 2);
    }
    z = dft_axis(&dft_axis(&z, hw, false, opts.inverse), hw, true, opts.inverse);
    let scale = match (opts.norm, opts.inverse) {
        (Norm::Ortho, _) => 1.0 / ((h * w) as f64).sqrt(),
        (Norm::Backward, true) => 1.0 / (h * w) as f64,
        (Norm::Backward, false) => 1.0,
    };
    z.iter_mut().for_each(|v| *v = (v.0 * scale, v.1 * scale));
    if opts.shift_output {
        z = roll(&z, hw, h / 2, w / 2);
    }
    z
}
