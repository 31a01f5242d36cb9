//! The KP certificate (KPCS Annex I) and the rules a valid one obeys.
//!
//! Field-level rules live in the newtypes (`codes`, `amount`, `date`, `text`); this module
//! holds the rules that relate fields to each other and to the world (`today`, the known
//! participants, who is issuing). Every problem is reported at once, each with its field path.

use std::fmt;

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::amount::{Carats, UsdAmount};
use crate::codes::{CertificateNumber, HsCode, Locode, Origin, ParticipantCode, TransportMode};
use crate::date::Date;
use crate::problem::{Arg, ProblemText as T};
use crate::text::{DeclarationCode, LongText, Text};

/// Limits of a certificate (docs/certificate-json.md lists them for users).
pub const MAX_PARCELS: usize = 1000;
pub const MAX_DECLARATIONS: usize = 16;
pub const MAX_CONTAINER_SEALS: usize = 16;
/// `issued_on` may lie this many days after the validator's `today` (clocks and time zones).
pub const ISSUE_DATE_TOLERANCE_DAYS: i32 = 1;
/// Default `max_validity_days` (the US practice).
pub const DEFAULT_MAX_VALIDITY_DAYS: u32 = 60;

/// A Kimberley Process certificate as signed by the exporting authority. Its bytes are in
/// [`crate::certificate_bytes`]: format 1, or format 1 followed by format 2's elements.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Certificate {
    /// Unique; starts with the exporting participant's code.
    pub number: CertificateNumber,
    #[serde(flatten)]
    pub content: CertificateContent,
}

/// Everything on a certificate but its number (which the node may assign on submit).
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateContent {
    /// The certificate this one replaces (issued by the same participant to the same
    /// importing participant); the old one becomes `replaced` on both sides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<CertificateNumber>,
    pub exporting_participant: ParticipantCode,
    pub importing_participant: ParticipantCode,
    /// When the importing participant is a union (EU): the member state where the shipment
    /// is imported. The certificate goes to that member state's node, which confirms it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub importing_member: Option<ParticipantCode>,
    pub issuing_authority: Text,
    pub exporter: Party,
    pub importer: Party,
    pub issued_on: Date,
    pub expires_on: Date,
    pub parcels: Vec<Parcel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub declarations: Vec<Declaration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<LongText>,
}

/// The exporter or the importer named on a certificate.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Party {
    pub name: Text,
    pub address: Text,
    /// The party's export or import licence, or its registration number with the authority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub licence: Option<Text>,
}

impl Party {
    /// The name and address, as an import confirmation repeats them.
    pub fn named(&self) -> PartyName {
        PartyName { name: self.name.clone(), address: self.address.clone() }
    }
}

/// A party's name and address, as an import confirmation repeats them from the certificate.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartyName {
    pub name: Text,
    pub address: Text,
}

/// One parcel of the shipment.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Parcel {
    pub hs_code: HsCode,
    pub carats: Carats,
    pub value_usd: UsdAmount,
    pub origin: Origin,
    /// Where in the country of origin the diamonds were mined (a province, a zone). A
    /// restricted participant's exports may have to name an approved area (as the Central
    /// African Republic's "compliant zones" did from 2015).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_area: Option<Text>,
}

/// How the shipment travels and the references outside the certificate.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Shipment {
    /// The port of exit: free text, or a UN/LOCODE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_of_export: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customs_reference: Option<Text>,
    /// The port of entry in the importing country, by UN/LOCODE (`BEANR`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_of_entry: Option<Locode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_mode: Option<TransportMode>,
    /// The air waybill, bill of lading or consignment note number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_document: Option<Text>,
    /// The numbers of the seals on the tamper-resistant container(s).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub container_seals: Vec<Text>,
}

impl Shipment {
    /// Whether any element of format 2 is present.
    pub(crate) fn has_format_2(&self) -> bool {
        self.port_of_entry.is_some()
            || self.transport_mode.is_some()
            || self.transport_document.is_some()
            || !self.container_seals.is_empty()
    }
}

/// A declaration the exporter makes (system of warranties, responsible-sourcing principles).
/// It is part of the signed certificate.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Declaration {
    pub code: DeclarationCode,
    pub text: LongText,
}

