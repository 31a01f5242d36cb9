//! Forms that upload a file (`multipart/form-data`, RFC 7578): the Verify page's `.kpc` or
//! image, the Partners page's bundle. A small parser of our own rather than axum's `multipart`
//! feature (and its `multer` tree): the console's upload forms have a handful of fields, the
//! body is already bounded by the route's body limit and held in memory, and every part is a
//! slice of it (nothing is allocated from a length the client states).

use axum::http::{header, HeaderMap, StatusCode};

use super::PageError;
use crate::service::i18n::Catalogue;

/// Parts a console upload form sends at most (its fields and one file, with room to spare).
const MAX_PARTS: usize = 16;

/// One field of an uploaded form.
#[derive(Debug)]
pub struct Part<'a> {
    pub name: String,
    pub data: &'a [u8],
}

/// The parts of a multipart body, or why it is not one (400: it was not sent by a console
/// page).
pub fn parse<'a>(
    tr: &'static Catalogue,
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<Vec<Part<'a>>, PageError> {
    let bad = |why: &str| {
        let mut e = PageError::new(StatusCode::BAD_REQUEST, tr.t1("upload-unreadable", "why", why));
        e.tr = Some(tr);
        e
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (kind, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return Err(bad("it was not sent as a file upload"));
    }
    let boundary = params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| bad("no boundary"))?;
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0).ok_or_else(|| bad("no part"))? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(bad("a malformed part"));
        }
        at += 2;
        let head_end = find(body, b"\r\n\r\n", at).ok_or_else(|| bad("a part without headers"))?;
        let head =
            std::str::from_utf8(&body[at..head_end]).map_err(|_| bad("a part's headers are not text"))?;
        let data_start = head_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(delimiter);
        let data_end = find(body, &closing, data_start).ok_or_else(|| bad("an unterminated part"))?;
        if parts.len() == MAX_PARTS {
            return Err(bad("too many fields"));
        }
        let name = disposition_name(head).ok_or_else(|| bad("a part without a name"))?;
        parts.push(Part { name, data: &body[data_start..data_end] });
        at = data_end + closing.len();
    }
}

/// The `name` of a part's `Content-Disposition: form-data` header.
fn disposition_name(head: &str) -> Option<String> {
    let line = head
        .split("\r\n")
        .find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
        })?
        .1;
    let param = |key: &str| {
        line.split(';').filter_map(|p| p.trim().split_once('=')).find(|(k, _)| k.trim() == key).map(
            |(_, v)| {
                let v = v.trim();
                v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v).to_owned()
            },
        )
    };
    param("name")
}

/// The first index of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let skip = hay[i..hay.len() - needle.len() + 1].iter().position(|&b| b == first)?;
        i += skip;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// A text field's value (the first of the name), trimmed; empty when absent or not UTF-8.
pub fn text<'a>(parts: &'a [Part<'_>], name: &str) -> &'a str {
    parts
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| std::str::from_utf8(p.data).ok())
        .map(str::trim)
        .unwrap_or("")
}

/// A file field's content, `None` when no file was chosen.
pub fn file<'a>(parts: &'a [Part<'a>], name: &str) -> Option<&'a [u8]> {
    parts.iter().find(|p| p.name == name && !p.data.is_empty()).map(|p| p.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn en() -> &'static Catalogue {
        crate::service::i18n::catalogue("en")
    }

    fn headers(boundary: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}").parse().unwrap());
        h
    }

    #[test]
    fn reads_the_fields_and_the_file_as_a_browser_sends_them() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"seal.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--X\r\n\
--XyZ--\r\n";
        let parts = parse(en(), &headers("XyZ"), body).unwrap();
        assert_eq!(text(&parts, "csrf"), "abc");
        assert_eq!(file(&parts, "file"), Some(&b"\x89PNG\r\n--X"[..]));
        assert_eq!(file(&parts, "missing"), None);
    }

    #[test]
    fn refuses_what_is_not_a_multipart_body() {
        assert!(parse(en(), &HeaderMap::new(), b"a=b").is_err());
        assert!(parse(
            en(),
            &headers("B"),
            b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"
        )
        .is_err());
        assert!(parse(en(), &headers("B"), b"nothing").is_err());
        let many: Vec<u8> = (0..=MAX_PARTS)
            .flat_map(|i| {
                format!("--B\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n").into_bytes()
            })
            .chain(b"--B--".iter().copied())
            .collect();
        assert!(parse(en(), &headers("B"), &many).is_err());
    }
}
