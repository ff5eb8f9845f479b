//! Device-free: every uniform struct a WGSL shader reads has a `#[repr(C)]`
//! Rust twin with the same size, the same (non-padding) field names in the
//! same order, and the same byte offsets. The WGSL side is read with naga, so
//! the offsets are the ones the shader compiler uses.
//!
//! Adding or changing a uniform struct is one line in `TWINS` below. Fields
//! whose names start with `_` are padding: they are not named in the table
//! (Rust may spell them as an array, WGSL as single fields), but the sizes
//! must still agree.

use std::mem::{offset_of, size_of};

use tweedie::gpu::{Shader, ALL_SHADERS};

/// One Rust twin: the shader, the WGSL struct name, the Rust type's name and
/// size, and its named fields with their offsets.
struct Twin {
    shader: &'static Shader,
    wgsl: &'static str,
    rust: &'static str,
    size: usize,
    fields: Vec<(&'static str, usize)>,
}

/// `twin!(SHADER, "WgslStruct" => path::RustStruct { field, field, ... })`:
/// list the Rust fields in declaration order, padding left out.
macro_rules! twin {
    ($shader:expr, $wgsl:literal => $rust:ty { $($field:ident),* $(,)? }) => {
        Twin {
            shader: &$shader,
            wgsl: $wgsl,
            rust: stringify!($rust),
            size: size_of::<$rust>(),
            fields: vec![$((stringify!($field), offset_of!($rust, $field))),*],
        }
    };
}

fn twins() -> Vec<Twin> {
    use tweedie::gpu::*;
    use tweedie::kernels::*;
    use tweedie::operators::dense::DenseParams;
    use tweedie::samplers::{cg::CgParams, score::GmmParams, StepParams};
    let mut v = vec![
        twin!(ELEMENTWISE, "Params" => elementwise::ElementwiseParams { n, per, a, b }),
        twin!(REDUCE, "Params" => reduce::ReduceParams { per, chunks, take_sqrt }),
        twin!(RANDOM, "Params" => random::NoiseParams { n, seed_lo, seed_hi, stream, mean, sigma }),
        twin!(CONV_REFLECT, "Params" => conv_reflect::ConvParams { planes, h, w, kh, kw, rh, rw, ntaps }),
        twin!(AXIS_MATMUL, "Params" => axis_matmul::AxisParams { outer, k, q, inner, transpose }),
        twin!(MASK, "Params" => mask::MaskParams { n, per }),
        twin!(COLORIZE, "Params" => colorize::ColorizeParams { batch, hw, channels, scale }),
        twin!(FFT, "Params" => fft::FftParams { n, radix, ns, inner, total, inverse, shift_in, shift_out, scale }),
        twin!(PHASE, "Params" => phase::PhaseParams { n, h, w, ph, pw, pad_h, pad_w, keep, beta }),
        twin!(EMBED, "Params" => embed::EmbedParams { images, samples, per, rows }),
        twin!(JPEG, "Params" => jpeg::JpegParams { n, c, h, w, h8, w8, hc, wc, hc8, wc8, per, exact }),
    ];
    // The SIMT and the cooperative-matrix conv2d shaders read the same structs.
    for shader in [&CONV2D, &CONV2D_COOP] {
        v.push(twin!(*shader, "Params" => conv2d::Conv2dParams {
            n, cin, h, w, cout, ho, wo, ks, stride, pad_top, pad_left, w_off, b_off, res_mode, res_off,
            res_stride, out_scale, k_split, splits
        }));
        v.push(twin!(*shader, "BwdDataParams" => conv2d::Conv2dBwdDataParams {
            n, cin, h, w, cout, ho, wo, ks, stride, pad_top, pad_left, w_off, accumulate, scale, k_split,
            splits, stride_shift
        }));
    }
    v.extend([
        twin!(GROUPNORM, "Params" => groupnorm::GroupNormParams {
            n, c, hw, groups, eps, silu, scale_shift, gamma_off, beta_off, ss_off, chunk_len, chunks, accumulate
        }),
        twin!(LINEAR, "Params" => linear::LinearParams { n, din, dout, silu_in, silu_out, w_off, b_off, x_off }),
        twin!(ATTENTION, "Params" => attention::AttentionParams {
            n, heads, ch, t, order, scale_q, scale_k, accumulate
        }),
        twin!(RESAMPLE, "Params" => resample::ResampleParams { n, c, h, w, ho, wo, c_total, c_off, accumulate }),
        twin!(TIMESTEP, "Params" => timestep::TimestepParams { n, dim, half, cos_first }),
        twin!(DENSE, "Params" => DenseParams { rows, cols, batch }),
        twin!(GMM, "Params" => GmmParams { batch, d, k, steps, flow }),
        twin!(CG, "Params" => CgParams { per, chunks, batch, tol2, gamma }),
        twin!(SAMPLER, "Step" => StepParams {
            n, per, m_per, flags, a_t, b_t, coef1, coef2, log_var_min, log_var_max, log_var_fixed, guide,
            guide2, resid_scale, x0_x, x0_out, eps_x, eps_out, method
        }),
        twin!(SMC, "Smc" => smc::SmcParams { particles, populations, force, weighing, threshold, u }),
        twin!(SMC, "Gather" => smc::GatherParams { per, total }),
        twin!(SMC, "Rows" => smc::RowsParams { rows, per, square }),
    ]);
    v
}

fn parse(shader: &Shader) -> naga::Module {
    naga::front::wgsl::parse_str(shader.source)
        .unwrap_or_else(|e| panic!("{}.wgsl: {}", shader.name, e.emit_to_string(shader.source)))
}

/// A WGSL struct as naga lays it out.
struct WgslStruct {
    name: String,
    /// (member name, byte offset), in declaration order.
    members: Vec<(String, u32)>,
    /// Size in bytes.
    span: u32,
}

/// Every struct bound as `var<uniform>` in the module, once each.
fn uniform_structs(module: &naga::Module) -> Vec<WgslStruct> {
    let mut out: Vec<WgslStruct> = Vec::new();
    for (_, var) in module.global_variables.iter() {
        if var.space != naga::AddressSpace::Uniform {
            continue;
        }
        let ty = &module.types[var.ty];
        if let naga::TypeInner::Struct { members, span } = &ty.inner {
            let name = ty.name.clone().unwrap_or_default();
            if out.iter().any(|w| w.name == name) {
                continue;
            }
            let members = members
                .iter()
                .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
                .collect();
            out.push(WgslStruct {
                name,
                members,
                span: *span,
            });
        }
    }
    out
}

/// Compares one twin against its shader; returns readable mismatches.
fn check(t: &Twin) -> Vec<String> {
    let module = parse(t.shader);
    let structs = uniform_structs(&module);
    let Some(WgslStruct { members, span, .. }) = structs.iter().find(|w| w.name == t.wgsl) else {
        return vec![format!(
            "{}.wgsl has no uniform struct `{}` (twin of {})",
            t.shader.name, t.wgsl, t.rust
        )];
    };
    let mut errs = Vec::new();
    let tag = format!("{}.wgsl `{}` vs Rust `{}`", t.shader.name, t.wgsl, t.rust);
    if *span as usize != t.size {
        errs.push(format!("{tag}: size differs: WGSL {span} bytes, Rust {} bytes", t.size));
    }
    let named: Vec<&(String, u32)> = members.iter().filter(|(n, _)| !n.starts_with('_')).collect();
    let wgsl_names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let rust_names: Vec<&str> = t.fields.iter().map(|(n, _)| *n).collect();
    if wgsl_names != rust_names {
        errs.push(format!(
            "{tag}: field names differ\n  WGSL: {wgsl_names:?}\n  Rust: {rust_names:?}"
        ));
    }
    for (name, rust_off) in &t.fields {
        match named.iter().find(|(n, _)| n == name) {
            Some((_, wgsl_off)) if *wgsl_off as usize != *rust_off => errs.push(format!(
                "{tag}: field `{name}` at offset {wgsl_off} in WGSL but {rust_off} in Rust"
            )),
            Some(_) => {}
            None => errs.push(format!("{tag}: Rust field `{name}` has no WGSL member")),
        }
    }
    errs
}

#[test]
fn uniform_structs_match_their_rust_twins() {
    let errs: Vec<String> = twins().iter().flat_map(check).collect();
    assert!(errs.is_empty(), "uniform layout mismatches:\n{}", errs.join("\n"));
}

/// Every uniform struct of every embedded shader is in the table, so a new
/// kernel cannot skip the layout check.
#[test]
fn every_uniform_struct_has_a_twin() {
    let twins = twins();
    let mut missing = Vec::new();
    for shader in ALL_SHADERS {
        for WgslStruct { name, .. } in uniform_structs(&parse(shader)) {
            if !twins.iter().any(|t| t.shader.name == shader.name && t.wgsl == name) {
                missing.push(format!("{}.wgsl `{name}`", shader.name));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "uniform structs without a Rust twin in tests/layout.rs: {missing:?}"
    );
}

/// The checker itself: a twin with a wrong offset, a wrong name order or a
/// wrong size is reported with the struct, the field and both offsets.
#[test]
fn checker_reports_mismatches() {
    let t = Twin {
        shader: &tweedie::gpu::ELEMENTWISE,
        wgsl: "Params",
        rust: "Fake",
        size: 20,
        fields: vec![("n", 0), ("a", 4), ("per", 8), ("b", 12)],
    };
    let errs = check(&t).join("\n");
    assert!(errs.contains("size differs: WGSL 16 bytes, Rust 20 bytes"), "{errs}");
    assert!(errs.contains("field names differ"), "{errs}");
    assert!(errs.contains("field `a` at offset 8 in WGSL but 4 in Rust"), "{errs}");
    assert!(errs.contains("elementwise.wgsl `Params` vs Rust `Fake`"), "{errs}");
}

/// The value of a WGSL `const` or the default of an `override` (integer or
/// float), as f64.
fn wgsl_value(module: &naga::Module, name: &str) -> Option<f64> {
    let lit = |h: naga::Handle<naga::Expression>| match module.global_expressions[h] {
        naga::Expression::Literal(l) => match l {
            naga::Literal::U32(v) => Some(v as f64),
            naga::Literal::I32(v) => Some(v as f64),
            naga::Literal::F32(v) => Some(v as f64),
            naga::Literal::AbstractInt(v) => Some(v as f64),
            naga::Literal::AbstractFloat(v) => Some(v),
            _ => None,
        },
        _ => None,
    };
    if let Some((_, c)) = module.constants.iter().find(|(_, c)| c.name.as_deref() == Some(name)) {
        return lit(c.init);
    }
    let (_, o) = module.overrides.iter().find(|(_, o)| o.name.as_deref() == Some(name))?;
    lit(o.init?)
}

/// Rust constants and the WGSL `const`s / `override` defaults they mirror:
/// `(SHADER, "WGSL_NAME", rust value)`, one line each.
fn mirrored_constants() -> Vec<(&'static Shader, &'static str, f64)> {
    use tweedie::gpu::*;
    use tweedie::kernels::*;
    use tweedie::samplers::cg;
    let mut v: Vec<(&'static Shader, &'static str, f64)> = Vec::new();
    // The one-dimensional kernels' workgroup sizes.
    for shader in [
        &ELEMENTWISE,
        &REDUCE,
        &RANDOM,
        &DENSE,
        &GMM,
        &CG,
        &SAMPLER,
        &CONV_REFLECT,
        &AXIS_MATMUL,
        &MASK,
        &COLORIZE,
        &FFT,
    ] {
        v.push((shader, "WG", WG1D as f64));
    }
    for shader in [&GMM, &CG, &GROUPNORM] {
        v.push((shader, "WG_SMALL", WG_SMALL as f64));
    }
    // `module::NAME` mirrored under the same name in the shader.
    macro_rules! same_name {
        ($($shader:ident: $module:ident::{$($name:ident),*};)*) => {
            $($(v.push((&$shader, stringify!($name), $module::$name as f64));)*)*
        };
    }
    same_name! {
        REDUCE: reduce::{CHUNK};
        CG: cg::{CHUNK, STATE};
        SMC: smc::{WG, STATS, STAT_ESS, STAT_RESAMPLED, STAT_ESS_SUM, STAT_EVENTS};
        GROUPNORM: groupnorm::{WG};
        LINEAR: linear::{WG};
        ATTENTION: attention::{WG, BLOCK};
        RESAMPLE: resample::{WG};
        TIMESTEP: timestep::{WG};
        CONV2D: conv2d::{MAX_TILE, MAX_LD, MAX_ACC};
        CONV2D_COOP: conv_coop::{TM, TN, TK, WG};
    }
    v.push((&CONV2D, "WG1", conv2d::WG_FIXUP as f64));
    // The conv2d shader's default tiling is the medium one.
    let medium = conv2d::ConvTiles::MEDIUM;
    for (name, value) in [
        ("RM", medium.rm),
        ("RN", medium.rn),
        ("WG_M", medium.wg_m),
        ("WG_N", medium.wg_n),
        ("TK", medium.tk),
    ] {
        v.push((&CONV2D, name, value as f64));
    }
    // CG's per-sample state slots: `S_<FIELD>` is the field's f32 index.
    macro_rules! slots {
        ($($field:ident => $wgsl:literal),*) => {
            $(v.push((&CG, $wgsl, (std::mem::offset_of!(cg::CgState, $field) / 4) as f64));)*
        };
    }
    slots!(rr => "S_RR", bb => "S_BB", active => "S_ACTIVE", iters => "S_ITERS", total => "S_TOTAL", solves => "S_SOLVES");
    v
}

#[test]
fn wgsl_constants_match_rust() {
    let mut errs = Vec::new();
    for (shader, name, want) in mirrored_constants() {
        match wgsl_value(&parse(shader), name) {
            Some(got) if got == want => {}
            Some(got) => errs.push(format!("{}.wgsl `{name}` = {got}, Rust mirror = {want}", shader.name)),
            None => errs.push(format!("{}.wgsl has no const/override `{name}`", shader.name)),
        }
    }
    assert!(
        errs.is_empty(),
        "WGSL constants out of step with Rust:\n{}",
        errs.join("\n")
    );
}
