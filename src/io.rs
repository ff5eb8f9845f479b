//! Files: safetensors tensors (f32/f16/bf16/f64 in, f32 out) and images.
//! Outputs are written to a temporary file and renamed, so an interrupted run
//! never leaves a file that looks complete.

use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use thiserror::Error;

use crate::tensor::HostTensor;

pub mod torch;

#[derive(Debug, Error)]
pub enum IoError {
    #[error("{path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a valid safetensors file ({message})")]
    Format { path: PathBuf, message: String },
    #[error("{path}: no tensor named {key:?} (has: {available})")]
    MissingKey {
        path: PathBuf,
        key: String,
        available: String,
    },
    #[error("{path}: tensor {key:?} has dtype {dtype}, expected a float type (f32, f16, bf16, f64)")]
    Dtype { path: PathBuf, key: String, dtype: String },
    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error("{path}: not a readable torch checkpoint: {message}")]
    Torch { path: PathBuf, message: String },
    #[error("{path}: could not write ({message})")]
    Write { path: PathBuf, message: String },
}

/// Converts one safetensors view to f32.
pub fn view_to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let b = view.data();
    Some(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    })
}

/// A whole safetensors file in memory, with name-aware errors.
pub struct TensorFile {
    pub path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    pub fn open(path: impl AsRef<Path>) -> Result<TensorFile, IoError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|err| IoError::Read {
            path: path.clone(),
            err,
        })?;
        Self::from_bytes(path, bytes)
    }

    /// A safetensors file already in memory (an embedded model); `label`
    /// stands for its path in messages.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<TensorFile, IoError> {
        let path = label.into();
        SafeTensors::deserialize(&bytes).map_err(|e| IoError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(TensorFile { path, bytes })
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated at open")
    }

    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.st().names().into_iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }

    pub fn has(&self, key: &str) -> bool {
        self.st().tensor(key).is_ok()
    }

    /// Shape of `key` without converting its data.
    pub fn shape(&self, key: &str) -> Result<Vec<usize>, IoError> {
        let st = self.st();
        let v = st.tensor(key).map_err(|_| self.missing(key))?;
        Ok(v.shape().to_vec())
    }

    pub fn get(&self, key: &str) -> Result<HostTensor, IoError> {
        let st = self.st();
        let v = st.tensor(key).map_err(|_| self.missing(key))?;
        let data = view_to_f32(&v).ok_or_else(|| IoError::Dtype {
            path: self.path.clone(),
            key: key.to_string(),
            dtype: format!("{:?}", v.dtype()),
        })?;
        Ok(HostTensor {
            shape: v.shape().to_vec(),
            data,
        })
    }

    fn missing(&self, key: &str) -> IoError {
        IoError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
            available: self.keys().join(", "),
        }
    }
}

/// Writes f32 tensors to `path` atomically (temporary file, then rename).
pub fn write_tensors(path: impl AsRef<Path>, tensors: &[(&str, &HostTensor)]) -> Result<(), IoError> {
    let path = path.as_ref();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, t)| {
            let v = TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.data))
                .expect("shape matches data");
            (k.to_string(), v)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).map_err(|e| IoError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// A safetensors file in memory from named tensors already in their stored
/// element type (`path` names it in messages).
pub fn safetensors_bytes(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Result<Vec<u8>, IoError> {
    let fail = |message: String| IoError::Write {
        path: path.to_path_buf(),
        message,
    };
    let views = tensors
        .iter()
        .map(|(k, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| fail(format!("tensor {k:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| fail(e.to_string()))
}

/// Writes bytes to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let err = |e: std::io::Error| IoError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Reads a PNG/JPEG as [1, C, H, W] in [-1, 1]: C = 1 for grayscale files,
/// 3 otherwise (alpha dropped).
pub fn read_image(path: impl AsRef<Path>) -> Result<HostTensor, IoError> {
    let path = path.as_ref();
    let img = image::ImageReader::open(path)
        .map_err(|err| IoError::Read {
            path: path.to_path_buf(),
            err,
        })?
        .with_guessed_format()
        .map_err(|err| IoError::Read {
            path: path.to_path_buf(),
            err,
        })?
        .decode()
        .map_err(|e| IoError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(image_to_tensor(img))
}

/// As [`read_image`], from an encoded PNG/JPEG in memory; `label` names it in messages.
pub fn read_image_bytes(label: &str, bytes: &[u8]) -> Result<HostTensor, IoError> {
    let img = image::load_from_memory(bytes).map_err(|e| IoError::Image {
        path: PathBuf::from(label),
        message: e.to_string(),
    })?;
    Ok(image_to_tensor(img))
}

/// [1, C, H, W] on [-1, 1]: grayscale stays 1 channel, anything with colour is RGB.
fn image_to_tensor(img: image::DynamicImage) -> HostTensor {
    let gray = !img.color().has_color();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if gray {
        let g = img.to_luma8();
        let data = g.as_raw().iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        HostTensor::new(vec![1, 1, h, w], data)
    } else {
        let rgb = img.to_rgb8();
        let raw = rgb.as_raw();
        let mut data = vec![0f32; 3 * h * w];
        for c in 0..3 {
            for i in 0..h * w {
                data[c * h * w + i] = raw[i * 3 + c] as f32 / 127.5 - 1.0;
            }
        }
        HostTensor::new(vec![1, 3, h, w], data)
    }
}

/// Writes one image [C, H, W] (C = 1 or 3) from [-1, 1] to an 8-bit PNG, atomically.
pub fn write_image(path: impl AsRef<Path>, c: usize, h: usize, w: usize, data: &[f32]) -> Result<(), IoError> {
    let path = path.as_ref();
    assert_eq!(data.len(), c * h * w, "write_image shape");
    let q = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    let mut bytes = Vec::new();
    let enc = image::codecs::png::PngEncoder::new(&mut bytes);
    use image::ImageEncoder;
    let res = match c {
        1 => enc.write_image(
            &data.iter().map(|&v| q(v)).collect::<Vec<u8>>(),
            w as u32,
            h as u32,
            image::ExtendedColorType::L8,
        ),
        3 => {
            let mut raw = vec![0u8; 3 * h * w];
            for i in 0..h * w {
                for ch in 0..3 {
                    raw[i * 3 + ch] = q(data[ch * h * w + i]);
                }
            }
            enc.write_image(&raw, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        }
        _ => {
            return Err(IoError::Image {
                path: path.to_path_buf(),
                message: format!("cannot write an image with {c} channels"),
            })
        }
    };
    res.map_err(|e| IoError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}
