//! The participant registry: who is a Kimberley Process participant, in what standing
//! (active, suspended, restricted), and which participants are unions of member states.
//!
//! It starts from the list shipped with kpnode (`node/exchange/data/participants.toml`, data, not
//! code) and the changes recorded in this node's store (each also a signed entry of its log).
//! A code's entry on a day is the latest recorded change that has taken effect by then, else
//! the shipped entry. The registry is an immutable snapshot, swapped whole after a change.
//!
//! What a standing means, on this node:
//! - **suspended**: no certificate is issued to it or accepted from it, and messages queued
//!   for its node are held (not dropped) until it is reinstated;
//! - **restricted**: its certificates are accepted only if every parcel names one of the
//!   approved origin areas, and are then marked for enhanced vigilance;
//! - a **union** (the EU): its member states' nodes issue certificates in its name, partners
//!   accept them from those nodes only, and trade between members needs no certificate.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bincode::{Decode, Encode};
use kp_protocol::problem::Arg;
use kp_protocol::{
    Certificate, Date, Origin, ParticipantCode, ParticipantDirectory, ParticipantEntry, ParticipantStatus,
    Problem, RejectCode, Text, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::refusal::Refusal;
use crate::storage::{decode_record, Storage, StoreError, Tree};

/// The day the Kimberley Process Certification Scheme began: the default `effective_from`.
pub const KPCS_START: &str = "2003-01-01";

/// One entry of the shipped TOML list (and of `participants list --toml`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TomlEntry {
    pub code: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_origin_areas: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// A participant list in TOML: `[[participant]]` tables.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TomlList {
    pub participant: Vec<TomlEntry>,
}

