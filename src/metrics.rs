//! Image quality against a clean reference, as the papers' tables report it:
//! PSNR and SSIM on images mapped from [-1, 1] to [0, 1] (data range 1).

/// PSNR in dB of `x` against `reference`, both [C, H, W] in [-1, 1].
/// Inputs are clipped to [-1, 1] first, as a saved image would be.
pub fn psnr(x: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(x.len(), reference.len(), "psnr: sizes differ");
    let mse = x
        .iter()
        .zip(reference)
        .map(|(&a, &b)| {
            let d = (a.clamp(-1.0, 1.0) as f64 - b.clamp(-1.0, 1.0) as f64) / 2.0;
            d * d
        })
        .sum::<f64>()
        / x.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

/// SSIM (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
/// K2 = 0.03, data range 1, valid positions only (no padding), mean over
/// positions and channels. Images smaller than the window use the whole image
/// as one window.
pub fn ssim(x: &[f32], reference: &[f32], c: usize, h: usize, w: usize) -> f64 {
    assert_eq!(x.len(), c * h * w, "ssim: x shape");
    assert_eq!(reference.len(), c * h * w, "ssim: reference shape");
    let win = 11.min(h).min(w);
    let sigma = 1.5f64;
    let r = (win as f64 - 1.0) / 2.0;
    let g1: Vec<f64> = (0..win)
        .map(|i| (-((i as f64 - r).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = g1.iter().sum();
    let g1: Vec<f64> = g1.iter().map(|v| v / s).collect();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let to01 = |v: f32| (v.clamp(-1.0, 1.0) as f64 + 1.0) / 2.0;
    let mut total = 0.0;
    let mut count = 0usize;
    for ch in 0..c {
        let a = &x[ch * h * w..(ch + 1) * h * w];
        let b = &reference[ch * h * w..(ch + 1) * h * w];
        for i in 0..=(h - win) {
            for j in 0..=(w - win) {
                let (mut ma, mut mb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for u in 0..win {
                    for v in 0..win {
                        let wt = g1[u] * g1[v];
                        let (p, q) = (to01(a[(i + u) * w + j + v]), to01(b[(i + u) * w + j + v]));
                        ma += wt * p;
                        mb += wt * q;
                        saa += wt * p * p;
                        sbb += wt * q * q;
                        sab += wt * p * q;
                    }
                }
                let (va, vb, cov) = (saa - ma * ma, sbb - mb * mb, sab - ma * mb);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                count += 1;
            }
        }
    }
    total / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_known_error() {
        // A constant error of 0.2 on the [-1, 1] scale is 0.1 on [0, 1]: 20 dB.
        let a = vec![0.0f32; 12];
        let b = vec![0.2f32; 12];
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-5);
        assert!(psnr(&a, &a).is_infinite());
    }

    #[test]
    fn ssim_is_one_for_identical_and_drops_with_noise() {
        let (c, h, w) = (2, 17, 13);
        let img: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        assert!((ssim(&img, &img, c, h, w) - 1.0).abs() < 1e-12);
        let noisy: Vec<f32> = img
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 2 == 0 { 0.3 } else { -0.3 })
            .collect();
        let s = ssim(&noisy, &img, c, h, w);
        assert!(s < 0.9 && s > 0.0, "ssim {s}");
        // A contrast change of a structured image lowers SSIM less than noise does.
        let scaled: Vec<f32> = img.iter().map(|v| v * 0.9).collect();
        assert!(ssim(&scaled, &img, c, h, w) > s);
    }
}
