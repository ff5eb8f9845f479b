//! Lists the shipped test images for `include_bytes!` (src/embedded.rs), so the
//! binary carries the demo's images and runs from any directory.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dir = root.join("weights/fashion-mnist-32/test-images");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    let mut src = String::from("/// The shipped held-out test images (name, PNG bytes), sorted by name.\n");
    src.push_str("pub const TEST_IMAGES: &[(&str, &[u8])] = &[\n");
    for n in &names {
        let path = dir.join(n);
        writeln!(src, "    ({n:?}, include_bytes!({:?})),", path.display().to_string()).unwrap();
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("test_images.rs");
    std::fs::write(&out, src).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}
