//! f64 references of the 2-D convolution and its input gradient (zero
//! padding, any stride), shared by the kernel tests.

use tweedie::kernels::conv2d::Conv2dShape;

/// The shape `[n, cin, h, w, cout, ks, stride]` with padding [top, left,
/// bottom, right]: one test case a line.
pub fn conv_shape([n, cin, h, w, cout, ks, stride]: [usize; 7], pad: [usize; 4]) -> Conv2dShape {
    Conv2dShape {
        n,
        cin,
        h,
        w,
        cout,
        ks,
        stride,
        pad,
    }
}

/// Calls `f(x index, w index, y index)` for every tap of the convolution
/// that lands inside the input (zero padding skips the others), in the order
/// both references sum over them.
fn each_tap(s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = s.out_hw();
    for n in 0..s.n {
        for co in 0..s.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((n * s.cout + co) * ho + oy) * wo + ox;
                    for ci in 0..s.cin {
                        for ky in 0..s.ks {
                            for kx in 0..s.ks {
                                let iy = (oy * s.stride + ky) as isize - s.pad[0] as isize;
                                let ix = (ox * s.stride + kx) as isize - s.pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xi = ((n * s.cin + ci) * s.h + iy as usize) * s.w + ix as usize;
                                f(xi, ((co * s.cin + ci) * s.ks + ky) * s.ks + kx, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// y = conv(x, W) (no bias) in f64: the convolution reference.
pub fn conv_f64(s: &Conv2dShape, x: &[f64], w: &[f64]) -> Vec<f64> {
    let (ho, wo) = s.out_hw();
    let mut y = vec![0f64; s.n * s.cout * ho * wo];
    each_tap(s, |xi, wi, yi| y[yi] += x[xi] * w[wi]);
    y
}

/// dx = conv^T(dy): scatter every output gradient back along its taps.
/// dx = conv_transpose(dy, W) in f64: the input gradient of [`conv_f64`].
pub fn conv_bwd_f64(s: &Conv2dShape, dy: &[f64], w: &[f64]) -> Vec<f64> {
    let mut dx = vec![0f64; s.n * s.cin * s.h * s.w];
    each_tap(s, |xi, wi, yi| dx[xi] += dy[yi] * w[wi]);
    dx
}

/// The residual the forward kernel adds before scaling.
pub enum Residual<'a> {
    None,
    /// A tensor of the output's shape.
    Full(&'a [f32]),
    /// One value per (sample, output channel), broadcast over pixels.
    Channel(&'a [f32]),
}

/// y = (conv(x, W) + b + residual) * out_scale ([`conv_f64`] and the forward
/// kernel's epilogue) in f64, rounded to f32.
pub fn conv_out(s: &Conv2dShape, x: &[f64], w: &[f64], b: &[f32], res: Residual<'_>, out_scale: f32) -> Vec<f32> {
    let (ho, wo) = s.out_hw();
    let hw = ho * wo;
    conv_f64(s, x, w)
        .iter()
        .enumerate()
        .map(|(o, v)| {
            let (n, co) = (o / (s.cout * hw), (o / hw) % s.cout);
            let r = match res {
                Residual::None => 0.0,
                Residual::Full(t) => t[o] as f64,
                Residual::Channel(t) => t[n * s.cout + co] as f64,
            };
            ((v + b[co] as f64 + r) * out_scale as f64) as f32
        })
        .collect()
}
