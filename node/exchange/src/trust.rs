//! Whom this node trusts: each enrolled peer's key history, endpoints, and the TLS keys that
//! map to it. An immutable snapshot, swapped whole when a peer is added, removed or rotates,
//! so readers (TLS verifiers, link tasks) never hold a lock across anything slow.
//!
//! A peer record that cannot be loaded (damaged, over a decode limit, no longer verifying)
//! never stops the node: the peer is *quarantined*, named in `status`, and not trusted.
//! Rebuilding the snapshot after a change reuses what an earlier snapshot verified, so a
//! reload costs the records' bytes, not a re-verification of every rotation of every peer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use kp_keys::{Fingerprint, HistoryError, KeyHistory, VerifiedBundle};
use kp_protocol::{KeyId, KeyRotation, ParticipantCode, Timestamp};

use crate::storage::{decode_record, ArchivedIdentity, PeerRecord, Storage, StoreError, Tree};

/// One enrolled partner, as trusted now.
#[derive(Debug, Clone)]
pub struct PeerTrust {
    pub participant: ParticipantCode,
    pub authority: String,
    pub history: KeyHistory,
    pub fingerprint: Fingerprint,
    pub endpoints: Vec<String>,
    pub enrolled_at: Timestamp,
    /// Removed peers stay known (their documents in the log still verify) but are refused
    /// on the wire.
    pub removed: bool,
    /// Identities it had before the operator replaced them, oldest first. Never trusted for
    /// new documents or links; what was signed under them still verifies.
    pub archived: Vec<ArchivedPeer>,
    /// The stored bundle this was built from, and how many rotations its chain holds, so a
    /// reload can tell what it may reuse.
    bundle: Arc<[u8]>,
    bundle_rotations: usize,
}

/// An identity a peer had before an identity change.
#[derive(Debug, Clone)]
pub struct ArchivedPeer {
    pub history: KeyHistory,
    pub fingerprint: Fingerprint,
    pub replaced_at: Timestamp,
    /// When its keys stopped being valid (see [`archive_end`]); `history` is retired there.
    pub ends_at: Timestamp,
}

/// For each peer, the latest signing time of what this node stores signed with each of its
/// keys: the `signed/<CC>/<key id>` markers (see [`crate::storage::meta::SIGNED_PREFIX`]).
pub type StoredSignatures = BTreeMap<ParticipantCode, crate::enrol::LastSigned>;

/// When the keys of an identity replaced at `replaced_at` stop being valid. It signs nothing
/// after it was replaced, but what this node stored before the replacement may be dated
/// after it: in the replacement's own millisecond (stored earlier in the same batch), or
/// later still, since a peer may date its signatures up to the clock tolerance ahead of this
/// node's clock (and a receipt's signing time is the peer's alone). So the keys end just
/// after the replacement's millisecond, and never before just after the latest signing time
/// of anything stored signed with one of them (`signed`, the peer's markers). The store
/// judges deliveries by the current record, so no document signed with them is stored after
/// the replacement: this extends their validity over what was stored before it. (A receipt
/// is judged by the link, against the trust in force: one checked just before the new trust
/// was swapped in is still recorded, and still verifies.) Only `log verify` uses archived
/// keys; nothing new is accepted under them.
fn archive_end(
    history: &KeyHistory,
    replaced_at: Timestamp,
    signed: Option<&crate::enrol::LastSigned>,
) -> Timestamp {
    let latest =
        signed.into_iter().flat_map(|s| history.signing_keys().iter().filter_map(|k| s.get(&k.key_id))).max();
    let end = replaced_at.saturating_add_millis(1);
    latest.map_or(end, |last| end.max(last.saturating_add_millis(1)))
}

/// Why a stored peer record could not be turned into trust.
#[derive(Debug, thiserror::Error)]
#[error("peer {participant}: {detail}")]
pub struct PeerRecordError {
    pub participant: ParticipantCode,
    pub detail: String,
}

impl PeerTrust {
    /// Builds trust from a stored record, verifying its bundle and every rotation.
    pub fn from_record(rec: &PeerRecord) -> Result<PeerTrust, PeerRecordError> {
        Self::from_record_reusing(rec, None)
    }

