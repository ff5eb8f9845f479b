//! `--task jpeg`, the JPEG round trip: the quantisers against libjpeg's, the
//! forward map against libjpeg itself (Pillow's encoding and decoding, stored
//! in `tests/fixtures/jpeg/`) and against an f64 reference on awkward shapes
//! (odd sides, batch > 1, grey and colour), the reference's VJP against
//! finite differences of its cubic stand-in for rounding, the GPU VJP against
//! the reference's, and the baseline (y itself). tests/cli_restore.rs runs it
//! from the command line.

mod common;
use common::*;

use tweedie::io::TensorFile;
use tweedie::operators::jpeg::{scaled_table, Jpeg, CHROMINANCE, LUMINANCE};
use tweedie::operators::Operator;
use tweedie::Tensor;

/// Quotients this near a half round away from zero (the shader's margin).
const TIE: f64 = 1e-3;
/// JFIF's RGB -> YCbCr rows in libjpeg's 16-bit fixed point (Cb, Cr without their +128).
const TO_YCC: [[f64; 3]; 3] = [
    [19595.0 / 65536.0, 38470.0 / 65536.0, 7471.0 / 65536.0],
    [-11059.0 / 65536.0, -21709.0 / 65536.0, 0.5],
    [0.5, -27439.0 / 65536.0, -5329.0 / 65536.0],
];
/// YCbCr -> RGB in libjpeg's fixed point: per output channel, the weights of (Cb - 128, Cr - 128).
const TO_RGB: [[f64; 2]; 3] = [
    [0.0, 91881.0 / 65536.0],
    [-22554.0 / 65536.0, -46802.0 / 65536.0],
    [116130.0 / 65536.0, 0.0],
];

#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    quality: u32,
}

/// (N, C, H, W, quality)
const fn case(n: usize, c: usize, h: usize, w: usize, quality: u32) -> Case {
    Case { n, c, h, w, quality }
}

const CASES: [Case; 5] = [
    case(2, 1, 13, 11, 50),
    case(1, 1, 16, 24, 10),
    case(2, 3, 19, 23, 75),
    case(1, 3, 16, 16, 90),
    case(1, 3, 10, 18, 10),
];

/// A linear map with an offset, row by row: out[i] = offset[i] + sum w x[j];
/// `bias[i]`, where given, is libjpeg's rounding bias of that output (in
/// units of the output) when the map rounds.
struct Affine {
    rows: Vec<Vec<(usize, f64)>>,
    offset: Vec<f64>,
    bias: Vec<Option<f64>>,
}