impl TomlEntry {
    /// The entry, or every problem with it (each naming the participant and the key).
    pub fn to_entry(&self) -> Result<ParticipantEntry, Vec<String>> {
        let mut problems = Vec::new();
        let at = |key: &str| format!("participant {:?}, {key}", self.code);
        let mut check = |key: &str, r: Result<(), String>| {
            if let Err(e) = r {
                problems.push(format!("{}: {e}", at(key)));
            }
        };
        let code = self.code.parse::<ParticipantCode>();
        check("code", code.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        let name = self.name.parse::<Text>();
        check("name", name.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        let status = self.status.as_deref().unwrap_or("active").parse::<ParticipantStatus>();
        check("status", status.as_ref().map(|_| ()).map_err(Clone::clone));
        let effective = self.effective_from.as_deref().unwrap_or(KPCS_START).parse::<Date>();
        check("effective_from", effective.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        let reason = self.reason.as_deref().map(str::parse).transpose();
        check("reason", reason.as_ref().map(|_| ()).map_err(|e: &kp_protocol::ValueError| e.to_string()));
        let mut areas = Vec::new();
        for (i, a) in self.approved_origin_areas.iter().enumerate() {
            match a.parse::<Text>() {
                Ok(t) => areas.push(t),
                Err(e) => check(&format!("approved_origin_areas[{i}]"), Err(e.to_string())),
            }
        }
        let mut members = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            match m.parse::<ParticipantCode>() {
                Ok(c) => members.push(c),
                Err(e) => check(&format!("members[{i}]"), Err(e.to_string())),
            }
        }
        match (code, name, status, effective, reason) {
            (Ok(code), Ok(name), Ok(status), Ok(effective_from), Ok(reason)) if problems.is_empty() => {
                let entry = ParticipantEntry {
                    code,
                    name,
                    status,
                    effective_from,
                    reason,
                    approved_origin_areas: areas,
                    members,
                };
                let own = entry.problems();
                if own.is_empty() {
                    Ok(entry)
                } else {
                    Err(own)
                }
            }
            _ => Err(problems),
        }
    }

    pub fn from_entry(e: &ParticipantEntry) -> TomlEntry {
        TomlEntry {
            code: e.code.to_string(),
            name: e.name.to_string(),
            status: Some(e.status.to_string()),
            effective_from: Some(e.effective_from.to_string()),
            reason: e.reason.as_ref().map(ToString::to_string),
            approved_origin_areas: e.approved_origin_areas.iter().map(ToString::to_string).collect(),
            members: e.members.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Parses a TOML participant list: every entry, or every problem.
pub fn parse_toml(text: &str) -> Result<Vec<ParticipantEntry>, Vec<String>> {
    let list: TomlList = toml::from_str(text).map_err(|e| vec![e.to_string().trim().to_owned()])?;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for e in &list.participant {
        match e.to_entry() {
            Ok(e) => entries.push(e),
            Err(p) => problems.extend(p),
        }
    }
    let whole = kp_protocol::ParticipantList {
        issued_on: Timestamp::from_unix_millis(0).date(),
        entries: entries.clone(),
    };
    problems.extend(whole.problems());
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

/// Renders entries as a TOML participant list (what [`parse_toml`] reads).
pub fn render_toml(entries: &[ParticipantEntry]) -> String {
    let list = TomlList { participant: entries.iter().map(TomlEntry::from_entry).collect() };
    toml::to_string(&list).unwrap_or_default()
}

const SHIPPED: &str = include_str!("../data/participants.toml");

/// The shipped participant list, by code.
pub fn shipped() -> &'static BTreeMap<ParticipantCode, ParticipantEntry> {
    static LIST: OnceLock<BTreeMap<ParticipantCode, ParticipantEntry>> = OnceLock::new();
    LIST.get_or_init(|| {
        // Invariant: the shipped file is checked by a unit test below, so it always parses.
        parse_toml(SHIPPED)
            .expect("the shipped participant list is valid")
            .into_iter()
            .map(|e| (e.code, e))
            .collect()
    })
}

/// A change as stored: the entry, where its signed record sits in the log, when, and which
/// signed list it came from (if it did).
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct RecordedEntry {
    pub entry: ParticipantEntry,
    pub log_seq: u64,
    pub recorded_at: Timestamp,
    /// `None`: the operator's change (or one recorded before lists were tracked).
    pub from_list: Option<ListOrigin>,
}

/// The signed list a change was imported from: whose, issued when, at which revision of the
/// issuer's registry (version 2 lists).
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListOrigin {
    pub issuer: ParticipantCode,
    pub issued_at: Timestamp,
    pub revision: Option<u64>,
}

impl RecordedEntry {
    /// As of when the change states the participant's standing: the list's issue time for an
    /// imported change, the moment it was recorded for the operator's.
    pub fn as_of(&self) -> Timestamp {
        self.from_list.as_ref().map_or(self.recorded_at, |o| o.issued_at)
    }

    /// Why a list from `list` must not override this change, if it must not: the change is
    /// newer. Of two lists from one issuer, the recorded one is the newer only if its registry
    /// revision is higher *and* it was not issued earlier: so a higher revision protects
    /// against the issuer's clock going back, but one list with an absurd revision (u64::MAX)
    /// cannot pin its entries against every later list from that issuer. Other changes are
    /// ordered by time.
    pub fn newer_than(&self, list: &ListOrigin) -> Option<String> {
        let code = self.entry.code;
        let what = format!("{} from {}", self.entry.status, self.entry.effective_from);
        if let Some(o) = &self.from_list {
            if let (true, Some(mine), Some(theirs)) = (o.issuer == list.issuer, o.revision, list.revision) {
                return (mine > theirs && o.issued_at >= list.issued_at).then(|| {
                    format!(
                        "{code}: this node recorded {what} (log entry {}) from {}'s list at revision {mine}, newer than this list's revision {theirs}",
                        self.log_seq, o.issuer
                    )
                });
            }
        }
        let as_of = self.as_of();
        (as_of > list.issued_at).then(|| {
            let by = match &self.from_list {
                Some(o) => format!("from {}'s list issued at {}", o.issuer, o.issued_at),
                None => format!("by this node's operator at {}", self.recorded_at),
            };
            format!(
                "{code}: {what} was recorded {by} (log entry {}), after this list was issued ({})",
                self.log_seq, list.issued_at
            )
        })
    }
}

/// The version 1 record, written before changes remembered their list.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
struct RecordedEntryV1 {
    entry: ParticipantEntry,
    log_seq: u64,
    recorded_at: Timestamp,
}

/// A participant's recorded changes, as stored under its code. Written as a 0xFF marker and
/// a version byte (2) before the changes; a record without the marker is version 1 (its
/// first byte is the high byte of a big-endian vector length, never 0xFF) and is still read.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RegistryHistory(pub Vec<RecordedEntry>);

const HISTORY_MARKER: u8 = 0xFF;
const HISTORY_VERSION: u8 = 2;

impl Encode for RegistryHistory {
    fn encode<E: bincode::enc::Encoder>(&self, e: &mut E) -> Result<(), bincode::error::EncodeError> {
        HISTORY_MARKER.encode(e)?;
        HISTORY_VERSION.encode(e)?;
        self.0.encode(e)
    }
}

impl<C> Decode<C> for RegistryHistory {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        let first = u8::decode(d)?;
        if first == HISTORY_MARKER {
            let version = u8::decode(d)?;
            if version != HISTORY_VERSION {
                return Err(bincode::error::DecodeError::OtherString(format!(
                    "registry record version {version}; this kpnode reads versions 1 and 2"
                )));
            }
            return Ok(RegistryHistory(Vec::decode(d)?));
        }
        // Version 1: a plain vector; `first` was the high byte of its u64 length.
        let rest = <[u8; 7]>::decode(d)?;
        let mut len_bytes = [first, 0, 0, 0, 0, 0, 0, 0];
        len_bytes[1..].copy_from_slice(&rest);
        let len = u64::from_be_bytes(len_bytes);
        // No allocation sized by the length: each entry consumes input, which is bounded.
        let mut out = Vec::new();
        for _ in 0..len {
            let v1 = RecordedEntryV1::decode(d)?;
            out.push(RecordedEntry {
                entry: v1.entry,
                log_seq: v1.log_seq,
                recorded_at: v1.recorded_at,
                from_list: None,
            });
        }
        Ok(RegistryHistory(out))
    }
}

/// The registry store key of a participant.
pub fn key(code: ParticipantCode) -> [u8; 2] {
    code.as_bytes()
}

/// A snapshot of the registry.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Recorded changes per code, in the order they were recorded.
    recorded: BTreeMap<ParticipantCode, Vec<RecordedEntry>>,
    /// Enrolled peers that are neither in the registry nor member states: an operator who
    /// enrols a partner vouches for it as a participant.
    enrolled: Vec<ParticipantCode>,
    /// Codes with member states in any entry, shipped or recorded, at any date: the only
    /// ones `union_of` needs to look at (it runs for every delivery).
    unions: Vec<ParticipantCode>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::new(BTreeMap::new(), [])
    }
}

impl Registry {
    pub fn new(
        recorded: BTreeMap<ParticipantCode, Vec<RecordedEntry>>,
        enrolled: impl IntoIterator<Item = ParticipantCode>,
    ) -> Registry {
        let shipped_unions = shipped().values().filter(|e| !e.members.is_empty()).map(|e| e.code);
        let recorded_unions = recorded
            .iter()
            .filter(|(_, h)| h.iter().any(|r| !r.entry.members.is_empty()))
            .map(|(code, _)| *code);
        let mut unions: Vec<ParticipantCode> = shipped_unions.chain(recorded_unions).collect();
        unions.sort();
        unions.dedup();
        Registry { recorded, enrolled: enrolled.into_iter().collect(), unions }
    }

    /// Reads every recorded change from the store (a small tree: one key per participant).
    pub fn load<S: Storage + ?Sized>(
        store: &S,
        enrolled: impl IntoIterator<Item = ParticipantCode>,
    ) -> Result<Registry, StoreError> {
        let mut recorded = BTreeMap::new();
        for (k, v) in store.range(Tree::Registry, &[], &[0xff; 3], usize::MAX)? {
            let RegistryHistory(history) = decode_record(Tree::Registry, &k, &v)?;
            if let Some(first) = history.first() {
                recorded.insert(first.entry.code, history);
            }
        }
        Ok(Registry::new(recorded, enrolled))
    }

    /// A registry of entries in force (as read from a running daemon), over the shipped list.
    pub fn from_entries(
        entries: impl IntoIterator<Item = ParticipantEntry>,
        enrolled: impl IntoIterator<Item = ParticipantCode>,
    ) -> Registry {
        let recorded = entries
            .into_iter()
            .map(|entry| {
                (
                    entry.code,
                    vec![RecordedEntry {
                        entry,
                        log_seq: 0,
                        recorded_at: Timestamp::from_unix_millis(0),
                        from_list: None,
                    }],
                )
            })
            .collect();
        Registry::new(recorded, enrolled)
    }

    /// The registry as it stands on `today`.
    pub fn on(&self, today: Date) -> View<'_> {
        View { registry: self, today }
    }

    /// Every code the registry knows (shipped or recorded).
    pub fn codes(&self) -> Vec<ParticipantCode> {
        let mut codes: Vec<ParticipantCode> = shipped().keys().chain(self.recorded.keys()).copied().collect();
        codes.sort();
        codes.dedup();
        codes
    }

    /// How many changes this node's registry has recorded: its revision, carried in the lists
    /// it exports. It only grows (changes are never removed).
    pub fn revision(&self) -> u64 {
        self.recorded.values().map(|h| h.len() as u64).sum()
    }

    /// The recorded changes of `code`, oldest first.
    pub fn history(&self, code: ParticipantCode) -> &[RecordedEntry] {
        self.recorded.get(&code).map_or(&[], Vec::as_slice)
    }
}

/// The registry on one day: implements the validator's [`ParticipantDirectory`].
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    registry: &'a Registry,
    today: Date,
}

