//! Typed kernel bindings: each kernel entry point's bind group is a named
//! struct, declared once with [`bindings!`](crate::bindings), from which the
//! bind-group layout is made and which `tests/layout.rs` checks against the
//! WGSL declarations (naga reflection: names, order, access, element type).
//!
//! # Declaring a kernel's bindings
//!
//! ```ignore
//! bindings! {
//!     /// `mask_apply`: y = mask (.) x.
//!     pub struct MaskApply for MASK: ["mask_apply"] {
//!         p: uniform,
//!         mask: read f32,
//!         x: read T,
//!         y: read_write T,
//!     }
//! }
//! ```
//!
//! Fields are in binding order (group 0, bindings 0, 1, ...) and named as the
//! WGSL variables are (or as their suffix after a per-entry prefix: `eps`
//! binds `d_eps`). Access is `uniform`, `read` or `read_write`; the element
//! type of a storage binding is `T` (the instance's dtype, see
//! [`Shader::typed`](super::Shader::typed)), `f32`, `u32`, `i32` or `any`
//! (structs, atomics). A field takes anything [`Bindable`]: a [`Tensor`](crate::tensor::Tensor)
//! (its dtype is checked against the slot) or a raw `wgpu::Buffer`
//! (uniforms, indirect args, scalars).
//!
//! A launcher then records it with [`Dispatch::typed`](super::Dispatch::typed),
//! which instantiates the shader for the dtype of the tensors bound as `T`:
//! no dtype parameter travels beside the buffers. Each kernel module lists
//! its structs' [`KernelSig`]s in a `pub const BINDINGS`, and the layout test
//! also checks that every entry point of every shader is covered.

use crate::gpu::{DType, GpuError, Shader};

/// How a kernel uses a binding (the WGSL address space and access mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `var<uniform>`
    Uniform,
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
}

/// The element type a storage binding declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    /// The shader's element alias `T`: f32 or f16 with the instance.
    T,
    F32,
    U32,
    I32,
    /// Not checked: uniforms, structs, atomics.
    Any,
}

impl Elem {
    /// The dtype a tensor bound here must have on an instance of `instance` dtype.
    pub fn dtype(self, instance: DType) -> Option<DType> {
        match self {
            Elem::T => Some(instance),
            Elem::F32 => Some(DType::F32),
            _ => None,
        }
    }
}

/// One binding of a kernel: its WGSL name (or suffix), access and element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub name: &'static str,
    pub access: Access,
    pub elem: Elem,
}

/// A kernel's binding signature: the shader, the entry points that bind this
/// list, and the list itself.
#[derive(Clone, Copy, Debug)]
pub struct KernelSig {
    pub shader: &'static Shader,
    pub entries: &'static [&'static str],
    pub slots: &'static [Slot],
}

/// Something a binding can take: a tensor (dtype known) or a raw buffer.
pub trait Bindable {
    fn buffer(&self) -> &wgpu::Buffer;
    /// The element type, where known (a raw buffer's is not).
    fn dtype(&self) -> Option<DType> {
        None
    }
    /// The bytes a kernel may touch (a tensor's elements; a buffer's size).
    fn bytes(&self) -> u64 {
        self.buffer().size()
    }
}

impl Bindable for wgpu::Buffer {
    fn buffer(&self) -> &wgpu::Buffer {
        self
    }
}

/// A kernel's bind group as a named struct (made by [`bindings!`](crate::bindings)).
pub trait Bindings {
    /// Shader, entry points and slots.
    const SIG: KernelSig;
    /// The bound values in slot order.
    fn values(&self) -> Vec<&dyn Bindable>;
}

impl KernelSig {
    /// The dtype of the instance these values run on: that of the tensors
    /// bound as `T` (all must agree), f32 when none is; and a check that
    /// every tensor bound to a fixed-type slot has that type.
    pub fn instance_dtype(&self, entry: &str, values: &[&dyn Bindable]) -> Result<DType, GpuError> {
        let label = format!("{}::{entry}", self.shader.name);
        if !self.entries.contains(&entry) {
            return Err(GpuError::Other(format!(
                "{label}: these bindings serve {:?}, not `{entry}`",
                self.entries
            )));
        }
        let mut instance: Option<DType> = None;
        for (slot, v) in self.slots.iter().zip(values) {
            if let (Elem::T, Some(d)) = (slot.elem, v.dtype()) {
                match instance {
                    Some(i) if i != d => {
                        return Err(GpuError::Other(format!(
                            "{label}: `{}` holds {d:?} but another `T` binding holds {i:?}",
                            slot.name
                        )))
                    }
                    _ => instance = Some(d),
                }
            }
        }
        let instance = instance.unwrap_or(DType::F32);
        for (slot, v) in self.slots.iter().zip(values) {
            if let (Some(want), Some(got)) = (slot.elem.dtype(instance), v.dtype()) {
                if want != got {
                    return Err(GpuError::Other(format!(
                        "{label}: `{}` holds {got:?}, the kernel reads {want:?}",
                        slot.name
                    )));
                }
            }
        }
        Ok(instance)
    }

    /// The bind-group layout entries the slots declare.
    pub fn layout_entries(&self) -> Vec<wgpu::BindGroupLayoutEntry> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match s.access {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect()
    }
}

/// Declares a kernel's bindings struct; see the [module docs](crate::gpu::bindings).
#[macro_export]
macro_rules! bindings {
    ($(
        $(#[$meta:meta])*
        $vis:vis struct $name:ident for $shader:path : [$($entry:literal),+ $(,)?] {
            $($field:ident : $access:ident $($elem:ident)?),+ $(,)?
        }
    )+) => {$(
        $(#[$meta])*
        $vis struct $name<'a> {
            $(pub $field: &'a dyn $crate::gpu::Bindable,)+
        }
        impl $crate::gpu::Bindings for $name<'_> {
            const SIG: $crate::gpu::KernelSig = $crate::gpu::KernelSig {
                shader: &$shader,
                entries: &[$($entry),+],
                slots: &[$($crate::gpu::Slot {
                    name: stringify!($field),
                    access: $crate::bindings!(@access $access),
                    elem: $crate::bindings!(@elem $($elem)?),
                }),+],
            };
            fn values(&self) -> Vec<&dyn $crate::gpu::Bindable> {
                vec![$(self.$field),+]
            }
        }
    )+};
    (@access uniform) => { $crate::gpu::Access::Uniform };
    (@access read) => { $crate::gpu::Access::Read };
    (@access read_write) => { $crate::gpu::Access::ReadWrite };
    (@elem) => { $crate::gpu::Elem::Any };
    (@elem any) => { $crate::gpu::Elem::Any };
    (@elem T) => { $crate::gpu::Elem::T };
    (@elem f32) => { $crate::gpu::Elem::F32 };
    (@elem u32) => { $crate::gpu::Elem::U32 };
    (@elem i32) => { $crate::gpu::Elem::I32 };
}
