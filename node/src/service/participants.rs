//! Operations on the participant registry, shared by the API and the offline command line:
//! views for people, a change requested by the operator, and the import and export of signed
//! participant lists. Each change becomes a [`RegistryChange`](kp_protocol::registry::RegistryChange) signed by this node and
//! recorded in its log (`Command::RecordParticipant`).

use kp_keys::KeyHistory;
use kp_protocol::registry::{list_from_armored, list_v2_to_armored, ParticipantListV2};
use kp_protocol::{
    Date, LongText, ParticipantCode, ParticipantDirectory, ParticipantEntry, ParticipantList,
    ParticipantStatus, Problem, SignedDocument, Text, Timestamp,
};
use serde::{Deserialize, Serialize};

use kp_exchange::registry::{change_problems, ListOrigin, Registry};
use kp_exchange::signer::Signer;
use kp_exchange::trust::Trust;

use super::NodeText;

/// A participant as shown to people: the entry in force and what else the registry knows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParticipantView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub entry: ParticipantEntry,
    /// Changes recorded on this node that take effect later.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub pending: Vec<ParticipantEntry>,
    /// How many changes this node recorded for the participant (each in its log).
    pub changes_recorded: usize,
}

/// One code, in detail: a participant, or a member state of a union.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParticipantDetail {
    pub code: ParticipantCode,
    /// The union participant the code is a member state of, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_of: Option<ParticipantCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantView>,
    /// Every change this node recorded, oldest first, with its log entry.
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<serde_json::Value>,
}

fn view_of(registry: &Registry, today: Date, entry: &ParticipantEntry) -> ParticipantView {
    let on = registry.on(today);
    ParticipantView {
        entry: entry.clone(),
        pending: on.pending(entry.code).into_iter().map(|r| r.entry.clone()).collect(),
        changes_recorded: registry.history(entry.code).len(),
    }
}

/// Every participant in force on `today`, by code.
pub fn list(registry: &Registry, today: Date) -> Vec<ParticipantView> {
    registry.on(today).entries().into_iter().map(|e| view_of(registry, today, e)).collect()
}

/// One code; `None` if the registry knows nothing of it.
pub fn show(registry: &Registry, today: Date, code: ParticipantCode) -> Option<ParticipantDetail> {
    let on = registry.on(today);
    let member_of = on.union_of(code);
    let participant = on.entry(code).map(|e| view_of(registry, today, e));
    let history: Vec<serde_json::Value> = registry
        .history(code)
        .iter()
        .map(|r| {
            serde_json::json!({
                "log_seq": r.log_seq,
                "recorded_at": r.recorded_at,
                "entry": r.entry,
            })
        })
        .collect();
    if member_of.is_none() && participant.is_none() && history.is_empty() {
        return None;
    }
    Some(ParticipantDetail { code, member_of, participant, history })
}

/// What the operator asks to change (`participants set`, `POST /v1/participants/{code}`).
/// Fields left out keep their current value; a new participant needs a name.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    /// active, suspended or restricted.
    pub status: String,
    pub name: Option<String>,
    /// YYYY-MM-DD; default today.
    pub effective_from: Option<String>,
    pub reason: Option<String>,
    /// Restricted only: the origin areas its certificates' parcels must come from.
    pub approved_origin_areas: Option<Vec<String>>,
    /// A union's member states.
    pub members: Option<Vec<String>>,
}

