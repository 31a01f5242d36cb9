//! RFC 7512 PKCS#11 URIs naming a key pair in a token: `pkcs11:token=KP;object=kp-signing`.
//!
//! Parsed strictly: the attributes kpnode uses are `token` (the token's label), `serial`
//! (its serial number), `object` (the keys' label), `id` (their `CKA_ID`, percent-encoded
//! bytes) and `type` (`private`, the only kind kpnode names). Anything else — another
//! attribute, a repeated one, a malformed percent-escape — is an error naming it, never
//! ignored: a URI that is silently read otherwise could pick another key. The PIN is never
//! taken from a URI (`pin-value`, `pin-source`), nor the module (`module-path`): those come
//! from `--pkcs11-pin-file` / `KPNODE_PKCS11_PIN` and `--pkcs11-module`.

use std::fmt;

/// A key pair in a token, as named by a `pkcs11:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// The token's label (`CKA_LABEL` of the token, up to 32 bytes).
    pub token: Option<String>,
    /// The token's serial number.
    pub serial: Option<String>,
    /// The label of the key pair's objects.
    pub object: Option<String>,
    /// The `CKA_ID` of the key pair's objects.
    pub id: Option<Vec<u8>>,
    text: String,
}

/// Why a string is not a usable PKCS#11 URI. `uri` is the text with its query and any
/// `pin-*` value redacted ([`redact`]), since a refused URI may carry a PIN and the error is
/// printed and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{uri:?} is not a usable PKCS#11 URI: {problem} (write it as pkcs11:token=LABEL;object=KEY-LABEL)")]
pub struct UriError {
    pub uri: String,
    pub problem: String,
}

/// `text` safe to print: for a `pkcs11:` URI, its query (where `pin-value` lives) and the value
/// of any `pin-*` path attribute are replaced by `<redacted>`; any other text is returned as is.
pub fn redact(text: &str) -> String {
    let Some(rest) = text.strip_prefix("pkcs11:") else { return text.to_owned() };
    let (path, query) = match rest.split_once('?') {
        Some((p, _)) => (p, true),
        None => (rest, false),
    };
    let parts: Vec<String> = path
        .split(';')
        .map(|part| match part.split_once('=') {
            Some((name, _)) if is_pin_name(name) => format!("{name}=<redacted>"),
            None if is_pin_name(part) => "<redacted>".to_owned(),
            _ => part.to_owned(),
        })
        .collect();
    let mut out = format!("pkcs11:{}", parts.join(";"));
    if query {
        out.push_str("?<redacted>");
    }
    out
}

fn is_pin_name(name: &str) -> bool {
    name.to_ascii_lowercase().starts_with("pin-") || name.to_ascii_lowercase().starts_with("pin%")
}

