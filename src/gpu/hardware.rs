//! Facts about the hardware under an adapter that wgpu does not report: the
//! datasheet peaks (which the benchmark harness divides by) and the
//! multiprocessor counts (which kernel choice fills), plus neutral capability
//! queries kernels build on. Kept in the GPU core so both layers above read
//! one table.

use super::Gpu;

/// An adapter's datasheet peaks: FP32 (SIMT) and dense FP16 tensor-core
/// TFLOP/s, and memory GB/s.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Peak {
    pub name: &'static str,
    /// Lower-case pieces the adapter name must all contain.
    #[serde(skip)]
    pub matches: &'static [&'static str],
    pub fp32_tflops: f64,
    pub fp16_tensor_tflops: f64,
    pub gbps: f64,
    /// Streaming multiprocessors (NVIDIA) or GPU cores (Apple): how many
    /// workgroups run at once, in units the kernel choice fills.
    pub sms: u32,
}

/// Datasheet peaks of common GPUs, matched by pieces of the adapter name
/// (first match wins, so the more specific entries come first).
pub const PEAKS: &[Peak] = &[
    Peak {
        name: "H200",
        matches: &["h200"],
        fp32_tflops: 67.0,
        fp16_tensor_tflops: 989.5,
        gbps: 4800.0,
        sms: 132,
    },
    Peak {
        name: "H100 PCIe",
        matches: &["h100", "pcie"],
        fp32_tflops: 51.2,
        fp16_tensor_tflops: 756.5,
        gbps: 2000.0,
        sms: 114,
    },
    Peak {
        name: "H100",
        matches: &["h100"],
        fp32_tflops: 67.0,
        fp16_tensor_tflops: 989.5,
        gbps: 3350.0,
        sms: 132,
    },
    Peak {
        name: "A100 80GB",
        matches: &["a100", "80gb"],
        fp32_tflops: 19.5,
        fp16_tensor_tflops: 312.0,
        gbps: 2039.0,
        sms: 108,
    },
    Peak {
        name: "A100",
        matches: &["a100"],
        fp32_tflops: 19.5,
        fp16_tensor_tflops: 312.0,
        gbps: 1555.0,
        sms: 108,
    },
    Peak {
        name: "L4",
        matches: &["nvidia l4"],
        fp32_tflops: 30.3,
        fp16_tensor_tflops: 121.0,
        gbps: 300.0,
        sms: 58,
    },
    Peak {
        name: "RTX 4090",
        matches: &["rtx 4090"],
        fp32_tflops: 82.6,
        fp16_tensor_tflops: 165.2,
        gbps: 1008.0,
        sms: 128,
    },
    Peak {
        name: "RTX 4080",
        matches: &["rtx 4080"],
        fp32_tflops: 48.7,
        fp16_tensor_tflops: 97.5,
        gbps: 716.8,
        sms: 76,
    },
    Peak {
        name: "RTX 4070",
        matches: &["rtx 4070"],
        fp32_tflops: 29.1,
        fp16_tensor_tflops: 58.3,
        gbps: 504.2,
        sms: 46,
    },
    Peak {
        name: "M3 Max",
        matches: &["m3 max"],
        fp32_tflops: 16.4,
        fp16_tensor_tflops: 16.4,
        gbps: 400.0,
        sms: 40,
    },
    Peak {
        name: "M2 Max",
        matches: &["m2 max"],
        fp32_tflops: 13.6,
        fp16_tensor_tflops: 13.6,
        gbps: 400.0,
        sms: 38,
    },
    Peak {
        name: "M1 Max",
        matches: &["m1 max"],
        fp32_tflops: 10.4,
        fp16_tensor_tflops: 10.4,
        gbps: 400.0,
        sms: 32,
    },
    Peak {
        name: "Apple M3",
        matches: &["apple m3"],
        fp32_tflops: 4.1,
        fp16_tensor_tflops: 4.1,
        gbps: 100.0,
        sms: 10,
    },
    Peak {
        name: "Apple M2",
        matches: &["apple m2"],
        fp32_tflops: 3.6,
        fp16_tensor_tflops: 3.6,
        gbps: 100.0,
        sms: 10,
    },
    Peak {
        name: "Apple M1",
        matches: &["apple m1"],
        fp32_tflops: 2.6,
        fp16_tensor_tflops: 2.6,
        gbps: 68.3,
        sms: 8,
    },
];

/// The peak of the adapter called `adapter` (case-insensitive).
pub fn peak_for(adapter: &str) -> Option<Peak> {
    let a = adapter.to_lowercase();
    PEAKS.iter().copied().find(|p| p.matches.iter().all(|m| a.contains(m)))
}

/// Multiprocessors to fill on this adapter (from [`PEAKS`], else 64 for an
/// unknown discrete GPU and 16 for any other GPU); `None` for a CPU adapter.
pub fn multiprocessors(gpu: &Gpu) -> Option<u32> {
    match gpu.info.device_type {
        wgpu::DeviceType::Cpu => None,
        t => Some(peak_for(&gpu.info.name).map_or(if t == wgpu::DeviceType::DiscreteGpu { 64 } else { 16 }, |p| p.sms)),
    }
}

impl Gpu {
    /// Why the device cannot multiply 16x16x16 f16 tiles into f32 with
    /// cooperative matrices (the configuration tensor cores offer); `None`
    /// when it can. Kernels add their own requirements on top.
    pub fn f16_cooperative_matrix_missing(&self) -> Option<String> {
        if !self.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            return Some("the adapter does not expose wgpu's experimental cooperative-matrix feature".into());
        }
        if !self.features.contains(wgpu::Features::SHADER_F16) {
            return Some("the adapter has no shader-f16".into());
        }
        let found = self.cooperative_matrix.iter().any(|c| {
            use wgpu::CooperativeScalarType as S;
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16) && c.ab_type == S::F16 && c.cr_type == S::F32
        });
        if !found {
            return Some(format!(
                "no 16x16x16 f16 -> f32 configuration among {:?}",
                self.cooperative_matrix
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_match_adapter_names() {
        assert_eq!(peak_for("NVIDIA H200").unwrap().name, "H200");
        assert_eq!(peak_for("NVIDIA H100 PCIe").unwrap().name, "H100 PCIe");
        assert_eq!(peak_for("NVIDIA H100 80GB HBM3").unwrap().name, "H100");
        assert_eq!(peak_for("NVIDIA A100-SXM4-80GB").unwrap().name, "A100 80GB");
        assert_eq!(peak_for("NVIDIA A100-PCIE-40GB").unwrap().name, "A100");
        assert_eq!(peak_for("NVIDIA L4").unwrap().name, "L4");
        assert_eq!(peak_for("NVIDIA GeForce RTX 4090").unwrap().name, "RTX 4090");
        assert_eq!(peak_for("Apple M2 Max").unwrap().name, "M2 Max");
        assert!(peak_for("llvmpipe (LLVM 15.0.6, 256 bits)").is_none());
    }
}
