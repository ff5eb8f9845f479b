//! Host-side construction of the operators' small kernels and 1-D matrices
//! (blur taps, resampling matrices, the random-trajectory motion kernel). Built
//! once in f64, uploaded as f32.

use rand::{rngs::StdRng, Rng};

/// scipy.ndimage's `reflect` extension (d c b a | a b c d | d c b a), any distance.
fn scipy_reflect(m: i64, n: i64) -> i64 {
    let m = m.rem_euclid(2 * n);
    if m >= n {
        2 * n - 1 - m
    } else {
        m
    }
}

/// DPS's Gaussian blur kernel along one axis: a `size`-tap delta filtered by
/// `scipy.ndimage.gaussian_filter(sigma)` (truncate 4: radius int(4 sigma + 0.5),
/// taps exp(-x^2 / 2 sigma^2) normalised, `reflect` mode). The 2-D kernel is the
/// outer product of this with itself.
pub fn gaussian_taps(size: usize, sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut g: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let total: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= total);
    let c = (size / 2) as i64;
    let n = size as i64;
    let mut out = vec![0.0; size];
    for (i, o) in out.iter_mut().enumerate() {
        for d in -radius..=radius {
            if scipy_reflect(i as i64 + d, n) == c {
                *o += g[(d + radius) as usize];
            }
        }
    }
    out
}

/// A `size`-tap box filter (uniform blur along one axis).
pub fn box_taps(size: usize) -> Vec<f64> {
    vec![1.0 / size as f64; size]
}

/// torch `ReflectionPad2d` index map along one axis: -1 -> 1, n -> n - 2.
/// Valid for one reflection (|overhang| < n).
pub fn reflect(m: i64, n: i64) -> i64 {
    let mut r = m.abs();
    if r > n - 1 {
        r = 2 * (n - 1) - r;
    }
    r
}

/// The [n, n] matrix of a 1-D correlation with `taps` (centre tap `len / 2`)
/// under the reflect boundary: A[i, refl(i + a - r)] += taps[a].
pub fn reflect_conv_matrix(taps: &[f64], n: usize) -> Vec<f64> {
    let r = (taps.len() / 2) as i64;
    let mut a = vec![0.0; n * n];
    for i in 0..n as i64 {
        for (t, &k) in taps.iter().enumerate() {
            let j = reflect(i + t as i64 - r, n as i64);
            a[i as usize * n + j as usize] += k;
        }
    }
    a
}

/// Keys' cubic convolution kernel with a = -0.5 (MATLAB `imresize`'s `cubic`).
pub fn cubic(x: f64) -> f64 {
    let ax = x.abs();
    let ax2 = ax * ax;
    let ax3 = ax2 * ax;
    if ax <= 1.0 {
        1.5 * ax3 - 2.5 * ax2 + 1.0
    } else if ax <= 2.0 {
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    } else {
        0.0
    }
}

/// Lanczos with a = 3 (PIL's LANCZOS filter).
pub fn lanczos3(x: f64) -> f64 {
    if x.abs() >= 3.0 {
        return 0.0;
    }
    if x.abs() < 1e-12 {
        return 1.0;
    }
    let px = std::f64::consts::PI * x;
    3.0 * px.sin() * (px / 3.0).sin() / (px * px)
}

/// Output length of a downscale by `factor` in MATLAB / DPS's `Resizer`: ceil(n / f).
pub fn resized_len(n: usize, factor: usize) -> usize {
    n.div_ceil(factor)
}

/// The [n_out, n_in] matrix of an antialiased downscale by `factor`, exactly as
/// MATLAB `imresize` and DPS's `Resizer.contributions`: kernel k(x / f) / f over
/// `width * f` taps, weights normalised per output, symmetric-mirror boundary
/// (edge repeated: -1 -> 0).
pub fn resize_matrix(n_in: usize, factor: usize, kernel: fn(f64) -> f64, width: f64) -> (usize, Vec<f64>) {
    let n_out = resized_len(n_in, factor);
    let scale = 1.0 / factor as f64;
    let kernel_width = width / scale;
    let expanded = kernel_width.ceil() as i64 + 2;
    let mirror: Vec<usize> = (0..n_in).chain((0..n_in).rev()).collect();
    let mut m = vec![0.0; n_out * n_in];
    for o in 0..n_out {
        let shifted = (o + 1) as f64 - (n_out as f64 - n_in as f64 * scale) / 2.0;
        let centre = shifted / scale + 0.5 * (1.0 - 1.0 / scale);
        let left = (centre - kernel_width / 2.0).floor() as i64;
        let fov: Vec<i64> = (0..expanded).map(|k| left + k - 1).collect();
        let w: Vec<f64> = fov
            .iter()
            .map(|&j| scale * kernel(scale * (centre - j as f64 - 1.0)))
            .collect();
        let mut total: f64 = w.iter().sum();
        if total == 0.0 {
            total = 1.0;
        }
        for (&j, &wj) in fov.iter().zip(&w) {
            let src = mirror[j.rem_euclid(2 * n_in as i64) as usize];
            m[o * n_in + src] += wj / total;
        }
    }
    (n_out, m)
}