    /// As [`PeerTrust::from_record`], reusing what `earlier` (built from an earlier version
    /// of the same record) verified: the same bundle bytes and the rotations already applied
    /// are taken as they are; only new rotations are checked.
    fn from_record_reusing(
        rec: &PeerRecord,
        earlier: Option<&PeerTrust>,
    ) -> Result<PeerTrust, PeerRecordError> {
        let err = |detail: String| PeerRecordError { participant: rec.participant, detail };
        let reusable = earlier.filter(|e| e.participant == rec.participant && *e.bundle == rec.bundle[..]);
        let (mut history, authority, fingerprint, bundle, bundle_rotations) = match reusable {
            Some(e) => {
                (e.history.clone(), e.authority.clone(), e.fingerprint, e.bundle.clone(), e.bundle_rotations)
            }
            None => {
                let b = VerifiedBundle::from_bytes(&rec.bundle).map_err(|e| err(e.to_string()))?;
                let n = b.history.rotations().len();
                (
                    b.history.clone(),
                    b.bundle.authority.to_string(),
                    b.fingerprint,
                    Arc::from(&rec.bundle[..]),
                    n,
                )
            }
        };
        let mut last_seq = bundle_rotations;
        for r in &rec.rotations {
            // Rotations already in the history (the bundle's chain, or applied by an
            // earlier snapshot) are skipped; later ones applied. They were checked as new
            // statements when the node stored them.
            let seq = r.body::<KeyRotation>().map(|b| b.sequence).unwrap_or(0) as usize;
            last_seq = last_seq.max(seq);
            if seq >= 1 && seq <= history.rotations().len() {
                if reusable.is_some() && seq > bundle_rotations && history.rotations()[seq - 1] != *r {
                    // The record changed under us: verify it all again.
                    return Self::from_record_reusing(rec, None);
                }
                continue;
            }
            history.apply_held(r).map_err(|e| err(e.to_string()))?;
        }
        if reusable.is_some() && history.rotations().len() != last_seq {
            // The earlier snapshot held rotations this record no longer has.
            return Self::from_record_reusing(rec, None);
        }
        Ok(PeerTrust {
            participant: rec.participant,
            authority,
            history,
            fingerprint,
            endpoints: rec.endpoints.clone(),
            enrolled_at: rec.enrolled_at,
            removed: rec.removed_at.is_some(),
            archived: Vec::new(),
            bundle,
            bundle_rotations,
        })
    }

    /// Trust in `history` as it stands, with no stored record behind it (the simulator's).
    pub fn of_history(authority: String, history: KeyHistory, enrolled_at: Timestamp) -> PeerTrust {
        PeerTrust {
            participant: history.participant(),
            authority,
            fingerprint: Fingerprint::of(&history.root().public_key),
            history,
            endpoints: Vec::new(),
            enrolled_at,
            removed: false,
            archived: Vec::new(),
            bundle: Arc::from(&[][..]),
            bundle_rotations: 0,
        }
    }

    /// The signing key `key_id` of this participant, if valid at `at`: under its current
    /// identity or, for what was signed before an identity change, an archived one.
    pub fn signing_key_at(&self, key_id: KeyId, at: Timestamp) -> Result<&VerifyingKey, HistoryError> {
        match self.history.signing_key_at(key_id, at) {
            Err(HistoryError::UnknownKey { .. }) => {
                for a in self.archived.iter().rev() {
                    match a.history.signing_key_at(key_id, at) {
                        Err(HistoryError::UnknownKey { .. }) => continue,
                        other => return other,
                    }
                }
                self.history.signing_key_at(key_id, at)
            }
            other => other,
        }
    }
}

/// Every TLS public key a stored peer record binds (current or replaced), read without
/// re-verifying signatures: the record was verified when it was stored.
pub fn record_tls_keys(rec: &PeerRecord) -> Vec<[u8; 32]> {
    let Ok(bundle) = kp_keys::bundle::decode_unverified(&rec.bundle) else { return Vec::new() };
    let mut keys: Vec<[u8; 32]> =
        kp_keys::tlscert::public_key(&bundle.root_tls_certificate).into_iter().collect();
    for r in bundle.rotations.iter().chain(&rec.rotations) {
        if let Some(cert) = r.body::<KeyRotation>().ok().and_then(|b| b.new_tls_certificate) {
            keys.extend(kp_keys::tlscert::public_key(&cert));
        }
    }
    keys
}

