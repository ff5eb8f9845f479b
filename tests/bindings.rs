//! Device-free: every kernel entry point's typed bindings (the structs made
//! with `tweedie::bindings!`) agree with its WGSL declarations as naga reads
//! them: the bindings the entry point uses are group 0, 0..n, in the struct's
//! order, with the struct's names (or a per-entry prefix plus the name), its
//! access (uniform, storage read, storage read_write) and its element type
//! (`T` follows the instance: f32, and f16 for generic shaders). And every
//! entry point of every shader is covered by exactly one signature.

use std::collections::{BTreeMap, BTreeSet};

use tweedie::gpu::{Access, Elem, KernelSig, Shader, ALL_SHADERS};
use tweedie::tensor::DType;

fn signatures() -> Vec<KernelSig> {
    [
        tweedie::kernels::bindings(),
        tweedie::operators::bindings(),
        tweedie::samplers::bindings(),
    ]
    .concat()
}

fn parse(shader: &Shader) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = shader.wgsl();
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{}.wgsl ({:?}): {}", shader.name, shader.dtype, e.emit_to_string(&src)));
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}.wgsl ({:?}): {e:?}", shader.name, shader.dtype));
    (module, info)
}

/// One binding an entry point uses, as the WGSL declares it.
#[derive(Debug)]
struct Declared {
    binding: u32,
    name: String,
    access: Access,
    /// The array element's scalar (kind, width), or None for uniforms, structs and atomics.
    scalar: Option<(naga::ScalarKind, u8)>,
}

fn declared(module: &naga::Module, info: &naga::valid::ModuleInfo, entry: &str) -> Vec<Declared> {
    let (index, _) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == entry)
        .unwrap_or_else(|| panic!("no entry point `{entry}`"));
    let uses = info.get_entry_point(index);
    let mut out = Vec::new();
    for (h, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        if uses[h].is_empty() {
            continue;
        }
        assert_eq!(rb.group, 0, "{entry}: `{:?}` is in group {}", var.name, rb.group);
        let access = match var.space {
            naga::AddressSpace::Uniform => Access::Uniform,
            naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => Access::ReadWrite,
            naga::AddressSpace::Storage { .. } => Access::Read,
            other => panic!("{entry}: binding {} in address space {other:?}", rb.binding),
        };
        let scalar = match &module.types[var.ty].inner {
            naga::TypeInner::Array { base, .. } => match &module.types[*base].inner {
                naga::TypeInner::Scalar(s) => Some((s.kind, s.width)),
                naga::TypeInner::Vector { scalar, .. } => Some((scalar.kind, scalar.width)),
                _ => None,
            },
            naga::TypeInner::Scalar(s) if var.space != naga::AddressSpace::Uniform => Some((s.kind, s.width)),
            _ => None,
        };
        out.push(Declared {
            binding: rb.binding,
            name: var.name.clone().unwrap_or_default(),
            access,
            scalar,
        });
    }
    out.sort_by_key(|d| d.binding);
    out
}

fn expected_scalar(elem: Elem, dtype: DType) -> Option<(naga::ScalarKind, u8)> {
    use naga::ScalarKind::*;
    match elem {
        Elem::T => Some((Float, dtype.size_bytes() as u8)),
        Elem::F32 => Some((Float, 4)),
        Elem::U32 => Some((Uint, 4)),
        Elem::I32 => Some((Sint, 4)),
        Elem::Any => None,
    }
}

/// The instances a signature is checked on: f32, and f16 where the shader is generic.
fn instances(shader: &Shader) -> Vec<Shader> {
    let mut v = vec![shader.typed(DType::F32)];
    if shader.is_generic() {
        v.push(shader.typed(DType::F16));
    }
    v
}

#[test]
fn typed_bindings_match_the_wgsl_declarations() {
    let mut failures = Vec::new();
    for sig in signatures() {
        for shader in instances(sig.shader) {
            let (module, info) = parse(&shader);
            for entry in sig.entries {
                let decl = declared(&module, &info, entry);
                let at = format!("{}.wgsl::{entry} ({:?})", shader.name, shader.dtype);
                if decl.len() != sig.slots.len() {
                    failures.push(format!(
                        "{at}: the entry uses {} bindings {:?}, the struct declares {} {:?}",
                        decl.len(),
                        decl.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
                        sig.slots.len(),
                        sig.slots.iter().map(|s| s.name).collect::<Vec<_>>()
                    ));
                    continue;
                }
                for (i, (d, s)) in decl.iter().zip(sig.slots).enumerate() {
                    let named = d.name == s.name || d.name.ends_with(&format!("_{}", s.name));
                    if d.binding != i as u32 || !named {
                        failures.push(format!(
                            "{at}: slot {i} `{}` is binding {} `{}` in the WGSL",
                            s.name, d.binding, d.name
                        ));
                    }
                    if d.access != s.access {
                        failures.push(format!(
                            "{at}: `{}` is {:?} in the WGSL, {:?} in Rust",
                            s.name, d.access, s.access
                        ));
                    }
                    if let Some(want) = expected_scalar(s.elem, shader.dtype) {
                        if d.scalar != Some(want) {
                            failures.push(format!(
                                "{at}: `{}` holds {:?} in the WGSL, {:?} ({want:?}) in Rust",
                                s.name, d.scalar, s.elem
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_entry_point_has_typed_bindings() {
    let mut covered: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for sig in signatures() {
        for entry in sig.entries {
            *covered.entry((sig.shader.name, entry)).or_default() += 1;
        }
    }
    let mut missing = BTreeSet::new();
    for shader in ALL_SHADERS {
        let (module, _) = parse(shader);
        for e in &module.entry_points {
            match covered.get(&(shader.name, e.name.as_str())) {
                Some(1) => {}
                Some(n) => panic!("{}.wgsl::{} has {n} binding signatures", shader.name, e.name),
                None => {
                    missing.insert(format!("{}::{}", shader.name, e.name));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "entry points without typed bindings ({}): {missing:?}",
        missing.len()
    );
}
