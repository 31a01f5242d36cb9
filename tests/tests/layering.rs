//! The layering rules, kept by a test so they cannot erode unnoticed:
//!
//! - no import cycle between the top-level modules of `kp-node` (`node/src/x.rs` and
//!   `node/src/x/` count as one module `x`), and none uses a module of a layer above its own
//!   (`LAYERS`);
//! - `kp-exchange` depends on none of tokio, sled, axum, tracing, rand (`cargo tree`);
//! - `kp-exchange`'s non-test code reads no clock, opens no socket or file and starts no thread.
//!
//! The sources are read as text: comments, string and character literals are blanked first, and
//! items under `#[cfg(test)]` (test modules, test-only files) are left out, since test code may
//! reach anywhere. A reference is a path in a `use` declaration (groups expanded) or in code
//! (`crate::x::y`, `super::…`, `self::…`); doc links, being comments, are not references.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lies in the workspace").to_path_buf()
}

/// `src` with comments, string and character literals replaced by spaces (newlines kept, so
/// line numbers stay true).
fn blank_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && !ident_char(c.get(i.wrapping_sub(1)))
        {
            // A raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match c.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|h| c.get(j + h) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            for ch in &c[i..j.min(c.len())] {
                blank(&mut out, *ch);
            }
            i = j;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '\'' {
            // A character literal ('x', '\n', '\u{..}'); otherwise a lifetime, kept.
            let end = if next == Some('\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for ch in &c[i..=e] {
                        blank(&mut out, *ch);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c[i]);
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // ::
    Punct(char),
}

/// The tokens of blanked source, each with its line.
fn tokens(code: &str) -> Vec<(usize, Tok)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while ident_char(c.get(i)) {
                i += 1;
            }
            out.push((line, Tok::Ident(c[start..i].iter().collect())));
        } else if ch.is_ascii_digit() {
            while ident_char(c.get(i)) {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((line, Tok::Path));
            i += 2;
        } else {
            out.push((line, Tok::Punct(ch)));
            i += 1;
        }
    }
    out
}

/// The tokens with every item under `#[cfg(test)]` (or another `cfg` naming `test`) left out.
fn without_test_items(toks: Vec<(usize, Tok)>) -> Vec<(usize, Tok)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].1 == Tok::Punct('#') && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::Punct('[')) {
            let end = matching(&toks, i + 1);
            let attr = &toks[i + 2..end];
            let is_test_cfg = matches!(attr.first(), Some((_, Tok::Ident(n))) if n == "cfg")
                && attr.iter().any(|(_, t)| *t == Tok::Ident("test".into()))
                && !attr.iter().any(|(_, t)| *t == Tok::Ident("not".into()));
            if is_test_cfg {
                i = item_end(&toks, end + 1);
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// The index of the bracket closing the one at `open`.
fn matching(toks: &[(usize, Tok)], open: usize) -> usize {
    let mut depth = 0i32;
    for (j, (_, t)) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len() - 1
}

/// The index just past the item starting at `start` (its attributes included): past its `;`
/// or its block's closing brace.
fn item_end(toks: &[(usize, Tok)], mut start: usize) -> usize {
    while start + 1 < toks.len() && toks[start].1 == Tok::Punct('#') {
        start = matching(toks, start + 1) + 1;
    }
    let mut j = start;
    while j < toks.len() {
        match toks[j].1 {
            Tok::Punct(';') => return j + 1,
            Tok::Punct('{') => return matching(toks, j) + 1,
            Tok::Punct('(' | '[') => j = matching(toks, j) + 1,
            _ => j += 1,
        }
    }
    toks.len()
}

/// A path named in the source: its segments and line.
#[derive(Debug)]
struct Mention {
    line: usize,
    segments: Vec<String>,
}

/// Every path in `toks`: those of `use` declarations with their groups expanded, and the
/// paths of two or more segments in code. Also returns the names `use` brings into scope,
/// each with the full path it stands for.
fn mentions(toks: &[(usize, Tok)]) -> (Vec<Mention>, BTreeMap<String, Vec<String>>) {
    let mut found = Vec::new();
    let mut aliases = BTreeMap::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].1 == Tok::Ident("use".into()) {
            let mut j = i + 1;
            use_tree(toks, &mut j, &[], &mut found, &mut aliases);
            i = j;
            continue;
        }
        if let Tok::Ident(first) = &toks[i].1 {
            let line = toks[i].0;
            let mut segments = vec![first.clone()];
            let mut j = i + 1;
            while toks.get(j).map(|t| &t.1) == Some(&Tok::Path) {
                match toks.get(j + 1).map(|t| &t.1) {
                    Some(Tok::Ident(s)) => {
                        segments.push(s.clone());
                        j += 2;
                    }
                    _ => break,
                }
            }
            if segments.len() > 1 {
                found.push(Mention { line, segments });
            }
            i = j;
            continue;
        }
        i += 1;
    }
    (found, aliases)
}

