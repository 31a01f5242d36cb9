//! What a [`Problem`](crate::Problem) says, as a stable message id and named arguments, so
//! that a user interface can say it in its user's language from a message catalogue (the
//! console's Fluent files, key `problem-<id>`). The English text each problem carries stays
//! what the CLI and the JSON API show; the id and arguments travel beside it and are never
//! serialized.
//!
//! Each crate that makes problems declares its ids with [`problem_texts!`](crate::problem_texts):
//! one enum whose variants name their arguments, so a problem cannot be made with an argument
//! missing, and whose `ALL` lists every id with its argument names, so a test can require every
//! catalogue to have each one with the same arguments.

use std::fmt;

use crate::value::{Expected, ValueError};
use crate::Date;

/// One argument of a coded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// Shown as it is (codes, numbers of certificates, names, the value typed).
    Text(String),
    /// A count or a limit: the catalogue may choose a plural form by it.
    Number(i64),
    /// A day, written the way the user's language writes dates.
    Date(Date),
}

impl Arg {
    /// Anything shown as text.
    pub fn text(v: impl fmt::Display) -> Arg {
        Arg::Text(v.to_string())
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(v)
    }
}

impl From<Date> for Arg {
    fn from(v: Date) -> Arg {
        Arg::Date(v)
    }
}

impl From<crate::ParticipantCode> for Arg {
    fn from(v: crate::ParticipantCode) -> Arg {
        Arg::Text(v.to_string())
    }
}

macro_rules! number_arg {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg {
            fn from(v: $t) -> Arg {
                Arg::Number(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
    )*};
}
number_arg!(usize, u64, u32, u16);

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Number(v)
    }
}

impl From<i32> for Arg {
    fn from(v: i32) -> Arg {
        Arg::Number(v.into())
    }
}

/// A message by id and named arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coded {
    pub id: &'static str,
    pub args: Vec<(&'static str, Arg)>,
}

/// Declares a crate's problem messages: an enum whose variants are the messages, each with
/// its id (the catalogue key is `problem-<id>`) and its named arguments (each an [`Arg`]),
/// an `ALL` listing `(id, argument names)` for the catalogue test, and the conversion into
/// [`Coded`].
///
/// ```
/// kp_protocol::problem_texts! {
///     /// Problems of an example.
///     pub enum ExampleText {
///         Missing = "example-missing",
///         TooMany = "example-too-many" { count, max },
///     }
/// }
/// let coded: kp_protocol::problem::Coded =
///     ExampleText::TooMany { count: 3usize.into(), max: 2usize.into() }.into();
/// assert_eq!(coded.id, "example-too-many");
/// assert_eq!(ExampleText::ALL[1], ("example-too-many", &["count", "max"][..]));
/// ```
#[macro_export]
macro_rules! problem_texts {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $id:literal $({ $($arg:ident),* $(,)? })? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant $({ $($arg: $crate::problem::Arg),* })? ),*
        }

        impl $name {
            /// Every message id with the names of its arguments.
            pub const ALL: &'static [(&'static str, &'static [&'static str])] =
                &[$( ($id, &[$($(stringify!($arg)),*)?]) ),*];
        }

        impl ::std::convert::From<$name> for $crate::problem::Coded {
            fn from(text: $name) -> $crate::problem::Coded {
                match text {
                    $( $name::$variant $({ $($arg),* })? => $crate::problem::Coded {
                        id: $id,
                        args: vec![$($((stringify!($arg), $arg)),*)?],
                    } ),*
                }
            }
        }
    };
}