impl Certificate {
    /// Total carats, in hundredths. Derived, never typed in twice.
    pub fn total_carats(&self) -> u64 {
        self.content.parcels.iter().map(|p| p.carats.hundredths()).sum()
    }

    /// Total value in US cents.
    pub fn total_value_usd(&self) -> u64 {
        self.content.parcels.iter().map(|p| p.value_usd.hundredths()).sum()
    }

    pub fn parcel_count(&self) -> usize {
        self.content.parcels.len()
    }

    /// The participant whose node receives and confirms the certificate: the importing
    /// participant, or for a union the member state named in `importing_member`.
    pub fn delivered_to(&self) -> ParticipantCode {
        self.content.importing_member.unwrap_or(self.content.importing_participant)
    }

    /// Every rule that relates fields to each other and to `ctx` (docs/certificate-json.md).
    /// Empty means valid.
    pub fn problems(&self, ctx: &ValidationContext<'_>) -> Vec<Problem> {
        let c = &self.content;
        let mut problems = Vec::new();
        check_parts(
            &Parts {
                number: Some(&self.number),
                replaces: c.replaces.as_ref(),
                exporting: Some(c.exporting_participant),
                importing: Some(c.importing_participant),
                importing_member: c.importing_member,
                container_seals: c.shipment.as_ref().map_or(0, |s| s.container_seals.len()),
                issued_on: Some(c.issued_on),
                expires_on: Some(c.expires_on),
                parcel_count: Some(c.parcels.len()),
                origins: c.parcels.iter().map(|p| p.origin).enumerate().collect(),
                declaration_count: c.declarations.len(),
            },
            ctx,
            &mut problems,
        );
        problems
    }

    pub fn validate(&self, ctx: &ValidationContext<'_>) -> Result<(), Problems> {
        Problems::result(self.problems(ctx))
    }
}

/// Who counts as a Kimberley Process participant, as far as this validator knows.
pub trait ParticipantDirectory {
    fn is_participant(&self, code: ParticipantCode) -> bool;

    /// The union participant (such as the EU) that `member` is a member state of, if any. A
    /// member state's authority issues certificates in the union's name, and trade between
    /// members of one union needs no certificate.
    fn union_of(&self, member: ParticipantCode) -> Option<ParticipantCode> {
        let _ = member;
        None
    }

    /// Whether `code` is a union with member states.
    fn is_union(&self, code: ParticipantCode) -> bool {
        let _ = code;
        false
    }

    /// Whether `member` is a member state of `union`.
    fn is_member(&self, member: ParticipantCode, union: ParticipantCode) -> bool {
        self.union_of(member) == Some(union)
    }
}

/// Accepts every well-formed code: for checks that are about the document alone.
#[derive(Debug, Clone, Copy)]
pub struct AnyParticipant;

impl ParticipantDirectory for AnyParticipant {
    fn is_participant(&self, _: ParticipantCode) -> bool {
        true
    }

    fn is_member(&self, _: ParticipantCode, _: ParticipantCode) -> bool {
        true
    }
}

impl<F: Fn(ParticipantCode) -> bool> ParticipantDirectory for F {
    fn is_participant(&self, code: ParticipantCode) -> bool {
        self(code)
    }
}

/// What the validator knows about the world.
pub struct ValidationContext<'a> {
    /// The validator's date (UTC). Certificates issued up to one day later are tolerated.
    pub today: Date,
    /// The longest validity accepted, or `None` not to apply the rule (a receiving node
    /// applies the issuing node's policy, not its own).
    pub max_validity_days: Option<u32>,
    pub participants: &'a dyn ParticipantDirectory,
    /// The participant that must be the exporting one (this node on submit; the signer on
    /// receipt).
    pub exporter: Option<ParticipantCode>,
    /// The participant that must be the importing one (this node on receipt).
    pub importer: Option<ParticipantCode>,
}

impl fmt::Debug for ValidationContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidationContext")
            .field("today", &self.today)
            .field("max_validity_days", &self.max_validity_days)
            .field("exporter", &self.exporter)
            .field("importer", &self.importer)
            .finish_non_exhaustive()
    }
}

