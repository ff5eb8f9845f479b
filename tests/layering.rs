//! The crate's modules form one stack and every `crate::` path points down it.
//!
//! The order is the one `src/lib.rs` documents; a module may name itself and
//! the modules below it. Comments and `#[cfg(test)]` sections are left out
//! (doc links may point anywhere), so what this checks is the code a build
//! compiles. A new top-level module must take its place here, which is the
//! point: where it sits is a decision, not an accident.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first.
const STACK: &[&str] = &[
    "embedded",
    "metrics",
    "schedule",
    "process",
    "gpu",
    "tensor",
    "io",
    "kernels",
    "operators",
    "unet",
    "samplers",
    "restore",
    "figures",
    "bench",
    "cli",
];

/// `crate::bindings!` is exported at the crate root by `#[macro_export]` but lives in `gpu`.
fn owner(name: &str) -> &str {
    match name {
        "bindings" => "gpu",
        other => other,
    }
}

fn rank(name: &str) -> Option<usize> {
    STACK.iter().position(|m| *m == owner(name))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if rel.components().count() == 1 {
        let stem = first.trim_end_matches(".rs");
        return (stem != "lib" && stem != "main").then(|| stem.to_string());
    }
    Some(first)
}

/// The top-level modules a file's compiled code names through `crate::`.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match trimmed.find("//") {
            Some(i) => &trimmed[..i],
            None => trimmed,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn every_crate_path_points_down_the_stack() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let here = rank(&module).unwrap_or_else(|| panic!("module `{module}` ({}) is not in STACK", file.display()));
        modules.insert(module.clone());
        for name in uses(&std::fs::read_to_string(file).unwrap()) {
            match rank(&name) {
                Some(there) if there > here => upward.push(format!(
                    "{} ({module}) uses crate::{name}",
                    file.strip_prefix(&src).unwrap().display()
                )),
                Some(_) => {}
                // Items re-exported at the crate root (`Gpu`, `Tensor`, ...) and macros.
                None => {}
            }
        }
    }
    assert!(upward.is_empty(), "upward edges:\n{}", upward.join("\n"));
    // Every module in the stack exists, so the list cannot rot silently.
    for m in STACK {
        assert!(modules.contains(*m), "STACK names `{m}`, which src/ does not have");
    }
}

#[test]
fn the_scanner_sees_paths_and_skips_comments_and_tests() {
    let text = "use crate::gpu::Gpu;\n// crate::cli in a comment\nlet x = crate::unet::f(); // crate::bench\n#[cfg(test)]\nmod tests { use crate::figures; }\n";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["gpu", "unet"]);
}