/// One use tree from `toks[*j]`, under `prefix`; leaves `*j` past it.
fn use_tree(
    toks: &[(usize, Tok)],
    j: &mut usize,
    prefix: &[String],
    found: &mut Vec<Mention>,
    aliases: &mut BTreeMap<String, Vec<String>>,
) {
    let mut path = prefix.to_vec();
    let line = toks.get(*j).map_or(0, |t| t.0);
    loop {
        match toks.get(*j).map(|t| &t.1) {
            Some(Tok::Path) => *j += 1,
            Some(Tok::Ident(s)) if s == "as" => {
                *j += 1;
                if let Some(Tok::Ident(alias)) = toks.get(*j).map(|t| &t.1) {
                    aliases.insert(alias.clone(), path.clone());
                    *j += 1;
                }
                found.push(Mention { line, segments: path });
                return;
            }
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                *j += 1;
            }
            Some(Tok::Punct('{')) => {
                *j += 1;
                loop {
                    match toks.get(*j).map(|t| &t.1) {
                        None => return,
                        Some(Tok::Punct('}')) => {
                            *j += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => *j += 1,
                        _ => use_tree(toks, j, &path, found, aliases),
                    }
                }
                return;
            }
            Some(Tok::Punct('*')) => {
                *j += 1;
                found.push(Mention { line, segments: path });
                return;
            }
            _ => {
                if let Some(last) = path.last() {
                    if last != "self" {
                        aliases.insert(last.clone(), path.clone());
                    } else if path.len() > 1 {
                        aliases.insert(path[path.len() - 2].clone(), path[..path.len() - 1].to_vec());
                    }
                }
                if !path.is_empty() {
                    found.push(Mention { line, segments: path });
                }
                if toks.get(*j).map(|t| &t.1) == Some(&Tok::Punct(';')) {
                    *j += 1;
                }
                return;
            }
        }
    }
}