/// One problem with a certificate, naming its field (`parcels[2].carats`). An empty field
/// means the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    pub field: String,
    /// In English, for the CLI, the log and the JSON API.
    pub message: String,
    /// The same, by message id and arguments, for a user interface that speaks the user's
    /// language; `None` for a problem that has no id yet (shown in English).
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub coded: Option<crate::problem::Coded>,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { field: field.into(), message: message.into(), coded: None }
    }

    /// The problem with its message id and arguments.
    pub fn coded(mut self, text: impl Into<crate::problem::Coded>) -> Problem {
        self.coded = Some(text.into());
        self
    }

    /// `value` at `field` failed its type's rules: `"value" <why>` (the value cut at 40
    /// characters).
    pub fn value(field: impl Into<String>, value: &str, e: &crate::ValueError) -> Problem {
        let shown: String = value.chars().take(40).collect();
        let ellipsis = if value.chars().count() > 40 { "…" } else { "" };
        Problem::new(field, format!("{shown:?}{ellipsis} {e}")).coded(e.coded(&format!("{shown}{ellipsis}")))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem found, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn result(problems: Vec<Problem>) -> Result<(), Problems> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            p.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The fields the cross-field rules need, each present only if it parsed. The JSON parser
/// fills what it could, so that a bad date does not hide a bad participant.
pub(crate) struct Parts<'a> {
    pub number: Option<&'a CertificateNumber>,
    pub replaces: Option<&'a CertificateNumber>,
    pub exporting: Option<ParticipantCode>,
    pub importing: Option<ParticipantCode>,
    pub importing_member: Option<ParticipantCode>,
    pub container_seals: usize,
    pub issued_on: Option<Date>,
    pub expires_on: Option<Date>,
    pub parcel_count: Option<usize>,
    pub origins: Vec<(usize, Origin)>,
    pub declaration_count: usize,
}

/// The member state whose range `<union>-<member>-…` `number` lies in, if `union` has such a
/// member.
fn member_range(
    number: &CertificateNumber,
    union: ParticipantCode,
    dir: &dyn ParticipantDirectory,
) -> Option<ParticipantCode> {
    let rest = number.as_str().strip_prefix(union.as_str())?.strip_prefix('-')?;
    let (segment, _) = rest.split_once('-')?;
    segment.parse::<ParticipantCode>().ok().filter(|m| dir.union_of(*m) == Some(union))
}