/// One signing key a stored peer record binds, and when it was valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningWindow {
    pub key_id: KeyId,
    pub valid_from: Timestamp,
    pub valid_until: Option<Timestamp>,
}

/// The signing keys of a stored peer record's current identity and their validity windows,
/// read without re-verifying signatures (the record was verified when it was stored), as
/// [`KeyHistory::signing_key_at`] would judge them. `None` if the record does not decode.
pub fn record_signing_windows(rec: &PeerRecord) -> Option<Vec<SigningWindow>> {
    let bundle = kp_keys::bundle::decode_unverified(&rec.bundle).ok()?;
    let root = VerifyingKey::from_bytes(&bundle.root_key).ok()?;
    let mut windows = vec![SigningWindow {
        key_id: KeyId::of(&root),
        valid_from: bundle.root_created_at,
        valid_until: None,
    }];
    let mut applied = 0usize;
    for r in bundle.rotations.iter().chain(&rec.rotations) {
        let body = r.body::<KeyRotation>().ok()?;
        // The record's own list may repeat statements its bundle holds.
        if (body.sequence as usize) <= applied {
            continue;
        }
        applied = body.sequence as usize;
        if let Some(new) = &body.new_signing_key {
            let key = VerifyingKey::from_bytes(&new.public_key).ok()?;
            if let Some(last) = windows.last_mut() {
                last.valid_until = Some(body.effective_from);
            }
            windows.push(SigningWindow {
                key_id: KeyId::of(&key),
                valid_from: body.effective_from,
                valid_until: None,
            });
        }
    }
    Some(windows)
}

/// A snapshot of everything trusted.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    peers: HashMap<ParticipantCode, PeerTrust>,
    /// Peers whose record could not be loaded, and why: not trusted until the operator
    /// enrols a current bundle for them (or removes them).
    quarantined: BTreeMap<ParticipantCode, String>,
    /// What building this snapshot found wrong, for the node to log.
    problems: Vec<TrustProblem>,
}

/// Something wrong in the stored trust, found while building a snapshot. Nothing here stops
/// the node; the node logs each (see [`Trust::problems`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustProblem {
    /// A record under a key that names no participant: ignored.
    UnnamedRecord { tree: &'static str, key: Vec<u8> },
    /// An archived identity of the peer cannot be read or does not verify: log entries signed
    /// under it will not verify.
    ArchiveUnusable { peer: ParticipantCode, error: String },
    /// The peer's record cannot be loaded: the peer is quarantined. `new` is false when the
    /// snapshot this one was rebuilt from had quarantined it for the same reason.
    Quarantined { peer: ParticipantCode, detail: String, new: bool },
    /// The peer's record binds a TLS key already bound to `owner`: the peer is quarantined.
    SharedTlsKey { peer: ParticipantCode, owner: ParticipantCode },
}

impl std::fmt::Display for TrustProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustProblem::UnnamedRecord { tree, key } => write!(
                f,
                "ignoring a record in {tree} under a key that names no participant ({})",
                kp_protocol::digest::hex(key)
            ),
            TrustProblem::ArchiveUnusable { peer, error } => write!(
                f,
                "an archived identity of {peer} cannot be used ({error}); log entries signed under it will not verify"
            ),
            TrustProblem::Quarantined { peer, detail, .. } => write!(
                f,
                "the record of {peer} cannot be loaded ({detail}): the peer is quarantined (not trusted, not \
dialled) and the node runs on for the others. Ask its operator for a current bundle and enrol it with \
`kpnode peer add BUNDLE --fingerprint FP` (it replaces the record, whose key history can no longer be read)"
            ),
            TrustProblem::SharedTlsKey { peer, owner } => write!(
                f,
                "the record of {peer} binds a TLS key of {owner}: the peer is quarantined (not trusted, not dialled)"
            ),
        }
    }
}

