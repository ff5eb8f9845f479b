//! A pickle reader that cannot run code: a loop over opcodes with an explicit
//! stack (no recursion on file input), the opcodes `torch.save` uses for
//! state dicts (protocols 2 to 5), and a whitelist of the globals a state
//! dict names. Any other global is refused by name the moment it is read,
//! before anything is built; "calling" a whitelisted global only builds a
//! description (a dict, a tensor view), never runs anything.

use std::collections::HashMap;
use std::rc::Rc;

/// Deeper nesting than any state dict has (a dict of dicts of tuples); a
/// pickle nested deeper is refused rather than risking deep drops.
pub(super) const MAX_DEPTH: u32 = 32;

/// A storage's element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StorageType {
    F32,
    F16,
    BF16,
    F64,
}

impl StorageType {
    pub(super) fn size(self) -> u64 {
        match self {
            StorageType::F16 | StorageType::BF16 => 2,
            StorageType::F32 => 4,
            StorageType::F64 => 8,
        }
    }
}

/// The whitelisted globals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(StorageType),
}

const GLOBALS: &[(&str, &str, Global)] = &[
    ("collections", "OrderedDict", Global::OrderedDict),
    ("torch._utils", "_rebuild_tensor_v2", Global::RebuildTensor),
    ("torch._utils", "_rebuild_parameter", Global::RebuildParameter),
    ("torch", "FloatStorage", Global::Storage(StorageType::F32)),
    ("torch", "HalfStorage", Global::Storage(StorageType::F16)),
    ("torch", "BFloat16Storage", Global::Storage(StorageType::BF16)),
    ("torch", "DoubleStorage", Global::Storage(StorageType::F64)),
];

/// One storage named by a persistent id.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StorageRef {
    pub key: String,
    pub dtype: StorageType,
    /// Elements, as the pickle claims (checked against the bytes later).
    pub numel: u64,
}

/// A tensor: a view (offset, sizes, strides in elements) into a storage.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// A list, tuple or dict (pairs flattened: key, value, key, value...) with
/// the nesting depth of what it holds.
#[derive(Clone, Debug)]
pub(super) struct Seq {
    pub items: Rc<Vec<Value>>,
    depth: u32,
}