/// The entry a request makes, or every problem with it (each naming its field).
pub fn prepare_set(
    registry: &Registry,
    today: Date,
    code: ParticipantCode,
    req: &SetRequest,
) -> Result<ParticipantEntry, Vec<Problem>> {
    let on = registry.on(today);
    if let (Some(union), None) = (on.union_of(code), on.entry(code)) {
        return Err(vec![kp_exchange::registry::member_state_has_no_status(code, union)]);
    }
    let mut problems = Vec::new();
    // A change recorded for a later date (a union's members from the day they join) is the
    // base of the next change, and a change may not take effect before it: recorded later,
    // it would replace the pending one from its own date on, silently.
    let pending = on.pending(code).iter().map(|r| r.entry.clone()).max_by_key(|e| e.effective_from);
    let current = pending.clone().or_else(|| on.entry(code).cloned());
    let status = req
        .status
        .parse::<ParticipantStatus>()
        .map_err(|e| {
            problems.push(
                Problem::new("status", e)
                    .coded(NodeText::UnknownStatus { value: req.status.as_str().into() }),
            )
        })
        .ok();
    let name = match (&req.name, &current) {
        (Some(n), _) => n
            .parse::<Text>()
            .map_err(|e| problems.push(Problem::new("name", e.to_string()).coded(e.coded(n))))
            .ok(),
        (None, Some(c)) => Some(c.name.clone()),
        (None, None) => {
            problems.push(
                Problem::new(
                    "name",
                    format!("{code} is not in the registry yet: give its name to add it (--name)"),
                )
                .coded(NodeText::NameNeeded { code: code.into() }),
            );
            None
        }
    };
    let effective_from = match &req.effective_from {
        Some(d) => d
            .parse::<Date>()
            .map_err(|e| problems.push(Problem::new("effective_from", e.to_string()).coded(e.coded(d))))
            .ok(),
        None => Some(today),
    };
    if let (Some(p), Some(from)) = (&pending, effective_from) {
        if from < p.effective_from {
            problems.push(
                Problem::new(
                    "effective_from",
                    format!(
                        "{code} has a change recorded to take effect on {}; a change from {from} would replace it \
                         (it is recorded later): give --effective-from {} or later, and the change builds on it",
                        p.effective_from, p.effective_from
                    ),
                )
                .coded(NodeText::BeforePending { code: code.into(), pending: p.effective_from.into(), from: from.into() }),
            );
        }
    }
    let reason = req
        .reason
        .as_deref()
        .map(|r| r.parse::<LongText>().map_err(|e| Problem::new("reason", e.to_string()).coded(e.coded(r))))
        .transpose()
        .map_err(|p| problems.push(p))
        .ok()
        .flatten();
    let areas: Option<Vec<Text>> = match &req.approved_origin_areas {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.parse::<Text>().map_err(|e| {
                    problems.push(
                        Problem::new(format!("approved_origin_areas[{i}]"), e.to_string()).coded(e.coded(a)),
                    )
                })
            })
            .collect::<Result<Vec<_>, ()>>()
            .ok(),
        // Kept for a participant that stays restricted; dropped otherwise.
        None => Some(match (&current, status) {
            (Some(c), Some(ParticipantStatus::Restricted)) => c.approved_origin_areas.clone(),
            _ => Vec::new(),
        }),
    };
    let members: Option<Vec<ParticipantCode>> = match &req.members {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.parse::<ParticipantCode>().map_err(|e| {
                    problems.push(Problem::new(format!("members[{i}]"), e.to_string()).coded(e.coded(m)))
                })
            })
            .collect::<Result<Vec<_>, ()>>()
            .ok(),
        None => Some(current.as_ref().map(|c| c.members.clone()).unwrap_or_default()),
    };
    let (Some(status), Some(name), Some(effective_from), Some(approved_origin_areas), Some(members)) =
        (status, name, effective_from, areas, members)
    else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let entry =
        ParticipantEntry { code, name, status, effective_from, reason, approved_origin_areas, members };
    let problems = change_problems(&on, &entry);
    if problems.is_empty() {
        Ok(entry)
    } else {
        Err(problems)
    }
}

/// An entry of an imported list that is not applied, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IgnoredEntry {
    #[schema(value_type = Object)]
    pub entry: ParticipantEntry,
    pub why: String,
}

/// What an import would change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportPlan {
    /// Who signed the list, with which key, when.
    pub signed_by: String,
    pub issued_on: Date,
    /// The issuer and issue time, and (version 2 lists) the issuer's registry revision.
    pub origin: ListOrigin,
    /// Entries that differ from the registry, as they will stand.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<ParticipantEntry>,
    pub unchanged: usize,
    /// Entries that differ, but that this node recorded a newer change for: an older list
    /// never overrides a newer change.
    pub ignored: Vec<IgnoredEntry>,
    #[serde(skip)]
    pub source: String,
}

/// How far in the future a list's issue time may lie (clocks differ).
const LIST_CLOCK_TOLERANCE_MS: i64 = 300_000;