impl Trust {
    pub fn new(peers: impl IntoIterator<Item = PeerTrust>) -> Trust {
        Trust {
            peers: peers.into_iter().map(|p| (p.participant, p)).collect(),
            quarantined: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// Builds the snapshot from the stored peer records and archived identities. A record
    /// that does not decode or verify quarantines its peer; `earlier` is reused where the
    /// records did not change. `signed` is what this node stores signed with each peer key
    /// (see [`stored_signatures`]): an archived identity's keys stay valid for it.
    pub fn build(
        records: Vec<(ParticipantCode, Result<PeerRecord, String>)>,
        archives: Vec<(ParticipantCode, Result<ArchivedIdentity, String>)>,
        signed: &StoredSignatures,
        earlier: Option<&Trust>,
    ) -> Trust {
        let mut archived: BTreeMap<ParticipantCode, Vec<Result<ArchivedIdentity, String>>> = BTreeMap::new();
        for (p, a) in archives {
            archived.entry(p).or_default().push(a);
        }
        let mut trust = Trust::default();
        let mut problems = Vec::new();
        for (participant, rec) in records {
            let before = earlier.and_then(|t| t.peers.get(&participant));
            let built = rec.and_then(|r| PeerTrust::from_record_reusing(&r, before).map_err(|e| e.detail));
            match built {
                Ok(mut p) => {
                    let archives = archived.remove(&participant).unwrap_or_default();
                    let signed = signed.get(&participant);
                    // Archives are only ever added to: the same number means the same ones
                    // (kept if their keys still end where the signatures stored now say).
                    if let Some(b) = before.filter(|b| {
                        b.archived.len() == archives.len()
                            && b.archived
                                .iter()
                                .all(|a| a.ends_at == archive_end(&a.history, a.replaced_at, signed))
                    }) {
                        p.archived = b.archived.clone();
                    } else {
                        p.archived = archives
                            .iter()
                            .filter_map(|a| {
                                let a = match a {
                                    Ok(a) => a,
                                    Err(e) => {
                                        let error = format!("it cannot be read: {e}");
                                        problems
                                            .push(TrustProblem::ArchiveUnusable { peer: participant, error });
                                        return None;
                                    }
                                };
                                match PeerTrust::from_record(&a.record) {
                                    Ok(t) => {
                                        let mut history = t.history;
                                        let ends_at = archive_end(&history, a.replaced_at, signed);
                                        history.retire_at(ends_at);
                                        Some(ArchivedPeer {
                                            history,
                                            fingerprint: t.fingerprint,
                                            replaced_at: a.replaced_at,
                                            ends_at,
                                        })
                                    }
                                    Err(e) => {
                                        let error = format!("it does not verify: {e}");
                                        problems
                                            .push(TrustProblem::ArchiveUnusable { peer: participant, error });
                                        None
                                    }
                                }
                            })
                            .collect();
                    }
                    trust.peers.insert(participant, p);
                }
                Err(detail) => {
                    let new = earlier.is_none_or(|t| t.quarantined.get(&participant) != Some(&detail));
                    trust.problems.push(TrustProblem::Quarantined {
                        peer: participant,
                        detail: detail.clone(),
                        new,
                    });
                    trust.quarantined.insert(participant, detail);
                }
            }
        }
        trust.problems.append(&mut problems);
        trust.quarantine_shared_tls_keys();
        trust
    }

    /// What building this snapshot found wrong (records ignored, archives unusable, peers
    /// quarantined), for the node to log.
    pub fn problems(&self) -> &[TrustProblem] {
        &self.problems
    }

    /// A TLS key belongs to one participant, but a store written before that rule was
    /// enforced may bind one to two active peers (and `peer_for_tls_key` would pick either).
    /// The earliest enrolled binding is kept; the other peer is quarantined, with a log line.
    fn quarantine_shared_tls_keys(&mut self) {
        let mut owners: HashMap<[u8; 32], (Timestamp, ParticipantCode)> = HashMap::new();
        let mut active: Vec<&PeerTrust> = self.peers.values().filter(|p| !p.removed).collect();
        active.sort_by_key(|p| (p.enrolled_at, p.participant));
        let mut losers: Vec<(ParticipantCode, ParticipantCode)> = Vec::new();
        for p in active {
            let shared = p.history.tls_keys().iter().find_map(|t| {
                owners.get(&t.public_key).filter(|(_, o)| *o != p.participant).map(|(_, o)| *o)
            });
            match shared {
                Some(owner) => losers.push((p.participant, owner)),
                None => {
                    for t in p.history.tls_keys() {
                        owners.entry(t.public_key).or_insert((p.enrolled_at, p.participant));
                    }
                }
            }
        }
        for (loser, owner) in losers {
            let detail = format!(
                "a TLS key of its record is also bound to {owner}, enrolled earlier; a TLS key \
                 belongs to one participant. Ask {loser}'s operator for a current bundle with a TLS \
                 key of its own"
            );
            self.problems.push(TrustProblem::SharedTlsKey { peer: loser, owner });
            self.peers.remove(&loser);
            self.quarantined.insert(loser, detail);
        }
    }

    /// An enrolled, not removed, peer.
    pub fn active(&self, code: ParticipantCode) -> Option<&PeerTrust> {
        self.peers.get(&code).filter(|p| !p.removed)
    }

    /// Any peer ever enrolled (for verifying old documents).
    pub fn known(&self, code: ParticipantCode) -> Option<&PeerTrust> {
        self.peers.get(&code)
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerTrust> {
        self.peers.values()
    }

    pub fn active_peers(&self) -> impl Iterator<Item = &PeerTrust> {
        self.peers.values().filter(|p| !p.removed)
    }

    /// Why `code`'s record could not be loaded, if it is quarantined.
    pub fn quarantine_reason(&self, code: ParticipantCode) -> Option<&str> {
        self.quarantined.get(&code).map(String::as_str)
    }

    /// Peers whose record could not be loaded, with the reason, in code order.
    pub fn quarantined(&self) -> impl Iterator<Item = (ParticipantCode, &str)> {
        self.quarantined.iter().map(|(p, why)| (*p, why.as_str()))
    }

    /// The peer other than `except` that ever had TLS key `key` (current, replaced or under
    /// an archived identity), if any: a TLS key belongs to one participant.
    pub fn tls_key_owner(&self, key: &[u8; 32], except: ParticipantCode) -> Option<ParticipantCode> {
        self.peers
            .values()
            .filter(|p| p.participant != except)
            .find(|p| {
                std::iter::once(&p.history)
                    .chain(p.archived.iter().map(|a| &a.history))
                    .any(|h| h.tls_keys().iter().any(|t| t.public_key == *key))
            })
            .map(|p| p.participant)
    }

    /// The active peer a TLS key belongs to, if it may be used at `now`.
    pub fn peer_for_tls_key(
        &self,
        key: &[u8; 32],
        now: Timestamp,
        grace_millis: i64,
    ) -> Option<ParticipantCode> {
        self.active_peers().find(|p| p.history.accepts_tls_key(key, now, grace_millis)).map(|p| p.participant)
    }
}

/// The shared, swappable trust set.
pub type TrustCell = crate::snapshot::Snapshot<Trust>;

/// Reads every peer record and builds the trust snapshot from them. A record that cannot be
/// loaded quarantines its peer (see [`Trust::build`]); only a failing store is an error.
pub fn load<S: Storage + ?Sized>(store: &S) -> Result<Trust, StoreError> {
    reload(store, None)
}

/// As [`load`], reusing what `earlier` verified for records that did not change.
pub fn reload<S: Storage + ?Sized>(store: &S, earlier: Option<&Trust>) -> Result<Trust, StoreError> {
    let mut unnamed = Vec::new();
    let mut code = |tree: Tree, k: &[u8], len: usize| {
        let parsed = k
            .get(..2)
            .filter(|_| k.len() == len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|c| c.parse::<ParticipantCode>().ok());
        if parsed.is_none() {
            unnamed.push(TrustProblem::UnnamedRecord { tree: tree.name(), key: k.to_vec() });
        }
        parsed
    };
    let records = store
        .range(Tree::Peers, &[], &[0xff; 3], usize::MAX)?
        .into_iter()
        .filter_map(|(k, v)| {
            let participant = code(Tree::Peers, &k, 2)?;
            let rec =
                decode_record::<PeerRecord>(Tree::Peers, &k, &v).map_err(|e| e.to_string()).and_then(|r| {
                    if r.participant == participant {
                        Ok(r)
                    } else {
                        Err(format!("the record under {participant} is for {}", r.participant))
                    }
                });
            Some((participant, rec))
        })
        .collect();
    let archives = store
        .range(Tree::PeerArchive, &[], &[0xff; 7], usize::MAX)?
        .into_iter()
        .filter_map(|(k, v)| {
            let participant = code(Tree::PeerArchive, &k, 6)?;
            Some((
                participant,
                decode_record::<ArchivedIdentity>(Tree::PeerArchive, &k, &v).map_err(|e| e.to_string()),
            ))
        })
        .collect();
    let signed = stored_signatures(store)?;
    let mut trust = Trust::build(records, archives, &signed, earlier);
    trust.problems.splice(0..0, unnamed);
    Ok(trust)
}

/// Reads the `signed/<CC>/<key id>` markers (see [`StoredSignatures`]). A marker that does
/// not parse is skipped: the engine writes them all through [`crate::storage::meta::signed_with`].
pub fn stored_signatures<S: Storage + ?Sized>(store: &S) -> Result<StoredSignatures, StoreError> {
    let prefix = crate::storage::meta::SIGNED_PREFIX.as_bytes();
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut signed = StoredSignatures::new();
    for (k, v) in store.range(Tree::Meta, prefix, &end, usize::MAX)? {
        let parsed = std::str::from_utf8(&k[prefix.len()..]).ok().and_then(|rest| {
            let (peer, key_id) = rest.split_once('/')?;
            Some((peer.parse::<ParticipantCode>().ok()?, key_id.parse::<KeyId>().ok()?))
        });
        let Some((peer, key_id)) = parsed else { continue };
        let Ok(at) = decode_record::<Timestamp>(Tree::Meta, &k, &v) else { continue };
        signed.entry(peer).or_default().insert(key_id, at);
    }
    Ok(signed)
}

/// The rule a link is judged by, at its handshake and for as long as it lives: whether
/// `key` is, at `now`, a trusted TLS key of `peer` in `trust`, given the grace period of
/// replaced keys.
pub fn judge_link(
    trust: &Trust,
    peer: ParticipantCode,
    key: &[u8; 32],
    now: Timestamp,
    grace_millis: i64,
) -> Result<(), Distrust> {
    match trust.peer_for_tls_key(key, now, grace_millis) {
        Some(p) if p == peer => Ok(()),
        Some(other) => Err(Distrust::OtherPeer(other)),
        None => Err(match trust.active(peer) {
            Some(p) if p.history.tls_keys().iter().any(|e| e.public_key == *key) => Distrust::GraceOver,
            Some(_) => Distrust::IdentityReplaced,
            None if trust.known(peer).is_some_and(|p| p.removed) => Distrust::Removed,
            None if trust.quarantine_reason(peer).is_some() => Distrust::Quarantined,
            None => Distrust::NotEnrolled,
        }),
    }
}

/// Why an open link was closed: the TLS key it authenticated with is no longer trusted for
/// its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Distrust {
    /// The peer was removed.
    Removed,
    /// The peer is not (or no longer) an active enrolled peer.
    NotEnrolled,
    /// The peer's stored record cannot be loaded: it is quarantined until the operator
    /// enrols a current bundle.
    Quarantined,
    /// The key is not in the peer's current identity: the operator enrolled a new one.
    IdentityReplaced,
    /// The peer rotated its TLS key and the old one's grace period is over.
    GraceOver,
    /// The key is now bound to another peer.
    OtherPeer(ParticipantCode),
}

impl Distrust {
    /// A short, stable name, for the `reason` label of the metric.
    pub fn label(&self) -> &'static str {
        match self {
            Distrust::Removed => "removed",
            Distrust::NotEnrolled => "not_enrolled",
            Distrust::Quarantined => "quarantined",
            Distrust::IdentityReplaced => "identity_replaced",
            Distrust::GraceOver => "grace_over",
            Distrust::OtherPeer(_) => "other_peer",
        }
    }
}

impl std::fmt::Display for Distrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distrust::Removed => f.write_str("the peer was removed"),
            Distrust::NotEnrolled => f.write_str("the peer is not an enrolled peer"),
            Distrust::Quarantined => f.write_str(
                "the peer's record cannot be loaded (quarantined); enrol a current bundle with `kpnode peer add`",
            ),
            Distrust::IdentityReplaced => {
                f.write_str("its TLS key is not in the peer's current identity (a new identity was enrolled)")
            }
            Distrust::GraceOver => f.write_str(
                "its TLS key was replaced by a rotation and its grace period (keys.tls_grace_period) is over",
            ),
            Distrust::OtherPeer(p) => write!(f, "its TLS key now belongs to {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kp_keys::{SigningKeyPair, TlsKeyPair};
    use kp_protocol::SignedDocument;

    const RU: ParticipantCode = ParticipantCode::from_static("RU");
    const T0: i64 = 1_795_000_000_000;

    fn record() -> (SigningKeyPair, PeerRecord) {
        record_of(RU)
    }

    fn record_of(participant: ParticipantCode) -> (SigningKeyPair, PeerRecord) {
        let signing = SigningKeyPair::generate();
        let tls = TlsKeyPair::generate();
        let bundle = kp_keys::Bundle {
            format: kp_keys::bundle::BUNDLE_FORMAT,
            participant,
            authority: "Authority".parse().unwrap(),
            endpoints: vec!["127.0.0.1:9".into()],
            root_key: signing.verifying_key().to_bytes(),
            root_created_at: Timestamp::from_unix_millis(T0),
            root_tls_certificate: kp_keys::tlscert::self_signed(&tls, participant).unwrap(),
            rotations: Vec::new(),
            created_at: Timestamp::from_unix_millis(T0),
        }
        .sign(&signing)
        .unwrap();
        let rec = PeerRecord {
            participant,
            bundle: bundle.to_bytes().to_vec(),
            rotations: Vec::new(),
            endpoints: Vec::new(),
            enrolled_at: Timestamp::from_unix_millis(T0),
            removed_at: None,
        };
        (signing, rec)
    }

    fn tls_rotation(signing: &SigningKeyPair, sequence: u32, at: i64) -> SignedDocument {
        let tls = TlsKeyPair::generate();
        let mut body = KeyRotation {
            participant: RU,
            sequence,
            previous_key: signing.key_id(),
            new_signing_key: None,
            new_tls_certificate: Some(kp_keys::tlscert::self_signed(&tls, RU).unwrap()),
            effective_from: Timestamp::from_unix_millis(at),
            tls_possession: None,
        };
        tls.prove_possession(&mut body);
        SignedDocument::sign(&body, RU, signing.signing_key(), Timestamp::from_unix_millis(at))
    }

    #[test]
    fn a_reload_checks_only_what_changed() {
        let (signing, mut rec) = record();
        let first = Trust::build(vec![(RU, Ok(rec.clone()))], Vec::new(), &Default::default(), None);
        rec.rotations.push(tls_rotation(&signing, 1, T0 + 10));
        let second = Trust::build(vec![(RU, Ok(rec.clone()))], Vec::new(), &Default::default(), Some(&first));
        assert_eq!(second.known(RU).unwrap().history.rotations().len(), 1);
        // What an earlier snapshot verified is not verified again: with the bundle's
        // self-signature broken, a fresh load refuses the record, a reload reuses it…
        let mut broken = rec.clone();
        let last = broken.bundle.len() - 1;
        broken.bundle[last] ^= 1;
        let mut earlier = second.clone();
        earlier.peers.get_mut(&RU).unwrap().bundle = Arc::from(&broken.bundle[..]);
        assert!(Trust::build(vec![(RU, Ok(broken.clone()))], Vec::new(), &Default::default(), None)
            .known(RU)
            .is_none());
        broken.rotations.push(tls_rotation(&signing, 2, T0 + 20));
        let reloaded =
            Trust::build(vec![(RU, Ok(broken.clone()))], Vec::new(), &Default::default(), Some(&earlier));
        // …and checks the one new rotation.
        assert_eq!(reloaded.known(RU).unwrap().history.rotations().len(), 2);
        let mut forged = broken.clone();
        forged.rotations.push(tls_rotation(&SigningKeyPair::generate(), 3, T0 + 30));
        let refused = Trust::build(vec![(RU, Ok(forged))], Vec::new(), &Default::default(), Some(&reloaded));
        assert!(refused.quarantine_reason(RU).unwrap().contains("rotation statement 3"), "{refused:?}");
    }

    /// Review Low 12: the last key of an archived identity stayed valid for any signing time,
    /// so `log verify` accepted what the old identity signed after it was replaced.
    #[test]
    fn an_archived_identitys_keys_end_when_it_was_replaced() {
        let (old_signing, old) = record();
        let (_, current) = record();
        let replaced_at = Timestamp::from_unix_millis(T0 + 1000);
        let records = vec![(RU, Ok(current))];
        let archives = vec![(RU, Ok(ArchivedIdentity { record: old, replaced_at }))];
        let trust = Trust::build(records.clone(), archives.clone(), &Default::default(), None);
        let ru = trust.known(RU).unwrap();
        ru.signing_key_at(old_signing.key_id(), Timestamp::from_unix_millis(T0 + 999)).unwrap();
        // Signed in the replacement's millisecond: possibly stored just before it, in its batch.
        ru.signing_key_at(old_signing.key_id(), replaced_at).unwrap();
        let e = ru.signing_key_at(old_signing.key_id(), replaced_at.saturating_add_millis(1)).unwrap_err();
        assert!(matches!(e, HistoryError::KeyNotValidAt { .. }), "{e}");
        assert!(ru
            .signing_key_at(old_signing.key_id(), Timestamp::from_unix_millis(T0 + 86_400_000))
            .is_err());

        // This node stored something the old key signed 40 ms after the replacement (dated
        // ahead of this node's clock, stored before the replacement): the key verifies it,
        // and nothing after it. A reload of the earlier snapshot sees the new end too.
        let last = replaced_at.saturating_add_millis(40);
        let signed: StoredSignatures = [(RU, [(old_signing.key_id(), last)].into())].into();
        for earlier in [None, Some(&trust)] {
            let extended = Trust::build(records.clone(), archives.clone(), &signed, earlier);
            let ru = extended.known(RU).unwrap();
            ru.signing_key_at(old_signing.key_id(), last).unwrap();
            let e = ru.signing_key_at(old_signing.key_id(), last.saturating_add_millis(1)).unwrap_err();
            assert!(matches!(e, HistoryError::KeyNotValidAt { .. }), "{e}");
        }
        // A signature stored before the replacement does not move the end earlier.
        let early: StoredSignatures =
            [(RU, [(old_signing.key_id(), Timestamp::from_unix_millis(T0 + 10))].into())].into();
        let trust = Trust::build(records, archives, &early, Some(&trust));
        trust.known(RU).unwrap().signing_key_at(old_signing.key_id(), replaced_at).unwrap();
    }

    /// Review Low 7: a store from before TLS keys were unique binds RU's TLS key to KZ too
    /// (a format-1 rotation without proof); `peer_for_tls_key` took whichever came first.
    #[test]
    fn a_tls_key_bound_to_two_peers_quarantines_the_later_enrolled() {
        let (_, ru) = record();
        let kz = ParticipantCode::from_static("KZ");
        let (kz_signing, mut kz_rec) = record_of(kz);
        kz_rec.enrolled_at = Timestamp::from_unix_millis(T0 + 1);
        let ru_cert = kp_keys::bundle::decode_unverified(&ru.bundle).unwrap().root_tls_certificate;
        let legacy = KeyRotation {
            participant: kz,
            sequence: 1,
            previous_key: kz_signing.key_id(),
            new_signing_key: None,
            new_tls_certificate: Some(ru_cert.clone()),
            effective_from: Timestamp::from_unix_millis(T0 + 10),
            tls_possession: None,
        };
        kz_rec.rotations.push(SignedDocument::sign(
            &legacy,
            kz,
            kz_signing.signing_key(),
            Timestamp::from_unix_millis(T0 + 10),
        ));
        let ru_key = kp_keys::tlscert::public_key(&ru_cert).unwrap();
        let now = Timestamp::from_unix_millis(T0 + 20);
        for _ in 0..4 {
            let trust = Trust::build(
                vec![(kz, Ok(kz_rec.clone())), (RU, Ok(ru.clone()))],
                Vec::new(),
                &Default::default(),
                None,
            );
            assert_eq!(trust.peer_for_tls_key(&ru_key, now, 0), Some(RU));
            assert!(trust.active(kz).is_none());
            assert!(trust.quarantine_reason(kz).unwrap().contains("also bound to RU"), "{trust:?}");
        }
    }

    #[test]
    fn a_record_that_cannot_be_loaded_quarantines_its_peer_only() {
        let (_, rec) = record();
        let kz = ParticipantCode::from_static("KZ");
        let trust = Trust::build(
            vec![(RU, Ok(rec)), (kz, Err("malformed: LimitExceeded".into()))],
            Vec::new(),
            &Default::default(),
            None,
        );
        assert!(trust.active(RU).is_some());
        assert!(trust.known(kz).is_none());
        assert_eq!(trust.quarantined().collect::<Vec<_>>(), vec![(kz, "malformed: LimitExceeded")]);
    }
}
