//! The fingerprint operators read to each other over the phone before enrolling a peer.
//!
//! It is a digest of the participant's root signing key (the first key in its history):
//! 80 bits in Crockford base32, as four groups of four (`7KQ2-9XMA-3F0D-HN5R`). It stays the
//! same across key rotations, because every rotation is signed by the key it replaces, so a
//! partner who checked it once can follow the chain.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use kp_protocol::Digest;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// 80 bits of SHA-256 over a domain tag and the root signing key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 10]);

impl Fingerprint {
    pub fn of(root_key: &VerifyingKey) -> Fingerprint {
        let d = Digest::of_parts(&[b"kpnode/v1/fingerprint\0", root_key.as_bytes()]);
        let mut out = [0u8; 10];
        out.copy_from_slice(&d.0[..10]);
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 80 bits = 16 symbols of 5 bits.
        let mut acc: u128 = 0;
        for b in self.0 {
            acc = acc << 8 | u128::from(b);
        }
        for i in 0..16 {
            if i > 0 && i % 4 == 0 {
                f.write_str("-")?;
            }
            let sym = (acc >> (75 - 5 * i)) & 31;
            write!(f, "{}", ALPHABET[sym as usize] as char)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why typed-in fingerprint text is not a fingerprint.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "a fingerprint is 16 characters in four groups, such as 7KQ2-9XMA-3F0D-HN5R \
     (read from `kpnode peer export` on the partner's node)"
)]
pub struct FingerprintParseError;

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;
    /// Forgiving, as text read over the phone should be: any case, with or without dashes
    /// and spaces; O reads as 0, I and L as 1.
    fn from_str(s: &str) -> Result<Self, FingerprintParseError> {
        let mut acc: u128 = 0;
        let mut n = 0;
        for c in s.chars().filter(|c| !matches!(c, '-' | ' ')) {
            let c = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                other => other,
            };
            let v = ALPHABET.iter().position(|&a| a as char == c).ok_or(FingerprintParseError)?;
            acc = acc << 5 | v as u128;
            n += 1;
        }
        if n != 16 {
            return Err(FingerprintParseError);
        }
        let mut out = [0u8; 10];
        for (i, b) in out.iter_mut().enumerate() {
            *b = (acc >> (72 - 8 * i)) as u8;
        }
        Ok(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
        let fp = Fingerprint::of(&key);
        let text = fp.to_string();
        assert_eq!(text.len(), 19);
        assert_eq!(text.matches('-').count(), 3);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(text.to_lowercase().replace('-', " ").parse::<Fingerprint>().unwrap(), fp);
        assert!("1234".parse::<Fingerprint>().is_err());
        assert!("UUUU-UUUU-UUUU-UUUU".parse::<Fingerprint>().is_err());
        let other = Fingerprint::of(&ed25519_dalek::SigningKey::from_bytes(&[4; 32]).verifying_key());
        assert_ne!(fp, other);
    }
}