impl<'a> View<'a> {
    /// The same registry on another day.
    pub fn at(&self, day: Date) -> View<'a> {
        View { registry: self.registry, today: day }
    }

    /// The entry in force for `code`: the latest recorded change that has taken effect, else
    /// the shipped entry (if it has).
    pub fn entry(&self, code: ParticipantCode) -> Option<&'a ParticipantEntry> {
        let recorded = self
            .registry
            .recorded
            .get(&code)
            .and_then(|h| h.iter().rev().find(|r| r.entry.effective_from <= self.today))
            .map(|r| &r.entry);
        recorded.or_else(|| shipped().get(&code).filter(|e| e.effective_from <= self.today))
    }

    /// Every entry in force, by code.
    pub fn entries(&self) -> Vec<&'a ParticipantEntry> {
        self.registry.codes().into_iter().filter_map(|c| self.entry(c)).collect()
    }

    /// Changes recorded for `code` that take effect after today.
    pub fn pending(&self, code: ParticipantCode) -> Vec<&'a RecordedEntry> {
        self.registry.history(code).iter().filter(|r| r.entry.effective_from > self.today).collect()
    }

    pub fn status(&self, code: ParticipantCode) -> Option<ParticipantStatus> {
        self.entry(code).map(|e| e.status)
    }

    /// Why messages for the node of `peer` are held, if they are: its participant, or the
    /// union it is a member state of, is suspended (a member keeps its own entry when it
    /// joined a union as a participant, and the stricter standing applies).
    pub fn held(&self, peer: ParticipantCode) -> Option<String> {
        self.standing_of(peer)
            .into_iter()
            .find(|(_, e)| e.status == ParticipantStatus::Suspended)
            .map(|(code, e)| suspension(e, code))
    }

    /// The entries whose standing governs the node of `signer` today: its union's, if it is a
    /// member state of one, and its own, if it has one (a participant that joined a union).
    fn standing_of(&self, signer: ParticipantCode) -> Vec<(ParticipantCode, &'a ParticipantEntry)> {
        let mut out = Vec::new();
        if let Some(union) = self.union_of(signer) {
            out.extend(self.entry(union).map(|e| (union, e)));
        }
        out.extend(self.entry(signer).map(|e| (signer, e)));
        out
    }

    /// Problems with a certificate this node is about to issue (beyond the validator's):
    /// suspended importer or exporter, an unmet restriction on this node's own exports, and
    /// an importing union with no node of its own.
    pub fn issue_problems(&self, cert: &kp_protocol::CertificateContent) -> Vec<Problem> {
        let mut out = Vec::new();
        let importing = cert.importing_participant;
        if let Some(e) = self.entry(importing).filter(|e| e.status == ParticipantStatus::Suspended) {
            out.push(
                Problem::new(
                    "importing_participant",
                    format!(
                        "{}; no certificate may be issued to it until it is reinstated \
                         (kpnode participants set {importing} --status active)",
                        suspension(e, importing)
                    ),
                )
                .coded(RegistryText::ImportingSuspended {
                    code: importing.into(),
                    since: e.effective_from.into(),
                    reason: reason_note(e),
                }),
            );
        }
        let exporting = cert.exporting_participant;
        if let Some(e) = self.entry(exporting) {
            match e.status {
                ParticipantStatus::Suspended => out.push(
                    Problem::new(
                        "exporting_participant",
                        format!("{}; partners refuse its certificates", suspension(e, exporting)),
                    )
                    .coded(RegistryText::ExportingSuspended {
                        code: exporting.into(),
                        since: e.effective_from.into(),
                        reason: reason_note(e),
                    }),
                ),
                ParticipantStatus::Restricted => out.extend(restriction_problems(e, &cert.parcels)),
                ParticipantStatus::Active => {}
            }
        }
        out
    }

    /// Whether a certificate signed by the node of `signer` is acceptable given the standing,
    /// today, of every participant that node acts for: the certificate's exporting
    /// participant, the signer's own participant and the union the signer is a member state
    /// of. A suspension of any of them refuses it; a restriction of any of them must be met.
    /// `Ok(Some(note))` if accepted under enhanced vigilance.
    pub fn accept(
        &self,
        cert: &Certificate,
        signer: ParticipantCode,
        me: ParticipantCode,
    ) -> Result<Option<String>, Refusal> {
        let exporting = cert.content.exporting_participant;
        let mut governing: Vec<(ParticipantCode, &ParticipantEntry)> =
            self.entry(exporting).map(|e| (exporting, e)).into_iter().collect();
        for (code, e) in self.standing_of(signer) {
            if !governing.iter().any(|(c, _)| *c == code) {
                governing.push((code, e));
            }
        }
        if let Some((code, e)) = governing.iter().find(|(_, e)| e.status == ParticipantStatus::Suspended) {
            return Err(Refusal::new(
                RejectCode::Suspended,
                format!("{me} does not accept certificates from {}", suspension(e, *code)),
            ));
        }
        let mut notes = Vec::new();
        for (code, e) in governing.iter().filter(|(_, e)| e.status == ParticipantStatus::Restricted) {
            let problems = restriction_problems(e, &cert.content.parcels);
            if !problems.is_empty() {
                let list: Vec<String> = problems.into_iter().map(|p| p.to_string()).collect();
                return Err(Refusal::new(
                    RejectCode::Restricted,
                    format!("{me} refuses: {}", list.join("; ")),
                ));
            }
            notes.push(format!(
                "{code} is restricted{}: accepted because every parcel comes from an approved origin area; enhanced vigilance applies",
                since_and_reason(e)
            ));
        }
        Ok((!notes.is_empty()).then(|| notes.join("; ")))
    }
}

