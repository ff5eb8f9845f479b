//! The one place shaders are embedded: binaries and tests never read WGSL from
//! the working directory. A kernel's Rust wrapper in `src/kernels/<name>.rs`
//! and its WGSL in `shaders/<name>.wgsl` share the name.
//!
//! Element-type generic kernels declare their scalar type as the alias line
//! [`ALIAS_F32`] (`alias T = f32;`) and use `T` for their tensor data; such a
//! shader is instantiated for another [`DType`] with [`Shader::typed`], which
//! rewrites that line (and enables the `f16` extension) when the module is
//! built. The GPU context caches one module per (shader, dtype); a variant
//! instance carries its variant in its name.
//!
//! Kernels share WGSL through three line directives (a directive is a whole
//! line, leading blanks allowed):
//!
//! - `//!include NAME` is replaced by the library file `shaders/NAME.wgsl`
//!   (one of [`LIBRARIES`]; libraries are not kernels and include nothing
//!   themselves). The default instance is expanded at compile time, so
//!   [`Shader::source`] is always complete WGSL.
//! - `//!variant NAME: LIBRARY` lists a variant of the kernel: the instance
//!   for variant NAME has LIBRARY included on that line and every other
//!   `//!variant` line dropped. The first variant listed is the default
//!   instance; [`Shader::variant`] selects another (expanded at run time).
//! - `//!rewrite PATTERN => REPLACEMENT`, in a non-default variant's
//!   library, rewrites every match of PATTERN in the expanded instance, in
//!   the order the rules appear. `$1`..`$9` in PATTERN match balanced text
//!   (brackets paired, no `;` or braces) up to the literal that follows them
//!   and are substituted in REPLACEMENT. A rule that matches nothing is a bug
//!   (the source drifted from its library) and panics.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::DType;

/// The line an element-type generic shader declares its scalar type with.
pub const ALIAS_F32: &str = "alias T = f32;";

const INCLUDE: &[u8] = b"//!include ";
const VARIANT: &[u8] = b"//!variant ";
const REWRITE: &str = "//!rewrite ";

/// A WGSL source file compiled into the binary, instantiated for one element
/// type (f32 for every shader as written).
#[derive(Debug, Clone, Copy)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    pub dtype: DType,
}

impl Shader {
    /// A shader from WGSL text, as written (f32).
    pub const fn new(name: &'static str, source: &'static str) -> Shader {
        Shader {
            name,
            source,
            dtype: DType::F32,
        }
    }

    /// Whether the source is written against the alias `T` ([`ALIAS_F32`]).
    pub fn is_generic(&self) -> bool {
        self.source.lines().any(|l| l.trim() == ALIAS_F32)
    }

    /// This shader instantiated for `dtype`. Panics for a non-generic shader
    /// and any dtype but f32.
    pub fn typed(&self, dtype: DType) -> Shader {
        assert!(
            dtype == DType::F32 || self.is_generic(),
            "{}.wgsl has no `{ALIAS_F32}` line and cannot run on {dtype:?}",
            self.name
        );
        Shader { dtype, ..*self }
    }

    /// The variants the kernel file lists (`//!variant` lines), the default
    /// first; empty for a shader without variants.
    pub fn variants(&self) -> Vec<&'static str> {
        let Some(raw) = raw_source(self.name) else {
            return Vec::new();
        };
        raw.lines().filter_map(|l| variant_line(l).map(|(v, _)| v)).collect()
    }

    /// The instance of variant `variant` (in this shader's dtype), named
    /// `name[variant]`: built once and kept for the process. Panics for a
    /// variant the kernel does not list.
    pub fn variant(&self, variant: &str) -> Shader {
        let list = self.variants();
        let Some(&variant) = list.iter().find(|&&v| v == variant) else {
            panic!("{}.wgsl has no variant {variant:?} (it lists {list:?})", self.name)
        };
        if list[0] == variant {
            return *self;
        }
        static INSTANCES: OnceLock<Mutex<HashMap<(&'static str, &'static str), Shader>>> = OnceLock::new();
        let mut map = INSTANCES.get_or_init(Mutex::default).lock().unwrap();
        let shader = *map.entry((self.name, variant)).or_insert_with(|| {
            let raw = raw_source(self.name).expect("a shader with variants has a raw source");
            let mut bytes = vec![0u8; expand(raw, Some(variant), &mut [])];
            expand(raw, Some(variant), &mut bytes);
            let text = String::from_utf8(bytes).expect("expanding UTF-8 by whole lines keeps it UTF-8");
            let name = format!("{}[{variant}]", self.name);
            let source = apply_rewrites(&name, &text);
            Shader::new(Box::leak(name.into_boxed_str()), Box::leak(source.into_boxed_str()))
        });
        shader.typed(self.dtype)
    }

    /// The WGSL text for this instance: the source itself for f32, otherwise
    /// the alias line rewritten (with `enable f16;` first for f16).
    pub fn wgsl(&self) -> Cow<'static, str> {
        match self.dtype {
            DType::F32 => Cow::Borrowed(self.source),
            dtype => {
                let alias = format!("alias T = {};", dtype.wgsl());
                let body = self.source.replacen(ALIAS_F32, &alias, 1);
                Cow::Owned(match dtype {
                    DType::F16 if body.contains("enable f16;") => body,
                    DType::F16 => format!("enable f16;\n{body}"),
                    DType::F32 => body,
                })
            }
        }
    }
}

