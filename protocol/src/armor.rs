//! ASCII armor for documents that travel by e-mail or USB stick (enrolment bundles, signed
//! certificates): a BEGIN line, informational headers, base64 in 64-column lines, an END
//! line.
//!
//! Armor is strict. The headers only repeat what is inside the base64 (so a human can read
//! them), and a file is accepted only if it is exactly the armor its content would produce,
//! up to CRLF line endings and a missing final newline. So every changed byte is noticed,
//! and a header can never say something the signed content does not.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Why armored text was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ArmorError {
    #[error("no '-----BEGIN {0}-----' line at the start")]
    MissingBegin(&'static str),
    #[error("no '-----END {0}-----' line")]
    MissingEnd(&'static str),
    #[error("the base64 content is damaged: {0}")]
    Base64(String),
    #[error(
        "the file differs from what its signed content produces (a header or the layout was \
         changed); ask the sender for an untouched copy"
    )]
    NotCanonical,
}

/// Header values are shown in ASCII; anything else becomes '?'.
fn ascii(value: &str) -> String {
    value.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// Renders `data` as armor with `label` and `headers`.
pub fn armor(label: &str, headers: &[(&str, String)], data: &[u8]) -> String {
    let mut out = format!("-----BEGIN {label}-----\n");
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&ascii(value));
        out.push('\n');
    }
    out.push('\n');
    let b64 = STANDARD.encode(data);
    for chunk in b64.as_bytes().chunks(64) {
        // Invariant: base64 output is ASCII, so any byte split is a char boundary.
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The data inside armor labelled `label`. The caller must then call [`check_canonical`]
/// with the armor it would render for the decoded content.
pub fn dearmor(text: &str, label: &'static str) -> Result<Vec<u8>, ArmorError> {
    let text = normalize(text);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut lines = text.lines();
    if lines.next() != Some(begin.as_str()) {
        return Err(ArmorError::MissingBegin(label));
    }
    // Headers end at the first blank line.
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
    }
    let mut b64 = String::new();
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        b64.push_str(line);
    }
    if !ended {
        return Err(ArmorError::MissingEnd(label));
    }
    STANDARD.decode(b64.as_bytes()).map_err(|e| ArmorError::Base64(e.to_string()))
}

/// Accepts `text` only if it is exactly `expected` (up to CRLF and a final newline).
pub fn check_canonical(text: &str, expected: &str) -> Result<(), ArmorError> {
    let text = normalize(text);
    if text == expected || format!("{text}\n") == expected {
        Ok(())
    } else {
        Err(ArmorError::NotCanonical)
    }
}

fn normalize(text: &str) -> String {
    text.replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let data: Vec<u8> = (0..=255u8).collect();
        let text = armor("TEST", &[("Name", "Гохран".into())], &data);
        assert!(text.contains("Name: ??????\n"));
        assert_eq!(dearmor(&text, "TEST").unwrap(), data);
        check_canonical(&text, &text).unwrap();
        check_canonical(&text.replace('\n', "\r\n"), &text).unwrap();
        check_canonical(text.trim_end_matches('\n'), &text).unwrap();
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] ^= 0x01;
            if let Ok(changed) = String::from_utf8(bytes) {
                assert!(check_canonical(&changed, &text).is_err(), "byte {i}");
            }
        }
        assert_eq!(dearmor("nothing", "TEST"), Err(ArmorError::MissingBegin("TEST")));
    }
}