#[derive(Clone, Debug)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i128),
    /// A float or a byte string: read past, never needed by a state dict.
    Float,
    Str(Rc<str>),
    Bytes,
    List(Seq),
    Tuple(Seq),
    Dict(Seq),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::List(s) | Value::Tuple(s) | Value::Dict(s) => s.depth,
            _ => 0,
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    /// The (key, value) pairs of a dict.
    pub(super) fn pairs(&self) -> Option<impl Iterator<Item = (&Value, &Value)>> {
        match self {
            Value::Dict(s) => Some(s.items.chunks_exact(2).map(|p| (&p[0], &p[1]))),
            _ => None,
        }
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn seq(items: Vec<Value>) -> Result<Seq, String> {
    let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
    if depth > MAX_DEPTH {
        return Err(format!("the pickle nests deeper than {MAX_DEPTH} levels"));
    }
    Ok(Seq {
        items: Rc::new(items),
        depth,
    })
}

/// Appends to the list or dict on top of the stack, keeping its depth.
fn extend(target: &mut Value, new: Vec<Value>) -> Result<(), String> {
    let s = match target {
        Value::List(s) | Value::Dict(s) => s,
        other => return Err(format!("cannot append to a {}", other.kind())),
    };
    let depth = 1 + new.iter().map(Value::depth).max().unwrap_or(0);
    if depth > MAX_DEPTH {
        return Err(format!("the pickle nests deeper than {MAX_DEPTH} levels"));
    }
    s.depth = s.depth.max(depth);
    Rc::make_mut(&mut s.items).extend(new);
    Ok(())
}

/// Reads one pickle from `data[pos..]`; returns the object and where the
/// pickle ended. `persistent` turns a persistent id into a storage.
pub(super) fn load(
    data: &[u8],
    pos: usize,
    persistent: &mut dyn FnMut(&Value) -> Result<Value, String>,
) -> Result<(Value, usize), String> {
    let mut m = Machine {
        data,
        pos,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let v = m.run(persistent)?;
    Ok((v, m.pos))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| "the pickle ends early (truncated file?)".to_string())?;
        let data = self.data;
        let s = &data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let n = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or("a pickle text argument has no end of line within 256 bytes")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    /// Everything above the last MARK, the mark removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self.marks.pop().ok_or("pickle MARK missing")?;
        if at > self.stack.len() {
            return Err("pickle MARK above the stack".into());
        }
        Ok(self.stack.split_off(at))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn text(&mut self, n: u64) -> Result<Value, String> {
        let n = usize::try_from(n).map_err(|_| "pickle string too long".to_string())?;
        let b = self.take(n)?;
        Ok(Value::Str(String::from_utf8_lossy(b).into()))
    }

    fn bytes(&mut self, n: u64) -> Result<Value, String> {
        let n = usize::try_from(n).map_err(|_| "pickle bytes too long".to_string())?;
        self.take(n)?;
        Ok(Value::Bytes)
    }

    fn memo_get(&self, k: u64) -> Result<Value, String> {
        self.memo
            .get(&k)
            .cloned()
            .ok_or_else(|| format!("pickle memo {k} read before it was written"))
    }

    fn memo_put(&mut self, k: u64) -> Result<(), String> {
        let v = self.stack.last().cloned().ok_or("pickle stack underflow")?;
        self.memo.insert(k, v);
        Ok(())
    }

    fn run(&mut self, persistent: &mut dyn FnMut(&Value) -> Result<Value, String>) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = *self.take(1)?.first().expect("one byte");
            match op {
                0x80 => {
                    let proto = self.uint(1)?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} is not known"));
                    }
                }
                0x95 => {
                    self.uint(8)?; // FRAME: a length hint
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.uint(4)? as u32 as i32;
                    self.push(Value::Int(v as i128));
                }
                b'K' | b'M' => {
                    let v = self.uint(if op == b'K' { 1 } else { 2 })?;
                    self.push(Value::Int(v as i128));
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.uint(1)? as usize;
                    if n > 16 {
                        return Err(format!("pickle integer of {n} bytes is too large"));
                    }
                    let b = self.take(n)?;
                    let mut v: i128 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= (x as i128) << (8 * i);
                    }
                    if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    self.push(Value::Int(v));
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float);
                }
                // Strings and byte strings, by the width of their length prefix.
                b'X' | 0x8c | 0x8d | b'U' | b'C' | b'T' | b'B' | 0x8e => {
                    let width = match op {
                        0x8c | b'U' | b'C' => 1,
                        b'X' | b'T' | b'B' => 4,
                        _ => 8,
                    };
                    let n = self.uint(width)?;
                    let v = if matches!(op, b'X' | 0x8c | 0x8d) {
                        self.text(n)?
                    } else {
                        self.bytes(n)?
                    };
                    self.push(v);
                }
                b')' => self.push(Value::Tuple(seq(Vec::new())?)),
                b']' => self.push(Value::List(seq(Vec::new())?)),
                b'}' => self.push(Value::Dict(seq(Vec::new())?)),
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(seq(items)?));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(seq(items)?));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(seq(items)?));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err("pickle DICT with an odd number of items".into());
                    }
                    self.push(Value::Dict(seq(items)?));
                }
                b'a' => {
                    let v = self.pop()?;
                    extend(self.top()?, vec![v])?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    extend(self.top()?, vec![k, v])?;
                }
                b'e' | b'u' => {
                    let items = self.pop_mark()?;
                    if op == b'u' && items.len() % 2 != 0 {
                        return Err("pickle SETITEMS with an odd number of items".into());
                    }
                    extend(self.top()?, items)?;
                }
                b'q' => {
                    let k = self.uint(1)?;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.uint(4)?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.uint(1)?;
                    let v = self.memo_get(k)?;
                    self.push(v);
                }
                b'j' => {
                    let k = self.uint(4)?;
                    let v = self.memo_get(k)?;
                    self.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(global(&module, &name)?));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => self.push(Value::Global(global(m, n)?)),
                        _ => return Err("pickle STACK_GLOBAL without two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent(&pid)?;
                    self.push(v);
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = reduce(&f, &args)?;
                    self.push(v);
                }
                b'b' => {
                    // BUILD: an OrderedDict's attributes (a state dict's
                    // `_metadata`) are not needed and are dropped.
                    self.pop()?;
                    match self.top()? {
                        Value::Dict(_) => {}
                        other => return Err(format!("pickle BUILD on a {} is not allowed", other.kind())),
                    }
                }
                _ => {
                    return Err(format!(
                        "pickle opcode 0x{op:02x} at byte {at} is not allowed in a state dict"
                    ))
                }
            }
            if self.marks.len() > 4096 || self.stack.len() > (1 << 24) {
                return Err("the pickle's stack grows past any state dict's".into());
            }
        }
    }
}