/// Checks a signed list file: armor, signer (this node or a peer enrolled now), key valid at
/// signing and, if a rotation has since retired it, the import within `retired_key_grace_ms`
/// of the rotation (`keys.tls_grace_period`, the link's rule: otherwise whoever holds an old
/// key could sign a list today and date it back into the key's window), signature, issue time
/// not in the future, and every entry; then what it would change and what it ignores because
/// this node recorded something newer.
pub fn prepare_import(
    registry: &Registry,
    now: Timestamp,
    me: ParticipantCode,
    own: &KeyHistory,
    trust: &Trust,
    text: &str,
    retired_key_grace_ms: i64,
) -> Result<ImportPlan, Vec<String>> {
    let read = list_from_armored(text).map_err(|e| vec![e.to_string()])?;
    let doc = &read.document;
    let history = if doc.signer == me {
        own
    } else {
        match trust.known(doc.signer) {
            Some(p) if !p.removed => &p.history,
            Some(_) => {
                return Err(vec![format!(
                    "the list is signed by {}, which is no longer enrolled here (removed): only lists signed by this node or a peer enrolled now are accepted",
                    doc.signer
                )])
            }
            None => {
                return Err(vec![format!(
                    "the list is signed by {}, which is neither this node nor an enrolled peer; enrol its issuer first (kpnode peer add) so its key can be checked",
                    doc.signer
                )])
            }
        }
    };
    let key = history
        .signing_key_at(doc.key_id, doc.signed_at)
        .map_err(|e| vec![format!("the list's signing key: {e}")])?;
    let retired = history.signing_keys().iter().find(|e| e.key_id == doc.key_id).and_then(|e| e.valid_until);
    if let Some(until) = retired {
        let last = until.saturating_add_millis(retired_key_grace_ms);
        if now >= last {
            return Err(vec![format!(
                "the list's signing key: {}'s key {} was replaced at {until}; lists signed with it are \
                 accepted only until {last} (the grace period, keys.tls_grace_period), and it is now {now}; \
                 ask {} for a list signed with its current key",
                doc.signer, doc.key_id, doc.signer
            )]);
        }
    }
    doc.verify_signature(key).map_err(|e| vec![format!("the list's signature: {e}")])?;
    if doc.signed_at > now.saturating_add_millis(LIST_CLOCK_TOLERANCE_MS) {
        return Err(vec![format!(
            "the list was signed at {}, which is in the future for this node (now {now}); check the clocks",
            doc.signed_at
        )]);
    }
    let problems = read.list.problems();
    if !problems.is_empty() {
        return Err(problems);
    }
    let origin = ListOrigin { issuer: doc.signer, issued_at: doc.signed_at, revision: read.revision };
    Ok(plan(registry, now.date(), doc, origin, read.list))
}

fn plan(
    registry: &Registry,
    today: Date,
    doc: &SignedDocument,
    origin: ListOrigin,
    list: ParticipantList,
) -> ImportPlan {
    let on = registry.on(today);
    let revision = origin.revision.map(|r| format!(" (revision {r})")).unwrap_or_default();
    let signed_by = format!("{} key {} at {}{revision}", doc.signer, doc.key_id, doc.signed_at);
    let source = format!("list {} signed by {}", short_id(doc), signed_by);
    let mut changes = Vec::new();
    let mut ignored = Vec::new();
    let mut unchanged = 0;
    for e in list.entries {
        if on.entry(e.code) == Some(&e) || on.pending(e.code).iter().any(|p| p.entry == e) {
            unchanged += 1;
        } else if let Some(why) = joins_without_consent(&on, doc.signer, &e) {
            ignored.push(IgnoredEntry { entry: e, why });
        } else if let Some(why) = registry.history(e.code).iter().rev().find_map(|r| r.newer_than(&origin)) {
            ignored.push(IgnoredEntry { entry: e, why });
        } else {
            changes.push(e);
        }
    }
    ImportPlan { signed_by, issued_on: list.issued_on, origin, changes, unchanged, ignored, source }
}

/// Why list entry `e` may not be imported from `signer`, if it makes participants of this
/// registry member states of a union they are not members of here and `signer` is neither the
/// union's own node nor one of them: another peer's list could otherwise take a participant's
/// name away from it. (A joining member's list speaks for the union it joins, its fellow
/// members included.) The operator records such a change with `participants set` if it is so.
fn joins_without_consent(
    on: &kp_exchange::registry::View<'_>,
    signer: ParticipantCode,
    e: &ParticipantEntry,
) -> Option<String> {
    use kp_protocol::ParticipantDirectory as _;
    let joining: Vec<ParticipantCode> = e
        .members
        .iter()
        .copied()
        .filter(|m| on.entry(*m).is_some() && on.union_of(*m) != Some(e.code))
        .collect();
    if joining.is_empty() || signer == e.code || joining.contains(&signer) {
        return None;
    }
    let names: Vec<String> = joining.iter().map(ToString::to_string).collect();
    Some(format!(
        "it makes {} member state(s) of {} from {}, and the list's signer {signer} is neither {} nor one of them: \
         only the union's or a joining participant's own list may say so; if it is so, record it with \
         `kpnode participants set {} --member …`",
        names.join(", "),
        e.code,
        e.effective_from,
        e.code,
        e.code
    ))
}