impl ParticipantDirectory for View<'_> {
    fn is_participant(&self, code: ParticipantCode) -> bool {
        self.entry(code).is_some()
            || (self.registry.enrolled.contains(&code) && self.union_of(code).is_none())
    }

    fn union_of(&self, member: ParticipantCode) -> Option<ParticipantCode> {
        self.registry
            .unions
            .iter()
            .filter_map(|c| self.entry(*c))
            .find(|e| e.members.contains(&member))
            .map(|e| e.code)
    }

    fn is_union(&self, code: ParticipantCode) -> bool {
        self.entry(code).is_some_and(|e| !e.members.is_empty())
    }
}

fn since_and_reason(e: &ParticipantEntry) -> String {
    match &e.reason {
        Some(r) => format!(" since {} ({r})", e.effective_from),
        None => format!(" since {}", e.effective_from),
    }
}

/// The reason of `e`'s status as the coded messages take it: ` (reason)`, or nothing.
fn reason_note(e: &ParticipantEntry) -> Arg {
    Arg::Text(e.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())
}

fn suspension(e: &ParticipantEntry, who: ParticipantCode) -> String {
    let whom = if who == e.code { who.to_string() } else { format!("{who} (a member state of {})", e.code) };
    format!("{whom} is suspended from the Kimberley Process{}", since_and_reason(e))
}