/// A source file, read, blanked and without its test items.
fn read_code(path: &Path) -> Vec<(usize, Tok)> {
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    without_test_items(tokens(&blank_literals(&src)))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src` (`cli/peer.rs` → `[cli, peer]`, `cli/mod.rs` → `[cli]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// An edge between two top-level modules, with where it was seen first.
type Edges = BTreeMap<(String, String), String>;

/// The references between kp-node's top-level modules.
fn node_module_graph() -> (BTreeSet<String>, Edges) {
    let src = workspace_root().join("node/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| !(f.parent() == Some(&src) && (f.ends_with("lib.rs") || f.ends_with("main.rs"))))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_path(&src, f)[0].clone()).collect();
    let mut edges = Edges::new();
    for file in &files {
        let here = module_path(&src, file);
        let (found, _) = mentions(&read_code(file));
        for m in found {
            let absolute = match m.segments[0].as_str() {
                "crate" => m.segments[1..].to_vec(),
                "self" | "super" => {
                    let mut at = here.clone();
                    let mut rest = &m.segments[..];
                    while let Some(first) = rest.first() {
                        match first.as_str() {
                            "self" => {}
                            "super" => {
                                at.pop();
                            }
                            _ => break,
                        }
                        rest = &rest[1..];
                    }
                    at.extend(rest.iter().cloned());
                    at
                }
                _ => continue,
            };
            let Some(target) = absolute.first() else { continue };
            if *target != here[0] && modules.contains(target) {
                let at =
                    format!("{}:{}", file.strip_prefix(workspace_root()).unwrap_or(file).display(), m.line);
                edges.entry((here[0].clone(), target.clone())).or_insert(at);
            }
        }
    }
    (modules, edges)
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(modules: &BTreeSet<String>, edges: &Edges) -> Vec<Vec<String>> {
    struct State<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.next.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for (a, b) in edges.keys() {
        s.next.entry(a.as_str()).or_default().push(b.as_str());
    }
    for m in modules {
        if !s.index.contains_key(m.as_str()) {
            visit(&mut s, m);
        }
    }
    s.out.sort();
    s.out
}

#[test]
fn kp_node_modules_have_no_import_cycle() {
    let (modules, edges) = node_module_graph();
    // The walk must see the graph it judges: the store is used by most modules.
    assert!(
        modules.len() > 5 && edges.keys().any(|(_, b)| b == "store"),
        "the walk found {modules:?}, {edges:?}"
    );
    let found = cycles(&modules, &edges);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let inside: Vec<String> = edges
                .iter()
                .filter(|((a, b), _)| c.contains(a) && c.contains(b))
                .map(|((a, b), at)| format!("  {a} -> {b} ({at})"))
                .collect();
            format!("cycle among {{{}}}:\n{}", c.join(", "), inside.join("\n"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "kp-node's modules must depend one way (exchange <- state <- net/service/report <- api <- node <- cli/bench); found:\n{}",
        report.join("\n")
    );
}

/// kp-node's layers, bottom first: a module may use its own layer (without a cycle) and those
/// below, never one above. A module missing here fails the test, so a new one gets a place.
const LAYERS: [&[&str]; 6] = [
    &["store", "clock", "metrics", "home", "hsm", "os", "systemd", "actor"],
    &["state", "net"],
    &["link", "service", "report", "queries", "backup", "recover"],
    &["api", "console"],
    &["node"],
    &["client", "cli", "bench"],
];

#[test]
fn kp_node_modules_depend_downwards_only() {
    let (modules, edges) = node_module_graph();
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let unplaced: Vec<&String> = modules.iter().filter(|m| layer(m).is_none()).collect();
    assert!(unplaced.is_empty(), "give these modules a layer in LAYERS: {unplaced:?}");
    let upwards: Vec<String> = edges
        .iter()
        .filter(|((a, b), _)| layer(a) < layer(b))
        .map(|((a, b), at)| format!("  {a} -> {b} ({at})"))
        .collect();
    assert!(
        upwards.is_empty(),
        "kp-node's modules must use only their own layer and those below (state <- net/service/report <- api <- node <- cli/bench); these reach up:\n{}",
        upwards.join("\n")
    );
}

#[test]
fn the_readers_see_what_they_judge() {
    // The rule's own check: a graph with a cycle is reported, one without is not.
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let mut edges = Edges::new();
    edges.insert(("a".into(), "b".into()), "x".into());
    edges.insert(("b".into(), "c".into()), "x".into());
    assert!(cycles(&modules, &edges).is_empty());
    edges.insert(("c".into(), "a".into()), "x".into());
    assert_eq!(cycles(&modules, &edges), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    // And the reader sees through groups, comments, strings and test modules.
    let src = "use crate::{a::X, b};\n// crate::c\nlet s = \"crate::d\";\n#[cfg(test)]\nmod tests { use crate::e; }\nfn f() { crate::f::g(); }";
    let (found, _) = mentions(&without_test_items(tokens(&blank_literals(src))));
    let firsts: Vec<&str> = found.iter().map(|m| m.segments[1].as_str()).collect();
    assert_eq!(firsts, ["a", "b", "f"]);
    // A forbidden call through a `use`d name is seen; one in a test module is not.
    let src = "use std::thread;\nfn f() { thread::spawn(|| ()); }\n#[cfg(test)]\nmod t { fn g() { std::time::Instant::now(); } }";
    let (found, aliases) = mentions(&without_test_items(tokens(&blank_literals(src))));
    let hits: Vec<usize> =
        found.iter().filter(|m| forbidden(m, &aliases).is_some()).map(|m| m.line).collect();
    assert_eq!(hits, [2]);
}

/// The crates kp-exchange must never depend on: they would bring I/O, threads or time into
/// the exchange rules.
const FORBIDDEN_CRATES: [&str; 5] = ["tokio", "sled", "axum", "tracing", "rand"];

#[test]
fn kp_exchange_depends_on_no_runtime_crate() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["tree", "-p", "kp-exchange", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} tree: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let crates: BTreeSet<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    // Positive evidence the tree is the one meant: kp-exchange and its own dependencies.
    assert!(
        crates.contains("kp-exchange") && crates.contains("kp-protocol"),
        "unexpected cargo tree output:\n{text}"
    );
    let bad: Vec<&str> = FORBIDDEN_CRATES.iter().copied().filter(|c| crates.contains(c)).collect();
    assert!(
        bad.is_empty(),
        "kp-exchange must do no I/O, but depends on {bad:?} (see `cargo tree -p kp-exchange -e normal -i {}`)",
        bad.first().unwrap_or(&"")
    );
}

/// What kp-exchange's code must not name: it gets time, sockets, files and threads from its
/// caller.
const FORBIDDEN_PATHS: [&str; 5] =
    ["SystemTime::now", "Instant::now", "std::net", "std::fs", "std::thread::spawn"];

/// Whether `pattern`'s segments occur, in order and together, in `segments`.
fn names(segments: &[String], pattern: &str) -> bool {
    let p: Vec<&str> = pattern.split("::").collect();
    segments.windows(p.len()).any(|w| w.iter().zip(&p).all(|(a, b)| a == b))
}

/// The forbidden path `m` names, as written or through a `use`d name (`thread::spawn` after
/// `use std::thread;` is `std::thread::spawn`).
fn forbidden(m: &Mention, aliases: &BTreeMap<String, Vec<String>>) -> Option<&'static str> {
    let mut expanded = aliases.get(&m.segments[0]).cloned().unwrap_or_default();
    expanded.extend(m.segments.iter().skip(usize::from(!expanded.is_empty())).cloned());
    FORBIDDEN_PATHS.into_iter().find(|p| names(&m.segments, p) || names(&expanded, p))
}

/// kp-exchange's source files that are compiled outside tests: from `lib.rs`, following the
/// `mod x;` declarations that are not under `#[cfg(test)]`.
fn exchange_files() -> Vec<PathBuf> {
    let src = workspace_root().join("node/exchange/src");
    let mut todo = vec![src.join("lib.rs")];
    let mut out = Vec::new();
    while let Some(file) = todo.pop() {
        let toks = read_code(&file);
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "mod.rs") => file.parent().expect("a directory").to_path_buf(),
            _ => file.with_extension(""),
        };
        for w in toks.windows(3) {
            if let (Tok::Ident(m), Tok::Ident(name), Tok::Punct(';')) = (&w[0].1, &w[1].1, &w[2].1) {
                if m == "mod" {
                    let flat = dir.join(format!("{name}.rs"));
                    let nested = dir.join(name).join("mod.rs");
                    let child = if flat.exists() { flat } else { nested };
                    assert!(
                        child.exists(),
                        "{} declares mod {name}, but neither file exists",
                        file.display()
                    );
                    todo.push(child);
                }
            }
        }
        out.push(file);
    }
    out.sort();
    out
}

#[test]
fn kp_exchange_reads_no_clock_and_does_no_io() {
    let files = exchange_files();
    assert!(
        files.iter().any(|f| f.ends_with("engine/mod.rs"))
            && !files.iter().any(|f| f.ends_with("sim/mod.rs")),
        "the walk of kp-exchange's modules found {files:?}"
    );
    let mut bad = Vec::new();
    for file in &files {
        let (found, aliases) = mentions(&read_code(file));
        for m in found {
            if let Some(pattern) = forbidden(&m, &aliases) {
                bad.push(format!("{}:{}: {} ({pattern})", file.display(), m.line, m.segments.join("::")));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "kp-exchange must take time, sockets, files and threads from its caller, but names them:\n{}",
        bad.join("\n")
    );
}