impl Pkcs11Uri {
    pub fn parse(text: &str) -> Result<Pkcs11Uri, UriError> {
        let fail = |problem: String| UriError { uri: redact(text), problem };
        let Some(rest) = text.strip_prefix("pkcs11:") else {
            return Err(fail("it does not start with `pkcs11:`".into()));
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if let Some(q) = query {
            let name = q.split(['&', '=']).next().unwrap_or_default();
            return Err(fail(match name {
                "pin-value" | "pin-source" => format!(
                    "`{name}` is refused: the PIN comes from --pkcs11-pin-file (a 0600 file) or KPNODE_PKCS11_PIN, never from a URI"
                ),
                "module-path" | "module-name" => {
                    format!("`{name}` is refused: name the module with --pkcs11-module (pkcs11.module in node.toml)")
                }
                _ => format!("query attribute `{name}` is not one kpnode reads"),
            }));
        }
        let mut uri = Pkcs11Uri { token: None, serial: None, object: None, id: None, text: text.to_owned() };
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let Some((name, raw)) = part.split_once('=') else {
                if is_pin_name(part) {
                    return Err(fail("a `pin-` attribute is refused: the PIN never goes in a URI".into()));
                }
                return Err(fail(format!("`{part}` is not attribute=value")));
            };
            if is_pin_name(name) {
                // Before decoding, so that no error quotes any part of its value.
                return Err(fail(format!("`{name}` belongs in the query, and kpnode refuses it there too")));
            }
            let value = percent_decode(raw).map_err(|p| fail(format!("attribute `{name}`: {p}")))?;
            let text_value = || {
                String::from_utf8(value.clone()).map_err(|_| fail(format!("attribute `{name}` is not UTF-8")))
            };
            let slot: &mut dyn FnMut() -> Result<bool, UriError> = &mut || {
                Ok(match name {
                    "token" => uri.token.replace(text_value()?).is_some(),
                    "serial" => uri.serial.replace(text_value()?).is_some(),
                    "object" => uri.object.replace(text_value()?).is_some(),
                    "id" => uri.id.replace(value.clone()).is_some(),
                    "type" => {
                        if value != b"private" {
                            return Err(fail(format!(
                                "type={} names no key kpnode can use: leave type out, or write type=private",
                                String::from_utf8_lossy(&value)
                            )));
                        }
                        false
                    }
                    "pin-value" | "pin-source" | "module-path" | "module-name" => {
                        return Err(fail(format!("`{name}` belongs in the query, and kpnode refuses it there too")))
                    }
                    other => {
                        return Err(fail(format!(
                            "attribute `{other}` is not one kpnode reads (it reads token, serial, object, id, type)"
                        )))
                    }
                })
            };
            if slot()? {
                return Err(fail(format!("attribute `{name}` is given twice")));
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(fail("it names no key: give object=LABEL (or id=…)".into()));
        }
        if uri.token.is_none() && uri.serial.is_none() {
            return Err(fail("it names no token: give token=LABEL (or serial=…)".into()));
        }
        if let Some(t) = &uri.token {
            if t.len() > 32 {
                return Err(fail(format!("token label {t:?} is longer than the 32 bytes PKCS#11 allows")));
            }
        }
        Ok(uri)
    }

    /// The URI as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `s` is meant as a PKCS#11 URI (rather than a file).
    pub fn looks_like(s: &str) -> bool {
        s.starts_with("pkcs11:")
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, UriError> {
        Pkcs11Uri::parse(s)
    }
}

/// RFC 3986 percent-decoding; characters outside the RFC's set are refused.
fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("a `%` is not followed by two hex digits")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "a `%` is not followed by two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("`%{hex}` is not a percent-escape"))?);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b"-._~:[]@!$'()*+,&".contains(&b) {
            out.push(b);
            i += 1;
        } else {
            return Err(format!("`{}` must be percent-encoded", char::from(b)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kpnode_uses() {
        let u = Pkcs11Uri::parse("pkcs11:token=KP;object=kp-signing").unwrap();
        assert_eq!(u.token.as_deref(), Some("KP"));
        assert_eq!(u.object.as_deref(), Some("kp-signing"));
        assert_eq!(u.to_string(), "pkcs11:token=KP;object=kp-signing");
        let u = Pkcs11Uri::parse("pkcs11:serial=0123;id=%01%a2;type=private;token=My%20HSM").unwrap();
        assert_eq!(u.id, Some(vec![1, 0xa2]));
        assert_eq!(u.token.as_deref(), Some("My HSM"));
        assert_eq!(u.serial.as_deref(), Some("0123"));
    }

    #[test]
    fn refuses_anything_else_naming_it() {
        let cases = [
            ("token=KP;object=k", "does not start with `pkcs11:`"),
            ("pkcs11:token=KP", "names no key"),
            ("pkcs11:object=k", "names no token"),
            ("pkcs11:token=KP;object=k;object=j", "`object` is given twice"),
            ("pkcs11:token=KP;object=k;model=x", "attribute `model` is not one kpnode reads"),
            ("pkcs11:token=KP;object=k?pin-value=1234", "`pin-value` is refused"),
            ("pkcs11:token=KP;object=k?module-path=/x.so", "--pkcs11-module"),
            ("pkcs11:token=KP;object=k%2", "two hex digits"),
            ("pkcs11:token=KP;object=k%zz", "`%zz` is not a percent-escape"),
            ("pkcs11:token=K P;object=k", "must be percent-encoded"),
            ("pkcs11:token=KP;object=k;type=cert", "type=cert names no key"),
            ("pkcs11:token=KP;objectk", "`objectk` is not attribute=value"),
            ("pkcs11:token=KP;object=%ff", "`object` is not UTF-8"),
        ];
        for (uri, expected) in cases {
            let e = Pkcs11Uri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(expected), "{uri}: {e}");
            assert!(e.contains(&redact(uri)), "{uri}: {e}");
        }
    }

    #[test]
    fn a_pin_in_a_refused_uri_is_never_echoed() {
        for uri in [
            "pkcs11:token=KP;object=k?pin-value=S3cr3tPIN",
            "pkcs11:token=KP;object=k?module-path=/x.so&pin-value=S3cr3tPIN",
            "pkcs11:token=KP;object=k;pin-value=S3cr3tPIN",
            "pkcs11:token=KP;object=k;pin-value=S3cr3tPIN%zz",
            "pkcs11:token=KP;object=k;pin-valueS3cr3tPIN",
            "pkcs11:token=KP;object=k;PIN-SOURCE=S3cr3tPIN",
        ] {
            let e = Pkcs11Uri::parse(uri).unwrap_err();
            let text = e.to_string();
            assert!(!text.contains("S3cr3tPIN"), "{uri}: {text}");
            assert!(!format!("{e:?}").contains("S3cr3tPIN"), "{uri}: {e:?}");
            assert!(text.contains("<redacted>"), "{uri}: {text}");
        }
        assert_eq!(
            redact("pkcs11:token=KP;pin-value=1;object=k?pin-value=2"),
            "pkcs11:token=KP;pin-value=<redacted>;object=k?<redacted>"
        );
        assert_eq!(redact("/etc/key.pem"), "/etc/key.pem");
    }
}
