//! Embeds every label file of the printed certificate (`data/labels/<language>.toml`), so that
//! adding a language is adding one file: this writes `$OUT_DIR/labels.rs`, the list of
//! `(language code, include_str!(file))` that `src/report/pdf/labels.rs` includes.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/labels");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| {
            let code = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            (code, path.display().to_string())
        })
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    for (code, path) in &files {
        let _ = writeln!(out, "    ({code:?}, include_str!({path:?})),");
    }
    out.push(']');
    let target = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("labels.rs");
    std::fs::write(&target, out).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
}