pub(crate) fn check_parts(p: &Parts<'_>, ctx: &ValidationContext<'_>, out: &mut Vec<Problem>) {
    if let (Some(number), Some(exporting)) = (p.number, p.exporting) {
        if !number.starts_with(exporting) {
            out.push(
                Problem::new(
                    "number",
                    format!(
                        "{number} must start with the exporting participant's code {exporting} \
                     (KPCS Annex I)"
                    ),
                )
                .coded(T::NumberPrefix { number: Arg::text(number), exporting: exporting.into() }),
            );
        }
    }
    if let (Some(number), Some(old)) = (p.number, p.replaces) {
        if number == old {
            out.push(
                Problem::new(
                    "replaces",
                    format!("{number} cannot replace itself: name the certificate this one replaces"),
                )
                .coded(T::ReplacesItself { number: Arg::text(number) }),
            );
        }
    }
    let dir = ctx.participants;
    if let (Some(member), Some(importing)) = (p.importing_member, p.importing) {
        if !dir.is_member(member, importing) {
            let is_union = dir.is_union(importing);
            if is_union {
                out.push(
                    Problem::new(
                        "importing_member",
                        format!("{member} is not a member state of {importing}"),
                    )
                    .coded(T::ImportingMemberNotMember {
                        member: member.into(),
                        importing: importing.into(),
                    }),
                );
            } else {
                out.push(
                    Problem::new(
                        "importing_member",
                        format!(
                            "names member state {member}, but {importing} is not a union: give importing_member \
                             only when the importing participant is a union such as EU"
                        ),
                    )
                    .coded(T::ImportingMemberNotUnion { member: member.into(), importing: importing.into() }),
                );
            }
        }
    }
    if p.container_seals > MAX_CONTAINER_SEALS {
        out.push(
            Problem::new(
                "shipment.container_seals",
                format!(
                    "has {} container seals; at most {MAX_CONTAINER_SEALS} are allowed",
                    p.container_seals
                ),
            )
            .coded(T::ContainerSealsTooMany {
                count: p.container_seals.into(),
                max: MAX_CONTAINER_SEALS.into(),
            }),
        );
    }
    if let Some(exporting) = p.exporting {
        if let Some(issuer) = ctx.exporter {
            // A member state's node issues in its union's name from its own range of numbers,
            // `<UNION>-<MEMBER>-…`: the union's numbers are unique only if no member can take
            // another's.
            if let (Some(number), Some(union)) = (p.number, dir.union_of(issuer)) {
                let own = format!("{union}-{issuer}-");
                if exporting == union && !number.as_str().starts_with(&own) {
                    out.push(
                        Problem::new(
                            "number",
                            format!(
                                "{number} is not in {issuer}'s range: a member state's node issues {union} \
                             certificates numbered {own}… only, so that numbers stay unique across the \
                             union's nodes"
                            ),
                        )
                        .coded(T::NumberNotInOwnRange {
                            number: Arg::text(number),
                            issuer: issuer.into(),
                            union: union.into(),
                            own: own.into(),
                        }),
                    );
                }
            }
            // The union's own node (any issuer in its own name) may not take a member state's
            // range either: `<UNION>-<MEMBER>-…` belongs to that member's node alone, or the
            // union's node and the member's could give one number to two certificates.
            if let Some(number) = p.number.filter(|_| exporting == issuer) {
                if let Some(member) = member_range(number, exporting, dir) {
                    out.push(
                        Problem::new(
                            "number",
                            format!(
                                "{number} is in {member}'s range: {exporting} certificates numbered \
                             {exporting}-{member}-… are issued by the node of {member}, a member state \
                             of {exporting}, only; give a number outside every member's range (a \
                             number assigned by this node, {exporting}-<year>-<sequence>, is)"
                            ),
                        )
                        .coded(T::NumberInMemberRange {
                            number: Arg::text(number),
                            member: member.into(),
                            exporting: exporting.into(),
                        }),
                    );
                }
            }
            // The issuer's own participant, or the union it is a member state of.
            if exporting != issuer && dir.union_of(issuer) != Some(exporting) {
                let (allowed, coded) = match dir.union_of(issuer) {
                    Some(union) => (
                        format!("{issuer} (or {union}, the union it belongs to)"),
                        T::ExportingNotAllowedUnion {
                            exporting: exporting.into(),
                            issuer: issuer.into(),
                            union: union.into(),
                        },
                    ),
                    None => (
                        issuer.to_string(),
                        T::ExportingNotAllowed { exporting: exporting.into(), allowed: issuer.into() },
                    ),
                };
                out.push(
                    Problem::new(
                        "exporting_participant",
                        format!(
                            "is {exporting}, but this certificate can only be issued in the name of {allowed}"
                        ),
                    )
                    .coded(coded),
                );
            }
        }
        if let Some(union) = dir.union_of(exporting) {
            out.push(
                Problem::new(
                    "exporting_participant",
                    format!(
                    "{exporting} is a member state of {union}, which is the Kimberley Process participant: \
                     certificates are issued in its name (exporting_participant \"{union}\")"
                ),
                )
                .coded(T::ExportingMemberState { exporting: exporting.into(), union: union.into() }),
            );
        } else if !dir.is_participant(exporting) {
            out.push(not_a_participant("exporting_participant", exporting));
        }
    }
    if let Some(importing) = p.importing {
        let bloc = |c: ParticipantCode| dir.union_of(c).unwrap_or(c);
        if Some(importing) == p.exporting {
            out.push(
                Problem::new(
                    "importing_participant",
                    format!("is {importing}, the same as the exporting participant; they must differ"),
                )
                .coded(T::ImportingSame { importing: importing.into() }),
            );
        } else if let Some(exporting) = p.exporting.filter(|e| bloc(*e) == bloc(importing)) {
            let within = bloc(importing);
            let from = ctx.exporter.filter(|i| dir.union_of(*i) == Some(within)).unwrap_or(exporting);
            out.push(
                Problem::new(
                    "importing_participant",
                    format!(
                        "{from} and {importing} are both within {within}: trade inside a union needs no \
                     Kimberley Process certificate (only its external borders are controlled)"
                    ),
                )
                .coded(T::ImportingWithinUnion {
                    from: from.into(),
                    importing: importing.into(),
                    within: within.into(),
                }),
            );
        }
        if let Some(expected) = ctx.importer {
            if importing != expected {
                out.push(
                    Problem::new(
                        "importing_participant",
                        format!("is {importing}, but this certificate was delivered to {expected}"),
                    )
                    .coded(T::ImportingNotDelivered {
                        importing: importing.into(),
                        expected: expected.into(),
                    }),
                );
            }
        }
        if let Some(union) = dir.union_of(importing) {
            if bloc(importing) != p.exporting.map_or(importing, bloc) {
                out.push(
                    Problem::new(
                        "importing_participant",
                        format!(
                            "{importing} is a member state of {union}, which is the Kimberley Process \
                         participant: name {union} as the importing participant"
                        ),
                    )
                    .coded(T::ImportingMemberState { importing: importing.into(), union: union.into() }),
                );
            }
        } else if !dir.is_participant(importing) {
            out.push(not_a_participant("importing_participant", importing));
        }
    }
    match p.parcel_count {
        Some(0) => out.push(Problem::new("parcels", "at least one parcel is required").coded(T::ParcelsNone)),
        Some(n) if n > MAX_PARCELS => out.push(
            Problem::new("parcels", format!("has {n} parcels; a certificate holds at most {MAX_PARCELS}"))
                .coded(T::ParcelsTooMany { count: n.into(), max: MAX_PARCELS.into() }),
        ),
        _ => {}
    }
    for (i, origin) in &p.origins {
        if let Origin::Participant(code) = origin {
            if !dir.is_participant(*code) && dir.union_of(*code).is_none() {
                out.push(not_a_participant(&format!("parcels[{i}].origin"), *code));
            }
        }
    }
    if p.declaration_count > MAX_DECLARATIONS {
        out.push(
            Problem::new(
                "declarations",
                format!("has {} declarations; at most {MAX_DECLARATIONS} are allowed", p.declaration_count),
            )
            .coded(T::DeclarationsTooMany {
                count: p.declaration_count.into(),
                max: MAX_DECLARATIONS.into(),
            }),
        );
    }
    if let Some(issued) = p.issued_on {
        if issued.days_after(ctx.today) > ISSUE_DATE_TOLERANCE_DAYS {
            out.push(
                Problem::new("issued_on", format!("{issued} lies in the future (today is {})", ctx.today))
                    .coded(T::IssuedInFuture { issued: issued.into(), today: ctx.today.into() }),
            );
        }
    }
    if let Some(expires) = p.expires_on {
        if let Some(issued) = p.issued_on {
            let validity = expires.days_after(issued);
            if validity <= 0 {
                out.push(
                    Problem::new("expires_on", format!("{expires} must be after issued_on ({issued})"))
                        .coded(T::ExpiresNotAfterIssue { expires: expires.into(), issued: issued.into() }),
                );
            } else if let Some(max) = ctx.max_validity_days {
                if validity as u32 > max {
                    out.push(
                        Problem::new(
                            "expires_on",
                            format!(
                                "{expires} is {validity} days after issued_on; at most {max} days \
                             are allowed (max_validity_days)"
                            ),
                        )
                        .coded(T::ValidityTooLong {
                            expires: expires.into(),
                            days: validity.into(),
                            max: max.into(),
                        }),
                    );
                }
            }
        }
        if expires < ctx.today {
            out.push(
                Problem::new("expires_on", format!("{expires} has already passed (today is {})", ctx.today))
                    .coded(T::ExpiresPassed { expires: expires.into(), today: ctx.today.into() }),
            );
        }
    }
}

fn not_a_participant(field: &str, code: ParticipantCode) -> Problem {
    Problem::new(
        field,
        format!(
            "{code} is not a Kimberley Process participant known to this node; trade with \
             non-participants is forbidden (KPCS Section III(c))"
        ),
    )
    .coded(T::NotAParticipant { code: code.into() })
}