/// The [n / f, n] matrix of a block average (torch `avg_pool2d(f)` along one
/// axis: a trailing remainder is dropped).
pub fn block_matrix(n_in: usize, factor: usize) -> (usize, Vec<f64>) {
    let n_out = n_in / factor;
    let mut m = vec![0.0; n_out * n_in];
    for o in 0..n_out {
        for j in o * factor..(o + 1) * factor {
            m[o * n_in + j] = 1.0 / factor as f64;
        }
    }
    (n_out, m)
}

fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Gamma(k, 1) for integer k: a sum of k unit exponentials.
fn gamma_int(rng: &mut StdRng, k: u32) -> f64 {
    (0..k).map(|_| -(1.0 - rng.random::<f64>()).ln()).sum()
}

fn beta_int(rng: &mut StdRng, a: u32, b: u32) -> f64 {
    let x = gamma_int(rng, a);
    let y = gamma_int(rng, b);
    x / (x + y)
}

fn triangular(rng: &mut StdRng, left: f64, mode: f64, right: f64) -> f64 {
    let u = rng.random::<f64>();
    let span = right - left;
    if span <= 0.0 {
        return left;
    }
    let fc = (mode - left) / span;
    if u < fc {
        left + (u * span * (mode - left)).sqrt()
    } else {
        right - ((1.0 - u) * span * (right - mode)).sqrt()
    }
}

fn blur_rows_cols(img: &mut [f64], n: usize, sigma: f64) {
    let r = (3.0 * sigma).ceil() as i64;
    let mut g: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let t: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= t);
    let mut tmp = vec![0.0; n * n];
    for pass in 0..2 {
        for i in 0..n {
            for j in 0..n {
                let mut acc = 0.0;
                for d in -r..=r {
                    let (ii, jj) = if pass == 0 {
                        (i as i64, j as i64 + d)
                    } else {
                        (i as i64 + d, j as i64)
                    };
                    if ii >= 0 && jj >= 0 && (ii as usize) < n && (jj as usize) < n {
                        acc += g[(d + r) as usize] * img[ii as usize * n + jj as usize];
                    }
                }
                tmp[i * n + j] = acc;
            }
        }
        img.copy_from_slice(&tmp);
    }
}

/// 8-bit quantisation, as the PIL images of the `motionblur` package are.
fn quantise(img: &mut [f64]) {
    img.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0).round());
}

