//! Device-free: every embedded shader instance (each kernel, in every element
//! type it is instantiated for, in each variant) parses and validates with
//! naga and translates to SPIR-V, MSL and HLSL (the cooperative-matrix kernel
//! included, though lavapipe cannot run it).

use tweedie::gpu::{Shader, ALL_SHADERS, CONV2D_COOP};
use tweedie::tensor::DType;

fn instances() -> Vec<Shader> {
    ALL_SHADERS
        .iter()
        .flat_map(|s| {
            let variants = s.variants();
            let variants = if variants.is_empty() {
                vec![**s]
            } else {
                variants.iter().map(|v| s.variant(v)).collect()
            };
            variants.into_iter().flat_map(|v| {
                let mut out = vec![v.typed(DType::F32)];
                if v.is_generic() {
                    out.push(v.typed(DType::F16));
                }
                out
            })
        })
        .collect()
}

fn validate(s: &Shader) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = s.wgsl();
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{}.wgsl ({:?}): {}", s.name, s.dtype, e.emit_to_string(&src)));
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}.wgsl ({:?}): {:?}", s.name, s.dtype, e));
    (module, info)
}

#[test]
fn every_shader_validates() {
    for s in instances() {
        validate(&s);
    }
}

/// The module and info of a shader with its overrides at their defaults.
fn processed(s: &Shader) -> (naga::Module, naga::valid::ModuleInfo) {
    let (module, info) = validate(s);
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &Default::default())
        .unwrap_or_else(|e| panic!("{}.wgsl ({:?}) overrides: {e}", s.name, s.dtype));
    (module.into_owned(), info.into_owned())
}

/// SPIR-V words of a shader with its overrides at their defaults.
fn spirv(s: &Shader) -> Vec<u32> {
    let (module, info) = processed(s);
    naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None)
        .unwrap_or_else(|e| panic!("{}.wgsl ({:?}) to SPIR-V: {e}", s.name, s.dtype))
}

#[test]
fn every_shader_translates_to_spirv() {
    for s in instances() {
        assert_eq!(spirv(&s)[0], 0x0723_0203, "{}: SPIR-V magic", s.name);
    }
}

fn msl(s: &Shader) -> Result<String, String> {
    let (module, info) = processed(s);
    let options = naga::back::msl::Options {
        // Metal 2.3: simdgroup matrices and the subgroup builtins.
        lang_version: (2, 3),
        ..Default::default()
    };
    naga::back::msl::write_string(&module, &info, &options, &Default::default())
        .map(|(text, _)| text)
        .map_err(|e| e.to_string())
}

fn hlsl(s: &Shader) -> Result<String, String> {
    let (module, info) = processed(s);
    let options = naga::back::hlsl::Options {
        // 6.2: 16-bit types and wave intrinsics.
        shader_model: naga::back::hlsl::ShaderModel::V6_2,
        ..Default::default()
    };
    let mut text = String::new();
    naga::back::hlsl::Writer::new(&mut text, &options, &Default::default())
        .write(&module, &info, None)
        .map(|_| text)
        .map_err(|e| e.to_string())
}

/// Whether the instance's module has cooperative-matrix types.
fn uses_cooperative_matrices(s: &Shader) -> bool {
    let (module, _) = validate(s);
    let found = module
        .types
        .iter()
        .any(|(_, t)| matches!(t.inner, naga::TypeInner::CooperativeMatrix { .. }));
    found
}

/// Instances a back end cannot translate, with the reason. Each is checked
/// to still fail (so a naga that learns them makes this list shrink), and
/// any other instance that fails fails the test.
const HLSL_CANNOT: &[(&str, &str)] = &[(
    "conv2d_coop",
    "naga 30's HLSL writer has no cooperative matrices (its CooperativeStore arm is unimplemented!)",
)];