/// `(variant, library)` of a `//!variant NAME: LIBRARY` line.
fn variant_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim().strip_prefix(std::str::from_utf8(VARIANT).unwrap())?;
    let (name, lib) = rest.split_once(':')?;
    Some((name.trim(), lib.trim()))
}

/// The kernel file as written, by kernel name.
fn raw_source(name: &str) -> Option<&'static str> {
    RAW_SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

// ---------------------------------------------------------------- expansion
//
// `const fn`s, so that the default instance is expanded while compiling and
// `Shader::source` stays a `&'static str` of complete WGSL; variants run the
// same code at run time.

/// Index one past the end of the line starting at `at` (its `\n` included).
const fn line_end(s: &[u8], at: usize) -> usize {
    let mut i = at;
    while i < s.len() {
        i += 1;
        if s[i - 1] == b'\n' {
            break;
        }
    }
    i
}

const fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t' || c == b'\r' || c == b'\n'
}

/// `[a, b)` without leading and trailing blanks.
const fn trim(s: &[u8], mut a: usize, mut b: usize) -> (usize, usize) {
    while a < b && is_blank(s[a]) {
        a += 1;
    }
    while b > a && is_blank(s[b - 1]) {
        b -= 1;
    }
    (a, b)
}

/// Whether `s[a..b]` starts with `p`.
const fn has_prefix(s: &[u8], a: usize, b: usize, p: &[u8]) -> bool {
    if b - a < p.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        if s[a + i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `s[a..b]` is exactly `t`.
const fn equals(s: &[u8], a: usize, b: usize, t: &[u8]) -> bool {
    b - a == t.len() && has_prefix(s, a, b, t)
}

/// The library named `s[a..b]`; an unknown name is a build error.
const fn library(s: &[u8], a: usize, b: usize) -> &'static [u8] {
    let mut i = 0;
    while i < LIBRARIES.len() {
        if equals(s, a, b, LIBRARIES[i].0.as_bytes()) {
            return LIBRARIES[i].1.as_bytes();
        }
        i += 1;
    }
    panic!("//!include or //!variant names a library that shaders.rs does not embed")
}

/// Copies `src[a..b]` to `out` at `n` (as far as `out` reaches); the new `n`.
const fn put(out: &mut [u8], mut n: usize, src: &[u8], a: usize, b: usize) -> usize {
    let mut i = a;
    while i < b {
        if n < out.len() {
            out[n] = src[i];
        }
        n += 1;
        i += 1;
    }
    n
}

/// Copies a library, ending it with a newline.
const fn put_library(out: &mut [u8], n: usize, lib: &[u8]) -> usize {
    let mut i = 0;
    while i < lib.len() {
        let e = line_end(lib, i);
        let (a, b) = trim(lib, i, e);
        if has_prefix(lib, a, b, INCLUDE) || has_prefix(lib, a, b, VARIANT) {
            panic!("a library file includes nothing itself");
        }
        i = e;
    }
    let n = put(out, n, lib, 0, lib.len());
    if !lib.is_empty() && lib[lib.len() - 1] != b'\n' {
        return put(out, n, b"\n", 0, 1);
    }
    n
}

/// Expands the includes and the variant line of `raw` for `variant` (`None`:
/// the first listed) into `out`, as far as it reaches; returns the expanded
/// length, so a first call with an empty `out` sizes the second.
pub(crate) const fn expand(raw: &str, variant: Option<&str>, out: &mut [u8]) -> usize {
    let s = raw.as_bytes();
    let mut i = 0;
    let mut n = 0;
    let mut first_variant = true;
    while i < s.len() {
        let e = line_end(s, i);
        let (a, b) = trim(s, i, e);
        if has_prefix(s, a, b, INCLUDE) {
            let (la, lb) = trim(s, a + INCLUDE.len(), b);
            n = put_library(out, n, library(s, la, lb));
        } else if has_prefix(s, a, b, VARIANT) {
            let mut colon = a + VARIANT.len();
            while colon < b && s[colon] != b':' {
                colon += 1;
            }
            if colon == b {
                panic!("a //!variant line reads `//!variant NAME: LIBRARY`");
            }
            let (va, vb) = trim(s, a + VARIANT.len(), colon);
            let chosen = match variant {
                None => first_variant,
                Some(v) => equals(s, va, vb, v.as_bytes()),
            };
            if chosen {
                let (la, lb) = trim(s, colon + 1, b);
                let lib = library(s, la, lb);
                if variant.is_none() && contains(lib, REWRITE.as_bytes()) {
                    panic!("//!rewrite rules belong to a non-default variant's library");
                }
                n = put_library(out, n, lib);
            }
            first_variant = false;
        } else {
            n = put(out, n, s, i, e);
        }
        i = e;
    }
    n
}

const fn contains(s: &[u8], p: &[u8]) -> bool {
    let mut i = 0;
    while i + p.len() <= s.len() {
        if has_prefix(s, i, s.len(), p) {
            return true;
        }
        i += 1;
    }
    false
}

// ---------------------------------------------------------------- rewrites

/// One piece of a rewrite pattern or replacement: literal text or `$k`.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Hole(usize),
}

