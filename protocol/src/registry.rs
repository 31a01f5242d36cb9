//! The participant registry's vocabulary: a participant's standing in the Kimberley Process
//! (active, suspended, restricted), union participants and their member states, the signed
//! record of one change, and the signed list a registry is updated from.
//!
//! Which participant has which standing is data, not code: nodes ship a list and operators
//! change it as the Chair circulates revisions. These types only say what a well-formed entry
//! is; the node decides what an entry means for the certificates it issues and accepts.

use std::fmt;

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::armor::{self, ArmorError};
use crate::codec::CodecError;
use crate::codes::ParticipantCode;
use crate::date::Date;
use crate::document::{DocumentError, DocumentKind, SignedDocument};
use crate::problem::{Arg, ProblemText as T};
use crate::text::{LongText, Text};
use crate::Problem;

/// Most member states a union may have, approved origin areas a restriction may name, and
/// entries a list may hold. Bounds for untrusted files, far above real use.
pub const MAX_MEMBERS: usize = 64;
pub const MAX_AREAS: usize = 256;
pub const MAX_ENTRIES: usize = 1000;

/// A participant's status in the scheme.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Encode, Decode, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParticipantStatus {
    /// Trades under the scheme.
    Active,
    /// No certificates are issued to it or accepted from it (KPCS Section III(c) applies as
    /// to a non-participant); messages already queued for it are held.
    Suspended,
    /// Its certificates are accepted only when they satisfy the restriction (see
    /// [`ParticipantEntry::approved_origin_areas`]) and are marked for enhanced vigilance.
    Restricted,
}

impl ParticipantStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParticipantStatus::Active => "active",
            ParticipantStatus::Suspended => "suspended",
            ParticipantStatus::Restricted => "restricted",
        }
    }
}

impl fmt::Display for ParticipantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ParticipantStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(ParticipantStatus::Active),
            "suspended" => Ok(ParticipantStatus::Suspended),
            "restricted" => Ok(ParticipantStatus::Restricted),
            other => {
                Err(format!("{other:?} is not a participant status; use active, suspended or restricted"))
            }
        }
    }
}

/// One participant as a registry knows it.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParticipantEntry {
    pub code: ParticipantCode,
    pub name: Text,
    pub status: ParticipantStatus,
    /// The day from which this standing applies (an entry may be recorded ahead of time).
    pub effective_from: Date,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<LongText>,
    /// For a restricted participant: its certificates are accepted only if every parcel names
    /// one of these areas as its `origin_area` (as the Central African Republic's exports
    /// were limited to approved "compliant zones" from 2015).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_origin_areas: Vec<Text>,
    /// For a union participant (the EU): its member states, each with its own authority
    /// node, which issue certificates in the union's name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<ParticipantCode>,
}

impl ParticipantEntry {
    /// What is wrong with the entry on its own, if anything: every problem, in one line
    /// each.
    pub fn problems(&self) -> Vec<String> {
        self.coded_problems().into_iter().map(|p| p.message).collect()
    }

