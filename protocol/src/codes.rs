//! Codes that name things in the scheme: participants, certificate numbers, HS codes and
//! parcel origins. Each type can only hold a valid value; text turns into one through
//! `FromStr`, peer bytes through `Decode`, and both apply the same rules.

use std::fmt;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::value::{decode_error, ValueError};

/// Serde as strings, through the same `FromStr` rules, for config files and JSON output.
macro_rules! serde_via_str {
    ($($ty:ty),*) => {$(
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(|e| ::serde::de::Error::custom(format!("{s:?} {e}")))
            }
        }
    )*};
}
pub(crate) use serde_via_str;

/// What every string-backed code and text type shares: it reads as its string (`as_str`,
/// `Display`; `Debug` as the bare string with `plain` or quoted with `quoted`), is encoded as
/// a bincode string and decoded through `FromStr`, so peer bytes meet the same rules as text
/// (`$what` names the value in a decode error), and goes through serde as its string.
macro_rules! string_newtype {
    ($name:ident, $what:literal, debug = $debug:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $crate::codes::string_newtype!(@debug $debug, self, f)
            }
        }

        impl ::bincode::Encode for $name {
            fn encode<E: ::bincode::enc::Encoder>(
                &self,
                encoder: &mut E,
            ) -> Result<(), ::bincode::error::EncodeError> {
                ::bincode::Encode::encode(&self.0, encoder)
            }
        }

        impl<C> ::bincode::Decode<C> for $name {
            fn decode<D: ::bincode::de::Decoder<Context = C>>(
                decoder: &mut D,
            ) -> Result<Self, ::bincode::error::DecodeError> {
                <String as ::bincode::Decode<C>>::decode(decoder)?
                    .parse()
                    .map_err(|e| $crate::value::decode_error($what, e))
            }
        }
        ::bincode::impl_borrow_decode!($name);
        $crate::codes::serde_via_str!($name);
    };
    (@debug plain, $self:ident, $f:ident) => {
        $f.write_str(&$self.0)
    };
    (@debug quoted, $self:ident, $f:ident) => {
        ::std::fmt::Debug::fmt(&$self.0, $f)
    };
}
pub(crate) use string_newtype;

/// A Kimberley Process participant: an ISO 3166-1 alpha-2 code, or `EU` for the Union.
/// Always two ASCII capital letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantCode([u8; 2]);

impl ParticipantCode {
    pub const fn from_static(code: &'static str) -> ParticipantCode {
        let b = code.as_bytes();
        assert!(b.len() == 2 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase());
        ParticipantCode([b[0], b[1]])
    }

    pub fn as_str(&self) -> &str {
        // Invariant: both bytes are ASCII capital letters, checked at construction.
        std::str::from_utf8(&self.0).expect("participant code is ASCII")
    }

    pub fn as_bytes(&self) -> [u8; 2] {
        self.0
    }

    fn from_bytes(b: [u8; 2]) -> Result<Self, ValueError> {
        if b.iter().all(u8::is_ascii_uppercase) {
            Ok(ParticipantCode(b))
        } else {
            Err(ValueError::Format { expected: crate::value::Expected::ParticipantCode })
        }
    }
}

impl FromStr for ParticipantCode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.as_bytes() {
            [a, b] => ParticipantCode::from_bytes([*a, *b]),
            _ => Err(ValueError::Format { expected: crate::value::Expected::ParticipantCode }),
        }
    }
}

impl fmt::Display for ParticipantCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ParticipantCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Encode for ParticipantCode {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.0.encode(encoder)
    }
}

impl<C> Decode<C> for ParticipantCode {
    fn decode<D: Decoder<Context = C>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let raw = <[u8; 2]>::decode(decoder)?;
        ParticipantCode::from_bytes(raw).map_err(|e| decode_error("participant code", e))
    }
}
bincode::impl_borrow_decode!(ParticipantCode);

/// A certificate number: 3–32 characters of `A–Z 0–9 -`. That it starts with the exporting
/// participant's code is a rule of the certificate, checked there.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateNumber(String);

impl CertificateNumber {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;

    pub fn starts_with(&self, code: ParticipantCode) -> bool {
        self.0.as_bytes().starts_with(&code.as_bytes())
    }

