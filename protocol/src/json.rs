//! Certificate JSON, as customs systems submit it, turned into a [`CertificateDraft`] with
//! every problem reported at once.
//!
//! Parsing goes through a small JSON tree of our own rather than serde derive: derive stops at
//! the first bad field, ignores duplicate keys, and cannot say "and also these three". Here
//! unknown fields, wrong types, bad values and broken rules are all collected, each with its
//! path.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::certificate::{
    check_parts, Certificate, CertificateContent, Declaration, Parcel, Parts, Party, Problem, Problems,
    Shipment, ValidationContext,
};
use crate::codes::CertificateNumber;
use crate::value::ValueError;

/// A parsed, validated certificate whose number may still be missing (the node assigns one on
/// submit). Its schema is the schema of what customs systems submit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateDraft {
    /// Optional on submit: the node then assigns `<CC>-<YYYY>-<seq>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<CertificateNumber>,
    #[serde(flatten)]
    pub content: CertificateContent,
}

impl CertificateDraft {
    /// Parses and validates certificate JSON. `Err` lists every problem found.
    pub fn from_json(text: &str, ctx: &ValidationContext<'_>) -> Result<Self, Problems> {
        let tree: Json = serde_json::from_str(text)
            .map_err(|e| Problems(vec![Problem::new("", format!("not valid JSON: {e}"))]))?;
        parse_tree(&tree, ctx)
    }

    pub fn from_json_bytes(bytes: &[u8], ctx: &ValidationContext<'_>) -> Result<Self, Problems> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Problems(vec![Problem::new("", format!("not valid UTF-8 text: {e}"))]))?;
        Self::from_json(text, ctx)
    }

    /// The certificate with `number` filled in if the draft had none.
    pub fn into_certificate(self, number: impl FnOnce() -> CertificateNumber) -> Certificate {
        Certificate { number: self.number.unwrap_or_else(number), content: self.content }
    }
}

/// A JSON value that keeps object entries in order and refuses duplicate keys.
#[derive(Debug)]
enum Json {
    Null,
    Bool,
    Number,
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool => "a boolean",
            Json::Number => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Bool)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries: Vec<(String, Json)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!(
                            "duplicate key {key:?}: each field may appear once"
                        )));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Json::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Collects problems while walking the tree.
struct Walker {
    problems: Vec<Problem>,
}

/// An object being read: every key must be taken, or it is reported as unknown.
struct Obj<'a> {
    path: String,
    entries: &'a [(String, Json)],
    taken: Vec<bool>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Obj<'a> {
    /// The value of `key`; JSON `null` counts as absent.
    fn take(&mut self, key: &str) -> Option<&'a Json> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        self.taken[i] = true;
        match &self.entries[i].1 {
            Json::Null => None,
            v => Some(v),
        }
    }

    fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn finish(self, w: &mut Walker, known: &[&str]) {
        for ((key, _), taken) in self.entries.iter().zip(&self.taken) {
            if !taken {
                w.problems.push(Problem::new(
                    join(&self.path, key),
                    format!("unknown field; the fields here are {}", known.join(", ")),
                ));
            }
        }
    }
}

impl Walker {
    fn object<'a>(&mut self, path: &str, v: &'a Json) -> Option<Obj<'a>> {
        match v {
            Json::Object(entries) => {
                Some(Obj { path: path.to_owned(), entries, taken: vec![false; entries.len()] })
            }
            other => {
                self.problems.push(Problem::new(path, format!("must be an object, not {}", other.kind())));
                None
            }
        }
    }

    fn string<'a>(&mut self, path: &str, v: &'a Json, hint: &str) -> Option<&'a str> {
        match v {
            Json::String(s) => Some(s),
            other => {
                self.problems
                    .push(Problem::new(path, format!("must be a string{hint}, not {}", other.kind())));
                None
            }
        }
    }

    /// Parses a string value through `T::from_str`, reporting failures at `path`.
    fn value<T: FromStr<Err = ValueError>>(&mut self, path: &str, v: &Json) -> Option<T> {
        let hint = if matches!(v, Json::Number) {
            " (amounts are decimal strings such as \"1520.35\"; JSON numbers could be read as \
             binary floating point)"
        } else {
            ""
        };
        let s = self.string(path, v, hint)?;
        match s.parse() {
            Ok(t) => Some(t),
            Err(e) => {
                let shown: String = s.chars().take(40).collect();
                let ellipsis = if s.chars().count() > 40 { "…" } else { "" };
                self.problems.push(Problem::new(path, format!("{shown:?}{ellipsis} {e}")));
                None
            }
        }
    }

    fn required<T: FromStr<Err = ValueError>>(&mut self, obj: &mut Obj<'_>, key: &str) -> Option<T> {
        let path = obj.field(key);
        match obj.take(key) {
            Some(v) => self.value(&path, v),
            None => {
                self.problems.push(Problem::new(path, "is required"));
                None
            }
        }
    }

    fn optional<T: FromStr<Err = ValueError>>(&mut self, obj: &mut Obj<'_>, key: &str) -> Option<Option<T>> {
        let path = obj.field(key);
        match obj.take(key) {
            Some(v) => self.value(&path, v).map(Some),
            None => Some(None),
        }
    }

    fn party(&mut self, obj: &mut Obj<'_>, key: &str) -> Option<Party> {
        let path = obj.field(key);
        let Some(v) = obj.take(key) else {
            self.problems.push(Problem::new(path, "is required"));
            return None;
        };
        let mut o = self.object(&path, v)?;
        let name = self.required(&mut o, "name");
        let address = self.required(&mut o, "address");
        o.finish(self, &["name", "address"]);
        Some(Party { name: name?, address: address? })
    }

    fn array<'a>(&mut self, path: &str, v: &'a Json) -> Option<&'a [Json]> {
        match v {
            Json::Array(items) => Some(items),
            other => {
                self.problems.push(Problem::new(path, format!("must be an array, not {}", other.kind())));
                None
            }
        }
    }
}

