// Dense layer y[n, o] = act_out( sum_k W[o, k] act_in(x[n, k]) + b[o] ), W [dout, din]
// row-major (PyTorch's Linear layout); act = SiLU where flagged. One thread per
// output: the time-embedding MLPs this serves are a few hundred wide.

// Tensor and weight storage type: f32 as written; `Shader::typed` makes the
// f16 instance (the dot products run in f32).
alias T = f32;

struct Params {
    n: u32,
    din: u32,
    dout: u32,
    silu_in: u32,
    silu_out: u32,
    w_off: u32,
    b_off: u32,
    x_off: u32,
}

override WG: u32 = 64u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

@compute @workgroup_size(WG)
fn linear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.dout) {
        return;
    }
    let n = i / p.dout;
    let o = i - n * p.dout;
    var s = 0.0;
    for (var k = 0u; k < p.din; k++) {
        var v = f32(x[p.x_off + n * p.din + k]);
        if (p.silu_in == 1u) {
            v = silu(v);
        }
        s = fma(f32(wt[p.w_off + o * p.din + k]), v, s);
    }
    var r = s + f32(bias[p.b_off + o]);
    if (p.silu_out == 1u) {
        r = silu(r);
    }
    y[i] = T(r);
}
