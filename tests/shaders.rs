//! Device-free: every embedded shader parses and validates with naga.

#[test]
fn every_shader_validates() {
    for s in tweedie::gpu::ALL_SHADERS {
        let module = naga::front::wgsl::parse_str(s.source)
            .unwrap_or_else(|e| panic!("{}.wgsl: {}", s.name, e.emit_to_string(s.source)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}.wgsl: {:?}", s.name, e));
    }
}