problem_texts! {
    /// The problems the certificate's parser and validator find.
    pub enum ProblemText {
        NotJson = "not-json" { detail },
        NotUtf8 = "not-utf8" { detail },
        UnknownField = "unknown-field" { known },
        NotObject = "not-object" { kind },
        NotString = "not-string" { kind },
        NotAmountString = "not-amount-string" { kind },
        NotArray = "not-array" { kind },
        Required = "required",
        Internal = "internal",
        NumberPrefix = "number-prefix" { number, exporting },
        NumberNotInOwnRange = "number-not-in-own-range" { number, issuer, union, own },
        NumberInMemberRange = "number-in-member-range" { number, member, exporting },
        ExportingNotAllowed = "exporting-not-allowed" { exporting, allowed },
        ExportingNotAllowedUnion = "exporting-not-allowed-union" { exporting, issuer, union },
        ExportingMemberState = "exporting-member-state" { exporting, union },
        ImportingSame = "importing-same" { importing },
        ImportingWithinUnion = "importing-within-union" { from, importing, within },
        ImportingNotDelivered = "importing-not-delivered" { importing, expected },
        ImportingMemberState = "importing-member-state" { importing, union },
        NotAParticipant = "not-a-participant" { code },
        ParcelsNone = "parcels-none",
        ParcelsTooMany = "parcels-too-many" { count, max },
        DeclarationsTooMany = "declarations-too-many" { count, max },
        IssuedInFuture = "issued-in-future" { issued, today },
        ExpiresNotAfterIssue = "expires-not-after-issue" { expires, issued },
        ValidityTooLong = "validity-too-long" { expires, days, max },
        ExpiresPassed = "expires-passed" { expires, today },
        ValueEmpty = "value-empty" { value },
        ValueTooLong = "value-too-long" { value, max, len },
        ValueTooShort = "value-too-short" { value, min, len },
        ValueControlCharacter = "value-control-character" { value, position },
        ValueTooManyDecimals = "value-too-many-decimals" { value },
        ValueNotPositive = "value-not-positive" { value },
        ValueTooLarge = "value-too-large" { value, max },
        ValueSynthetic = "value-synthetic" { value },
        ValueUnknownHsCode = "value-unknown-hs-code" { value },
        ValueNoSuchDate = "value-no-such-date" { value },
        ValueNotAmount = "value-not-amount" { value },
        ValueNotHex = "value-not-hex" { value },
        ValueNotSlug = "value-not-slug" { value },
        ValueNotParticipantCode = "value-not-participant-code" { value },
        ValueNotNumberCharacters = "value-not-number-characters" { value },
        ValueNotOrigin = "value-not-origin" { value },
        ValueDateOutOfRange = "value-date-out-of-range" { value },
        ValueNotDate = "value-not-date" { value },
        ValueNotInstant = "value-not-instant" { value },
        ValueNotLocode = "value-not-locode" { value },
        ValueNotTransportMode = "value-not-transport-mode" { value },
        ContainerSealsTooMany = "container-seals-too-many" { count, max },
        ReplacesItself = "replaces-itself" { number },
        ImportingMemberNotUnion = "importing-member-not-union" { member, importing },
        ImportingMemberNotMember = "importing-member-not-member" { member, importing },
        RestrictedNeedsAreas = "restricted-needs-areas" { code },
        AreasOnlyWhenRestricted = "areas-only-when-restricted" { code, status },
        TooManyAreas = "too-many-areas" { code, max },
        TooManyMembers = "too-many-members" { code, max },
        OwnMember = "own-member" { code },
        MemberTwice = "member-twice" { code, member },
    }
}

impl ValueError {
    /// What this error says of `value` (the text that failed), as a coded message.
    pub fn coded(&self, value: &str) -> Coded {
        let value = Arg::from(value);
        let text = match self {
            ValueError::Empty => ProblemText::ValueEmpty { value },
            ValueError::TooLong { max, len } => {
                ProblemText::ValueTooLong { value, max: (*max).into(), len: (*len).into() }
            }
            ValueError::TooShort { min, len } => {
                ProblemText::ValueTooShort { value, min: (*min).into(), len: (*len).into() }
            }
            ValueError::ControlCharacter { position } => {
                ProblemText::ValueControlCharacter { value, position: (*position).into() }
            }
            ValueError::Format { expected } => match expected {
                Expected::Amount => ProblemText::ValueNotAmount { value },
                Expected::Hex => ProblemText::ValueNotHex { value },
                Expected::Slug => ProblemText::ValueNotSlug { value },
                Expected::ParticipantCode => ProblemText::ValueNotParticipantCode { value },
                Expected::NumberCharacters => ProblemText::ValueNotNumberCharacters { value },
                Expected::Origin => ProblemText::ValueNotOrigin { value },
                Expected::DateInRange => ProblemText::ValueDateOutOfRange { value },
                Expected::Date => ProblemText::ValueNotDate { value },
                Expected::Instant => ProblemText::ValueNotInstant { value },
                Expected::Locode => ProblemText::ValueNotLocode { value },
                Expected::TransportMode => ProblemText::ValueNotTransportMode { value },
            },
            ValueError::TooManyDecimals => ProblemText::ValueTooManyDecimals { value },
            ValueError::NotPositive => ProblemText::ValueNotPositive { value },
            ValueError::TooLarge { max } => ProblemText::ValueTooLarge { value, max: (*max).into() },
            ValueError::SyntheticDiamonds => ProblemText::ValueSynthetic { value },
            ValueError::UnknownHsCode => ProblemText::ValueUnknownHsCode { value },
            ValueError::NoSuchDate => ProblemText::ValueNoSuchDate { value },
        };
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_declared_once_with_its_arguments() {
        let mut ids: Vec<&str> = ProblemText::ALL.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ProblemText::ALL.len(), "an id declared twice");
        let coded: Coded =
            ProblemText::ParcelsTooMany { count: 1001usize.into(), max: 1000usize.into() }.into();
        assert_eq!(coded.id, "parcels-too-many");
        assert_eq!(coded.args, vec![("count", Arg::Number(1001)), ("max", Arg::Number(1000))]);
    }

    #[test]
    fn a_value_error_says_which_value_and_keeps_its_numbers() {
        let e = "x".repeat(300).parse::<crate::Text>().unwrap_err();
        let coded = e.coded("xxx");
        assert_eq!(coded.id, "value-too-long");
        assert_eq!(coded.args[0], ("value", Arg::Text("xxx".into())));
        assert_eq!(coded.args[1], ("max", Arg::Number(256)));
        let coded = "2026-02-30".parse::<Date>().unwrap_err().coded("2026-02-30");
        assert_eq!(coded.id, "value-no-such-date");
    }
}