/// How parcels fail a restricted participant's rule: each must name an approved area.
fn restriction_problems(e: &ParticipantEntry, parcels: &[kp_protocol::Parcel]) -> Vec<Problem> {
    let approved: Vec<&str> = e.approved_origin_areas.iter().map(Text::as_str).collect();
    let matches = |area: &str| approved.iter().any(|a| a.trim().eq_ignore_ascii_case(area.trim()));
    let rule = format!(
        "{} is restricted{}: its certificates are accepted only for diamonds from the approved origin areas ({})",
        e.code,
        since_and_reason(e),
        approved.join(", ")
    );
    let (code, since, areas): (Arg, Arg, Arg) =
        (e.code.into(), e.effective_from.into(), Arg::text(approved.join(", ")));
    let mut out = Vec::new();
    for (i, p) in parcels.iter().enumerate() {
        let field = format!("parcels[{i}].origin_area");
        match &p.origin_area {
            None => out.push(Problem::new(field, format!("names no origin area; {rule}")).coded(
                RegistryText::RestrictedNoArea {
                    code: code.clone(),
                    since: since.clone(),
                    reason: reason_note(e),
                    areas: areas.clone(),
                },
            )),
            Some(a) if !matches(a.as_str()) => {
                out.push(Problem::new(field, format!("{a:?} is not approved; {rule}")).coded(
                    RegistryText::RestrictedAreaNotApproved {
                        area: Arg::text(a),
                        code: code.clone(),
                        since: since.clone(),
                        reason: reason_note(e),
                        areas: areas.clone(),
                    },
                ))
            }
            Some(_) if p.origin == Origin::Mixed => out.push(
                Problem::new(
                    format!("parcels[{i}].origin"),
                    format!("a mixed parcel cannot show it comes from one approved area; {rule}"),
                )
                .coded(RegistryText::RestrictedMixed {
                    code: code.clone(),
                    since: since.clone(),
                    reason: reason_note(e),
                    areas: areas.clone(),
                }),
            ),
            Some(_) => {}
        }
    }
    out
}

