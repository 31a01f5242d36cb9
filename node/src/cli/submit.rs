//! `kpnode cert submit FILE…` with several files, or `-` (NDJSON on stdin): bulk submission
//! through `POST /v1/certificates/batch`, in batches of at most its limits, one line per
//! certificate. (One file alone keeps the single route and its output.)

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{CliResult, DirArg, Failure};
use crate::client::{Client, ClientError};
use crate::home::NodeDir;
use crate::service::issuing::{BATCH_BODY_FACTOR, MAX_BATCH_ITEMS};

/// One certificate to submit: where it came from (`FILE` or `-:LINE`) and its JSON text.
#[derive(Debug)]
struct Item {
    source: String,
    text: String,
}

/// How one certificate fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Stored,
    /// Refused for its content: only changing it helps (exit 2).
    Invalid,
    /// The node or the connection failed (exit 1): submitting again is safe.
    Failed,
}

/// The certificates of `files` (`-`: one per line of stdin); an unreadable file or a line
/// that is not JSON is answered at once, never sent.
fn collect(files: &[PathBuf], fates: &mut Vec<Fate>) -> Vec<Item> {
    let mut items = Vec::new();
    let refuse = |source: &str, why: String, fates: &mut Vec<Fate>| {
        eprintln!("error: {source}: {why}");
        fates.push(Fate::Invalid);
    };
    for file in files {
        if file == Path::new("-") {
            let stdin = std::io::stdin();
            for (n, line) in stdin.lock().lines().enumerate() {
                let source = format!("-:{}", n + 1);
                match line {
                    Err(e) => {
                        refuse(&source, format!("cannot read stdin: {e}"), fates);
                        break;
                    }
                    Ok(l) if l.trim().is_empty() => {}
                    Ok(l) => match serde_json::from_str::<serde::de::IgnoredAny>(&l) {
                        Ok(_) => items.push(Item { source, text: l }),
                        Err(e) => refuse(
                            &source,
                            format!("is not JSON ({e}); give one certificate per line"),
                            fates,
                        ),
                    },
                }
            }
            continue;
        }
        let source = file.display().to_string();
        match super::read_input(file) {
            Err(f) => f
                .lines
                .into_iter()
                .for_each(|l| refuse(&source, l.replacen(&format!("{source}: "), "", 1), fates)),
            Ok(text) => match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                Ok(_) => items.push(Item { source, text }),
                Err(e) => refuse(&source, format!("is not JSON: {e}"), fates),
            },
        }
    }
    items
}

/// Splits `items` into batches of at most [`MAX_BATCH_ITEMS`] and `max_body` bytes (a
/// certificate larger than that alone goes in a batch of its own, and is refused by the node).
fn batches(items: &[Item], max_body: usize) -> Vec<&[Item]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 2);
    for (i, item) in items.iter().enumerate() {
        let add = item.text.len() + 1;
        if i > start && (i - start >= MAX_BATCH_ITEMS || size + add > max_body) {
            out.push(&items[start..i]);
            (start, size) = (i, 2);
        }
        size += add;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The batch's body: the items' texts joined verbatim, so the node keys each certificate
/// (`idempotency=content`) by the SHA-256 of the file, as `kpnode cert submit FILE` does.
fn body(batch: &[Item]) -> String {
    let mut body = String::with_capacity(batch.iter().map(|i| i.text.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, item) in batch.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&item.text);
    }
    body.push(']');
    body
}

/// Prints one certificate's answer (an item of the batch's answer); returns how it fared.
fn report(item: &Item, answer: &Value, as_json: bool) -> Fate {
    let code = answer["code"].as_u64().unwrap_or(0);
    if as_json {
        let mut line = answer.clone();
        line["source"] = item.source.clone().into();
        println!("{line}");
    }
    if code == 200 || code == 201 {
        let c = &answer["certificate"];
        if !as_json {
            let again = if code == 200 { " (already stored)" } else { "" };
            println!(
                "{}: {} {}{again}",
                item.source,
                c["number"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?")
            );
        }
        for w in c["warnings"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            eprintln!("warning: {}: {w}", item.source);
        }
        return Fate::Stored;
    }
    let failure = Failure::from(crate::client::api_failure(code as u16, &answer["error"]));
    for line in &failure.lines {
        eprintln!("error: {}: {line}", item.source);
    }
    if failure.code == 2 {
        Fate::Invalid
    } else {
        Fate::Failed
    }
}

/// Submits every certificate of `files`; exit 0 if all are stored, 1 if any failed at the
/// node or on the way (submitting again is safe), else 2 if any was refused for its content.
pub fn submit_many(files: &[PathBuf], dir: &DirArg, as_json: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let max_body = home.config()?.api.max_body_bytes as usize * BATCH_BODY_FACTOR;
    let client = Client::for_dir(&home)?;
    let mut fates = Vec::new();
    let items = collect(files, &mut fates);
    for batch in batches(&items, max_body) {
        let answer = client.post("/v1/certificates/batch?idempotency=content", body(batch).as_bytes());
        match answer {
            Ok((_, v)) => {
                let answers = v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                for (i, item) in batch.iter().enumerate() {
                    match answers.get(i) {
                        Some(a) => fates.push(report(item, a, as_json)),
                        None => {
                            eprintln!("error: {}: the node's answer has no item {i}", item.source);
                            fates.push(Fate::Failed);
                        }
                    }
                }
            }
            // The batch refused whole (too large, the daemon unreachable…): every certificate
            // in it is answered with the reason.
            Err(e) => {
                let fate = match &e {
                    ClientError::Refused { invalid: true, .. } => Fate::Invalid,
                    _ => Fate::Failed,
                };
                for item in batch {
                    for line in e.lines() {
                        eprintln!("error: {}: {line}", item.source);
                    }
                    fates.push(fate);
                }
            }
        }
    }
    let count = |f: Fate| fates.iter().filter(|x| **x == f).count();
    let (failed, invalid) = (count(Fate::Failed), count(Fate::Invalid));
    let summary = format!("{} stored, {invalid} refused, {failed} failed", count(Fate::Stored));
    if failed > 0 {
        Err(Failure::runtime(format!(
            "{summary}: submit again once the node is back (certificates already stored are recognised, not issued twice)"
        )))
    } else if invalid > 0 {
        Err(Failure::input(format!("{summary}: fix the certificates named above and submit them again")))
    } else {
        if fates.is_empty() {
            return Err(Failure::input("no certificates given: name files, or - for NDJSON on stdin"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Item {
        Item { source: String::new(), text: "x".repeat(n) }
    }

    #[test]
    fn batches_respect_both_limits() {
        let items: Vec<Item> = (0..2500).map(|_| item(1)).collect();
        let sizes: Vec<usize> = batches(&items, 1 << 20).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        let items: Vec<Item> = (0..5).map(|_| item(40)).collect();
        // 2 + 41 + 41 = 84 fits in 100; a third does not.
        let sizes: Vec<usize> = batches(&items, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let items = vec![item(500), item(1)];
        let sizes: Vec<usize> = batches(&items, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![1, 1]);
    }
}