const CERTIFICATE_FIELDS: &[&str] = &[
    "number",
    "exporting_participant",
    "importing_participant",
    "issuing_authority",
    "exporter",
    "importer",
    "issued_on",
    "expires_on",
    "parcels",
    "shipment",
    "declarations",
    "remarks",
];

fn parse_tree(tree: &Json, ctx: &ValidationContext<'_>) -> Result<CertificateDraft, Problems> {
    let mut w = Walker { problems: Vec::new() };
    let Some(mut root) = w.object("", tree) else {
        return Err(Problems(w.problems));
    };
    let number: Option<Option<CertificateNumber>> = w.optional(&mut root, "number");
    let exporting = w.required(&mut root, "exporting_participant");
    let importing = w.required(&mut root, "importing_participant");
    let issuing_authority = w.required(&mut root, "issuing_authority");
    let exporter = w.party(&mut root, "exporter");
    let importer = w.party(&mut root, "importer");
    let issued_on = w.required(&mut root, "issued_on");
    let expires_on = w.required(&mut root, "expires_on");

    // Parcels: each one parsed on its own so that every bad parcel is reported.
    let mut parcels = Some(Vec::new());
    let mut parcel_count = None;
    let mut origins = Vec::new();
    match root.take("parcels") {
        None => w.problems.push(Problem::new("parcels", "is required")),
        Some(v) => {
            if let Some(items) = w.array("parcels", v) {
                parcel_count = Some(items.len());
                for (i, item) in items.iter().enumerate() {
                    let path = format!("parcels[{i}]");
                    let parcel = w.object(&path, item).and_then(|mut o| {
                        let hs_code = w.required(&mut o, "hs_code");
                        let carats = w.required(&mut o, "carats");
                        let value_usd = w.required(&mut o, "value_usd");
                        let origin = w.required(&mut o, "origin");
                        let origin_area = w.optional(&mut o, "origin_area");
                        o.finish(&mut w, &["hs_code", "carats", "value_usd", "origin", "origin_area"]);
                        if let Some(origin) = origin {
                            origins.push((i, origin));
                        }
                        Some(Parcel {
                            hs_code: hs_code?,
                            carats: carats?,
                            value_usd: value_usd?,
                            origin: origin?,
                            origin_area: origin_area?,
                        })
                    });
                    match (parcel, parcels.as_mut()) {
                        (Some(p), Some(list)) => list.push(p),
                        _ => parcels = None,
                    }
                }
            } else {
                parcels = None;
            }
        }
    }

    let shipment = match root.take("shipment") {
        None => Some(None),
        Some(v) => w.object("shipment", v).and_then(|mut o| {
            let port = w.optional(&mut o, "port_of_export");
            let reference = w.optional(&mut o, "customs_reference");
            o.finish(&mut w, &["port_of_export", "customs_reference"]);
            Some(Some(Shipment { port_of_export: port?, customs_reference: reference? }))
        }),
    };

    let mut declarations = Some(Vec::new());
    let mut declaration_count = 0;
    if let Some(v) = root.take("declarations") {
        match w.array("declarations", v) {
            None => declarations = None,
            Some(items) => {
                declaration_count = items.len();
                for (i, item) in items.iter().enumerate() {
                    let path = format!("declarations[{i}]");
                    let decl = w.object(&path, item).and_then(|mut o| {
                        let code = w.required(&mut o, "code");
                        let text = w.required(&mut o, "text");
                        o.finish(&mut w, &["code", "text"]);
                        Some(Declaration { code: code?, text: text? })
                    });
                    match (decl, declarations.as_mut()) {
                        (Some(d), Some(list)) => list.push(d),
                        _ => declarations = None,
                    }
                }
            }
        }
    }
    let remarks = w.optional(&mut root, "remarks");
    root.finish(&mut w, CERTIFICATE_FIELDS);

    check_parts(
        &Parts {
            number: number.as_ref().and_then(Option::as_ref),
            exporting,
            importing,
            issued_on,
            expires_on,
            parcel_count,
            origins,
            declaration_count,
        },
        ctx,
        &mut w.problems,
    );

    if !w.problems.is_empty() {
        return Err(Problems(w.problems));
    }
    // Every field parsed (a missing one would have left a problem), so all are present.
    match (
        number,
        exporting,
        importing,
        issuing_authority,
        exporter,
        importer,
        issued_on,
        expires_on,
        parcels,
        shipment,
        declarations,
        remarks,
    ) {
        (
            Some(number),
            Some(exporting_participant),
            Some(importing_participant),
            Some(issuing_authority),
            Some(exporter),
            Some(importer),
            Some(issued_on),
            Some(expires_on),
            Some(parcels),
            Some(shipment),
            Some(declarations),
            Some(remarks),
        ) => Ok(CertificateDraft {
            number,
            content: CertificateContent {
                exporting_participant,
                importing_participant,
                issuing_authority,
                exporter,
                importer,
                issued_on,
                expires_on,
                parcels,
                shipment,
                declarations,
                remarks,
            },
        }),
        _ => Err(Problems(vec![Problem::new(
            "",
            "the certificate could not be read (internal inconsistency; please report)",
        )])),
    }
}
