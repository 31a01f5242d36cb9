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
use crate::codes::{CertificateNumber, Origin, ParticipantCode};
use crate::date::Date;
use crate::problem::{Arg, ProblemText};
use crate::text::{LongText, Text};
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
        let tree: Json = serde_json::from_str(text).map_err(|e| {
            Problems(vec![Problem::new("", format!("not valid JSON: {e}"))
                .coded(ProblemText::NotJson { detail: Arg::text(e) })])
        })?;
        parse_tree(&tree, ctx)
    }

    pub fn from_json_bytes(bytes: &[u8], ctx: &ValidationContext<'_>) -> Result<Self, Problems> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Problems(vec![Problem::new("", format!("not valid UTF-8 text: {e}"))
                .coded(ProblemText::NotUtf8 { detail: Arg::text(e) })])
        })?;
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
    /// The kind as one word, for a catalogue to select its own words by.
    fn kind_id(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool => "boolean",
            Json::Number => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }

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
                w.problems.push(
                    Problem::new(
                        join(&self.path, key),
                        format!("unknown field; the fields here are {}", known.join(", ")),
                    )
                    .coded(ProblemText::UnknownField { known: known.join(", ").into() }),
                );
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
                self.problems.push(
                    Problem::new(path, format!("must be an object, not {}", other.kind()))
                        .coded(ProblemText::NotObject { kind: other.kind_id().into() }),
                );
                None
            }
        }
    }

    fn string<'a>(&mut self, path: &str, v: &'a Json, hint: &str) -> Option<&'a str> {
        match v {
            Json::String(s) => Some(s),
            other => {
                let kind = other.kind_id().into();
                let coded = if hint.is_empty() {
                    ProblemText::NotString { kind }
                } else {
                    ProblemText::NotAmountString { kind }
                };
                self.problems.push(
                    Problem::new(path, format!("must be a string{hint}, not {}", other.kind())).coded(coded),
                );
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
                self.problems.push(Problem::value(path, s, &e));
                None
            }
        }
    }

    fn required<T: FromStr<Err = ValueError>>(&mut self, obj: &mut Obj<'_>, key: &str) -> Option<T> {
        let path = obj.field(key);
        match obj.take(key) {
            Some(v) => self.value(&path, v),
            None => {
                self.problems.push(Problem::new(path, "is required").coded(ProblemText::Required));
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
            self.problems.push(Problem::new(path, "is required").coded(ProblemText::Required));
            return None;
        };
        let mut o = self.object(&path, v)?;
        let name = self.required(&mut o, "name");
        let address = self.required(&mut o, "address");
        let licence = self.optional(&mut o, "licence");
        o.finish(self, &["name", "address", "licence"]);
        Some(Party { name: name?, address: address?, licence: licence? })
    }

    fn array<'a>(&mut self, path: &str, v: &'a Json) -> Option<&'a [Json]> {
        match v {
            Json::Array(items) => Some(items),
            other => {
                self.problems.push(
                    Problem::new(path, format!("must be an array, not {}", other.kind()))
                        .coded(ProblemText::NotArray { kind: other.kind_id().into() }),
                );
                None
            }
        }
    }
}