#[test]
fn every_shader_translates_to_msl() {
    for s in instances() {
        let text = msl(&s).unwrap_or_else(|e| panic!("{}.wgsl ({:?}) to MSL: {e}", s.name, s.dtype));
        assert!(
            text.contains("kernel void"),
            "{}: no compute entry point in the MSL",
            s.name
        );
        if uses_cooperative_matrices(&s) {
            assert!(
                text.contains("simdgroup_"),
                "{}: cooperative matrices as simdgroup matrices",
                s.name
            );
        }
    }
}

#[test]
fn every_shader_translates_to_hlsl() {
    let mut skipped = Vec::new();
    for s in instances() {
        if let Some((_, why)) = HLSL_CANNOT.iter().find(|(name, _)| *name == s.name) {
            assert!(
                uses_cooperative_matrices(&s),
                "{} is skipped for HLSL ({why}) but has no cooperative matrices",
                s.name
            );
            // naga panics (unimplemented!) or errors; either way it must not translate.
            let result = std::panic::catch_unwind(|| hlsl(&s));
            assert!(
                !matches!(result, Ok(Ok(_))),
                "{}.wgsl ({:?}) now translates to HLSL: drop it from HLSL_CANNOT",
                s.name,
                s.dtype
            );
            skipped.push(s.name);
            continue;
        }
        let text = hlsl(&s).unwrap_or_else(|e| panic!("{}.wgsl ({:?}) to HLSL: {e}", s.name, s.dtype));
        assert!(
            text.contains("[numthreads("),
            "{}: no compute entry point in the HLSL",
            s.name
        );
    }
    // Both element types of the real cooperative kernel, nothing else.
    assert_eq!(skipped, ["conv2d_coop", "conv2d_coop"]);
}

#[test]
fn the_cooperative_kernel_uses_cooperative_matrices() {
    let words = spirv(&CONV2D_COOP.typed(DType::F16));
    // OpCooperativeMatrixMulAddKHR (opcode 4459) appears in both entry points' code.
    let mul_adds = words.iter().filter(|&&w| w & 0xffff == 4459).count();
    assert!(
        mul_adds >= 4,
        "expected cooperative multiply-adds in the SPIR-V, found {mul_adds}"
    );
}

/// The variants of the cooperative kernel: the default is the tensor-core
/// kernel, and the emulated instance is the same file with no cooperative
/// matrix or subgroup builtin left, named apart for the module caches.
#[test]
fn the_cooperative_kernel_has_an_emulated_variant() {
    assert_eq!(CONV2D_COOP.variants(), ["tensor_cores", "emulated"]);
    assert_eq!(CONV2D_COOP.variant("tensor_cores").source, CONV2D_COOP.source);
    assert!(CONV2D_COOP.source.contains("@builtin(subgroup_id)"));
    assert!(CONV2D_COOP.source.contains("@builtin(num_subgroups)"));
    let directive = |src: &str| src.lines().any(|l| l.trim_start().starts_with("//!"));
    assert!(!directive(CONV2D_COOP.source), "the default instance is fully expanded");
    let emu = CONV2D_COOP.variant("emulated").typed(DType::F16);
    assert_eq!(emu.name, "conv2d_coop[emulated]");
    assert_eq!(emu.dtype, DType::F16);
    let src = emu.wgsl();
    let code: String = src.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
    for gone in [
        "coop_mat",
        "coopLoad",
        "coopStore",
        "coopMultiplyAdd(",
        "wgpu_cooperative_matrix",
        "subgroup_id",
    ] {
        assert!(!code.contains(gone), "the emulated instance still has `{gone}`");
    }
    assert!(!directive(&src), "the emulated instance is fully expanded");
    assert!(!uses_cooperative_matrices(&emu));
    // The SIMT kernel and the cooperative one share conv_common.wgsl.
    let common = tweedie::gpu::LIBRARIES
        .iter()
        .find(|(n, _)| *n == "conv_common")
        .unwrap()
        .1;
    assert!(tweedie::gpu::CONV2D.source.contains(common) && CONV2D_COOP.source.contains(common));
}

#[test]
#[should_panic(expected = "has no variant \"fast\"")]
fn an_unknown_variant_is_refused() {
    CONV2D_COOP.variant("fast");
}
