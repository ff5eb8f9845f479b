//! Device-free: every embedded shader parses and validates with naga, in
//! every element type it is instantiated for, and translates to SPIR-V (the
//! cooperative-matrix kernel included, though lavapipe cannot run it).

use tweedie::tensor::DType;

fn instances() -> Vec<tweedie::gpu::Shader> {
    tweedie::gpu::ALL_SHADERS
        .iter()
        .flat_map(|s| {
            let mut v = vec![s.typed(DType::F32)];
            if s.is_generic() {
                v.push(s.typed(DType::F16));
            }
            v
        })
        .collect()
}

fn validate(s: &tweedie::gpu::Shader) -> (naga::Module, naga::valid::ModuleInfo) {
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

/// SPIR-V words of a shader with its overrides at their defaults.
fn spirv(s: &tweedie::gpu::Shader) -> Vec<u32> {
    let (module, info) = validate(s);
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &Default::default())
        .unwrap_or_else(|e| panic!("{}.wgsl ({:?}) overrides: {e}", s.name, s.dtype));
    naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None)
        .unwrap_or_else(|e| panic!("{}.wgsl ({:?}) to SPIR-V: {e}", s.name, s.dtype))
}

#[test]
fn every_shader_translates_to_spirv() {
    for s in instances() {
        assert_eq!(spirv(&s)[0], 0x0723_0203, "{}: SPIR-V magic", s.name);
    }
}

#[test]
fn the_cooperative_kernel_uses_cooperative_matrices() {
    let words = spirv(&tweedie::gpu::CONV2D_COOP.typed(DType::F16));
    // OpCooperativeMatrixMulAddKHR (opcode 4459) appears in both entry points' code.
    let mul_adds = words.iter().filter(|&&w| w & 0xffff == 4459).count();
    assert!(
        mul_adds >= 4,
        "expected cooperative multiply-adds in the SPIR-V, found {mul_adds}"
    );
}
