//! Free text on certificates: names, addresses, the issuing authority, remarks and
//! declarations. Bounded, non-empty, and free of control characters (including the Unicode
//! bidirectional overrides that can make a printed name read differently from its bytes).

use std::str::FromStr;

use crate::codes::string_newtype;
use crate::value::ValueError;

fn is_forbidden(c: char, allow_newline: bool) -> bool {
    if allow_newline && c == '\n' {
        return false;
    }
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

fn check_text(s: &str, max: usize, allow_newline: bool) -> Result<(), ValueError> {
    if s.trim().is_empty() {
        return Err(ValueError::Empty);
    }
    let mut len = 0;
    for (i, c) in s.chars().enumerate() {
        if is_forbidden(c, allow_newline) {
            return Err(ValueError::ControlCharacter { position: i + 1 });
        }
        len += 1;
    }
    if len > max {
        return Err(ValueError::TooLong { max, len });
    }
    Ok(())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, newline = $nl:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                check_text(s, $max, $nl)?;
                Ok($name(s.to_owned()))
            }
        }

        string_newtype!($name, $what, debug = quoted);
    };
}

text_type!(
    /// A name, an address, an authority or a reference: 1–256 characters on one line.
    Text,
    max = 256,
    newline = false,
    "text"
);
text_type!(
    /// Longer text (remarks, a declaration's wording): 1–2000 characters, newlines allowed.
    LongText,
    max = 2000,
    newline = true,
    "long text"
);

/// The code of a sourcing declaration, such as `WDC-SoW`: 1–32 characters of letters,
/// digits, `-`, `_` and `.`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeclarationCode(String);

impl FromStr for DeclarationCode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.len() > 32 {
            return Err(ValueError::TooLong { max: 32, len: s.chars().count() });
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return Err(ValueError::Format { expected: crate::value::Expected::Slug });
        }
        Ok(DeclarationCode(s.to_owned()))
    }
}

string_newtype!(DeclarationCode, "declaration code", debug = plain);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert!("Gokhran of Russia".parse::<Text>().is_ok());
        assert!("Алмазы Сибири".parse::<Text>().is_ok());
        assert_eq!("".parse::<Text>(), Err(ValueError::Empty));
        assert_eq!("   ".parse::<Text>(), Err(ValueError::Empty));
        assert_eq!("a\nb".parse::<Text>(), Err(ValueError::ControlCharacter { position: 2 }));
        assert!("evil\u{202E}gnp.exe".parse::<Text>().is_err());
        assert!("x".repeat(256).parse::<Text>().is_ok());
        assert_eq!("x".repeat(257).parse::<Text>(), Err(ValueError::TooLong { max: 256, len: 257 }));
        // Characters, not bytes.
        assert!("я".repeat(256).parse::<Text>().is_ok());
        assert!("line one\nline two".parse::<LongText>().is_ok());
        assert!("bell\u{7}".parse::<LongText>().is_err());
    }

    #[test]
    fn declaration_codes() {
        assert!("WDC-SoW".parse::<DeclarationCode>().is_ok());
        assert!("KP-2021.RSP".parse::<DeclarationCode>().is_ok());
        assert!("a b".parse::<DeclarationCode>().is_err());
        assert!("".parse::<DeclarationCode>().is_err());
    }
}