/// The shared, swappable registry.
pub type RegistryCell = crate::snapshot::Snapshot<Registry>;

/// Checks a change against the registry it would join: problems of the whole entry.
pub fn change_problems(view: &View<'_>, entry: &ParticipantEntry) -> Vec<Problem> {
    let mut out = entry.coded_problems();
    let code = entry.code;
    if let Some(union) = view.union_of(code).filter(|u| *u != code) {
        out.push(member_state_has_no_status(code, union));
    }
    // A participant may join a union (as Russia and its neighbours planned for the EAEU): from
    // the union's `effective_from` it issues and receives in the union's name, and what it
    // issued before keeps the name it was issued under. A union cannot be a member itself.
    for m in &entry.members {
        if view.entry(*m).is_some_and(|e| !e.members.is_empty()) {
            out.push(
                Problem::new("", format!("{m} is a union itself, so it cannot be a member state of {code}"))
                    .coded(RegistryText::MemberIsUnion { member: (*m).into(), code: code.into() }),
            );
        }
        // Its standing would otherwise be overshadowed by the union's: lift it first.
        if let Some(e) = view.entry(*m).filter(|e| e.status != ParticipantStatus::Active) {
            out.push(
                Problem::new(
                    "",
                    format!(
                        "{m} is {}; a participant joins a union only in good standing (make it active first)",
                        e.status
                    ),
                )
                .coded(RegistryText::MemberNotActive {
                    member: (*m).into(),
                    code: code.into(),
                    status: e.status.to_string().into(),
                }),
            );
        }
        if let Some(other) = view.union_of(*m).filter(|u| *u != code) {
            out.push(
                Problem::new("", format!("{m} is already a member state of {other}"))
                    .coded(RegistryText::MemberOfAnother { member: (*m).into(), other: other.into() }),
            );
        }
    }
    out
}

