//! The one place shaders are embedded: binaries and tests never read WGSL from
//! the working directory. A kernel's Rust wrapper in `src/kernels/<name>.rs`
//! and its WGSL in `shaders/<name>.wgsl` share the name.

/// A WGSL source file compiled into the binary.
#[derive(Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shaders {
    ($($ident:ident => $file:literal),* $(,)?) => {
        $(pub const $ident: Shader = Shader { name: $file, source: include_str!(concat!("../../shaders/", $file, ".wgsl")) };)*
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
