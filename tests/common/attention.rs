//! The f64 reference of multi-head self-attention over a packed qkv tensor
//! and its gradient, shared by the kernel tests.

use tweedie::kernels::attention::AttentionShape;

/// y = softmax(scale_q q^T scale_k k) v per head in f64: the forward reference.
pub fn attention_f64(s: &AttentionShape, qkv: &[f64]) -> Vec<f64> {
    let c_all = s.heads * s.ch;
    let mut y = vec![0f64; s.n * c_all * s.t];
    for n in 0..s.n {
        for h in 0..s.heads {
            let (qc, kc, vc) = heads_bases(s, n, h);
            for t in 0..s.t {
                let p = attention_row(s, qkv, qc, kc, t);
                for c in 0..s.ch {
                    y[(n * c_all + h * s.ch + c) * s.t + t] = (0..s.t).map(|u| p[u] * qkv[(vc + c) * s.t + u]).sum();
                }
            }
        }
    }
    y
}

/// Channel offsets of head h's q, k and v in sample n of the qkv tensor, in
/// either head order.
fn heads_bases(s: &AttentionShape, n: usize, h: usize) -> (usize, usize, usize) {
    let c_all = s.heads * s.ch;
    let base = n * 3 * c_all;
    if s.split_order {
        (base + h * s.ch, base + c_all + h * s.ch, base + 2 * c_all + h * s.ch)
    } else {
        (
            base + 3 * h * s.ch,
            base + 3 * h * s.ch + s.ch,
            base + 3 * h * s.ch + 2 * s.ch,
        )
    }
}

/// The softmax probabilities of query token t over all keys.
fn attention_row(s: &AttentionShape, qkv: &[f64], qc: usize, kc: usize, t: usize) -> Vec<f64> {
    let (sq, sk) = (s.scale_q as f64, s.scale_k as f64);
    let sc: Vec<f64> = (0..s.t)
        .map(|u| {
            (0..s.ch)
                .map(|c| sq * qkv[(qc + c) * s.t + t] * sk * qkv[(kc + c) * s.t + u])
                .sum()
        })
        .collect();
    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = sc.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}

/// d qkv of [`attention_f64`] for output gradient dy.
pub fn attention_bwd_f64(s: &AttentionShape, qkv: &[f64], dy: &[f64]) -> Vec<f64> {
    let c_all = s.heads * s.ch;
    let (sq, sk) = (s.scale_q as f64, s.scale_k as f64);
    let mut d = vec![0f64; qkv.len()];
    for n in 0..s.n {
        for h in 0..s.heads {
            let (qc, kc, vc) = heads_bases(s, n, h);
            let ob = (n * c_all + h * s.ch) * s.t;
            for t in 0..s.t {
                let p = attention_row(s, qkv, qc, kc, t);
                let dp: Vec<f64> = (0..s.t)
                    .map(|u| (0..s.ch).map(|c| dy[ob + c * s.t + t] * qkv[(vc + c) * s.t + u]).sum())
                    .collect();
                let dd: f64 = (0..s.t).map(|u| p[u] * dp[u]).sum();
                for u in 0..s.t {
                    let ds = p[u] * (dp[u] - dd);
                    for c in 0..s.ch {
                        d[(qc + c) * s.t + t] += sq * sk * ds * qkv[(kc + c) * s.t + u];
                        d[(kc + c) * s.t + u] += sq * sk * ds * qkv[(qc + c) * s.t + t];
                        d[(vc + c) * s.t + u] += p[u] * dy[ob + c * s.t + t];
                    }
                }
            }
        }
    }
    d
}