    /// The same problems, each with its message id for a user interface (field: the whole
    /// entry).
    pub fn coded_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let code = self.code;
        let problem = |message: String, text: T| Problem::new("", message).coded(text);
        match self.status {
            ParticipantStatus::Restricted if self.approved_origin_areas.is_empty() => out.push(problem(
                format!(
                    "{code}: a restricted participant needs its approved origin areas (the rule its certificates must satisfy)"
                ),
                T::RestrictedNeedsAreas { code: code.into() },
            )),
            ParticipantStatus::Active | ParticipantStatus::Suspended if !self.approved_origin_areas.is_empty() => out.push(problem(
                format!(
                    "{code}: approved origin areas only apply to a restricted participant, and {code} is {}",
                    self.status
                ),
                T::AreasOnlyWhenRestricted { code: code.into(), status: Arg::text(self.status) },
            )),
            _ => {}
        }
        if self.approved_origin_areas.len() > MAX_AREAS {
            out.push(problem(
                format!("{code}: at most {MAX_AREAS} approved origin areas"),
                T::TooManyAreas { code: code.into(), max: MAX_AREAS.into() },
            ));
        }
        if self.members.len() > MAX_MEMBERS {
            out.push(problem(
                format!("{code}: at most {MAX_MEMBERS} member states"),
                T::TooManyMembers { code: code.into(), max: MAX_MEMBERS.into() },
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if *m == code {
                out.push(problem(
                    format!("{code}: a union cannot be its own member"),
                    T::OwnMember { code: code.into() },
                ));
            }
            if self.members[..i].contains(m) {
                out.push(problem(
                    format!("{code}: member {m} is listed twice"),
                    T::MemberTwice { code: code.into(), member: (*m).into() },
                ));
            }
        }
        out
    }
}

/// One change to a node's registry, signed by the node that made it and kept in its log, so
/// that every change can be audited: who changed what, when, and on what authority.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
pub struct RegistryChange {
    /// The entry as it now stands.
    pub entry: ParticipantEntry,
    /// Where the change came from: the operator, or a signed list (its signer and id).
    pub source: Text,
}

crate::document::bincode_body!(RegistryChange, DocumentKind::ParticipantChange);

/// A participant list as circulated (by the KP Chair, or a participant's authority), signed
/// by its issuer. A node imports it after checking the signature against the issuer's keys.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
pub struct ParticipantList {
    pub issued_on: Date,
    pub entries: Vec<ParticipantEntry>,
}

crate::document::bincode_body!(ParticipantList, DocumentKind::ParticipantList);

/// A participant list, version 2: as version 1, plus the issuer's **registry revision**, the
/// number of changes its registry has recorded when it signed the list. A node's revision
/// only grows, so of two lists from one issuer the one with the higher revision is the newer,
/// whatever the clocks said; the list's issue time is the signed document's `signed_at`.
/// Importers use both so that an older list never overrides a newer recorded change.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
pub struct ParticipantListV2 {
    pub issued_on: Date,
    pub revision: u64,
    pub entries: Vec<ParticipantEntry>,
}

crate::document::bincode_body!(ParticipantListV2, DocumentKind::ParticipantListV2);

impl ParticipantList {
    /// Every problem of every entry, and of the list as a whole.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.entries.len() > MAX_ENTRIES {
            out.push(format!("the list holds {} entries; at most {MAX_ENTRIES}", self.entries.len()));
        }
        for (i, e) in self.entries.iter().enumerate() {
            out.extend(e.problems());
            if self.entries[..i].iter().any(|p| p.code == e.code) {
                out.push(format!("{} is listed twice", e.code));
            }
            // A participant may be listed beside a union it joins (from the union's date it
            // acts in the union's name); a union may not be a member of another.
            for m in &e.members {
                if self.entries.iter().any(|p| p.code == *m && !p.members.is_empty()) {
                    out.push(format!("{m} is a union itself, so it cannot be a member state of {}", e.code));
                }
                if self.entries.iter().any(|p| p.code != e.code && p.members.contains(m)) {
                    out.push(format!("{m} is a member state of more than one union"));
                }
            }
        }
        out
    }
}

pub const LIST_LABEL: &str = "KIMBERLEY PROCESS PARTICIPANT LIST";