    /// The number the node assigns when a submission has none: `<CC>-<YYYY>-<seq>`.
    pub fn assigned(exporter: ParticipantCode, year: i32, seq: u64) -> CertificateNumber {
        CertificateNumber(format!("{exporter}-{year:04}-{seq:06}"))
    }

    /// The number a member state's node assigns to a certificate issued in its union's name:
    /// `<UNION>-<MEMBER>-<YYYY>-<seq>`, unique across the union's nodes.
    pub fn assigned_for_union(
        union: ParticipantCode,
        member: ParticipantCode,
        year: i32,
        seq: u64,
    ) -> CertificateNumber {
        CertificateNumber(format!("{union}-{member}-{year:04}-{seq:06}"))
    }
}

impl FromStr for CertificateNumber {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let len = s.chars().count();
        if len < Self::MIN_LEN {
            return Err(ValueError::TooShort { min: Self::MIN_LEN, len });
        }
        if len > Self::MAX_LEN {
            return Err(ValueError::TooLong { max: Self::MAX_LEN, len });
        }
        if !s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-') {
            return Err(ValueError::Format { expected: crate::value::Expected::NumberCharacters });
        }
        Ok(CertificateNumber(s.to_owned()))
    }
}

string_newtype!(CertificateNumber, "certificate number", debug = plain);

/// The HS codes of rough diamonds covered by the scheme. Nothing else can be represented.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Encode, Decode)]
pub enum HsCode {
    /// 7102.10: unsorted.
    Unsorted,
    /// 7102.21: industrial, unworked or simply sawn, cleaved or bruted.
    Industrial,
    /// 7102.31: non-industrial (gem quality), unworked or simply sawn, cleaved or bruted.
    NonIndustrial,
}

impl HsCode {
    pub const ALL: [HsCode; 3] = [HsCode::Unsorted, HsCode::Industrial, HsCode::NonIndustrial];

    pub fn as_str(&self) -> &'static str {
        match self {
            HsCode::Unsorted => "7102.10",
            HsCode::Industrial => "7102.21",
            HsCode::NonIndustrial => "7102.31",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            HsCode::Unsorted => "unsorted",
            HsCode::Industrial => "industrial",
            HsCode::NonIndustrial => "non-industrial (gem)",
        }
    }
}

impl FromStr for HsCode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "7102.10" => Ok(HsCode::Unsorted),
            "7102.21" => Ok(HsCode::Industrial),
            "7102.31" => Ok(HsCode::NonIndustrial),
            other => {
                let digits: String = other.chars().filter(char::is_ascii_digit).collect();
                if digits.starts_with("7104") {
                    Err(ValueError::SyntheticDiamonds)
                } else {
                    Err(ValueError::UnknownHsCode)
                }
            }
        }
    }
}

impl fmt::Display for HsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a parcel's diamonds were mined: one participant, or several (`MIXED`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Encode, Decode)]
pub enum Origin {
    Participant(ParticipantCode),
    Mixed,
}

impl FromStr for Origin {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s == "MIXED" {
            return Ok(Origin::Mixed);
        }
        s.parse()
            .map(Origin::Participant)
            .map_err(|_| ValueError::Format { expected: crate::value::Expected::Origin })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Participant(code) => code.fmt(f),
            Origin::Mixed => f.write_str("MIXED"),
        }
    }
}

/// A place of trade and transport by its UN/LOCODE: the two-letter country code, then three
/// letters or digits 2–9 (`BEANR` is Antwerp, `RUMOW` Moscow). The shape is checked; whether
/// the code is in the UNECE list is not (the list changes twice a year).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locode([u8; 5]);

impl Locode {
    pub fn as_str(&self) -> &str {
        // Invariant: ASCII capitals and digits, checked at construction.
        std::str::from_utf8(&self.0).expect("UN/LOCODE is ASCII")
    }

    fn from_bytes(b: [u8; 5]) -> Result<Self, ValueError> {
        let country = b[..2].iter().all(u8::is_ascii_uppercase);
        let place = b[2..].iter().all(|c| c.is_ascii_uppercase() || (b'2'..=b'9').contains(c));
        if country && place {
            Ok(Locode(b))
        } else {
            Err(ValueError::Format { expected: crate::value::Expected::Locode })
        }
    }
}

