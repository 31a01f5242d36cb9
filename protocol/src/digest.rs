//! SHA-256 digests: message ids, log entry hashes, Merkle nodes.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use sha2::{Digest as _, Sha256};

use crate::value::ValueError;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Encode, Decode)]
pub struct Digest(pub [u8; 32]);

/// The id of a message: the SHA-256 of the signed document's canonical bytes, so a resend is
/// the same message.
pub type MessageId = Digest;

impl Digest {
    pub const ZERO: Digest = Digest([0; 32]);

    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest of several byte strings, one after the other.
    pub fn of_parts(parts: &[&[u8]]) -> Digest {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Digest(h.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The first `n` hex digits, for logs.
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses lower- or upper-case hex of exactly `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], ValueError> {
    let err = ValueError::Format { expected: crate::value::Expected::Hex };
    if s.len() != N * 2 {
        return Err(err);
    }
    let mut out = [0u8; N];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).ok_or(err.clone());
        out[i] = (digit(chunk[0])? << 4 | digit(chunk[1])?) as u8;
    }
    Ok(out)
}

impl Digest {
    /// A digest from bytes that must be exactly 32 long (as read back from the store).
    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        <[u8; 32]>::try_from(bytes).ok().map(Digest)
    }
}

impl FromStr for Digest {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_hex::<32>(s).map(Digest)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.short())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(d.to_hex().to_uppercase().parse::<Digest>().unwrap(), d);
        assert!("zz".repeat(32).parse::<Digest>().is_err());
        assert_eq!(Digest::of_parts(&[b"a", b"bc"]), d);
    }
}
