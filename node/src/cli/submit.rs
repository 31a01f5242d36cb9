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

/// Collects certificates into batches of at most [`MAX_BATCH_ITEMS`] and `max_body` bytes and
/// sends each when full, so stdin of any length is read a batch at a time.
struct Sender<'a> {
    client: &'a Client,
    max_body: usize,
    /// The most a certificate may be (`api.max_body_bytes`).
    max_item: usize,
    as_json: bool,
    batch: Vec<Item>,
    /// The body the batch makes: `[`, `]`, and each text with its comma.
    size: usize,
    fates: Vec<Fate>,
}

impl Sender<'_> {
    /// Adds a certificate, first sending the batch if this one would not fit in it (a
    /// certificate larger than `max_body` alone goes in a batch of its own, and the node
    /// refuses it).
    fn push(&mut self, item: Item) {
        let add = item.text.len() + 1;
        if full(self.batch.len(), self.size, add, self.max_body) {
            self.send();
        }
        self.size += add;
        self.batch.push(item);
    }

    /// Answers a certificate that is not sent (unreadable, or not JSON).
    fn refuse(&mut self, source: &str, why: String) {
        eprintln!("error: {source}: {why}");
        self.fates.push(Fate::Invalid);
    }

    /// Sends the batch and prints one line per certificate in it.
    fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.size = 2;
        match self.client.post("/v1/certificates/batch?idempotency=content", body(&batch).as_bytes()) {
            Ok((_, v)) => {
                let answers = v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                for (i, item) in batch.iter().enumerate() {
                    match answers.get(i) {
                        Some(a) => self.fates.push(report(item, a, self.as_json)),
                        None => {
                            eprintln!("error: {}: the node's answer has no item {i}", item.source);
                            self.fates.push(Fate::Failed);
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
                for item in &batch {
                    for line in e.lines() {
                        eprintln!("error: {}: {line}", item.source);
                    }
                    self.fates.push(fate);
                }
            }
        }
    }

    /// Takes the certificates of `file` (`-`: one per line of stdin); an unreadable file or a
    /// line that is not JSON is answered at once, never sent.
    fn read(&mut self, file: &Path) {
        if file == Path::new("-") {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut n = 0;
            loop {
                n += 1;
                let source = format!("-:{n}");
                match read_line(&mut input, self.max_item) {
                    Err(e) => {
                        self.refuse(&source, format!("cannot read stdin: {e}"));
                        break;
                    }
                    Ok(Line::End) => break,
                    Ok(Line::TooLong) => self.refuse(
                        &source,
                        format!(
                            "is longer than the {} bytes api.max_body_bytes allows a certificate",
                            self.max_item
                        ),
                    ),
                    Ok(Line::Text(l)) if l.trim().is_empty() => {}
                    Ok(Line::Text(l)) => match serde_json::from_str::<serde::de::IgnoredAny>(&l) {
                        Ok(_) => self.push(Item { source, text: l }),
                        Err(e) => {
                            self.refuse(&source, format!("is not JSON ({e}); give one certificate per line"))
                        }
                    },
                }
            }
            return;
        }
        let source = file.display().to_string();
        match super::read_input(file) {
            Err(f) => {
                for line in f.lines {
                    self.refuse(&source, line.replacen(&format!("{source}: "), "", 1));
                }
            }
            Ok(text) => match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                Ok(_) => self.push(Item { source, text }),
                Err(e) => self.refuse(&source, format!("is not JSON: {e}")),
            },
        }
    }
}

/// A line of stdin.
#[derive(Debug, PartialEq)]
enum Line {
    Text(String),
    /// Longer than a certificate may be: skipped to its end, never held whole.
    TooLong,
    End,
}

/// Reads a line of at most `limit` bytes (without its newline) from `input`.
fn read_line(input: &mut impl BufRead, limit: usize) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let read = std::io::Read::take(&mut *input, limit as u64 + 1).read_until(b'\n', &mut buf)?;
    if read == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > limit {
        // Skip the rest of the line, a buffer at a time.
        loop {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    input.consume(at + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    input.consume(len);
                }
            }
        }
        return Ok(Line::TooLong);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Line::Text)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a line is not UTF-8 text"))
}

/// Whether a batch of `len` certificates making a body of `size` bytes must be sent before
/// one of `add` more bytes joins it.
fn full(len: usize, size: usize, add: usize, max_body: usize) -> bool {
    len > 0 && (len >= MAX_BATCH_ITEMS || size + add > max_body)
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
    let max_item = home.config()?.api.max_body_bytes as usize;
    let max_body = max_item.saturating_mul(BATCH_BODY_FACTOR);
    let client = Client::for_dir(&home)?;
    let mut sender = Sender {
        client: &client,
        max_body,
        max_item,
        as_json,
        batch: Vec::new(),
        size: 2,
        fates: Vec::new(),
    };
    for file in files {
        sender.read(file);
    }
    sender.send();
    let fates = sender.fates;
    let count = |f: Fate| fates.iter().filter(|x| **x == f).count();
    let (failed, invalid) = (count(Fate::Failed), count(Fate::Invalid));
    let summary = format!("{} stored, {invalid} refused, {failed} failed", count(Fate::Stored));
    if failed > 0 {
        Err(Failure::runtime(format!(
            "{summary}: submit again once the node is back (certificates already stored are recognised, not issued twice)"
        )))
    } else if invalid > 0 {
        Err(Failure::input(format!("{summary}: fix the certificates named above and submit them again")))
    } else if fates.is_empty() {
        Err(Failure::input("no certificates given: name files, or - for NDJSON on stdin"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes of the batches `texts` of these lengths are cut into.
    fn cut(lengths: &[usize], max_body: usize) -> Vec<usize> {
        let (mut out, mut len, mut size) = (Vec::new(), 0, 2);
        for l in lengths {
            if full(len, size, l + 1, max_body) {
                out.push(len);
                (len, size) = (0, 2);
            }
            len += 1;
            size += l + 1;
        }
        out.push(len);
        out
    }

    #[test]
    fn batches_respect_both_limits() {
        assert_eq!(cut(&[1; 2500], 1 << 20), vec![1000, 1000, 500]);
        // 2 + 41 + 41 = 84 fits in 100; a third does not.
        assert_eq!(cut(&[40; 5], 100), vec![2, 2, 1]);
        // Too large alone: a batch of its own.
        assert_eq!(cut(&[500, 1], 100), vec![1, 1]);
    }

    #[test]
    fn lines_are_read_within_their_limit() {
        let mut input = std::io::Cursor::new(b"{}\nxxxxxxxxxxxx\n{\"a\":1}\r\n\nlast".to_vec());
        let mut lines = Vec::new();
        loop {
            match read_line(&mut input, 8).unwrap() {
                Line::End => break,
                l => lines.push(l),
            }
        }
        let text = |s: &str| Line::Text(s.to_owned());
        assert_eq!(lines, vec![text("{}"), Line::TooLong, text("{\"a\":1}"), text(""), text("last")]);
    }

    #[test]
    fn a_batch_joins_the_texts_verbatim() {
        let items = [
            Item { source: "a".into(), text: "{}\n".into() },
            Item { source: "b".into(), text: " 1".into() },
        ];
        assert_eq!(body(&items), "[{}\n, 1]");
    }
}
