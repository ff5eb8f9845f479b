//! PyTorch checkpoints (`.pt`, `.pth`, `.ckpt`, diffusers' `.bin`) read
//! without Python: the zip format of torch >= 1.6 (`<archive>/data.pkl` and
//! one entry `<archive>/data/<key>` per storage) and the legacy format (a
//! pickle stream: magic number, protocol, system info, the object, the
//! storage keys, then each storage's element count and bytes).
//!
//! A pickle is a program; this reader is not an interpreter of it (see
//! `pickle.rs`). Every view is checked against its storage before memory is
//! allocated for it, so a hostile file costs at most its own size.

mod pickle;
mod zip;

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;

use self::pickle::{StorageType, TensorRef, Value};
use super::{IoError, TensorFile};

/// The names a state dict is found under inside a training checkpoint, in
/// the order they are tried (tools/convert_checkpoint.py's order).
pub const NESTED: &[&str] = &["state_dict", "model", "ema"];

/// Extensions read as torch checkpoints.
pub const EXTENSIONS: &[&str] = &["pt", "pth", "ckpt", "bin"];

/// True when `path` names a torch checkpoint by its extension.
pub fn is_torch_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// A checkpoint's tensors, converted to a safetensors file in memory.
pub struct Checkpoint {
    pub file: TensorFile,
    /// The key the state dict sat under (`None`: the file is the state dict).
    pub nested: Option<String>,
}

/// Reads a torch checkpoint from `path`.
pub fn read(path: &Path) -> Result<Checkpoint, IoError> {
    let bytes = std::fs::read(path).map_err(|err| IoError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    from_bytes(path, &bytes)
}

/// As [`read`], on bytes in memory; `path` names them in messages.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint, IoError> {
    let fail = |message: String| IoError::Torch {
        path: path.to_path_buf(),
        message,
    };
    let (object, storages) = if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes).map_err(fail)?
    } else if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    } else {
        read_legacy(bytes).map_err(fail)?
    };
    let (dict, nested) = state_dict(&object).map_err(fail)?;
    let mut tensors = Vec::new();
    for (k, v) in dict.pairs().expect("state_dict returns a dict") {
        let (Some(name), Value::Tensor(t)) = (k.as_str(), v) else {
            continue; // non-tensor entries (a step counter, a version) are not weights
        };
        let name = name.strip_prefix("module.").unwrap_or(name);
        let data = storages.get(&t.storage.key).ok_or_else(|| {
            fail(format!(
                "tensor {name:?}: storage {} is missing from the file",
                t.storage.key
            ))
        })?;
        let bytes = gather(t, data).map_err(|m| fail(format!("tensor {name:?}: {m}")))?;
        let dtype = match t.storage.dtype {
            StorageType::F32 => Dtype::F32,
            StorageType::F16 => Dtype::F16,
            StorageType::BF16 => Dtype::BF16,
            StorageType::F64 => Dtype::F64,
        };
        let shape = t.size.iter().map(|&s| s as usize).collect();
        tensors.push((name.to_string(), dtype, shape, bytes));
    }
    if tensors.is_empty() {
        return Err(fail("the state dict holds no tensors".into()));
    }
    let st = super::safetensors_bytes(path, &tensors)?;
    Ok(Checkpoint {
        file: TensorFile::from_bytes(path, st)?,
        nested,
    })
}

/// The state dict: the object itself when it holds tensors, else the first
/// of [`NESTED`] under it that is a dict (repeatedly: `{"model": {"state_dict": ...}}`).
fn state_dict(object: &Value) -> Result<(&Value, Option<String>), String> {
    let mut cur = object;
    let mut path: Vec<&str> = Vec::new();
    loop {
        let Some(mut pairs) = cur.pairs() else {
            return Err(format!("the checkpoint holds a {}, not a state dict", cur.kind()));
        };
        if pairs.any(|(_, v)| matches!(v, Value::Tensor(_))) {
            let nested = (!path.is_empty()).then(|| path.join("."));
            return Ok((cur, nested));
        }
        let next = NESTED.iter().find_map(|name| {
            cur.pairs()?
                .find(|(k, v)| k.as_str() == Some(name) && v.pairs().is_some())
                .map(|(_, v)| (*name, v))
        });
        match next {
            Some((name, v)) => {
                path.push(name);
                cur = v;
            }
            None => {
                return Err(format!(
                    "no tensors in the checkpoint's top level nor under {}",
                    NESTED.join(", ")
                ))
            }
        }
    }
}

