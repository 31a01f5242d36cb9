//! Why a single value is not acceptable. Shared by every newtype's parser so that messages
//! read the same everywhere (CLI, API, peers' rejects).

use std::fmt;

/// A value that failed its newtype's rules. The `Display` text is written for an operator:
/// it says what is wrong and, where it helps, what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    /// Empty, or only white space.
    Empty,
    /// Longer than the field allows (in characters).
    TooLong { max: usize, len: usize },
    /// Shorter than the field allows (in characters).
    TooShort { min: usize, len: usize },
    /// A control character (other than an allowed newline) inside text.
    ControlCharacter { position: usize },
    /// Does not have the expected shape; `expected` names it.
    Format { expected: Expected },
    /// A number with more than two decimals.
    TooManyDecimals,
    /// Zero where only positive amounts make sense.
    NotPositive,
    /// Larger than the field can hold.
    TooLarge { max: &'static str },
    /// An HS code of heading 7104: synthetic stones.
    SyntheticDiamonds,
    /// An HS code that is not one of the three rough-diamond codes of the scheme.
    UnknownHsCode,
    /// A calendar date that does not exist (2026-02-30).
    NoSuchDate,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Empty => f.write_str("must not be empty"),
            ValueError::TooLong { max, len } => {
                write!(f, "is {len} characters long; at most {max} are allowed")
            }
            ValueError::TooShort { min, len } => {
                write!(f, "is {len} characters long; at least {min} are required")
            }
            ValueError::ControlCharacter { position } => {
                write!(f, "contains a control character at character {position}; remove it")
            }
            ValueError::Format { expected } => write!(f, "must be {}", expected.text()),
            ValueError::TooManyDecimals => {
                f.write_str("has more than two decimals; amounts are kept in hundredths")
            }
            ValueError::NotPositive => f.write_str("must be greater than zero"),
            ValueError::TooLarge { max } => write!(f, "is too large; the maximum is {max}"),
            ValueError::SyntheticDiamonds => f.write_str(
                "is HS heading 7104 (synthetic or reconstructed stones): synthetic diamonds are \
                 outside the Kimberley Process and need no KP certificate",
            ),
            ValueError::UnknownHsCode => f.write_str(
                "is not a rough-diamond HS code of the Kimberley Process; use 7102.10 \
                 (unsorted), 7102.21 (industrial) or 7102.31 (non-industrial)",
            ),
            ValueError::NoSuchDate => f.write_str("is not a date that exists in the calendar"),
        }
    }
}

impl std::error::Error for ValueError {}

/// The shapes a value can be expected to have, each with its description (a user interface
/// translates it by its message id, see [`ValueError::coded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expected {
    /// An amount of carats or dollars.
    Amount,
    /// A digest in hexadecimal.
    Hex,
    /// A short identifier (a declaration code).
    Slug,
    ParticipantCode,
    /// The characters of a certificate number.
    NumberCharacters,
    /// A parcel's origin.
    Origin,
    /// A date the node can hold.
    DateInRange,
    Date,
    Instant,
    /// A UN/LOCODE.
    Locode,
    /// One of the transport modes.
    TransportMode,
}

impl Expected {
    /// The shape, as the English messages say it after "must be".
    pub fn text(self) -> &'static str {
        match self {
            Expected::Amount => "a decimal number with at most two decimals, such as \"1520.35\"",
            Expected::Hex => "hexadecimal digits of the right length",
            Expected::Slug => "letters, digits, '-', '_' and '.' only, such as WDC-SoW",
            Expected::ParticipantCode => "a two-letter participant code in capitals, such as RU or IN",
            Expected::NumberCharacters => "made of capital letters A-Z, digits 0-9 and '-' only",
            Expected::Origin => "a participant code such as RU, or MIXED for parcels of mixed origin",
            Expected::DateInRange => "a date between 1970-01-01 and 9999-12-31",
            Expected::Date => "a date written YYYY-MM-DD, such as 2026-11-28",
            Expected::Instant => "an instant written YYYY-MM-DDTHH:MM:SS.mmmZ, in UTC",
            Expected::Locode => {
                "a UN/LOCODE: the country's two capital letters, then three capital letters or \
                 digits 2-9, such as BEANR (Antwerp)"
            }
            Expected::TransportMode => "one of air, sea, road, rail, post, hand-carried",
        }
    }
}

/// Turns a parse failure into a bincode decode error, so that a peer's bytes that hold an
/// invalid value are refused exactly like bytes that are malformed.
///
/// Only the fact is kept: the advice a [`ValueError`] ends with ("; remove it", "; use …") is
/// for whoever typed the value, never for signed bytes, which nobody should edit.
pub(crate) fn decode_error(what: &'static str, err: ValueError) -> bincode::error::DecodeError {
    let text = err.to_string();
    let fact = text.split("; ").next().unwrap_or(&text);
    bincode::error::DecodeError::OtherString(format!("invalid {what}: {fact}"))
}