/// A random-trajectory motion-blur kernel [size, size], summing to 1: a port
/// of the `motionblur` package's `Kernel` (used by DPS): a random path of
/// Beta-distributed steps with jittered triangular turning angles, centred
/// and rotated at random, drawn as a 1-pixel line at twice the size, Gaussian
/// blurred, Lanczos-downscaled by 2, 8-bit quantised, normalised. Not
/// bit-identical to the package (which draws with numpy's RNG and PIL).
pub fn motion_kernel(size: usize, intensity: f64, rng: &mut StdRng) -> Vec<f64> {
    let big = 2 * size;
    let diagonal = (2.0f64).sqrt() * big as f64;
    let eps = f64::EPSILON;

    // Steps until the path length is reached.
    let max_path_len = 0.75 * diagonal * (uniform(rng, 0.0, 1.0) + uniform(rng, 0.0, intensity * intensity));
    let mut steps: Vec<f64> = Vec::new();
    let mut total = 0.0;
    while total < max_path_len && steps.len() < 100_000 {
        let step = beta_int(rng, 1, 30) * (1.0 - intensity + eps) * diagonal;
        if step < max_path_len {
            steps.push(step);
            total += step;
        }
    }
    if steps.is_empty() {
        steps.push(0.0);
    }

    // Turning angles: each the previous one's sign, flipped with probability `jitter`.
    let max_angle = uniform(rng, 0.0, intensity * std::f64::consts::PI);
    let jitter = beta_int(rng, 2, 20);
    let mut angles = vec![uniform(rng, -max_angle, max_angle)];
    while angles.len() < steps.len() {
        let mut angle = triangular(rng, 0.0, intensity * max_angle, max_angle + eps);
        let last = *angles.last().unwrap_or(&0.0);
        let sign = if last > 0.0 {
            1.0
        } else if last < 0.0 {
            -1.0
        } else {
            0.0
        };
        if uniform(rng, 0.0, 1.0) < jitter {
            angle *= -sign;
        } else {
            angle *= sign;
        }
        angles.push(angle);
    }

    // Path = cumulative sum of the complex increments, centred on its mean,
    // rotated at random, moved to the centre of the canvas.
    let mut path: Vec<(f64, f64)> = Vec::with_capacity(steps.len());
    let (mut x, mut y) = (0.0, 0.0);
    for (s, a) in steps.iter().zip(&angles) {
        x += s * a.cos();
        y += s * a.sin();
        path.push((x, y));
    }
    let n = path.len() as f64;
    let (mx, my) = path
        .iter()
        .fold((0.0, 0.0), |(ax, ay), &(px, py)| (ax + px / n, ay + py / n));
    let rot = uniform(rng, 0.0, std::f64::consts::PI);
    let (cr, sr) = (rot.cos(), rot.sin());
    let centre = big as f64 / 2.0;
    let path: Vec<(f64, f64)> = path
        .iter()
        .map(|&(px, py)| {
            let (dx, dy) = (px - mx, py - my);
            (dx * cr - dy * sr + centre, dx * sr + dy * cr + centre)
        })
        .collect();

    // Rasterise the polyline (width 1, value 255) on the 2x canvas.
    let mut canvas = vec![0.0; big * big];
    let mut plot = |px: f64, py: f64| {
        let (c, r) = (px.round(), py.round());
        if c >= 0.0 && r >= 0.0 && (c as usize) < big && (r as usize) < big {
            canvas[r as usize * big + c as usize] = 255.0;
        }
    };
    plot(path[0].0, path[0].1);
    for seg in path.windows(2) {
        let ((x0, y0), (x1, y1)) = (seg[0], seg[1]);
        let samples = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
        for s in 0..=samples {
            let t = s as f64 / samples as f64;
            plot(x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        }
    }

    let radius = (diagonal * 0.01).floor();
    if radius >= 1.0 {
        blur_rows_cols(&mut canvas, big, radius);
        quantise(&mut canvas);
    }

    // Lanczos downscale by 2 along both axes.
    let (_, m) = resize_matrix(big, 2, lanczos3, 6.0);
    let mut half_rows = vec![0.0; size * big];
    for o in 0..size {
        for j in 0..big {
            half_rows[o * big + j] = (0..big).map(|i| m[o * big + i] * canvas[i * big + j]).sum();
        }
    }
    let mut kernel = vec![0.0; size * size];
    for i in 0..size {
        for o in 0..size {
            kernel[i * size + o] = (0..big).map(|j| m[o * big + j] * half_rows[i * big + j]).sum();
        }
    }
    quantise(&mut kernel);
    let total: f64 = kernel.iter().sum();
    if total > 0.0 {
        kernel.iter_mut().for_each(|v| *v /= total);
    } else {
        // The whole path rounded away: fall back to the unblurred delta.
        kernel[(size / 2) * size + size / 2] = 1.0;
    }
    kernel
}

/// Drops all-zero outer rows and columns of a [kh, kw] kernel (they add
/// nothing to the correlation), keeping the centre tap inside. Returns
/// (taps, kh, kw, rh, rw) with (rh, rw) the centre's new position.
pub fn trim_zero_border(taps: &[f64], kh: usize, kw: usize) -> (Vec<f64>, usize, usize, usize, usize) {
    let (ch, cw) = (kh / 2, kw / 2);
    let row_nz = |i: usize| (0..kw).any(|j| taps[i * kw + j] != 0.0);
    let col_nz = |j: usize| (0..kh).any(|i| taps[i * kw + j] != 0.0);
    let top = (0..kh).find(|&i| row_nz(i)).unwrap_or(ch).min(ch);
    let bottom = (0..kh).rev().find(|&i| row_nz(i)).unwrap_or(ch).max(ch);
    let left = (0..kw).find(|&j| col_nz(j)).unwrap_or(cw).min(cw);
    let right = (0..kw).rev().find(|&j| col_nz(j)).unwrap_or(cw).max(cw);
    let (nh, nw) = (bottom - top + 1, right - left + 1);
    let mut out = Vec::with_capacity(nh * nw);
    for i in top..=bottom {
        out.extend_from_slice(&taps[i * kw + left..=i * kw + right]);
    }
    (out, nh, nw, ch - top, cw - left)
}