impl Affine {
    fn new() -> Affine {
        Affine {
            rows: Vec::new(),
            offset: Vec::new(),
            bias: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<(usize, f64)>, offset: f64, bias: Option<f64>) {
        self.rows.push(row);
        self.offset.push(offset);
        self.bias.push(bias);
    }

    /// The map, and with `exact` the biased floor where a bias is given.
    fn apply(&self, x: &[f64], exact: bool) -> Vec<f64> {
        self.rows
            .iter()
            .zip(&self.offset)
            .zip(&self.bias)
            .map(|((row, o), bias)| {
                let v = o + row.iter().map(|&(j, w)| w * x[j]).sum::<f64>();
                match bias {
                    Some(b) if exact => (v + b).floor(),
                    _ => v,
                }
            })
            .collect()
    }

    /// The transpose of the linear part, into `len` values.
    fn transpose(&self, g: &[f64], len: usize) -> Vec<f64> {
        let mut out = vec![0.0; len];
        for (row, gi) in self.rows.iter().zip(g) {
            for &(j, w) in row {
                out[j] += w * gi;
            }
        }
        out
    }
}

/// One component plane of an image: first sample, rows, columns, table (0 luma, 1 chroma).
struct Plane {
    off: usize,
    rows: usize,
    cols: usize,
    table: usize,
}

/// Which map the reference computes: libjpeg's (every integer step rounded)
/// or the stand-in's (only the quotients, through the cubic). Each carries
/// `side` (-1, 0 as the shader, 1): the rounding steps of the DCT's outputs
/// and the quotients move by that times [`QUOT_MARGIN`], those of the decoded
/// samples by that times [`LEVEL_MARGIN`], to find values f32 error may tip.
#[derive(Clone, Copy)]
enum Rounding {
    Exact(f64),
    StandIn(f64),
}

/// Well above the f32 error of a quotient or 8 x a coefficient (about 1e-5), well below a step.
const QUOT_MARGIN: f64 = 1e-4;
/// Well above the f32 error of a decoded level (about 1e-4).
const LEVEL_MARGIN: f64 = 1e-3;

fn round_away(q: f64, side: f64) -> f64 {
    q.signum() * (q.abs() + 0.5 + TIE + side * QUOT_MARGIN).floor()
}

fn basis(k: usize, x: usize) -> f64 {
    let s = if k == 0 { 0.125f64.sqrt() } else { 0.5 };
    s * (((2 * x + 1) * k) as f64 * std::f64::consts::PI / 16.0).cos()
}

fn blocks(side: usize) -> usize {
    side.div_ceil(8) * 8
}

/// The f64 reference of the round trip on one case: pixels -> level-shifted
/// components per pixel -> planes (padding, 2x2 means) -> DCT -> quotients ->
/// decoded planes -> per-pixel components (upsampling) -> levels.
struct Reference {
    case: Case,
    per: usize,
    planes: Vec<Plane>,
    tables: [[f64; 64]; 2],
    /// components [N, C, H, W] -> planes [N, per]
    subsample: Affine,
    /// clamped decoded planes -> components [N, C, H, W] (Y, Cb - 128, Cr - 128)
    upsample: Affine,
}

/// What the reference's forward computed on the way.
struct Trace {
    quot: Vec<f64>,
    dec: Vec<f64>,
    /// levels before their last clamp
    rgb: Vec<f64>,
    /// y in [-1, 1]
    y: Vec<f64>,
}

impl Reference {
    fn new(case: Case) -> Reference {
        let Case { n, c, h, w, quality } = case;
        let (hc, wc) = (h.div_ceil(2), w.div_ceil(2));
        let mut planes = vec![Plane {
            off: 0,
            rows: blocks(h),
            cols: blocks(w),
            table: 0,
        }];
        if c == 3 {
            for k in 0..2 {
                planes.push(Plane {
                    off: blocks(h) * blocks(w) + k * blocks(hc) * blocks(wc),
                    rows: blocks(hc),
                    cols: blocks(wc),
                    table: 1,
                });
            }
        }
        let per: usize = planes.iter().map(|p| p.rows * p.cols).sum();
        let px = |img: usize, ch: usize, r: usize, col: usize| ((img * c + ch) * h + r) * w + col;
        // Luma: edge replication; chroma: the mean of four edge-replicated
        // pixels, rows past hc replicating the last, libjpeg's bias 1 and 2
        // by turns along a row.
        let mut subsample = Affine::new();
        for img in 0..n {
            for (comp, pl) in planes.iter().enumerate() {
                for r in 0..pl.rows {
                    for col in 0..pl.cols {
                        if comp == 0 {
                            subsample.push(vec![(px(img, 0, r.min(h - 1), col.min(w - 1)), 1.0)], 0.0, None);
                            continue;
                        }
                        let rr = 2 * r.min(hc - 1);
                        let mut row = Vec::new();
                        for a in [rr, (rr + 1).min(h - 1)] {
                            for b in [(2 * col).min(w - 1), (2 * col + 1).min(w - 1)] {
                                row.push((px(img, comp, a, b), 0.25));
                            }
                        }
                        subsample.push(row, 0.0, Some((1 + col % 2) as f64 / 4.0));
                    }
                }
            }
        }
        // The fancy upsampling: 3/4 and 1/4 per axis, the edge replicated;
        // libjpeg's bias 8 (even columns) or 7 (odd) in 16.
        let taps = |r: usize, last: usize| {
            let r0 = r / 2;
            let r1 = if r % 2 == 0 { r0 as isize - 1 } else { r0 as isize + 1 };
            [(r0, 0.75), (r1.clamp(0, last as isize - 1) as usize, 0.25)]
        };
        let mut upsample = Affine::new();
        for img in 0..n {
            for (comp, pl) in planes.iter().enumerate() {
                for r in 0..h {
                    for col in 0..w {
                        let at = |a: usize, b: usize| img * per + pl.off + a * pl.cols + b;
                        if comp == 0 {
                            upsample.push(vec![(at(r, col), 1.0)], 0.0, None);
                            continue;
                        }
                        let mut row = Vec::new();
                        for (a, wa) in taps(r, hc) {
                            for (b, wb) in taps(col, wc) {
                                row.push((at(a, b), wa * wb));
                            }
                        }
                        upsample.push(row, -128.0, Some(if col % 2 == 0 { 0.5 } else { 7.0 / 16.0 }));
                    }
                }
            }
        }
        let table = |t: &[u16; 64]| scaled_table(t, quality).map(|v| v as f64);
        Reference {
            case,
            per,
            planes,
            tables: [table(&LUMINANCE), table(&CHROMINANCE)],
            subsample,
            upsample,
        }
    }

