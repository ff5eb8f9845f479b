//! The part of the zip format `torch.save` writes (torch >= 1.6): stored
//! (uncompressed) entries, zip64 records when the archive is large. Only the
//! central directory is trusted for names and sizes, and every entry is
//! bounds-checked against the file before it is handed out, so a truncated
//! or forged archive fails here instead of reading past its end.

use std::collections::HashMap;

/// An archive's entries: name -> the byte range of its data in the file.
pub(super) struct Zip<'a> {
    data: &'a [u8],
    entries: HashMap<String, (usize, usize)>,
}

const EOCD: u32 = 0x0605_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

fn u16_at(d: &[u8], at: usize) -> Result<u64, String> {
    d.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as u64)
        .ok_or_else(|| "zip record runs past the end of the file".to_string())
}

fn u32_at(d: &[u8], at: usize) -> Result<u64, String> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
        .ok_or_else(|| "zip record runs past the end of the file".to_string())
}

fn u64_at(d: &[u8], at: usize) -> Result<u64, String> {
    d.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| "zip record runs past the end of the file".to_string())
}

fn to_usize(v: u64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("zip offset {v} does not fit in memory"))
}

impl<'a> Zip<'a> {
    pub(super) fn open(data: &'a [u8]) -> Result<Zip<'a>, String> {
        let truncated = || "the zip archive has no end-of-central-directory record (truncated?)".to_string();
        if data.len() < 22 {
            return Err(truncated());
        }
        // The end record sits in the last 22 + 65535 (comment) bytes.
        let lowest = data.len().saturating_sub(22 + 65535);
        let eocd = (lowest..=data.len() - 22)
            .rev()
            .find(|&i| u32_at(data, i) == Ok(EOCD as u64))
            .ok_or_else(truncated)?;
        let mut count = u16_at(data, eocd + 10)?;
        let mut cd_size = u32_at(data, eocd + 12)?;
        let mut cd_offset = u32_at(data, eocd + 16)?;
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            let loc = eocd.checked_sub(20).ok_or_else(truncated)?;
            if u32_at(data, loc)? != ZIP64_LOCATOR as u64 {
                return Err("zip64 archive without its locator record".into());
            }
            let z = to_usize(u64_at(data, loc + 8)?)?;
            if u32_at(data, z)? != ZIP64_EOCD as u64 {
                return Err("zip64 end record not where its locator says".into());
            }
            count = u64_at(data, z + 32)?;
            cd_size = u64_at(data, z + 40)?;
            cd_offset = u64_at(data, z + 48)?;
        }
        let cd_start = to_usize(cd_offset)?;
        let cd_end = cd_start
            .checked_add(to_usize(cd_size)?)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| "the zip central directory lies outside the file (truncated?)".to_string())?;
        if count > (cd_end - cd_start) as u64 / 46 {
            return Err(format!(
                "the zip directory claims {count} entries, more than it can hold"
            ));
        }
        let mut entries = HashMap::new();
        let mut at = cd_start;
        for _ in 0..count {
            if at + 46 > cd_end || u32_at(data, at)? != CENTRAL as u64 {
                return Err("corrupt zip central directory".into());
            }
            let method = u16_at(data, at + 10)?;
            let mut comp = u32_at(data, at + 20)?;
            let mut size = u32_at(data, at + 24)?;
            let name_len = u16_at(data, at + 28)? as usize;
            let extra_len = u16_at(data, at + 30)? as usize;
            let comment_len = u16_at(data, at + 32)? as usize;
            let mut local = u32_at(data, at + 42)?;
            let name_at = at + 46;
            let extra_at = name_at + name_len;
            let next = extra_at + extra_len + comment_len;
            if next > cd_end {
                return Err("corrupt zip central directory".into());
            }
            let name = String::from_utf8_lossy(&data[name_at..extra_at]).into_owned();
            read_zip64_extra(&data[extra_at..extra_at + extra_len], &mut size, &mut comp, &mut local)?;
            if method != 0 || comp != size {
                return Err(format!(
                    "zip entry {name} is compressed (method {method}); torch writes stored entries"
                ));
            }
            let local = to_usize(local)?;
            if u32_at(data, local)? != LOCAL as u64 {
                return Err(format!(
                    "zip entry {name}: no local header where the directory says (truncated?)"
                ));
            }
            let start = local + 30 + u16_at(data, local + 26)? as usize + u16_at(data, local + 28)? as usize;
            let len = to_usize(size)?;
            if start.checked_add(len).is_none_or(|end| end > data.len()) {
                return Err(format!(
                    "zip entry {name} ({len} bytes) runs past the end of the file (truncated?)"
                ));
            }
            entries.insert(name, (start, len));
            at = next;
        }
        Ok(Zip { data, entries })
    }

    /// The data of entry `name`, within its declared size.
    pub(super) fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.entries.get(name).map(|&(s, l)| &self.data[s..s + l])
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// The zip64 extended-information field replaces, in this order, whichever
/// of the sizes and the offset were saturated in the fixed record.
fn read_zip64_extra(mut extra: &[u8], size: &mut u64, comp: &mut u64, local: &mut u64) -> Result<(), String> {
    while extra.len() >= 4 {
        let id = u16_at(extra, 0)?;
        let len = u16_at(extra, 2)? as usize;
        let body = extra.get(4..4 + len).ok_or("corrupt zip extra field")?;
        if id == 1 {
            let mut at = 0;
            for field in [size, comp, local] {
                if *field == 0xFFFF_FFFF {
                    *field = u64_at(body, at)?;
                    at += 8;
                }
            }
            return Ok(());
        }
        extra = &extra[4 + len..];
    }
    Ok(())
}