fn pieces(s: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().and_then(|d| d.to_digit(10))) {
            ('$', Some(k)) if k >= 1 => {
                chars.next();
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Hole(k as usize));
            }
            _ => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

/// The end of a match of `pat` at the start of `t`, with the holes' text.
fn match_at<'a>(t: &'a str, pat: &[Piece]) -> Option<(usize, HashMap<usize, &'a str>)> {
    let mut pos = 0;
    let mut holes = HashMap::new();
    let mut k = 0;
    while k < pat.len() {
        match &pat[k] {
            Piece::Text(lit) => {
                if !t[pos..].starts_with(lit.as_str()) {
                    return None;
                }
                pos += lit.len();
            }
            Piece::Hole(h) => {
                let Some(Piece::Text(next)) = pat.get(k + 1) else {
                    unreachable!("checked by apply_rewrites")
                };
                let mut depth = 0i32;
                let mut end = None;
                for (j, c) in t[pos..].char_indices() {
                    if depth == 0 && j > 0 && t[pos + j..].starts_with(next.as_str()) {
                        end = Some(pos + j);
                        break;
                    }
                    match c {
                        '(' | '[' => depth += 1,
                        ')' | ']' => depth -= 1,
                        ';' | '{' | '}' => return None,
                        _ => {}
                    }
                    if depth < 0 {
                        return None;
                    }
                }
                let end = end?;
                holes.insert(*h, &t[pos..end]);
                pos = end;
            }
        }
        k += 1;
    }
    Some((pos, holes))
}

/// Applies and removes the `//!rewrite` lines of an expanded instance.
fn apply_rewrites(name: &str, text: &str) -> String {
    let mut rules = Vec::new();
    let mut body = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.trim().strip_prefix(REWRITE) {
            Some(rule) => {
                let (pat, rep) = rule
                    .split_once(" => ")
                    .unwrap_or_else(|| panic!("{name}: a rewrite rule reads `PATTERN => REPLACEMENT`: {rule}"));
                let pat = pieces(pat);
                let ok = matches!(pat.first(), Some(Piece::Text(_)))
                    && pat.windows(2).all(|w| !matches!(w, [Piece::Hole(_), Piece::Hole(_)]))
                    && matches!(pat.last(), Some(Piece::Text(_)));
                assert!(
                    ok,
                    "{name}: a rewrite pattern starts and ends with text, holes apart: {rule}"
                );
                rules.push((rule.to_string(), pat, pieces(rep)));
            }
            None => body.push_str(line),
        }
    }
    for (rule, pat, rep) in rules {
        let Some(Piece::Text(first)) = pat.first() else {
            unreachable!()
        };
        let mut out = String::with_capacity(body.len());
        let mut rest = body.as_str();
        let mut count = 0;
        while let Some(at) = rest.find(first.as_str()) {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            match match_at(rest, &pat) {
                Some((end, holes)) => {
                    for p in &rep {
                        match p {
                            Piece::Text(s) => out.push_str(s),
                            Piece::Hole(h) => out.push_str(
                                holes
                                    .get(h)
                                    .unwrap_or_else(|| panic!("{name}: `${h}` is not in the pattern of {rule}")),
                            ),
                        }
                    }
                    rest = &rest[end..];
                    count += 1;
                }
                None => {
                    out.push_str(&rest[..first.len()]);
                    rest = &rest[first.len()..];
                }
            }
        }
        out.push_str(rest);
        assert!(count > 0, "{name}: the rewrite rule `{rule}` matches nothing");
        body = out;
    }
    body
}

