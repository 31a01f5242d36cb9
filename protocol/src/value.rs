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
    /// Does not have the expected shape; `expected` describes the shape.
    Format { expected: &'static str },
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
            ValueError::Format { expected } => write!(f, "must be {expected}"),
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
