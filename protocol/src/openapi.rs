//! OpenAPI schemas of the value types (feature `openapi`): each is a string with the pattern
//! and bounds its parser enforces, so the schema and the code cannot tell different stories.

use std::borrow::Cow;

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;

use crate::{
    Carats, CertificateNumber, Date, DeclarationCode, Digest, HsCode, KeyId, Locode, LongText, Origin,
    ParticipantCode, Text, Timestamp, TransportMode, UsdAmount,
};

macro_rules! string_schema {
    ($ty:ty, $name:literal, |$b:ident| $build:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                let $b = ObjectBuilder::new().schema_type(Type::String);
                $build.into()
            }
        }
        impl utoipa::ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

string_schema!(ParticipantCode, "ParticipantCode", |b| b
    .description(Some("A Kimberley Process participant: ISO 3166-1 alpha-2 code, or EU."))
    .pattern(Some("^[A-Z]{2}$"))
    .examples(["RU"]));
string_schema!(CertificateNumber, "CertificateNumber", |b| b
    .description(Some("Unique; starts with the exporting participant's code."))
    .pattern(Some("^[A-Z0-9-]{3,32}$"))
    .examples(["RU-2026-000123"]));
string_schema!(HsCode, "HsCode", |b| {
    b
    .description(Some("7102.10 unsorted, 7102.21 industrial, 7102.31 non-industrial (gem). Heading 7104 (synthetic) is outside the scheme."))
    .enum_values(Some(["7102.10", "7102.21", "7102.31"]))
});
string_schema!(Origin, "Origin", |b| b
    .description(Some("Country of origin (participant code), or MIXED."))
    .pattern(Some("^([A-Z]{2}|MIXED)$"))
    .examples(["RU"]));
string_schema!(Locode, "Locode", |b| {
    b
    .description(Some("A UN/LOCODE: the country's two capital letters, then three capital letters or digits 2-9 (a space after the country, as the UNECE list prints it, is allowed)."))
    .pattern(Some("^[A-Z]{2} ?[A-Z2-9]{3}$"))
    .examples(["BEANR"])
});
string_schema!(TransportMode, "TransportMode", |b| b
    .description(Some("How the shipment travels."))
    .enum_values(Some(TransportMode::ALL.map(|m| m.as_str()))));
string_schema!(Carats, "Carats", |b| b
    .description(Some("Carat weight, a decimal string with at most two decimals; greater than zero."))
    .pattern(Some("^[0-9]{1,12}(\\.[0-9]{1,2})?$"))
    .examples(["1520.35"]));
string_schema!(UsdAmount, "UsdAmount", |b| b
    .description(Some("US$ value, a decimal string with at most two decimals; greater than zero."))
    .pattern(Some("^[0-9]{1,12}(\\.[0-9]{1,2})?$"))
    .examples(["4231000.00"]));
string_schema!(Date, "Date", |b| b
    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
    .examples(["2026-11-28"]));
string_schema!(Timestamp, "Timestamp", |b| b
    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
    .examples(["2026-11-28T10:15:00.000Z"]));
string_schema!(Text, "Text", |b| b
    .description(Some("1–256 characters, no control characters."))
    .min_length(Some(1))
    .max_length(Some(256)));
string_schema!(LongText, "LongText", |b| b
    .description(Some("1–2000 characters; newlines allowed, no other control characters."))
    .min_length(Some(1))
    .max_length(Some(2000)));
string_schema!(DeclarationCode, "DeclarationCode", |b| b
    .pattern(Some("^[A-Za-z0-9._-]{1,32}$"))
    .examples(["WDC-SoW"]));
string_schema!(Digest, "Digest", |b| b
    .description(Some("SHA-256, lower-case hex."))
    .pattern(Some("^[0-9a-f]{64}$")));
string_schema!(KeyId, "KeyId", |b| b
    .description(Some("A signing key's id: 8 bytes of SHA-256 over the key, hex."))
    .pattern(Some("^[0-9a-f]{16}$")));
