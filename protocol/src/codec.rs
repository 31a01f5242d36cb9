//! The one bincode configuration every byte on disk and on the wire uses: big-endian,
//! fixed-width integers (so each value has exactly one encoding), and a hard limit on what a
//! single decode may claim, so that a length field in hostile bytes cannot make us allocate
//! more than [`DECODE_LIMIT`].

use bincode::config::{BigEndian, Configuration, Fixint, Limit};
use bincode::{Decode, Encode};

/// The most any single decode may allocate for containers, and the largest frame a node may
/// be configured to accept.
pub const DECODE_LIMIT: usize = 4 << 20;

pub type Config = Configuration<BigEndian, Fixint, Limit<DECODE_LIMIT>>;

pub const fn config() -> Config {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<DECODE_LIMIT>()
}

/// Why bytes did not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum CodecError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("{0} unexpected bytes after the end")]
    TrailingBytes(usize),
}

/// Canonical bytes of `value`.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    // Invariant: encoding into a Vec cannot fail for our types: they hold no floats, no
    // maps and nothing with a fallible Encode; the limit applies to decoding only.
    bincode::encode_to_vec(value, config()).expect("encoding into a Vec cannot fail")
}

/// Appends the canonical bytes of `value` to `out`.
pub fn encode_into<T: Encode>(value: &T, out: &mut Vec<u8>) {
    // Invariant: as in `encode`.
    bincode::encode_into_std_write(value, out, config()).expect("writing into a Vec cannot fail");
}

/// What went wrong in a decode, in words: bincode's own `Display` is its `Debug` text
/// (`OtherString("…")`), which must never reach a user.
fn describe(e: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError as E;
    match e {
        E::OtherString(s) => s.clone(),
        E::Other(s) => (*s).to_owned(),
        E::UnexpectedEnd { .. } => "the data ends too early".into(),
        E::LimitExceeded => format!("a length claims more than the {DECODE_LIMIT} bytes allowed"),
        E::Utf8 { .. } => "a text is not valid UTF-8".into(),
        E::UnexpectedVariant { type_name, found, .. } => format!("unknown {type_name} variant {found}"),
        E::InvalidBooleanValue(v) => format!("{v} is not a boolean"),
        E::InvalidCharEncoding(_) => "a character is not valid".into(),
        _ => "the bytes do not form a valid record".into(),
    }
}

/// Decodes a value from the start of `bytes`, returning it and how many bytes it took.
pub fn decode_prefix<T: Decode<()>>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    bincode::decode_from_slice(bytes, config()).map_err(|e| CodecError::Malformed(describe(&e)))
}

/// Decodes exactly the whole of `bytes`.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::decode_from_slice(bytes, config()).map_err(|e| CodecError::Malformed(describe(&e)))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}