/// `code` is a member state of `union`, so a change of its own status is refused.
pub fn member_state_has_no_status(code: ParticipantCode, union: ParticipantCode) -> Problem {
    Problem::new(
        "",
        format!("{code} is a member state of {union}; it has no status of its own (change {union} instead)"),
    )
    .coded(RegistryText::MemberStateNoStatus { code: code.into(), union: union.into() })
}

kp_protocol::problem_texts! {
    /// The problems the registry finds with a certificate to issue or with a change.
    pub enum RegistryText {
        ImportingSuspended = "importing-suspended" { code, since, reason },
        ExportingSuspended = "exporting-suspended" { code, since, reason },
        RestrictedNoArea = "restricted-no-area" { code, since, reason, areas },
        RestrictedAreaNotApproved = "restricted-area-not-approved" { area, code, since, reason, areas },
        RestrictedMixed = "restricted-mixed" { code, since, reason, areas },
        MemberStateNoStatus = "member-state-no-status" { code, union },
        MemberIsUnion = "member-is-union" { member, code },
        MemberNotActive = "member-not-active" { member, code, status },
        MemberOfAnother = "member-of-another" { member, other },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> ParticipantCode {
        s.parse().unwrap()
    }

    #[test]
    fn the_shipped_list_parses_and_holds_the_seed_network() {
        let list = shipped();
        assert!(list.len() >= 55, "{}", list.len());
        for c in ["RU", "BY", "KZ", "AM", "KG", "IN", "AE", "EU", "QA", "MZ", "UZ", "CF"] {
            assert!(list.contains_key(&code(c)), "{c}");
        }
        let r = Registry::default();
        let v = r.on("2026-11-28".parse().unwrap());
        assert!(!v.is_participant(code("XX")));
        assert_eq!(v.union_of(code("BE")), Some(code("EU")));
        assert!(!v.is_participant(code("BE")), "a member state is not a participant");
        assert_eq!(v.status(code("CF")), Some(ParticipantStatus::Active));
    }

    #[test]
    fn the_toml_form_round_trips() {
        let entries: Vec<ParticipantEntry> = shipped().values().cloned().collect();
        let text = render_toml(&entries);
        assert_eq!(parse_toml(&text).unwrap(), entries);
        let bad = "[[participant]]\ncode = \"cf\"\nname = \"\"\nstatus = \"banned\"\n";
        let problems = parse_toml(bad).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(parse_toml("[[participant]]\ncode = \"CF\"\nname = \"x\"\ncolour = 1\n").is_err());
    }

    fn recorded(entry: ParticipantEntry, seq: u64) -> RecordedEntry {
        RecordedEntry { entry, log_seq: seq, recorded_at: Timestamp::from_unix_millis(0), from_list: None }
    }

    /// Records written before changes remembered their list (version 1) are still read.
    #[test]
    fn version_1_registry_records_are_still_read() {
        let cf = shipped()[&code("CF")].clone();
        let v1 = vec![RecordedEntryV1 {
            entry: cf.clone(),
            log_seq: 4,
            recorded_at: Timestamp::from_unix_millis(9),
        }];
        let bytes = kp_protocol::codec::encode(&v1);
        let RegistryHistory(read) = kp_protocol::codec::decode(&bytes).unwrap();
        assert_eq!(
            read,
            vec![RecordedEntry {
                entry: cf.clone(),
                log_seq: 4,
                recorded_at: Timestamp::from_unix_millis(9),
                from_list: None
            }]
        );
        let origin =
            ListOrigin { issuer: code("RU"), issued_at: Timestamp::from_unix_millis(5), revision: Some(3) };
        let v2 = RegistryHistory(vec![RecordedEntry { from_list: Some(origin), ..read[0].clone() }]);
        let bytes = kp_protocol::codec::encode(&v2);
        assert_eq!(bytes[..2], [0xFF, 2]);
        assert_eq!(kp_protocol::codec::decode::<RegistryHistory>(&bytes).unwrap(), v2);
        assert!(kp_protocol::codec::decode::<RegistryHistory>(&[0xFF, 3, 0]).is_err());
    }

    #[test]
    fn the_latest_change_in_effect_wins() {
        let mut cf = shipped()[&code("CF")].clone();
        cf.status = ParticipantStatus::Suspended;
        cf.effective_from = "2026-12-01".parse().unwrap();
        let mut back = cf.clone();
        back.status = ParticipantStatus::Active;
        back.effective_from = "2026-12-10".parse().unwrap();
        let r = Registry::new(
            BTreeMap::from([(code("CF"), vec![recorded(cf, 1), recorded(back, 2)])]),
            Vec::new(),
        );
        let on = |d: &str| r.on(d.parse().unwrap()).status(code("CF"));
        assert_eq!(on("2026-11-30"), Some(ParticipantStatus::Active));
        assert_eq!(on("2026-12-05"), Some(ParticipantStatus::Suspended));
        assert_eq!(on("2026-12-10"), Some(ParticipantStatus::Active));
        assert_eq!(r.on("2026-11-30".parse().unwrap()).pending(code("CF")).len(), 2);
        assert!(r.on("2026-12-05".parse().unwrap()).held(code("CF")).is_some());
    }

    /// One list from an issuer with revision u64::MAX must not pin its entries against every
    /// later list from that issuer: the recorded change wins only when its revision and its
    /// time both say it is the newer.
    #[test]
    fn a_huge_revision_does_not_pin_entries_against_later_lists() {
        let cf = shipped()[&code("CF")].clone();
        let at = |ms: i64, revision: u64| ListOrigin {
            issuer: code("RU"),
            issued_at: Timestamp::from_unix_millis(ms),
            revision: Some(revision),
        };
        let pinned = RecordedEntry { from_list: Some(at(1_000, u64::MAX)), ..recorded(cf.clone(), 1) };
        assert_eq!(pinned.newer_than(&at(2_000, 5)), None, "a later list from RU applies");
        assert!(pinned.newer_than(&at(500, 5)).is_some(), "an earlier one, with a lower revision, does not");
        // The revision still protects against the issuer's clock going back.
        let normal = RecordedEntry { from_list: Some(at(1_000, 3)), ..recorded(cf, 1) };
        assert_eq!(normal.newer_than(&at(500, 4)), None, "a higher revision applies");
        assert!(normal.newer_than(&at(2_000, 3)).is_none());
        assert!(normal.newer_than(&at(900, 2)).is_some());
    }
}