/// The contiguous bytes of a view, after checking that every element it
/// reaches lies inside the storage.
fn gather(t: &TensorRef, data: &[u8]) -> Result<Vec<u8>, String> {
    let elem = t.storage.dtype.size();
    let available = data.len() as u64 / elem;
    if t.storage.numel > available {
        return Err(format!(
            "its storage {} declares {} elements but holds {available}",
            t.storage.key, t.storage.numel
        ));
    }
    let too_big = || format!("its view (size {:?}, stride {:?}) overflows", t.size, t.stride);
    let numel = t
        .size
        .iter()
        .try_fold(1u64, |a, &s| a.checked_mul(s))
        .ok_or_else(too_big)?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&s, &st)| a.checked_add((s - 1).checked_mul(st)?))
        .ok_or_else(too_big)?;
    if numel > t.storage.numel || last >= t.storage.numel {
        return Err(format!(
            "its view (offset {}, size {:?}, stride {:?}) reaches past its storage of {} elements",
            t.offset, t.size, t.stride, t.storage.numel
        ));
    }
    let (elem, n) = (elem as usize, numel as usize);
    let mut out = Vec::with_capacity(n * elem);
    let dims = t.size.len();
    let mut index = vec![0u64; dims];
    for _ in 0..n {
        let at = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
        let at = at as usize * elem;
        out.extend_from_slice(&data[at..at + elem]);
        for d in (0..dims).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

type Storages<'a> = HashMap<String, &'a [u8]>;

fn read_zip(bytes: &[u8]) -> Result<(Value, Storages<'_>), String> {
    let archive = zip::Zip::open(bytes)?;
    let pkl = archive
        .names()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min()
        .ok_or("the zip archive has no <name>/data.pkl: not a torch checkpoint")?
        .to_string();
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    if let Some(order) = archive.get(&format!("{prefix}byteorder")) {
        if order != b"little" {
            return Err("the checkpoint was written big-endian".into());
        }
    }
    let mut keys = Vec::new();
    let (object, _) = pickle::load(archive.get(&pkl).expect("listed"), 0, &mut |pid| {
        let v = pickle::storage_pid(pid)?;
        if let Value::Storage(s) = &v {
            keys.push(s.key.clone());
        }
        Ok(v)
    })?;
    let mut storages = HashMap::new();
    for key in keys {
        let entry = format!("{prefix}data/{key}");
        let data = archive
            .get(&entry)
            .ok_or_else(|| format!("storage {key} is missing from the archive ({entry})"))?;
        storages.insert(key, data);
    }
    Ok((object, storages))
}

/// The magic number and protocol version the legacy format opens with.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

fn read_legacy(bytes: &[u8]) -> Result<(Value, Storages<'_>), String> {
    let not_torch = |m: String| format!("not a torch checkpoint (neither a zip archive nor a legacy pickle: {m})");
    let mut none = |_: &Value| Err("persistent id outside the state dict".to_string());
    let (magic, pos) = pickle::load(bytes, 0, &mut none).map_err(not_torch)?;
    if !matches!(magic, Value::Int(LEGACY_MAGIC)) {
        return Err(not_torch("no torch magic number".into()));
    }
    let (proto, pos) = pickle::load(bytes, pos, &mut none)?;
    if !matches!(proto, Value::Int(LEGACY_PROTOCOL)) {
        return Err(format!("legacy format version is not {LEGACY_PROTOCOL}"));
    }
    let (info, pos) = pickle::load(bytes, pos, &mut none)?;
    let little = info
        .pairs()
        .and_then(|mut p| p.find(|(k, _)| k.as_str() == Some("little_endian")))
        .map(|(_, v)| matches!(v, Value::Bool(true)));
    if little == Some(false) {
        return Err("the checkpoint was written big-endian".into());
    }
    let mut types: HashMap<String, StorageType> = HashMap::new();
    let (object, pos) = pickle::load(bytes, pos, &mut |pid| {
        let v = pickle::storage_pid(pid)?;
        if let Value::Storage(s) = &v {
            types.insert(s.key.clone(), s.dtype);
        }
        Ok(v)
    })?;
    let (keys, mut pos) = pickle::load(bytes, pos, &mut none)?;
    let Value::List(keys) = keys else {
        return Err("the legacy storage key list is missing".into());
    };
    let mut storages = HashMap::new();
    for key in keys.items.iter() {
        let key = key.as_str().ok_or("a legacy storage key is not a string")?;
        let dtype = types
            .get(key)
            .ok_or_else(|| format!("storage {key} is in the file but no tensor uses it"))?;
        let count = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| format!("storage {key} is missing from the file (truncated?)"))?;
        let start = pos + 8;
        let end = count
            .checked_mul(dtype.size())
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| format!("storage {key} claims {count} elements, more than the file holds (truncated?)"))?;
        storages.insert(key.to_string(), &bytes[start..end]);
        pos = end;
    }
    Ok((object, storages))
}