fn global(module: &str, name: &str) -> Result<Global, String> {
    GLOBALS
        .iter()
        .find(|(m, n, _)| *m == module && *n == name)
        .map(|g| g.2)
        .ok_or_else(|| {
            format!(
                "refused global {module}.{name}: a checkpoint may only name {}; nothing in it is executed",
                GLOBALS
                    .iter()
                    .map(|(m, n, _)| format!("{m}.{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn int(v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::Int(i) => u64::try_from(*i).map_err(|_| format!("{what} {i} is negative or too large")),
        other => Err(format!("{what} is a {}, expected an int", other.kind())),
    }
}

fn ints(v: &Value, what: &str) -> Result<Vec<u64>, String> {
    match v {
        Value::Tuple(s) | Value::List(s) => s.items.iter().map(|x| int(x, what)).collect(),
        other => Err(format!("{what} is a {}, expected a tuple", other.kind())),
    }
}

/// What "calling" a whitelisted global builds.
fn reduce(f: &Value, args: &Value) -> Result<Value, String> {
    let Value::Tuple(args) = args else {
        return Err(format!("pickle REDUCE with {} arguments", args.kind()));
    };
    let a = &args.items[..];
    match f {
        Value::Global(Global::OrderedDict) if a.is_empty() => Ok(Value::Dict(seq(Vec::new())?)),
        Value::Global(Global::RebuildTensor) if a.len() == 6 || a.len() == 7 => {
            let Value::Storage(storage) = &a[0] else {
                return Err(format!("_rebuild_tensor_v2 on a {}, expected a storage", a[0].kind()));
            };
            let size = ints(&a[2], "tensor size")?;
            let stride = ints(&a[3], "tensor stride")?;
            if size.len() != stride.len() {
                return Err(format!("tensor with {} sizes and {} strides", size.len(), stride.len()));
            }
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage: (**storage).clone(),
                offset: int(&a[1], "tensor offset")?,
                size,
                stride,
            })))
        }
        Value::Global(Global::RebuildParameter) if a.len() == 3 => match &a[0] {
            Value::Tensor(t) => Ok(Value::Tensor(t.clone())),
            other => Err(format!("_rebuild_parameter on a {}", other.kind())),
        },
        Value::Global(g) => Err(format!("{g:?} called with {} arguments is not allowed", a.len())),
        other => Err(format!("pickle REDUCE on a {} is not allowed", other.kind())),
    }
}

/// A storage from torch's persistent id: `('storage', type, key, location,
/// numel)` (zip format) or the same with a trailing view (legacy format,
/// where only `None` views are written for plain tensors).
pub(super) fn storage_pid(pid: &Value) -> Result<Value, String> {
    let Value::Tuple(t) = pid else {
        return Err(format!("persistent id is a {}, expected a tuple", pid.kind()));
    };
    let t = &t.items[..];
    let ok_len = t.len() == 5 || (t.len() == 6 && matches!(t[5], Value::None));
    if !ok_len || t[0].as_str() != Some("storage") {
        return Err("persistent id is not a plain ('storage', type, key, location, numel)".into());
    }
    let Value::Global(Global::Storage(dtype)) = t[1] else {
        return Err(format!("persistent id names a {} as storage type", t[1].kind()));
    };
    let key = t[2].as_str().ok_or("persistent id's storage key is not a string")?;
    Ok(Value::Storage(Rc::new(StorageRef {
        key: key.to_string(),
        dtype,
        numel: int(&t[4], "storage size")?,
    })))
}
