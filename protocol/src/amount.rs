//! Carats and US dollars, as integer hundredths. Never floats: the statistics must match the
//! certificates to the hundredth of a carat and the cent.

use std::fmt;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::codes::serde_via_str;
use crate::value::{decode_error, Expected, ValueError};

/// The largest amount one parcel may state, in hundredths (999,999,999,999.99). A thousand
/// parcels of this size still sum without overflowing a `u64`.
pub const MAX_HUNDREDTHS: u64 = 99_999_999_999_999;

/// Parses `"1520.35"`, `"1520.3"` or `"1520"` into hundredths. No sign, no exponent, no
/// thousands separators, no surrounding spaces: a customs system that sends anything else has
/// a bug worth hearing about.
fn parse_hundredths(s: &str) -> Result<u64, ValueError> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Format { expected: Expected::Amount });
    }
    let frac_value = match frac {
        None => 0,
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(ValueError::Format { expected: Expected::Amount })
        }
        Some(f) if f.len() > 2 => return Err(ValueError::TooManyDecimals),
        Some(f) => {
            let v: u64 = f.parse().map_err(|_| ValueError::Format { expected: Expected::Amount })?;
            if f.len() == 1 {
                v * 10
            } else {
                v
            }
        }
    };
    let too_large = ValueError::TooLarge { max: "999999999999.99" };
    let whole_value: u64 = if whole.len() > 15 {
        return Err(too_large);
    } else {
        whole.parse().map_err(|_| ValueError::Format { expected: Expected::Amount })?
    };
    let total =
        whole_value.checked_mul(100).and_then(|v| v.checked_add(frac_value)).ok_or(too_large.clone())?;
    if total > MAX_HUNDREDTHS {
        return Err(too_large);
    }
    if total == 0 {
        return Err(ValueError::NotPositive);
    }
    Ok(total)
}

fn fmt_hundredths(v: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{}.{:02}", v / 100, v % 100)
}

macro_rules! hundredths_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(u64);

        impl $name {
            /// A positive amount of at most [`MAX_HUNDREDTHS`].
            pub fn from_hundredths(v: u64) -> Result<Self, ValueError> {
                if v == 0 {
                    Err(ValueError::NotPositive)
                } else if v > MAX_HUNDREDTHS {
                    Err(ValueError::TooLarge { max: "999999999999.99" })
                } else {
                    Ok($name(v))
                }
            }

            pub fn hundredths(&self) -> u64 {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                parse_hundredths(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_hundredths(self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_hundredths(self.0, f)
            }
        }

        impl Encode for $name {
            fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
                self.0.encode(encoder)
            }
        }

        impl<C> Decode<C> for $name {
            fn decode<D: Decoder<Context = C>>(decoder: &mut D) -> Result<Self, DecodeError> {
                $name::from_hundredths(u64::decode(decoder)?).map_err(|e| decode_error($what, e))
            }
        }
        bincode::impl_borrow_decode!($name);
        serde_via_str!($name);
    };
}

hundredths_type!(
    /// A carat weight in hundredths of a carat.
    Carats,
    "carat weight"
);
hundredths_type!(
    /// A value in US cents.
    UsdAmount,
    "US$ value"
);

/// Formats a sum of hundredths (which may exceed one parcel's maximum) as `"123.45"`.
pub fn format_hundredths(v: u64) -> String {
    format!("{}.{:02}", v / 100, v % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_hundredths() {
        assert_eq!("1520.35".parse::<Carats>().unwrap().hundredths(), 152_035);
        assert_eq!("1520.3".parse::<Carats>().unwrap().hundredths(), 152_030);
        assert_eq!("1520".parse::<Carats>().unwrap().hundredths(), 152_000);
        assert_eq!("0.01".parse::<Carats>().unwrap().hundredths(), 1);
        assert_eq!("4231000.00".parse::<UsdAmount>().unwrap().to_string(), "4231000.00");
        assert_eq!("999999999999.99".parse::<Carats>().unwrap().hundredths(), MAX_HUNDREDTHS);
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!("1.234".parse::<Carats>(), Err(ValueError::TooManyDecimals));
        assert_eq!("0".parse::<Carats>(), Err(ValueError::NotPositive));
        assert_eq!("0.00".parse::<Carats>(), Err(ValueError::NotPositive));
        for bad in ["", "-1", "+1", "1e3", " 1", "1 ", "1,5", ".5", "5.", "1.2.3", "NaN"] {
            assert!(bad.parse::<Carats>().is_err(), "{bad:?}");
        }
        assert!(matches!("1000000000000".parse::<Carats>(), Err(ValueError::TooLarge { .. })));
        assert!(matches!("99999999999999999999999".parse::<Carats>(), Err(ValueError::TooLarge { .. })));
    }
}