const CERTIFICATE_FIELDS: &[&str] = &[
    "number",
    "replaces",
    "exporting_participant",
    "importing_participant",
    "importing_member",
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

const SHIPMENT_FIELDS: &[&str] = &[
    "port_of_export",
    "customs_reference",
    "port_of_entry",
    "transport_mode",
    "transport_document",
    "container_seals",
];

/// Every field of a certificate as read: `None` where it was missing or bad, and then a problem
/// says which.
struct Fields {
    number: Option<Option<CertificateNumber>>,
    replaces: Option<Option<CertificateNumber>>,
    exporting: Option<ParticipantCode>,
    importing: Option<ParticipantCode>,
    importing_member: Option<Option<ParticipantCode>>,
    issuing_authority: Option<Text>,
    exporter: Option<Party>,
    importer: Option<Party>,
    issued_on: Option<Date>,
    expires_on: Option<Date>,
    parcels: Option<Vec<Parcel>>,
    shipment: Option<Option<Shipment>>,
    declarations: Option<Vec<Declaration>>,
    remarks: Option<Option<LongText>>,
}

impl Fields {
    /// The draft, if every field was read (it is, when no problem was reported).
    fn into_draft(self) -> Option<CertificateDraft> {
        Some(CertificateDraft {
            number: self.number?,
            content: CertificateContent {
                replaces: self.replaces?,
                exporting_participant: self.exporting?,
                importing_participant: self.importing?,
                importing_member: self.importing_member?,
                issuing_authority: self.issuing_authority?,
                exporter: self.exporter?,
                importer: self.importer?,
                issued_on: self.issued_on?,
                expires_on: self.expires_on?,
                parcels: self.parcels?,
                shipment: self.shipment?,
                declarations: self.declarations?,
                remarks: self.remarks?,
            },
        })
    }
}

/// The parcels as read: `list` is `None` if the array or any parcel is bad; `count` is the
/// array's length if it is one; `origins` the origins that could be read, by parcel index.
struct ParcelList {
    list: Option<Vec<Parcel>>,
    count: Option<usize>,
    origins: Vec<(usize, Origin)>,
}

impl Walker {
    /// Reads the array of objects `v` at `path` item by item, so that every bad item is
    /// reported. Returns the items (`None` if the array or any item is bad) and the array's
    /// length (`None` if it is not an array).
    fn objects<'a, T>(
        &mut self,
        path: &str,
        v: &'a Json,
        mut item: impl FnMut(&mut Self, usize, Obj<'a>) -> Option<T>,
    ) -> (Option<Vec<T>>, Option<usize>) {
        let Some(items) = self.array(path, v) else {
            return (None, None);
        };
        let mut list = Some(Vec::new());
        for (i, v) in items.iter().enumerate() {
            let read = self.object(&format!("{path}[{i}]"), v).and_then(|o| item(self, i, o));
            match (read, list.as_mut()) {
                (Some(t), Some(l)) => l.push(t),
                _ => list = None,
            }
        }
        (list, Some(items.len()))
    }

    fn parcels(&mut self, root: &mut Obj<'_>) -> ParcelList {
        let mut origins = Vec::new();
        let Some(v) = root.take("parcels") else {
            self.problems
                .push(Problem::new(root.field("parcels"), "is required").coded(ProblemText::Required));
            return ParcelList { list: None, count: None, origins };
        };
        let (list, count) = self.objects(&root.field("parcels"), v, |w, i, mut o| {
            let hs_code = w.required(&mut o, "hs_code");
            let carats = w.required(&mut o, "carats");
            let value_usd = w.required(&mut o, "value_usd");
            let origin = w.required(&mut o, "origin");
            let origin_area = w.optional(&mut o, "origin_area");
            o.finish(w, &["hs_code", "carats", "value_usd", "origin", "origin_area"]);
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
        ParcelList { list, count, origins }
    }

    /// The shipment, which may be absent (`Some(None)`).
    fn shipment(&mut self, root: &mut Obj<'_>) -> Option<Option<Shipment>> {
        let Some(v) = root.take("shipment") else {
            return Some(None);
        };
        let mut o = self.object(&root.field("shipment"), v)?;
        let port = self.optional(&mut o, "port_of_export");
        let reference = self.optional(&mut o, "customs_reference");
        let port_of_entry = self.optional(&mut o, "port_of_entry");
        let transport_mode = self.optional(&mut o, "transport_mode");
        let transport_document = self.optional(&mut o, "transport_document");
        let container_seals = self.strings(&mut o, "container_seals");
        o.finish(self, SHIPMENT_FIELDS);
        Some(Some(Shipment {
            port_of_export: port?,
            customs_reference: reference?,
            port_of_entry: port_of_entry?,
            transport_mode: transport_mode?,
            transport_document: transport_document?,
            container_seals: container_seals?,
        }))
    }

    /// An optional array of strings, each read through `T::from_str` (empty if absent).
    fn strings<T: FromStr<Err = ValueError>>(&mut self, obj: &mut Obj<'_>, key: &str) -> Option<Vec<T>> {
        let path = obj.field(key);
        let Some(v) = obj.take(key) else {
            return Some(Vec::new());
        };
        let items = self.array(&path, v)?;
        let mut list = Some(Vec::with_capacity(items.len().min(crate::certificate::MAX_CONTAINER_SEALS)));
        for (i, item) in items.iter().enumerate() {
            match (self.value(&format!("{path}[{i}]"), item), list.as_mut()) {
                (Some(t), Some(l)) => l.push(t),
                _ => list = None,
            }
        }
        list
    }

    /// The declarations (none if absent) and how many were given.
    fn declarations(&mut self, root: &mut Obj<'_>) -> (Option<Vec<Declaration>>, usize) {
        let Some(v) = root.take("declarations") else {
            return (Some(Vec::new()), 0);
        };
        let (list, count) = self.objects(&root.field("declarations"), v, |w, _, mut o| {
            let code = w.required(&mut o, "code");
            let text = w.required(&mut o, "text");
            o.finish(w, &["code", "text"]);
            Some(Declaration { code: code?, text: text? })
        });
        (list, count.unwrap_or(0))
    }
}

fn parse_tree(tree: &Json, ctx: &ValidationContext<'_>) -> Result<CertificateDraft, Problems> {
    let mut w = Walker { problems: Vec::new() };
    let Some(mut root) = w.object("", tree) else {
        return Err(Problems(w.problems));
    };
    let number = w.optional(&mut root, "number");
    let replaces = w.optional(&mut root, "replaces");
    let exporting = w.required(&mut root, "exporting_participant");
    let importing = w.required(&mut root, "importing_participant");
    let importing_member = w.optional(&mut root, "importing_member");
    let issuing_authority = w.required(&mut root, "issuing_authority");
    let exporter = w.party(&mut root, "exporter");
    let importer = w.party(&mut root, "importer");
    let issued_on = w.required(&mut root, "issued_on");
    let expires_on = w.required(&mut root, "expires_on");
    let parcels = w.parcels(&mut root);
    let shipment = w.shipment(&mut root);
    let (declarations, declaration_count) = w.declarations(&mut root);
    let remarks = w.optional(&mut root, "remarks");
    root.finish(&mut w, CERTIFICATE_FIELDS);

    let fields = Fields {
        number,
        replaces,
        exporting,
        importing,
        importing_member,
        issuing_authority,
        exporter,
        importer,
        issued_on,
        expires_on,
        parcels: parcels.list,
        shipment,
        declarations,
        remarks,
    };
    check_parts(
        &Parts {
            number: fields.number.as_ref().and_then(Option::as_ref),
            replaces: fields.replaces.as_ref().and_then(Option::as_ref),
            exporting: fields.exporting,
            importing: fields.importing,
            importing_member: fields.importing_member.flatten(),
            container_seals: fields
                .shipment
                .as_ref()
                .and_then(Option::as_ref)
                .map_or(0, |s| s.container_seals.len()),
            issued_on: fields.issued_on,
            expires_on: fields.expires_on,
            parcel_count: parcels.count,
            origins: parcels.origins,
            declaration_count,
        },
        ctx,
        &mut w.problems,
    );
    if !w.problems.is_empty() {
        return Err(Problems(w.problems));
    }
    fields.into_draft().ok_or_else(|| {
        Problems(vec![Problem::new(
            "",
            "the certificate could not be read (internal inconsistency; please report)",
        )
        .coded(ProblemText::Internal)])
    })
}