// ---------------------------------------------------------------- the files

macro_rules! libraries {
    ($($file:literal),* $(,)?) => {
        /// The library files `//!include` and `//!variant` name: WGSL shared
        /// by kernels, never built on their own.
        pub const LIBRARIES: &[(&str, &str)] = &[$(($file, include_str!(concat!("../../shaders/", $file, ".wgsl")))),*];
    };
}

libraries! {
    "conv_common",
    "coop_common",
    "coop_common_emulated",
    "grid",
    "block_sum",
}

macro_rules! shaders {
    ($($ident:ident => $file:literal),* $(,)?) => {
        $(pub const $ident: Shader = {
            const RAW: &str = include_str!(concat!("../../shaders/", $file, ".wgsl"));
            const LEN: usize = expand(RAW, None, &mut []);
            const BYTES: [u8; LEN] = {
                let mut b = [0u8; LEN];
                expand(RAW, None, &mut b);
                b
            };
            match std::str::from_utf8(&BYTES) {
                Ok(source) => Shader::new($file, source),
                Err(_) => panic!("expanding UTF-8 by whole lines keeps it UTF-8"),
            }
        };)*
        /// Every kernel (not the libraries), for the device-free naga validation test.
        pub const ALL_SHADERS: &[&Shader] = &[$(&$ident),*];
        /// The kernel files as written, for expanding their variants.
        const RAW_SOURCES: &[(&str, &str)] = &[$(($file, include_str!(concat!("../../shaders/", $file, ".wgsl")))),*];
    };
}

shaders! {
    ELEMENTWISE => "elementwise",
    REDUCE => "reduce",
    RANDOM => "random",
    CONV_REFLECT => "conv_reflect",
    AXIS_MATMUL => "axis_matmul",
    MASK => "mask",
    COLORIZE => "colorize",
    CONV2D => "conv2d",
    CONV2D_COOP => "conv2d_coop",
    GROUPNORM => "groupnorm",
    LINEAR => "linear",
    ATTENTION => "attention",
    RESAMPLE => "resample",
    TIMESTEP => "timestep",
    DENSE => "dense",
    GMM => "gmm",
    CG => "cg",
    SAMPLER => "sampler",
    SMC => "smc",
    FFT => "fft",
    PHASE => "phase",
    JPEG => "jpeg",
    EMBED => "embed",
}

/// Writes a tensor's image into an RGBA8 storage texture. Outside [`ALL_SHADERS`]:
/// it binds a texture, which the typed buffer bindings (and their layout test)
/// do not describe; `tests/embed.rs` compiles and checks it on a device.
pub const TO_TEXTURE: Shader = Shader::new("to_texture", include_str!("../../shaders/to_texture.wgsl"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_directives_is_its_own_expansion() {
        for (name, raw) in RAW_SOURCES {
            if !raw.contains("//!") {
                let s = ALL_SHADERS.iter().find(|s| s.name == *name).unwrap();
                assert_eq!(s.source, *raw, "{name}");
            }
        }
    }

    #[test]
    fn includes_and_variants_expand_by_line() {
        static RAW: &str = "a\n  //!variant one: conv_common\n//!variant two: coop_common\nb\n";
        let mut out = vec![0u8; expand(RAW, None, &mut [])];
        expand(RAW, None, &mut out);
        let text = String::from_utf8(out).unwrap();
        let conv_common = LIBRARIES[0].1;
        assert_eq!(text, format!("a\n{conv_common}b\n"));
        let mut out = vec![0u8; expand(RAW, Some("two"), &mut [])];
        expand(RAW, Some("two"), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("a\n{}b\n", LIBRARIES[1].1));
    }

    #[test]
    fn rewrites_match_balanced_holes() {
        let text =
            "//!rewrite load<A>(&$1[$2], $3) => load_a(&$1, $2, $3)\nx = load<A>(&sh[(q * 2u) + f(1, 2)], LD);\n";
        assert_eq!(apply_rewrites("t", text), "x = load_a(&sh, (q * 2u) + f(1, 2), LD);\n");
    }

    #[test]
    #[should_panic(expected = "matches nothing")]
    fn a_rewrite_that_matches_nothing_panics() {
        apply_rewrites("t", "//!rewrite nope($1) => yes($1)\nx = 1;\n");
    }
}