fn short_id(doc: &SignedDocument) -> String {
    doc.message_id().to_string().chars().take(16).collect()
}

/// The registry in force, as a list signed by this node (for other nodes to import), with
/// this node's registry revision.
pub fn export(registry: &Registry, today: Date, signer: &Signer) -> Result<String, kp_keys::SignError> {
    let list = ParticipantListV2 {
        issued_on: today,
        revision: registry.revision(),
        entries: registry.on(today).entries().into_iter().cloned().collect(),
    };
    let doc = signer.sign(&list)?;
    Ok(list_v2_to_armored(&doc, &list))
}

#[cfg(test)]
mod tests {
    use kp_keys::{KeyHistory, SigningKeyPair};
    use kp_protocol::registry::{list_v2_to_armored, ParticipantListV2};
    use kp_protocol::{ParticipantCode, ParticipantEntry, SignedDocument, Timestamp};

    use kp_exchange::registry::Registry;
    use kp_exchange::trust::Trust;

    const RU: ParticipantCode = ParticipantCode::from_static("RU");
    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_795_000_000_000;

    /// A thief of RU's retired key signs a list today, dated back into the key's window: it is
    /// refused after the grace period, as a delivery on a link would be.
    #[test]
    fn a_list_signed_with_a_retired_key_after_the_grace_period_is_refused() {
        let now = Timestamp::from_unix_millis(NOW);
        let (old, new) = (SigningKeyPair::generate(), SigningKeyPair::generate());
        let tls = kp_keys::TlsKeyPair::generate();
        let mut history = KeyHistory::genesis(
            RU,
            &old.verifying_key().to_bytes(),
            Timestamp::from_unix_millis(NOW - 400 * DAY),
            kp_keys::tlscert::self_signed(&tls, RU).unwrap(),
        )
        .unwrap();
        let retired_at = Timestamp::from_unix_millis(NOW - 100 * DAY);
        let body = kp_protocol::KeyRotation::new_with_signing_key(
            RU,
            1,
            old.key_id(),
            new.signing_key(),
            None,
            retired_at,
        );
        history.apply_held(&SignedDocument::sign(&body, RU, old.signing_key(), retired_at)).unwrap();

        let registry = Registry::default();
        let entries = registry.on(now.date()).entries().into_iter().cloned().collect();
        let list = ParticipantListV2 { issued_on: now.date(), revision: 1_000, entries };
        let backdated = Timestamp::from_unix_millis(retired_at.unix_millis() - 1);
        let text = list_v2_to_armored(&SignedDocument::sign(&list, RU, old.signing_key(), backdated), &list);
        let err = super::prepare_import(&registry, now, RU, &history, &Trust::default(), &text, 7 * DAY)
            .expect_err("a backdated list signed with the retired key was accepted");
        assert!(err[0].contains("was replaced at") && err[0].contains("grace period"), "{err:?}");
        // Within the grace period, what was signed before the rotation is still accepted.
        let soon = Timestamp::from_unix_millis(retired_at.unix_millis() + DAY);
        super::prepare_import(&registry, soon, RU, &history, &Trust::default(), &text, 7 * DAY).unwrap();
    }

    #[test]
    fn a_list_may_put_participants_in_a_union_only_if_the_union_or_a_joining_member_signed_it() {
        let today: kp_protocol::Date = "2026-11-28".parse().unwrap();
        let registry = Registry::default();
        let on = registry.on(today);
        let code = |c: &str| c.parse::<ParticipantCode>().unwrap();
        let union = ParticipantEntry {
            code: code("EA"),
            name: "Eurasian Economic Union".parse().unwrap(),
            status: kp_protocol::ParticipantStatus::Active,
            effective_from: today,
            reason: None,
            approved_origin_areas: Vec::new(),
            members: vec![RU, code("BY")],
        };
        // IN's list cannot make RU and BY members of anything.
        let why = super::joins_without_consent(&on, code("IN"), &union).expect("refused");
        assert!(why.contains("RU, BY member state(s) of EA") && why.contains("participants set EA"), "{why}");
        // RU's own, or the union's node's, can.
        assert_eq!(super::joins_without_consent(&on, RU, &union), None);
        assert_eq!(super::joins_without_consent(&on, code("EA"), &union), None);
        // The EU's members are no participants of their own: any list may name them, as before.
        let eu = on.entry(code("EU")).unwrap().clone();
        assert_eq!(super::joins_without_consent(&on, code("IN"), &eu), None);
    }
}
