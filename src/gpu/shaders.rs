//! The one place shaders are embedded: binaries and tests never read WGSL from
//! the working directory. A kernel's Rust wrapper in `src/kernels/<name>.rs`
//! and its WGSL in `shaders/<name>.wgsl` share the name.

//!
//! Element-type generic kernels declare their scalar type as the alias line
//! [`ALIAS_F32`] (`alias T = f32;`) and use `T` for their tensor data; such a
//! shader is instantiated for another [`DType`] with [`Shader::typed`], which
//! rewrites that line (and enables the `f16` extension) when the module is
//! built. The GPU context caches one module per (shader, dtype).

use std::borrow::Cow;

use super::DType;

/// The line an element-type generic shader declares its scalar type with.
pub const ALIAS_F32: &str = "alias T = f32;";

/// A WGSL source file compiled into the binary, instantiated for one element
/// type (f32 for every shader as written).
#[derive(Debug, Clone, Copy)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    pub dtype: DType,
}

impl Shader {
    /// A shader from WGSL text, as written (f32).
    pub const fn new(name: &'static str, source: &'static str) -> Shader {
        Shader {
            name,
            source,
            dtype: DType::F32,
        }
    }

    /// Whether the source is written against the alias `T` ([`ALIAS_F32`]).
    pub fn is_generic(&self) -> bool {
        self.source.lines().any(|l| l.trim() == ALIAS_F32)
    }

    /// This shader instantiated for `dtype`. Panics for a non-generic shader
    /// and any dtype but f32.
    pub fn typed(&self, dtype: DType) -> Shader {
        assert!(
            dtype == DType::F32 || self.is_generic(),
            "{}.wgsl has no `{ALIAS_F32}` line and cannot run on {dtype:?}",
            self.name
        );
        Shader { dtype, ..*self }
    }

    /// The WGSL text for this instance: the source itself for f32, otherwise
    /// the alias line rewritten (with `enable f16;` first for f16).
    pub fn wgsl(&self) -> Cow<'static, str> {
        match self.dtype {
            DType::F32 => Cow::Borrowed(self.source),
            dtype => {
                let alias = format!("alias T = {};", dtype.wgsl());
                let body = self.source.replacen(ALIAS_F32, &alias, 1);
                Cow::Owned(match dtype {
                    DType::F16 if body.contains("enable f16;") => body,
                    DType::F16 => format!("enable f16;\n{body}"),
                    DType::F32 => body,
                })
            }
        }
    }
}

macro_rules! shaders {
    ($($ident:ident => $file:literal),* $(,)?) => {
        $(pub const $ident: Shader = Shader::new($file, include_str!(concat!("../../shaders/", $file, ".wgsl")));)*
        /// Every shader, for the device-free naga validation test.
        pub const ALL_SHADERS: &[&Shader] = &[$(&$ident),*];
    };
}

shaders! {
    ELEMENTWISE => "elementwise",
    REDUCE => "reduce",
    RANDOM => "random",
    CONV_REFLECT => "conv_reflect",
    AXIS_MATMUL => "axis_matmul",
    MASK => "mask",
    COLORIZE => "colorize",
    CONV2D => "conv2d",
    CONV2D_COOP => "conv2d_coop",
    GROUPNORM => "groupnorm",
    LINEAR => "linear",
    ATTENTION => "attention",
    RESAMPLE => "resample",
    TIMESTEP => "timestep",
    DENSE => "dense",
    GMM => "gmm",
    CG => "cg",
    SAMPLER => "sampler",
    SMC => "smc",
}