impl FromStr for Locode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        // "BE ANR" is how the UNECE list prints it: accept the space, keep the five characters.
        let compact: Vec<u8> = match s.as_bytes() {
            [a, b, b' ', rest @ ..] => [&[*a, *b][..], rest].concat(),
            other => other.to_vec(),
        };
        match <[u8; 5]>::try_from(compact.as_slice()) {
            Ok(b) => Locode::from_bytes(b),
            Err(_) => Err(ValueError::Format { expected: crate::value::Expected::Locode }),
        }
    }
}

impl fmt::Display for Locode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Locode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Encode for Locode {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.0.encode(encoder)
    }
}

impl<C> Decode<C> for Locode {
    fn decode<D: Decoder<Context = C>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let raw = <[u8; 5]>::decode(decoder)?;
        Locode::from_bytes(raw).map_err(|e| decode_error("UN/LOCODE", e))
    }
}
bincode::impl_borrow_decode!(Locode);

/// How the shipment travels (the modes of UN/ECE Recommendation 19 that carry diamonds, with
/// a courier's hand-carried parcel apart).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Encode, Decode)]
pub enum TransportMode {
    Air,
    Sea,
    Road,
    Rail,
    Post,
    HandCarried,
}

impl TransportMode {
    pub const ALL: [TransportMode; 6] = [
        TransportMode::Air,
        TransportMode::Sea,
        TransportMode::Road,
        TransportMode::Rail,
        TransportMode::Post,
        TransportMode::HandCarried,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            TransportMode::Air => "air",
            TransportMode::Sea => "sea",
            TransportMode::Road => "road",
            TransportMode::Rail => "rail",
            TransportMode::Post => "post",
            TransportMode::HandCarried => "hand-carried",
        }
    }
}

impl FromStr for TransportMode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        TransportMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or(ValueError::Format { expected: crate::value::Expected::TransportMode })
    }
}

impl fmt::Display for TransportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

serde_via_str!(ParticipantCode, HsCode, Origin, Locode, TransportMode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_codes() {
        assert_eq!("RU".parse::<ParticipantCode>().unwrap().as_str(), "RU");
        for bad in ["ru", "R", "RUS", "R1", "", "Ру"] {
            assert!(bad.parse::<ParticipantCode>().is_err(), "{bad}");
        }
    }

    #[test]
    fn certificate_numbers() {
        assert!("RU-2026-000123".parse::<CertificateNumber>().is_ok());
        for bad in ["RU", "ru-1", "RU/../etc", "RU 1", &"R".repeat(33)] {
            assert!(bad.parse::<CertificateNumber>().is_err(), "{bad}");
        }
        let n = CertificateNumber::assigned(ParticipantCode::from_static("RU"), 2026, 7);
        assert_eq!(n.as_str(), "RU-2026-000007");
    }

    #[test]
    fn hs_codes() {
        assert_eq!("7102.31".parse::<HsCode>(), Ok(HsCode::NonIndustrial));
        assert_eq!("7104.21".parse::<HsCode>(), Err(ValueError::SyntheticDiamonds));
        assert_eq!("7104".parse::<HsCode>(), Err(ValueError::SyntheticDiamonds));
        assert_eq!("7103.10".parse::<HsCode>(), Err(ValueError::UnknownHsCode));
        assert!(ValueError::SyntheticDiamonds.to_string().contains("outside the Kimberley Process"));
    }

    #[test]
    fn locodes_and_transport_modes() {
        assert_eq!("BEANR".parse::<Locode>().unwrap().as_str(), "BEANR");
        assert_eq!("BE ANR".parse::<Locode>().unwrap().as_str(), "BEANR");
        assert_eq!("RUMOW".parse::<Locode>().unwrap().as_str(), "RUMOW");
        assert!("AE2DX".parse::<Locode>().is_ok());
        for bad in ["beanr", "BEAN", "BEANRR", "B1ANR", "BEAN1", "BEAN0", "", "ВЕANR"] {
            assert!(bad.parse::<Locode>().is_err(), "{bad}");
        }
        assert_eq!("hand-carried".parse::<TransportMode>(), Ok(TransportMode::HandCarried));
        assert!("Air".parse::<TransportMode>().is_err());
    }

    #[test]
    fn origins() {
        assert_eq!("MIXED".parse::<Origin>(), Ok(Origin::Mixed));
        assert!(matches!("RU".parse::<Origin>(), Ok(Origin::Participant(_))));
        assert!("mixed".parse::<Origin>().is_err());
    }
}
