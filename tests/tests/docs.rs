//! The documents that ship with the project tell the same story as the code: every relative
//! link in README.md and docs/ reaches a file (and a heading, when it names one), every
//! `kpnode …` command they show in code is one the binary has (its `--help` answers), and
//! nothing in the repository points at notes users do not have.

use std::path::{Path, PathBuf};
use std::process::Command;

use kp_tests::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The user documents: README.md and every Markdown file in docs/.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A heading's anchor as GitHub makes it: lower case, spaces to dashes, punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix('#')).map(|h| slug(h.trim_start_matches('#'))).collect()
}

#[test]
fn every_relative_link_in_the_documents_reaches_its_target() {
    let docs = documents();
    assert!(
        docs.iter().any(|d| d.ends_with("docs/operations.md"))
            && docs.iter().any(|d| d.ends_with("docs/protocol.md"))
    );
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.starts_with("http") || target.contains(' ') || target.is_empty() {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target, None),
            };
            let path = if file.is_empty() { doc.clone() } else { doc.parent().unwrap().join(file) };
            assert!(path.exists(), "{}: the link {target} leads nowhere", doc.display());
            if let Some(a) = anchor {
                let linked = std::fs::read_to_string(&path).unwrap();
                assert!(
                    anchors(&linked).contains(&a.to_owned()),
                    "{}: no heading #{a} in {}",
                    doc.display(),
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} links found");
}

#[test]
fn every_kpnode_command_the_documents_show_exists() {
    let mut commands = std::collections::BTreeSet::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        // Code spans and code blocks alike: every piece between backticks.
        for (n, piece) in text.split('`').enumerate() {
            if n % 2 == 0 {
                continue;
            }
            for line in piece.lines() {
                let mut rest = line;
                while let Some(at) = rest.find("kpnode ") {
                    let before = &rest[..at];
                    rest = &rest[at + 7..];
                    // `/usr/bin/kpnode`, `kpnode-backup`: not a command line.
                    if before.ends_with(|c: char| {
                        c.is_alphanumeric() || c == '/' || c == '-' || c == '_' || c == '.'
                    }) {
                        continue;
                    }
                    // Prose quoted in code (an error message: "another kpnode process"): not a command.
                    let previous = before.split_whitespace().last().unwrap_or("");
                    if ["a", "an", "another", "the", "newer", "older", "this"].contains(&previous) {
                        continue;
                    }
                    let words: Vec<&str> = rest
                        .split_whitespace()
                        .take(2)
                        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()) && !w.is_empty())
                        .collect();
                    if !words.is_empty() {
                        commands.insert(words.join(" "));
                    }
                }
            }
        }
    }
    for must in ["backup", "restore", "log verify", "keys rotate", "completions", "man"] {
        assert!(
            commands.iter().any(|c| c == must || c.starts_with(&format!("{must} "))),
            "{must} is not shown: {commands:?}"
        );
    }
    for c in &commands {
        let mut args: Vec<&str> = c.split(' ').collect();
        // A second word may be the first argument (`completions bash`): then the first word alone.
        let (code, _, _) = kpnode(&[args.as_slice(), &["--help"]].concat());
        if code != 0 {
            args.pop();
            let (code, _, err) = kpnode(&[args.as_slice(), &["--help"]].concat());
            assert!(
                code == 0 && !args.is_empty(),
                "the documents show `kpnode {c}`, which is not a command: {err}"
            );
        }
    }
}

#[test]
fn nothing_in_the_repository_points_at_notes_users_do_not_have() {
    let out = Command::new("git").arg("ls-files").current_dir(root()).output().expect("git runs");
    assert!(out.status.success());
    let needles = [
        concat!("DESIGN", ".md"),
        concat!("kp-domain", ".md"),
        concat!("STYLE", ".md"),
        concat!("/work/", "shared"),
    ];
    let mut found = Vec::new();
    for file in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(text) = std::fs::read_to_string(root().join(file)) else { continue };
        for n in needles {
            if text.contains(n) {
                found.push(format!("{file}: {n}"));
            }
        }
    }
    assert!(found.is_empty(), "references to files outside the repository: {found:?}");
}