    /// Every plane sample's quantiser (coefficients stand where their block's samples do).
    fn quantisers(&self) -> Vec<f64> {
        let mut q = vec![0.0; self.case.n * self.per];
        for img in 0..self.case.n {
            for pl in &self.planes {
                for r in 0..pl.rows {
                    for c in 0..pl.cols {
                        q[img * self.per + pl.off + r * pl.cols + c] = self.tables[pl.table][(r % 8) * 8 + c % 8];
                    }
                }
            }
        }
        q
    }

    /// The blockwise orthonormal DCT (or its inverse, the transpose) of planes.
    fn blockwise(&self, src: &[f64], inverse: bool) -> Vec<f64> {
        let mut out = vec![0.0; src.len()];
        for img in 0..self.case.n {
            for pl in &self.planes {
                let at = |r: usize, c: usize| img * self.per + pl.off + r * pl.cols + c;
                for br in (0..pl.rows).step_by(8) {
                    for bc in (0..pl.cols).step_by(8) {
                        for a in 0..8 {
                            for b in 0..8 {
                                let mut acc = 0.0;
                                for y in 0..8 {
                                    for x in 0..8 {
                                        let wgt = if inverse {
                                            basis(y, a) * basis(x, b)
                                        } else {
                                            basis(a, y) * basis(b, x)
                                        };
                                        acc += wgt * src[at(br + y, bc + x)];
                                    }
                                }
                                out[at(br + a, bc + b)] = acc;
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Each pixel's three sample indices in [N, C, H, W] (grey: its one sample, thrice).
    fn pixels(&self) -> impl Iterator<Item = [usize; 3]> + '_ {
        let Case { n, c, h, w, .. } = self.case;
        let plane = h * w;
        (0..n * plane).map(move |i| {
            let (img, k) = (i / plane, i % plane);
            [0, 1, 2].map(|ch| (img * c + ch.min(c - 1)) * plane + k)
        })
    }

    fn forward(&self, x: &[f64], rounding: Rounding) -> Trace {
        let (exact, side) = match rounding {
            Rounding::Exact(s) => (true, s),
            Rounding::StandIn(s) => (false, s),
        };
        let c = self.case.c;
        let whole = |v: f64| if exact { (v + 0.5).floor() } else { v };
        // Levels -> level-shifted components, per pixel.
        let levels: Vec<f64> = x.iter().map(|v| whole((v + 1.0) * 127.5)).collect();
        let mut comps = vec![0.0; x.len()];
        for idx in self.pixels() {
            if c == 1 {
                comps[idx[0]] = levels[idx[0]] - 128.0;
                continue;
            }
            let rgb = idx.map(|i| levels[i]);
            for comp in 0..3 {
                let v: f64 = (0..3).map(|ch| TO_YCC[comp][ch] * rgb[ch]).sum();
                comps[idx[comp]] = match (comp, exact) {
                    (0, _) => whole(v) - 128.0,
                    (_, true) => (v + 32767.0 / 65536.0).floor(),
                    (_, false) => v,
                };
            }
        }
        let qs = self.quantisers();
        let quot: Vec<f64> = self
            .blockwise(&self.subsample.apply(&comps, exact), false)
            .iter()
            .zip(&qs)
            .map(|(&d, q)| {
                let d = if exact {
                    (8.0 * d + 0.5 + side * QUOT_MARGIN).floor() / 8.0
                } else {
                    d
                };
                d / q
            })
            .collect();
        let coef: Vec<f64> = quot
            .iter()
            .zip(&qs)
            .map(|(&v, q)| {
                let k = round_away(v, side);
                q * if exact { k } else { k + (v - k).powi(3) }
            })
            .collect();
        let dec: Vec<f64> = self
            .blockwise(&coef, true)
            .iter()
            .map(|v| {
                if exact {
                    (v + 128.5 + side * LEVEL_MARGIN).floor()
                } else {
                    v + 128.0
                }
            })
            .collect();
        let clamped: Vec<f64> = dec.iter().map(|v| v.clamp(0.0, 255.0)).collect();
        let up = self.upsample.apply(&clamped, exact);
        let mut rgb = up.clone();
        if c == 3 {
            for idx in self.pixels() {
                let [y, cb, cr] = idx.map(|i| up[i]);
                for ch in 0..3 {
                    rgb[idx[ch]] = y + whole(TO_RGB[ch][0] * cb + TO_RGB[ch][1] * cr);
                }
            }
        }
        let y = rgb.iter().map(|v| whole(v.clamp(0.0, 255.0)) / 127.5 - 1.0).collect();
        Trace { quot, dec, rgb, y }
    }

    /// J^T v of the stand-in forward at x (its rounding steps moved to `side`).
    fn vjp(&self, x: &[f64], v: &[f64], side: f64) -> Vec<f64> {
        let c = self.case.c;
        let t = self.forward(x, Rounding::StandIn(side));
        let inside = |v: f64| if (0.0..=255.0).contains(&v) { 1.0 } else { 0.0 };
        let g_rgb: Vec<f64> = v.iter().zip(&t.rgb).map(|(v, l)| v / 127.5 * inside(*l)).collect();
        let mut g_up = g_rgb.clone();
        if c == 3 {
            for idx in self.pixels() {
                let g = idx.map(|i| g_rgb[i]);
                g_up[idx[0]] = g.iter().sum();
                for comp in 1..3 {
                    g_up[idx[comp]] = (0..3).map(|ch| TO_RGB[ch][comp - 1] * g[ch]).sum();
                }
            }
        }
        let g_dec: Vec<f64> = self
            .upsample
            .transpose(&g_up, t.dec.len())
            .iter()
            .zip(&t.dec)
            .map(|(g, d)| g * inside(*d))
            .collect();
        let g_quot: Vec<f64> = self
            .blockwise(&g_dec, false)
            .iter()
            .zip(&t.quot)
            .map(|(g, &q)| {
                let f = q - round_away(q, side);
                g * 3.0 * f * f
            })
            .collect();
        let g_comps = self.subsample.transpose(&self.blockwise(&g_quot, true), x.len());
        let mut g_x = g_comps.clone();
        if c == 3 {
            for idx in self.pixels() {
                let g = idx.map(|i| g_comps[i]);
                for ch in 0..3 {
                    g_x[idx[ch]] = (0..3).map(|comp| TO_YCC[comp][ch] * g[comp]).sum();
                }
            }
        }
        g_x.iter().map(|g| 127.5 * g).collect()
    }
}

/// The operator, x and y tensors for `case`.
struct OnGpu {
    op: Jpeg,
    x: Tensor,
    y: Tensor,
}

fn on_gpu(case: Case, x: &[f32]) -> OnGpu {
    let gpu = gpu();
    let shape = [case.n, case.c, case.h, case.w];
    OnGpu {
        op: Jpeg::new(&gpu, [case.c, case.h, case.w], case.quality).unwrap(),
        x: Tensor::from_slice(&gpu, "x", &shape, x).unwrap(),
        y: Tensor::zeros(&gpu, "y", &shape).unwrap(),
    }
}

fn gpu_forward(g: &OnGpu) -> Vec<f32> {
    let gpu = gpu();
    g.op.forward(&gpu, &g.x, &g.y).unwrap().run(&gpu).unwrap();
    g.y.read(&gpu).unwrap()
}

fn gpu_vjp(g: &OnGpu, v: &[f32]) -> Vec<f32> {
    let gpu = gpu();
    let vt = Tensor::from_slice(&gpu, "v", &g.y.shape, v).unwrap();
    let out = Tensor::zeros(&gpu, "vjp", &g.x.shape).unwrap();
    g.op.vjp(&gpu, &g.x, &vt, &out).unwrap().run(&gpu).unwrap();
    out.read(&gpu).unwrap()
}

/// A picture in [-1, 1] that reaches past both clamps once compressed:
/// uniform noise over a ramp.
fn picture(case: Case, seed: u64) -> Vec<f32> {
    let numel = case.n * case.c * case.h * case.w;
    let noise = randn(&mut rng(seed), numel);
    (0..numel)
        .map(|i| {
            let ramp = (i % case.w) as f32 / case.w as f32 - 0.5;
            (1.6 * ramp + 0.35 * noise[i]).clamp(-1.0, 1.0)
        })
        .collect()
}

/// Compares `got` with `want(1)` where `want(1)` and `want(-1)` (the
/// reference with its rounding steps moved one way and the other) agree;
/// where they do not, a value hangs on a rounding that f32 error may tip, and
/// is left out. At most `max_sensitive` of them may be (a chroma coefficient
/// on a step reaches a 16 x 16 patch of every channel).
#[track_caller]
fn assert_close_away_from_ties(what: &str, got: &[f32], want: impl Fn(f64) -> Vec<f64>, tol: f64, max_sensitive: f64) {
    let (hi, lo) = (want(1.0), want(-1.0));
    assert_eq!(got.len(), hi.len(), "{what}");
    let mut sensitive = 0;
    for (i, ((&g, &a), &b)) in got.iter().zip(&hi).zip(&lo).enumerate() {
        if (a - b).abs() > tol {
            sensitive += 1;
            continue;
        }
        assert!(
            (g as f64 - a).abs() <= tol,
            "{what}: at {i} got {g}, want {a} (tol {tol})"
        );
    }
    let frac = sensitive as f64 / got.len() as f64;
    assert!(
        frac <= max_sensitive,
        "{what}: {frac:.4} of the values sit on a rounding tie"
    );
}

#[test]
fn quantisers_follow_libjpeg_quality_scaling() {
    // The first row of the luminance table as Pillow's JPEGs carry it.
    assert_eq!(
        scaled_table(&LUMINANCE, 10)[..8],
        [80.0, 55.0, 50.0, 80.0, 120.0, 200.0, 255.0, 255.0]
    );
    assert_eq!(
        scaled_table(&LUMINANCE, 50)[..8],
        [16.0, 11.0, 10.0, 16.0, 24.0, 40.0, 51.0, 61.0]
    );
    assert_eq!(
        scaled_table(&LUMINANCE, 90)[..8],
        [3.0, 2.0, 2.0, 3.0, 5.0, 8.0, 10.0, 12.0]
    );
    // 5000 / 30 = 166 (integer division): 17 x 166 / 100 = 28.72 -> 28.
    assert_eq!(scaled_table(&CHROMINANCE, 30)[0], 28.0);
    assert!(scaled_table(&LUMINANCE, 1).iter().all(|&v| v == 255.0));
    assert!(scaled_table(&CHROMINANCE, 100).iter().all(|&v| v == 1.0));
}

#[test]
fn forward_matches_libjpeg_as_pillow_writes_and_reads_it() {
    let f = TensorFile::open(fixture("jpeg/pillow.safetensors")).unwrap();
    let mut seen = 0;
    for name in ["grey32", "grey29x37", "rgb40x48", "rgb19x23"] {
        let input = f.get(&format!("{name}.input")).unwrap();
        let [c, h, w] = [input.shape[0], input.shape[1], input.shape[2]];
        let x: Vec<f32> = input.data.iter().map(|v| v / 127.5 - 1.0).collect();
        for q in [10, 50, 90] {
            let want = f.get(&format!("{name}.q{q}")).unwrap();
            let got = gpu_forward(&on_gpu(case(1, c, h, w, q), &x));
            let mad = got
                .iter()
                .zip(&want.data)
                .map(|(y, p)| ((y + 1.0) * 127.5 - p).abs() as f64)
                .sum::<f64>()
                / got.len() as f64;
            let limit = if c == 1 { 0.5 } else { 2.5 };
            eprintln!("{name} q{q}: mean |tweedie - Pillow| {mad:.3} levels");
            assert!(
                mad <= limit,
                "{name} q{q}: mean |tweedie - Pillow| {mad:.3} levels, over {limit}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 12);
}

#[test]
fn forward_matches_the_f64_reference() {
    for (i, &case) in CASES.iter().enumerate() {
        let r = Reference::new(case);
        let x = picture(case, 10 + i as u64);
        let got = gpu_forward(&on_gpu(case, &x));
        let xd = f64s(&x);
        // Outputs are whole levels: equal, bar f32 rounding of the map back to [-1, 1].
        assert_close_away_from_ties(
            &format!("case {i} {case:?} forward"),
            &got,
            |s| r.forward(&xd, Rounding::Exact(s)).y,
            1e-5,
            0.1,
        );
    }
}

#[test]
fn reference_vjp_matches_finite_differences_of_the_stand_in() {
    // <v, (F(x + h d) - F(x - h d)) / 2h> = <J^T v, d> for the stand-in forward F.
    for (i, &case) in CASES.iter().enumerate() {
        let r = Reference::new(case);
        let mut g = rng(30 + i as u64);
        let x = f64s(&picture(case, 20 + i as u64));
        let v = f64s(&randn(&mut g, x.len()));
        let d = f64s(&randn(&mut g, x.len()));
        let h = 1e-7;
        let at = |s: f64| {
            let xs: Vec<f64> = x.iter().zip(&d).map(|(x, d)| x + s * d).collect();
            dot(&v, &r.forward(&xs, Rounding::StandIn(0.0)).y)
        };
        let fd = (at(h) - at(-h)) / (2.0 * h);
        let an = dot(&r.vjp(&x, &v, 0.0), &d);
        // Quality 10 quantises most coefficients far from a step, where the
        // stand-in is flat; still, the slope must not vanish altogether.
        assert!(an.abs() > 0.1, "case {i}: a VJP this small tests nothing ({an})");
        assert!((fd - an).abs() <= 1e-5 * an.abs(), "case {i}: fd {fd} vs vjp {an}");
    }
}

#[test]
fn gpu_vjp_matches_the_f64_reference() {
    for (i, &case) in CASES.iter().enumerate() {
        let r = Reference::new(case);
        let x = picture(case, 40 + i as u64);
        let v = randn(&mut rng(50 + i as u64), x.len());
        let g = on_gpu(case, &x);
        let got = gpu_vjp(&g, &v);
        let (xd, vd) = (f64s(&x), f64s(&v));
        let scale = r.vjp(&xd, &vd, 0.0).iter().fold(0f64, |m, v| m.max(v.abs()));
        assert_close_away_from_ties(
            &format!("case {i} {case:?} vjp"),
            &got,
            |s| r.vjp(&xd, &vd, s),
            5e-4 * scale,
            0.1,
        );
    }
}

#[test]
fn refuses_bad_quality_and_channels() {
    let gpu = gpu();
    for q in [0, 101] {
        let e = Jpeg::new(&gpu, [1, 8, 8], q).err().expect("refused").to_string();
        assert!(e.contains(&format!("--quality {q} must be between 1 and 100")), "{e}");
    }
    let e = Jpeg::new(&gpu, [2, 8, 8], 50).err().expect("refused").to_string();
    assert!(e.contains("grey (1 channel) or RGB (3)"), "{e}");
}

#[test]
fn baseline_is_the_decoded_jpeg() {
    let gpu = gpu();
    let case = CASES[2];
    let g = on_gpu(case, &picture(case, 60));
    let y = gpu_forward(&g);
    let b = tweedie::restore::baseline(&gpu, &g.op, &y).unwrap();
    assert_eq!(b.x, y);
    assert!(b.label.contains("decoded JPEG"), "{}", b.label);
}
