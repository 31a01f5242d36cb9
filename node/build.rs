//! Embeds the node's language data, so that adding a language is adding files, not code:
//! - every label file of the printed certificate (`data/labels/<language>.toml`) into
//!   `$OUT_DIR/labels.rs`, which `src/report/pdf/labels.rs` includes;
//! - every message catalogue of the console (`data/console/<language>.ftl`, Fluent) into
//!   `$OUT_DIR/console_catalogues.rs`, which `src/service/i18n.rs` includes.
//!
//! Each is the list of `(language code, include_str!(file))`, sorted by code.

use std::fmt::Write as _;
use std::path::Path;

fn embed(dir_name: &str, extension: &str, out_name: &str) {
    // Read when the script runs, not when it is compiled: a build script's binary may be reused
    // for a checkout in another directory that shares the target directory.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join(dir_name);
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut files: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .map(|path| {
            let code = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            (code, path)
        })
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    for (code, path) in &files {
        println!("cargo::rerun-if-changed={}", path.display());
        // The file named from the crate being compiled, not by this checkout's absolute path:
        // the generated file may be compiled for another checkout sharing the target directory.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let relative = format!("/{dir_name}/{name}");
        let _ = writeln!(
            out,
            "    ({code:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {relative:?}))),"
        );
    }
    out.push(']');
    let target = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join(out_name);
    std::fs::write(&target, out).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
}

fn main() {
    embed("data/labels", "toml", "labels.rs");
    embed("data/console", "ftl", "console_catalogues.rs");
}