/// Why a participant list file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ListFileError {
    #[error("not a signed participant list: {0}")]
    Armor(#[from] ArmorError),
    #[error("the signed document is damaged: {0}")]
    Decode(#[from] CodecError),
    #[error("the file holds a {0} document, not a participant list")]
    WrongKind(DocumentKind),
    #[error(transparent)]
    Document(#[from] DocumentError),
}

/// Armors a signed participant list (version 1: read, no longer written).
pub fn list_to_armored(doc: &SignedDocument, list: &ParticipantList) -> String {
    let headers = [
        ("Issued-On", list.issued_on.to_string()),
        ("Entries", list.entries.len().to_string()),
        ("Signed-By", format!("{} key {}", doc.signer, doc.key_id)),
        ("Signed-At", doc.signed_at.to_string()),
        ("Message-Id", doc.message_id().to_string()),
    ];
    armor::armor(LIST_LABEL, &headers, &doc.to_bytes())
}

/// Armors a signed participant list, version 2.
pub fn list_v2_to_armored(doc: &SignedDocument, list: &ParticipantListV2) -> String {
    let headers = [
        ("Version", "2".to_owned()),
        ("Issued-On", list.issued_on.to_string()),
        ("Revision", list.revision.to_string()),
        ("Entries", list.entries.len().to_string()),
        ("Signed-By", format!("{} key {}", doc.signer, doc.key_id)),
        ("Signed-At", doc.signed_at.to_string()),
        ("Message-Id", doc.message_id().to_string()),
    ];
    armor::armor(LIST_LABEL, &headers, &doc.to_bytes())
}

/// A list file as read: the signed document, the entries, and (version 2) the issuer's
/// registry revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadList {
    pub document: SignedDocument,
    pub list: ParticipantList,
    /// `None` for a version 1 list, which carries no revision.
    pub revision: Option<u64>,
}

/// Reads a signed list file of either version (exact armor). The signature is not checked
/// here.
pub fn list_from_armored(text: &str) -> Result<ReadList, ListFileError> {
    let bytes = armor::dearmor(text, LIST_LABEL)?;
    let doc = SignedDocument::from_bytes(&bytes)?;
    match doc.kind {
        DocumentKind::ParticipantList => {
            let list: ParticipantList = doc.body()?;
            armor::check_canonical(text, &list_to_armored(&doc, &list))?;
            Ok(ReadList { document: doc, list, revision: None })
        }
        DocumentKind::ParticipantListV2 => {
            let v2: ParticipantListV2 = doc.body()?;
            armor::check_canonical(text, &list_v2_to_armored(&doc, &v2))?;
            let list = ParticipantList { issued_on: v2.issued_on, entries: v2.entries };
            Ok(ReadList { document: doc, list, revision: Some(v2.revision) })
        }
        other => Err(ListFileError::WrongKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn entry(code: &str, status: ParticipantStatus) -> ParticipantEntry {
        ParticipantEntry {
            code: code.parse().unwrap(),
            name: "Somewhere".parse().unwrap(),
            status,
            effective_from: "2026-11-28".parse().unwrap(),
            reason: None,
            approved_origin_areas: Vec::new(),
            members: Vec::new(),
        }
    }

    #[test]
    fn a_restriction_names_its_rule_and_a_union_its_members_once() {
        assert!(entry("CF", ParticipantStatus::Active).problems().is_empty());
        assert_eq!(entry("CF", ParticipantStatus::Restricted).problems().len(), 1);
        let mut cf = entry("CF", ParticipantStatus::Restricted);
        cf.approved_origin_areas = vec!["Berberati".parse().unwrap()];
        assert!(cf.problems().is_empty());
        let mut eu = entry("EU", ParticipantStatus::Active);
        eu.members = ["BE", "DE", "BE", "EU"].iter().map(|c| c.parse().unwrap()).collect();
        let p = eu.problems();
        assert!(p.iter().any(|m| m.contains("BE is listed twice")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("its own member")), "{p:?}");
    }

    #[test]
    fn a_list_file_round_trips_and_refuses_edits() {
        let mut eu = entry("EU", ParticipantStatus::Active);
        eu.members = vec!["BE".parse().unwrap(), "DE".parse().unwrap()];
        let list = ParticipantList {
            issued_on: "2026-11-28".parse().unwrap(),
            entries: vec![eu, entry("RU", ParticipantStatus::Active)],
        };
        assert!(list.problems().is_empty());
        let doc = SignedDocument::sign(
            &list,
            "RU".parse().unwrap(),
            &SigningKey::from_bytes(&[3; 32]),
            crate::Timestamp::from_unix_millis(1_795_000_000_000),
        );
        let text = list_to_armored(&doc, &list);
        let read = list_from_armored(&text).unwrap();
        assert_eq!(read, ReadList { document: doc, list: list.clone(), revision: None });
        assert!(list_from_armored(&text.replace("Entries: 2", "Entries: 3")).is_err());
        // A participant may be listed beside a union it joins; a union may not be a member.
        let mut joined = list;
        joined.entries.push(entry("BE", ParticipantStatus::Active));
        assert!(joined.problems().is_empty(), "{:?}", joined.problems());
        let mut nested = entry("XU", ParticipantStatus::Active);
        nested.members = vec!["EU".parse().unwrap()];
        joined.entries.push(nested);
        assert!(
            joined.problems().iter().any(|p| p.contains("EU is a union itself")),
            "{:?}",
            joined.problems()
        );
    }

    fn fixture_list() -> ParticipantList {
        let mut eu = entry("EU", ParticipantStatus::Active);
        eu.members = vec!["BE".parse().unwrap(), "DE".parse().unwrap()];
        ParticipantList {
            issued_on: "2026-11-28".parse().unwrap(),
            entries: vec![eu, entry("RU", ParticipantStatus::Active)],
        }
    }

    fn fixture_signed<B: crate::Body>(body: &B) -> SignedDocument {
        SignedDocument::sign(
            body,
            "RU".parse().unwrap(),
            &SigningKey::from_bytes(&[3; 32]),
            crate::Timestamp::from_unix_millis(1_795_000_000_000),
        )
    }

    /// Both versions of the list file, byte for byte: version 2 is what nodes write now,
    /// version 1 files (written until now) are still read.
    #[test]
    fn list_files_match_their_golden_fixtures() {
        let list = fixture_list();
        let v1 = list_to_armored(&fixture_signed(&list), &list);
        assert_eq!(v1, include_str!("../tests/fixtures/participant-list-v1.kpl"));
        let read = list_from_armored(&v1).unwrap();
        assert_eq!((read.list, read.revision), (list.clone(), None));

        let v2 = ParticipantListV2 { issued_on: list.issued_on, revision: 7, entries: list.entries.clone() };
        let text = list_v2_to_armored(&fixture_signed(&v2), &v2);
        assert_eq!(text, include_str!("../tests/fixtures/participant-list-v2.kpl"));
        let read = list_from_armored(&text).unwrap();
        assert_eq!((read.list, read.revision), (list, Some(7)));
        assert!(list_from_armored(&text.replace("Revision: 7", "Revision: 8")).is_err());
    }
}
