//! Two engines over in-memory storage, exchanging documents by hand: the rules without any
//! networking.

use std::sync::Arc;

use kp_keys::{KeyHistory, SigningKeyPair};
use kp_protocol::{
    Certificate, CertificateDraft, ImportConfirmation, MessageId, ParticipantCode, RejectCode,
    SignedDocument, Timestamp, ValidationContext,
};

use crate::clock::ManualClock;
use crate::engine::{Command, Engine, EngineError, Outcome, Reply};
use crate::registry::Registry;
use crate::signer::Signer;
use crate::storage::{
    decode_record, get_record, meta, outbox_range, CertRecord, CertStatus, LogEntry, MemStorage, OutboxEntry,
    Storage, Tree, Writes,
};
use crate::verify::{check_batch, CheckContext, Received};

const RU: ParticipantCode = ParticipantCode::from_static("RU");
const IN: ParticipantCode = ParticipantCode::from_static("IN");
const T0: i64 = 1_795_000_000_000; // 2026-11-18

fn officer(name: &str) -> crate::storage::Officer {
    crate::storage::Officer::new(name).unwrap()
}

/// Documents queued for a peer: message id, document, outbox position.
type Queued = Vec<(MessageId, SignedDocument, u64)>;

struct Side {
    code: ParticipantCode,
    store: MemStorage,
    engine: Engine,
    signer: Arc<Signer>,
    history: KeyHistory,
}

fn side(code: ParticipantCode, clock: &Arc<ManualClock>) -> Side {
    let key = SigningKeyPair::generate();
    let tls = kp_keys::TlsKeyPair::generate();
    let cert = kp_keys::tlscert::self_signed(&tls, code).unwrap();
    let history = KeyHistory::genesis(
        code,
        &key.verifying_key().to_bytes(),
        Timestamp::from_unix_millis(T0 - 1000),
        cert,
    )
    .unwrap();
    let signer = Arc::new(Signer::new(code, key, clock.clone()));
    let store = MemStorage::new();
    let engine = Engine::load(&store, signer.clone()).unwrap();
    Side { code, store, engine, signer, history }
}

impl Side {
    fn apply(&mut self, now: Timestamp, commands: Vec<Command>) -> Vec<Outcome> {
        let out = self.engine.apply(&self.store, now, commands).unwrap().outcomes;
        self.store.flush().unwrap();
        out
    }

    fn cert(&self, number: &str) -> CertRecord {
        get_record::<CertRecord, _>(&self.store, Tree::Certs, number.as_bytes()).unwrap().unwrap()
    }

    /// Pending documents for `peer`, in outbox order, with their outbox positions.
    fn outbox(&self, peer: ParticipantCode) -> Queued {
        let (start, end) = outbox_range(peer, 0);
        self.store
            .range(Tree::Outbox, &start, &end, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                let e: OutboxEntry = decode_record(Tree::Outbox, &k, &v).unwrap();
                (e.message_id, e.document, u64::from_be_bytes(k[2..10].try_into().unwrap()))
            })
            .collect()
    }

    fn log(&self) -> Vec<LogEntry> {
        self.store
            .range(Tree::Log, &[], &[0xff; 9], usize::MAX)
            .unwrap()
            .iter()
            .map(|(k, v)| crate::storage::decode_log(k, v).unwrap().0)
            .collect()
    }
}

/// The checks a link of `me`'s makes (those that need no store) of `docs` from `peer`, whose
/// key history it holds as `history` (updated by the rotations among them), at `now`: a
/// clock tolerance of `tolerance_ms` and a week's grace for a retired key.
fn link_checks(
    me: ParticipantCode,
    peer: ParticipantCode,
    now: Timestamp,
    tolerance_ms: i64,
    history: &mut KeyHistory,
    docs: Vec<crate::verify::Delivery>,
) -> Vec<Result<Received, crate::verify::Refusal>> {
    let registry = Registry::default();
    let ctx = CheckContext {
        me,
        peer,
        now,
        clock_tolerance_ms: tolerance_ms,
        retired_key_grace_ms: 7 * 86_400_000,
        registry: registry.on(now.date()),
    };
    check_batch(&ctx, history, docs)
}

/// What `IN`'s link to `RU` accepts when it checks `docs` against its own copy of RU's key
/// history, `history` (updated by the rotations among them, as a link's is).
fn checked_by_link(now: Timestamp, history: &mut KeyHistory, docs: Vec<SignedDocument>) -> Vec<Received> {
    let docs = docs.into_iter().map(|d| (d.message_id(), None, d)).collect();
    link_checks(IN, RU, now, 0, history, docs).into_iter().map(|r| r.expect("the link accepts it")).collect()
}

/// IN's import confirmation of RU's certificate `number` (as [`certificate`] writes it):
/// two parcels, `carats` received.
fn confirmation(inn: &Side, number: &str, carats: &str, now: Timestamp) -> ImportConfirmation {
    let cert = certificate(number, "100.00");
    ImportConfirmation {
        certificate: cert.number.clone(),
        certificate_id: inn.cert(number).message_id,
        exporting_participant: RU,
        importing_participant: IN,
        exporter: cert.content.exporter.named(),
        importer: cert.content.importer.named(),
        received_on: now.date(),
        parcels: 2,
        carats: carats.parse().unwrap(),
        confirming_authority: "DGFT".parse().unwrap(),
        remarks: None,
    }
}

/// IN confirms the import of `number` with `carats` received.
fn confirm(inn: &mut Side, number: &str, carats: &str, now: Timestamp) -> Outcome {
    let confirmation = confirmation(inn, number, carats, now);
    let document = inn.signer.sign(&confirmation).unwrap();
    inn.apply(
        now,
        vec![Command::Confirm {
            document,
            confirmation: Box::new(confirmation),
            officer: Some(officer("customs.1")),
        }],
    )
    .remove(0)
}

/// RU voids its certificate `number`.
fn void(ru: &mut Side, number: &str, now: Timestamp) -> Outcome {
    let void = kp_protocol::Void {
        certificate: number.parse().unwrap(),
        certificate_id: ru.cert(number).message_id,
        reason: "shipment cancelled".parse().unwrap(),
    };
    let document = ru.signer.sign(&void).unwrap();
    ru.apply(now, vec![Command::Void { document, void, officer: Some(officer("supervisor.1")) }]).remove(0)
}

/// `to` checks and stores what `from` has queued for it; returns the replies.
fn deliver(
    from: &Side,
    to: &mut Side,
    now: Timestamp,
    queued: Vec<(MessageId, SignedDocument, u64)>,
) -> Vec<Reply> {
    let docs: Vec<crate::verify::Delivery> = queued.into_iter().map(|(id, d, _)| (id, None, d)).collect();
    let mut replies = Vec::new();
    let mut items: Vec<Received> = Vec::new();
    let checked = link_checks(to.code, from.code, now, 300_000, &mut from.history.clone(), docs);
    let mut order = Vec::new();
    for r in checked {
        match r {
            Ok(item) => {
                order.push(None);
                items.push(item);
            }
            Err(refusal) => order.push(Some(refusal)),
        }
    }
    let mut stored =
        match to.apply(now, vec![Command::Deliveries { peer: from.code, under: None, items }]).pop() {
            Some(Outcome::Delivered(r)) => r.into_iter(),
            other => panic!("{other:?}"),
        };
    for o in order {
        replies.push(match o {
            None => stored.next().unwrap(),
            Some(refusal) => Reply::Reject { message_id: MessageId::default(), refusal },
        });
    }
    replies
}

/// `from` sends everything queued for `to`: `to` stores it, `from` records the receipts.
fn exchange(from: &mut Side, to: &mut Side, now: Timestamp) {
    let sent = from.outbox(to.code);
    let replies = deliver(from, to, now, sent.clone());
    acknowledge(from, to, now, &sent, replies);
}

/// RU and IN, with RU's certificate RU-2026-000001 issued, delivered and acknowledged at T0.
fn one_delivered(clock: &Arc<ManualClock>) -> (Side, Side) {
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = (side(RU, clock), side(IN, clock));
    submit(&mut ru, now, certificate("RU-2026-000001", "100.00"));
    exchange(&mut ru, &mut inn, now);
    (ru, inn)
}

/// `from` verifies and records the receipts in `replies` (for messages at `sent`).
fn acknowledge(
    from: &mut Side,
    to: &Side,
    now: Timestamp,
    sent: &[(MessageId, SignedDocument, u64)],
    replies: Vec<Reply>,
) {
    let oseq_of = |id: &MessageId| sent.iter().find(|(i, _, _)| i == id).map(|(_, _, o)| *o).unwrap();
    let mut receipts = Vec::new();
    let mut commands = Vec::new();
    for r in replies {
        match r {
            Reply::Receipt { receipt: r, .. } => {
                let id = r.proof.item.message_id;
                let key = to.history.signing_key_at(r.batch.key_id, r.batch.signed_at).unwrap();
                r.verify(id, key, to.code, from.code).unwrap();
                receipts.push((id, oseq_of(&id), *r));
            }
            Reply::Reject { message_id, refusal } => commands.push(Command::Rejected {
                peer: to.code,
                message_id,
                oseq: oseq_of(&message_id),
                code: refusal.code,
                detail: refusal.detail,
            }),
            // Unanswered: the sender sends it again.
            Reply::Held { .. } => {}
        }
    }
    commands.push(Command::Receipts { peer: to.code, items: receipts });
    from.apply(now, commands);
}

fn certificate(number: &str, carats: &str) -> Certificate {
    let text = include_str!("../../../../protocol/tests/fixtures/certificate.json")
        .replace("RU-2026-000123", number)
        .replace("\"1520.35\"", &format!("\"{carats}\""))
        .replace("2026-11-28", "2026-11-18")
        .replace("2027-01-27", "2027-01-10");
    let registry = Registry::default();
    let ctx = ValidationContext {
        today: Timestamp::from_unix_millis(T0).date(),
        max_validity_days: Some(60),
        participants: &registry.on(Timestamp::from_unix_millis(T0).date()),
        exporter: Some(RU),
        importer: None,
    };
    CertificateDraft::from_json(&text, &ctx).unwrap().into_certificate(|| unreachable!())
}

fn submit(ru: &mut Side, now: Timestamp, cert: Certificate) -> Outcome {
    let document = ru.signer.sign(&cert).unwrap();
    ru.apply(
        now,
        vec![Command::Submit {
            document,
            certificate: Box::new(cert),
            assigned: None,
            idempotency: None,
            officer: Some(officer("clerk.1")),
        }],
    )
    .pop()
    .unwrap()
}

#[test]
fn a_certificate_is_delivered_once_acknowledged_confirmed_and_logged_on_both_sides() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = (side(RU, &clock), side(IN, &clock));

    assert!(matches!(
        submit(&mut ru, now, certificate("RU-2026-000001", "100.00")),
        Outcome::Submitted { already_stored: false, .. }
    ));
    // Submitting the same content again is idempotent; different content is a conflict.
    assert!(matches!(
        submit(&mut ru, now, certificate("RU-2026-000001", "100.00")),
        Outcome::Submitted { already_stored: true, .. }
    ));
    assert!(matches!(
        submit(&mut ru, now, certificate("RU-2026-000001", "999.00")),
        Outcome::Refused(EngineError::Conflict(_))
    ));
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Queued);
    let queued = ru.outbox(IN);
    assert_eq!(queued.len(), 1);

    let replies = deliver(&ru, &mut inn, now, queued.clone());
    let Reply::Receipt { receipt: first, .. } = &replies[0] else { panic!("{replies:?}") };
    // A resend gets the very same receipt, and nothing new is stored.
    let again = deliver(&ru, &mut inn, now, queued.clone());
    let Reply::Receipt { receipt: second, duplicate: true } = &again[0] else { panic!() };
    assert_eq!(first, second);
    assert_eq!(inn.log().len(), 1);
    assert_eq!(inn.cert("RU-2026-000001").status, CertStatus::Received);

    acknowledge(&mut ru, &inn, now, &queued, replies);
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Delivered);
    assert!(ru.outbox(IN).is_empty());
    assert_eq!(ru.log().len(), 1);
    // A duplicate receipt changes nothing.
    acknowledge(&mut ru, &inn, now, &queued, again);
    assert_eq!(ru.log().len(), 1);

    // The same number with different content, signed by RU: refused as a conflict.
    let other = certificate("RU-2026-000001", "5.00");
    let doc = ru.signer.sign(&other).unwrap();
    let replies = deliver(&ru, &mut inn, now, vec![(doc.message_id(), doc, 0)]);
    assert!(matches!(&replies[0], Reply::Reject { refusal, .. } if refusal.code == RejectCode::Conflict));
    assert_eq!(inn.log().len(), 1);

    // IN confirms with one carat missing: a discrepancy on both sides.
    confirm(&mut inn, "RU-2026-000001", "409.00", now);
    assert_eq!(inn.cert("RU-2026-000001").status, CertStatus::ImportDiscrepancy);
    exchange(&mut inn, &mut ru, now);
    let rec = ru.cert("RU-2026-000001");
    assert_eq!(rec.status, CertStatus::ImportDiscrepancy);
    assert_eq!(
        rec.confirmation.unwrap().discrepancy.as_deref(),
        Some("carats: certified 410.00, received 409.00 (-1.00)")
    );
    assert!(inn.cert("RU-2026-000001").confirmation.unwrap().acknowledged);

    // Both logs chain.
    for side in [&ru, &inn] {
        let log = side.log();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].prev_hash, log[0].hash());
        assert_eq!(log[0].prev_hash, kp_protocol::Digest::ZERO);
    }

    // Each node's entries of what it sent name the officer who had it done there, taken
    // from the command when it was queued; a partner's deliveries name nobody of this node.
    let (ru_log, in_log) = (ru.log(), inn.log());
    assert_eq!(ru_log[0].officer, Some(officer("clerk.1")), "RU's certificate, sent");
    assert_eq!(ru_log[1].officer, None, "IN's confirmation, received");
    assert_eq!(in_log[0].officer, None, "RU's certificate, received");
    assert_eq!(in_log[1].officer, Some(officer("customs.1")), "IN's confirmation, sent");
    // The officer is this node's business: nothing a partner got names them.
    for entry in ru_log.iter().chain(&in_log) {
        let signed = kp_protocol::codec::encode(entry.document());
        assert!(!signed.windows(7).any(|w| w == b"clerk.1" || w == b"customs"), "{entry:?}");
    }
}

#[test]
fn a_format_2_entry_keeps_its_bytes_and_hash_and_reads_with_no_officer() {
    use crate::storage::{EntryBody, EntryLayout};
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let signer = side(RU, &clock).signer;
    let document = signer.sign(&certificate("RU-2026-000001", "1.00")).unwrap();
    let now = Timestamp::from_unix_millis(T0);
    // A format-2 entry as kpnode-store/2 encoded it: the same fields, no officer.
    #[derive(bincode::Encode)]
    struct Format2 {
        seq: u64,
        prev_hash: kp_protocol::Digest,
        recorded_at: Timestamp,
        body: EntryBody,
    }
    let body = EntryBody::Recorded { document };
    let old = kp_protocol::codec::encode(&Format2 {
        seq: 7,
        prev_hash: kp_protocol::Digest::of(b"prev"),
        recorded_at: now,
        body: body.clone(),
    });
    let read = LogEntry::decode_stored(&old).unwrap();
    assert_eq!((read.layout, read.officer.as_ref()), (EntryLayout::Format2, None));
    assert_eq!(kp_protocol::codec::encode(&read), old, "re-encoded in its own layout: the same bytes");
    assert_eq!(read.hash(), crate::storage::hash_entry_bytes(&read.prev_hash, &old));

    // Today's layout, with and without an officer, reads back as written; each layout's
    // bytes are refused as the other (a record decodes to its last byte).
    for who in [None, Some(officer("A. Petrova"))] {
        let new = LogEntry::new(7, kp_protocol::Digest::of(b"prev"), now, body.clone(), who.clone());
        let bytes = kp_protocol::codec::encode(&new);
        assert_eq!(bytes.len(), old.len() + 1 + who.as_ref().map_or(0, |o| 8 + o.as_str().len()));
        assert_eq!(LogEntry::decode_stored(&bytes).unwrap(), new);
        assert_ne!(new.hash(), read.hash(), "the officer is inside the hashed entry");
    }
}

#[test]
fn nothing_unflushed_survives_a_crash_and_the_engine_reloads_its_head() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = (side(RU, &clock), side(IN, &clock));
    submit(&mut ru, now, certificate("RU-2026-000001", "100.00"));
    submit(&mut ru, now, certificate("RU-2026-000002", "100.00"));
    let queued = ru.outbox(IN);
    deliver(&ru, &mut inn, now, queued[..1].to_vec());

    // The second delivery is committed but not flushed when IN loses power.
    let docs = queued[1..].iter().map(|(_, d, _)| d.clone()).collect();
    let items = checked_by_link(now, &mut ru.history.clone(), docs);
    inn.engine.apply(&inn.store, now, vec![Command::Deliveries { peer: RU, under: None, items }]).unwrap();
    inn.store.crash();
    inn.engine = Engine::load(&inn.store, inn.signer.clone()).unwrap();
    assert_eq!(inn.engine.head().next_seq, 2);
    assert_eq!(inn.log().len(), 1);
    assert!(get_record::<CertRecord, _>(&inn.store, Tree::Certs, b"RU-2026-000002").unwrap().is_none());

    // The resend after restart is stored and acknowledged; the log still chains.
    let replies = deliver(&ru, &mut inn, now, queued.clone());
    assert!(replies.iter().all(|r| matches!(r, Reply::Receipt { .. })));
    let log = inn.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].prev_hash, log[0].hash());
}

#[test]
fn voided_certificates_cannot_be_confirmed() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = one_delivered(&clock);

    void(&mut ru, "RU-2026-000001", now);
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Voided);
    exchange(&mut ru, &mut inn, now);
    assert_eq!(inn.cert("RU-2026-000001").status, CertStatus::Voided);
    assert!(crate::engine::confirmable(&inn.cert("RU-2026-000001")).is_some());
}

/// A participant's keys and the record `IN` stores when it enrols its bundle.
struct Enrollee {
    signing: SigningKeyPair,
    tls: kp_keys::TlsKeyPair,
    record: crate::storage::PeerRecord,
}

fn enrollee(code: ParticipantCode) -> Enrollee {
    enrollee_at(IN, code)
}

/// As [`enrollee`], the record `me` stores.
fn enrollee_at(me: ParticipantCode, code: ParticipantCode) -> Enrollee {
    let signing = SigningKeyPair::generate();
    let tls = kp_keys::TlsKeyPair::generate();
    let bundle = crate::testkit::bundle(
        code,
        &signing,
        kp_keys::tlscert::self_signed(&tls, code).unwrap(),
        Timestamp::from_unix_millis(T0 - 1000),
        Timestamp::from_unix_millis(T0),
    );
    let (record, _) = crate::enrol::prepare(
        me,
        &bundle.to_armored(),
        &bundle.fingerprint.to_string(),
        None,
        Timestamp::from_unix_millis(T0),
    )
    .unwrap();
    Enrollee { signing, tls, record }
}

/// IN (on `clock`) with RU enrolled from a fresh bundle.
fn in_with_ru(clock: &Arc<ManualClock>) -> (Side, Enrollee) {
    let mut inn = side(IN, clock);
    let ru = enrollee(RU);
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
    (inn, ru)
}

/// The key history a link to `e` starts from: its enrolled bundle's.
fn link_history(e: &Enrollee) -> KeyHistory {
    crate::trust::PeerTrust::from_record(&e.record).unwrap().history
}

fn enrol(to: &mut Side, e: &Enrollee, replace_identity: bool) -> Outcome {
    let now = Timestamp::from_unix_millis(T0);
    to.apply(
        now,
        vec![Command::EnrolPeer { record: Box::new(e.record.clone()), replace_identity, officer: None }],
    )
    .remove(0)
}

#[test]
fn the_store_refuses_a_rotation_to_another_participants_tls_key_even_past_the_link() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let mut inn = side(IN, &clock);
    let (ru, kz) = (enrollee(RU), enrollee(ParticipantCode::from_static("KZ")));
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
    assert!(matches!(enrol(&mut inn, &kz, false), Outcome::Done));
    // RU's statement claiming KZ's TLS key, with KZ's proof (as if RU held KZ's key): every
    // check a link makes on RU's history alone passes.
    let now = Timestamp::from_unix_millis(T0 + 10);
    let kz_cert = kp_keys::tlscert::self_signed(&kz.tls, ParticipantCode::from_static("KZ")).unwrap();
    let mut body = kp_protocol::KeyRotation {
        participant: RU,
        sequence: 1,
        previous_key: ru.signing.key_id(),
        new_signing_key: None,
        new_tls_certificate: Some(kz_cert),
        effective_from: now,
        tls_possession: None,
    };
    kz.tls.prove_possession(&mut body);
    let doc = SignedDocument::sign(&body, RU, ru.signing.signing_key(), now);
    let mut history = link_history(&ru);
    let items = checked_by_link(now, &mut history, vec![doc.clone()]);
    let replies = stored_replies(&mut inn, now, items);
    match &replies[..] {
        [Reply::Reject { refusal, .. }] => {
            assert!(refusal.detail.contains("already bound to KZ"), "{refusal}")
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    let stored: crate::storage::PeerRecord =
        get_record(&inn.store, Tree::Peers, &RU.as_bytes()).unwrap().unwrap();
    assert!(stored.rotations.is_empty());
}

#[test]
fn enrolment_is_judged_against_the_stored_record_in_the_transaction() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (mut inn, ru) = in_with_ru(&clock);
    // RU rotates; IN receives the statement over the wire (stored in the record).
    let now = Timestamp::from_unix_millis(T0 + 10);
    let new_key = SigningKeyPair::generate();
    let body = kp_protocol::KeyRotation::new_with_signing_key(
        RU,
        1,
        ru.signing.key_id(),
        new_key.signing_key(),
        None,
        now,
    );
    let doc = SignedDocument::sign(&body, RU, ru.signing.signing_key(), now);
    let mut history = link_history(&ru);
    let items = checked_by_link(now, &mut history, vec![doc]);
    stored_replies(&mut inn, now, items);
    // The bundle from before the rotation is older than what IN holds.
    match enrol(&mut inn, &ru, false) {
        Outcome::Refused(EngineError::Enrol(crate::enrol::EnrolError::Older {
            held: 1, given: 0, ..
        })) => {}
        other => panic!("expected an Older refusal, got {other:?}"),
    }
    // A new identity needs the flag, and the old one is archived.
    let ru2 = enrollee(RU);
    match enrol(&mut inn, &ru2, false) {
        Outcome::Refused(EngineError::Enrol(e @ crate::enrol::EnrolError::IdentityChange { .. })) => {
            assert!(e.to_string().contains("--replace-identity"), "{e}")
        }
        other => panic!("expected an IdentityChange refusal, got {other:?}"),
    }
    // Replaced after the rotation took effect.
    let replaced = Timestamp::from_unix_millis(T0 + 30);
    let command =
        Command::EnrolPeer { record: Box::new(ru2.record.clone()), replace_identity: true, officer: None };
    assert!(matches!(inn.apply(replaced, vec![command]).remove(0), Outcome::Done));
    let trust = crate::trust::load(&inn.store).unwrap();
    let ru_trust = trust.known(RU).unwrap();
    assert_eq!(ru_trust.archived.len(), 1);
    assert_eq!(ru_trust.archived[0].history.rotations().len(), 1, "the archive keeps the wire rotation");
    // Keys of the old identity still verify what was signed under them, before it was
    // replaced.
    ru_trust.signing_key_at(new_key.key_id(), Timestamp::from_unix_millis(T0 + 20)).unwrap();
    // (Through the replacement's own millisecond: what was signed then may be stored before
    // it, in its batch.)
    ru_trust.signing_key_at(new_key.key_id(), replaced).unwrap();
    ru_trust.signing_key_at(new_key.key_id(), replaced.saturating_add_millis(1)).unwrap_err();
    ru_trust.signing_key_at(ru2.signing.key_id(), Timestamp::from_unix_millis(T0 + 20)).unwrap();
}

/// A hostile importer receives the exporter's void, never acknowledges it, and sends an import
/// confirmation instead: the exporter's void stays authoritative (the confirmation is refused
/// with a reject naming the void) and the importer's record shows the refusal.
#[test]
fn an_importer_cannot_undo_the_exporters_void_with_a_confirmation() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = one_delivered(&clock);

    void(&mut ru, "RU-2026-000001", now);
    // IN holds the void (never acknowledged), and confirms the import instead.
    confirm(&mut inn, "RU-2026-000001", "410.00", now);
    let sent = inn.outbox(RU);
    let replies = deliver(&inn, &mut ru, now, sent.clone());
    let Reply::Reject { refusal, .. } = &replies[0] else {
        panic!("the confirmation was stored: {replies:?}")
    };
    assert_eq!(refusal.code, RejectCode::Voided, "{refusal:?}");
    assert!(refusal.detail.contains("RU voided certificate RU-2026-000001"), "{}", refusal.detail);
    let rec = ru.cert("RU-2026-000001");
    assert_eq!(rec.status, CertStatus::Voided);
    assert!(rec.confirmation.is_none(), "{rec:?}");
    assert!(crate::engine::voidable(&rec).is_some_and(|why| why.contains("already voided")));

    acknowledge(&mut inn, &ru, now, &sent, replies);
    let theirs = inn.cert("RU-2026-000001").confirmation.unwrap();
    assert_eq!(theirs.rejection.map(|r| r.code), Some(RejectCode::Voided));
}

fn submit_keyed(ru: &mut Side, now: Timestamp, cert: Certificate, key: &str, body: &str) -> Outcome {
    let document = ru.signer.sign(&cert).unwrap();
    let idempotency = Some(crate::engine::Idempotency {
        key: key.to_owned(),
        content: kp_protocol::Digest::of(body.as_bytes()),
    });
    ru.apply(
        now,
        vec![Command::Submit {
            document,
            certificate: Box::new(cert),
            assigned: None,
            idempotency,
            officer: None,
        }],
    )
    .pop()
    .unwrap()
}

fn submitted_number(o: &Outcome) -> (String, bool) {
    match o {
        Outcome::Submitted { record, already_stored } => (record.number.to_string(), *already_stored),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_idempotency_key_returns_the_first_certificate_refuses_other_content_and_expires() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let mut ru = side(RU, &clock);

    let first = submit_keyed(&mut ru, now, certificate("RU-2026-000001", "100.00"), "k1", "body A");
    assert_eq!(submitted_number(&first), ("RU-2026-000001".into(), false));
    // A retry of the same request, numbered anew by the API: the first certificate, no second.
    let again = submit_keyed(&mut ru, now, certificate("RU-2026-000002", "100.00"), "k1", "body A");
    assert_eq!(submitted_number(&again), ("RU-2026-000001".into(), true));
    assert_eq!(ru.outbox(IN).len(), 1);
    assert!(get_record::<CertRecord, _>(&ru.store, Tree::Certs, b"RU-2026-000002").unwrap().is_none());
    // The same key with another body is refused, naming the first certificate.
    match submit_keyed(&mut ru, now, certificate("RU-2026-000003", "999.00"), "k1", "body B") {
        Outcome::Refused(e @ EngineError::IdempotencyConflict { .. }) => {
            assert!(e.to_string().contains("RU-2026-000001"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Two requests with one key in the same batch: the second gets the first's certificate.
    let (a, b) = (certificate("RU-2026-000004", "100.00"), certificate("RU-2026-000005", "100.00"));
    let idem = Some(crate::engine::Idempotency { key: "k2".into(), content: kp_protocol::Digest::of(b"x") });
    let out = ru.apply(
        now,
        vec![
            Command::Submit {
                document: ru.signer.sign(&a).unwrap(),
                certificate: Box::new(a),
                assigned: None,
                idempotency: idem.clone(),
                officer: None,
            },
            Command::Submit {
                document: ru.signer.sign(&b).unwrap(),
                certificate: Box::new(b),
                assigned: None,
                idempotency: idem,
                officer: None,
            },
        ],
    );
    assert_eq!(submitted_number(&out[1]), ("RU-2026-000004".into(), true));

    // After the window the key is forgotten: the same request issues a new certificate, and
    // the expired keys are removed from the store.
    let later = now.saturating_add_millis((crate::engine::IDEMPOTENCY_WINDOW_DAYS + 1) * 86_400_000);
    let renewed = submit_keyed(&mut ru, later, certificate("RU-2026-000006", "100.00"), "k1", "body A");
    assert_eq!(submitted_number(&renewed), ("RU-2026-000006".into(), false));
    let k2 = crate::engine::idempotency_meta_key("k2");
    assert!(ru.store.get(Tree::Meta, &k2).unwrap().is_none(), "the expired key k2 is pruned");
    let k1 = crate::engine::idempotency_meta_key("k1");
    assert!(ru.store.get(Tree::Meta, &k1).unwrap().is_some(), "k1 is remembered again");
}

/// Two imports planned at once (each before the other was recorded): the newer list's change
/// is recorded first, then the stale list's. The store re-checks each change against what it
/// holds, in the transaction, so the stale list does not undo the newer one.
#[test]
fn a_stale_list_recorded_after_a_newer_one_is_refused_by_the_store() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let mut inn = side(IN, &clock);
    let cf_code = ParticipantCode::from_static("CF");
    let active = crate::registry::shipped()[&cf_code].clone();
    let suspended =
        kp_protocol::ParticipantEntry { status: kp_protocol::ParticipantStatus::Suspended, ..active.clone() };
    let origin = |ms: i64, revision: u64| crate::registry::ListOrigin {
        issuer: RU,
        issued_at: Timestamp::from_unix_millis(T0 - ms),
        revision: Some(revision),
    };
    let record =
        |entry, origin| Command::record_participant(&inn.signer, entry, "list", Some(origin), None).unwrap();
    let (newer, stale) = (record(suspended, origin(1_000, 2)), record(active, origin(2_000, 1)));
    assert!(matches!(inn.apply(now, vec![newer]).remove(0), Outcome::Done));
    match inn.apply(now, vec![stale]).remove(0) {
        Outcome::Refused(e @ EngineError::OlderList(_)) => {
            assert!(e.to_string().contains("newer than this list's revision 1"), "{e}")
        }
        other => panic!("the stale list's change was recorded: {other:?}"),
    }
    let history: crate::registry::RegistryHistory =
        get_record(&inn.store, Tree::Registry, &crate::registry::key(cf_code)).unwrap().unwrap();
    assert_eq!(history.0.len(), 1);
    assert_eq!(history.0[0].entry.status, kp_protocol::ParticipantStatus::Suspended);
    assert_eq!(inn.log().len(), 1, "nothing logged for the refused change");
}

/// A certificate's `signed_at` may not lie before its issue date (one day of tolerance): the
/// lower bound on a certificate's signing time, as the clock tolerance is the upper one.
#[test]
fn a_certificate_signed_before_its_issue_date_is_refused() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = (side(RU, &clock), side(IN, &clock));
    // RU's key has been valid for a year, so the signing time lies in its window.
    ru.history = KeyHistory::genesis(
        RU,
        ru.history.root().public_key.as_bytes(),
        Timestamp::from_unix_millis(T0 - 365 * DAY),
        ru.history.current_tls().certificate_der.clone(),
    )
    .unwrap();
    clock.set(Timestamp::from_unix_millis(T0 - 30 * DAY));
    submit(&mut ru, now, certificate("RU-2026-000001", "100.00"));
    clock.set(now);
    let sent = ru.outbox(IN);
    assert_eq!(sent[0].1.signed_at, Timestamp::from_unix_millis(T0 - 30 * DAY));
    match &deliver(&ru, &mut inn, now, sent)[..] {
        [Reply::Reject { refusal, .. }] => {
            assert_eq!(refusal.code, RejectCode::InvalidDocument);
            assert!(refusal.detail.contains("before its issue date 2026-11-18"), "{refusal}");
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    assert!(get_record::<CertRecord, _>(&inn.store, Tree::Certs, b"RU-2026-000001").unwrap().is_none());
}

/// A link checks RU's batch against identity A; before the store commits it, the operator's
/// identity replacement (A → B) is committed. The trust change wins: the batch is refused
/// whole, with the reason, and nothing of it is stored or receipted. The same holds for a
/// removal.
#[test]
fn a_batch_checked_before_a_trust_change_is_refused_when_committed_after_it() {
    use crate::engine::CheckedUnder;
    use crate::trust::Distrust;
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (mut inn, ru) = in_with_ru(&clock);
    let now = Timestamp::from_unix_millis(T0 + 10);
    // What the link does: check against the trust in force (identity A), note what it
    // checked under.
    let history = link_history(&ru);
    let under = CheckedUnder {
        root_key: history.root().public_key.to_bytes(),
        tls_key: history.tls_keys()[0].public_key,
    };
    let check = |number: &str| {
        let doc = SignedDocument::sign(&certificate(number, "100.00"), RU, ru.signing.signing_key(), now);
        checked_by_link(now, &mut history.clone(), vec![doc]).remove(0)
    };
    let deliver = |inn: &mut Side, item: Received| {
        inn.apply(now, vec![Command::Deliveries { peer: RU, under: Some(under), items: vec![item] }])
            .remove(0)
    };

    // With no change in between, the batch is stored and receipted.
    match deliver(&mut inn, check("RU-2026-000001")) {
        Outcome::Delivered(r) => {
            assert!(matches!(&r[..], [Reply::Receipt { duplicate: false, .. }]), "{r:?}")
        }
        other => panic!("{other:?}"),
    }

    // Checked under A; then B replaces A; then the commit.
    let item = check("RU-2026-000002");
    assert!(matches!(enrol(&mut inn, &enrollee(RU), true), Outcome::Done));
    match deliver(&mut inn, item) {
        Outcome::Refused(e @ EngineError::Untrusted { peer: RU, why: Distrust::IdentityReplaced }) => {
            assert!(e.to_string().contains("no longer in force"), "{e}")
        }
        other => panic!("expected the batch refused for the identity change, got {other:?}"),
    }
    assert!(get_record::<CertRecord, _>(&inn.store, Tree::Certs, b"RU-2026-000002").unwrap().is_none());
    let kinds = |inn: &Side| inn.log().iter().map(|e| e.document().kind.name()).collect::<Vec<_>>();
    // The enrolments are this node's own signed records; of RU's certificates, only the first.
    assert_eq!(kinds(&inn), ["peer-change", "certificate", "peer-change"]);

    // A removal committed between the check and the commit wins the same way.
    let mut inn = side(IN, &clock);
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
    let item = check("RU-2026-000003");
    assert!(matches!(
        inn.apply(now, vec![Command::RemovePeer { participant: RU, officer: None }]).remove(0),
        Outcome::Done
    ));
    match deliver(&mut inn, item) {
        Outcome::Refused(EngineError::Untrusted { peer: RU, why: Distrust::Removed }) => {}
        other => panic!("expected the batch refused for the removal, got {other:?}"),
    }
    assert_eq!(kinds(&inn), ["peer-change", "peer-change"], "the enrolment and the removal, no certificate");
    let actions: Vec<_> =
        inn.log().iter().map(|e| e.document().body::<kp_protocol::PeerChange>().unwrap().action).collect();
    assert_eq!(actions, [kp_protocol::PeerAction::Enrolled, kp_protocol::PeerAction::Removed]);
}

const DAY: i64 = 86_400_000;

/// RU replaces its signing key at `at` (by the node's own path, [`Signer::rotate`]); IN's
/// copy of RU's history learns it, as it would from the statement delivered over the link.
fn rotate(ru: &mut Side, clock: &ManualClock, at: Timestamp) {
    clock.set(at);
    let new_key = SigningKeyPair::generate();
    let statement = ru
        .signer
        .rotate(|old, effective| {
            let body = kp_protocol::KeyRotation::new_with_signing_key(
                RU,
                1,
                old.key_id(),
                new_key.signing_key(),
                None,
                effective,
            );
            let doc = kp_keys::backend::sign_document(old.as_ref(), &body, RU, effective).unwrap();
            Ok::<_, std::convert::Infallible>((Some(new_key.into()), doc))
        })
        .unwrap();
    ru.history.apply(&statement).unwrap();
}

fn rejected(replies: &[Reply]) -> &crate::verify::Refusal {
    match replies {
        [Reply::Reject { refusal, .. }] => refusal,
        other => panic!("expected a reject, got {other:?}"),
    }
}

/// RU issues two certificates at T0; IN stores the first and answers with `original`, a
/// receipt lost on the way back: RU still has both queued. Returns (ru, inn, what RU sent,
/// the receipt).
fn first_of_two_stored_receipt_lost(
    clock: &Arc<ManualClock>,
) -> (Side, Side, Queued, Box<kp_protocol::MessageReceipt>) {
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = (side(RU, clock), side(IN, clock));
    submit(&mut ru, now, certificate("RU-2026-000001", "100.00"));
    submit(&mut ru, now, certificate("RU-2026-000002", "100.00"));
    let sent = ru.outbox(IN);
    let mut replies = deliver(&ru, &mut inn, now, sent[..1].to_vec());
    let Reply::Receipt { receipt: original, duplicate: false } = replies.remove(0) else {
        panic!("{replies:?}")
    };
    (ru, inn, sent, original)
}

/// The receipt for a certificate is lost; RU rotates its signing key and the grace period
/// for documents signed with the old one passes before RU sends the certificate again. IN
/// holds it, so it answers with the original receipt: a refusal would leave RU's copy
/// `rejected` while IN's is `received` (exactly-once broken in effect). A certificate IN
/// does not hold, signed with the old key, is still refused, and so is an altered copy of
/// the stored one.
#[test]
fn a_resend_after_a_rotation_and_the_grace_period_gets_the_original_receipt() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (mut ru, mut inn, sent, original) = first_of_two_stored_receipt_lost(&clock);
    let original = &original;
    // The receipt is lost on the way back: RU still has the certificate queued.
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Queued);

    rotate(&mut ru, &clock, Timestamp::from_unix_millis(T0 + DAY));
    // Eight days later, past the seven days of grace `deliver` gives retired keys.
    let later = Timestamp::from_unix_millis(T0 + 9 * DAY);
    clock.set(later);
    let again = deliver(&ru, &mut inn, later, sent[..1].to_vec());
    match &again[..] {
        [Reply::Receipt { receipt, duplicate: true }] => assert_eq!(receipt, original),
        other => panic!("expected the original receipt, got {other:?}"),
    }
    assert_eq!(inn.log().len(), 1, "nothing new is stored");
    acknowledge(&mut ru, &inn, later, &sent[..1], again);
    let rec = ru.cert("RU-2026-000001");
    assert_eq!(rec.status, CertStatus::Delivered, "{:?}", rec.rejection);

    // A certificate IN never received, signed with the retired key, is refused for it.
    let refusal = rejected(&deliver(&ru, &mut inn, later, sent[1..].to_vec())).clone();
    assert_eq!(refusal.code, RejectCode::UnknownKey, "{refusal}");
    assert!(refusal.detail.contains("grace period"), "{refusal}");
    assert!(get_record::<CertRecord, _>(&inn.store, Tree::Certs, b"RU-2026-000002").unwrap().is_none());

    // The stored certificate with its signature altered is another document: refused too.
    let mut forged = sent[0].1.clone();
    forged.signature[40] ^= 1;
    let refusal = rejected(&deliver(&ru, &mut inn, later, vec![(forged.message_id(), forged, 0)])).clone();
    assert_eq!(refusal.code, RejectCode::UnknownKey, "{refusal}");
    // And a frame naming the stored message's id over other bytes is refused before any lookup.
    let refusal = rejected(&deliver(&ru, &mut inn, later, vec![(sent[0].0, sent[1].1.clone(), 0)])).clone();
    assert_eq!(refusal.code, RejectCode::InvalidDocument, "{refusal}");
    assert!(refusal.detail.contains("the frame names message"), "{refusal}");
    assert_eq!(inn.log().len(), 1);
}

/// The same for a certificate that expires between the lost receipt and the resend: the
/// importer holds it, so the exporter gets the original receipt, while a certificate sent for
/// the first time after its expiry is refused.
#[test]
fn a_resend_of_a_certificate_that_has_since_expired_gets_the_original_receipt() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (mut ru, mut inn, sent, original) = first_of_two_stored_receipt_lost(&clock);
    let original = &original;

    // The certificates expire on 2027-01-10.
    let later = Timestamp::from_unix_millis(T0 + 60 * DAY);
    assert!(later.date() > ru.cert("RU-2026-000001").expires_on);
    clock.set(later);
    let again = deliver(&ru, &mut inn, later, sent[..1].to_vec());
    match &again[..] {
        [Reply::Receipt { receipt, duplicate: true }] => assert_eq!(receipt, original),
        other => panic!("expected the original receipt, got {other:?}"),
    }
    acknowledge(&mut ru, &inn, later, &sent[..1], again);
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Delivered);
    assert_eq!(inn.cert("RU-2026-000001").status, CertStatus::Received);

    let replies = deliver(&ru, &mut inn, later, sent[1..].to_vec());
    let refusal = rejected(&replies).clone();
    assert_eq!(refusal.code, RejectCode::Expired, "{refusal}");
    acknowledge(&mut ru, &inn, later, &sent[1..], replies);
    assert_eq!(ru.cert("RU-2026-000002").status, CertStatus::Rejected);
    assert_eq!(inn.log().len(), 1);
}

/// A certificate in the EU's own name, signed by the EU's own node.
fn eu_certificate(number: &str) -> Certificate {
    let text = include_str!("../../../../protocol/tests/fixtures/certificate.json")
        .replace("RU-2026-000123", number)
        .replace(r#""exporting_participant": "RU""#, r#""exporting_participant": "EU""#)
        .replace("2026-11-28", "2026-11-18")
        .replace("2027-01-27", "2027-01-10");
    let registry = Registry::default();
    let today = Timestamp::from_unix_millis(T0).date();
    let ctx = ValidationContext {
        today,
        max_validity_days: Some(60),
        participants: &registry.on(today),
        // As parsed from a file, before the issuer's rules: the test signs what it likes.
        exporter: None,
        importer: None,
    };
    CertificateDraft::from_json(&text, &ctx).unwrap().into_certificate(|| unreachable!())
}

/// The union's own node issues in its own name, but `EU-DE-…` is DE's node's range: IN
/// refuses such a certificate signed by the EU's node, naming the range, and accepts one
/// numbered outside every member's range.
#[test]
fn the_importer_refuses_a_members_number_from_the_unions_own_node() {
    const EU: ParticipantCode = ParticipantCode::from_static("EU");
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (eu, mut inn) = (side(EU, &clock), side(IN, &clock));
    let taken = eu.signer.sign(&eu_certificate("EU-DE-2026-000001")).unwrap();
    let refusal = rejected(&deliver(&eu, &mut inn, now, vec![(taken.message_id(), taken, 0)])).clone();
    assert_eq!(refusal.code, RejectCode::InvalidDocument, "{refusal}");
    assert!(refusal.detail.contains("EU-DE-2026-000001 is in DE's range"), "{refusal}");
    assert!(get_record::<CertRecord, _>(&inn.store, Tree::Certs, b"EU-DE-2026-000001").unwrap().is_none());

    let own = eu.signer.sign(&eu_certificate("EU-2026-000001")).unwrap();
    match &deliver(&eu, &mut inn, now, vec![(own.message_id(), own, 0)])[..] {
        [Reply::Receipt { duplicate: false, .. }] => {}
        other => panic!("expected a receipt, got {other:?}"),
    }
    assert_eq!(inn.cert("EU-2026-000001").peer, EU);
}

/// A resolution is judged on receipt. Only the certificate's other
/// participant may send one, only for a certificate in `import_discrepancy`, and only once;
/// a resend gets its first receipt.
#[test]
fn a_resolution_is_accepted_only_from_the_partner_for_a_discrepancy_once() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    const AE: ParticipantCode = ParticipantCode::from_static("AE");
    let (mut ru, mut inn, ae) = (side(RU, &clock), side(IN, &clock), side(AE, &clock));
    let cert = certificate("RU-2026-000001", "100.00");
    submit(&mut ru, now, cert.clone());
    exchange(&mut ru, &mut inn, now);
    let resolution = |note: &str| kp_protocol::Resolution {
        certificate: cert.number.clone(),
        certificate_id: ru.cert("RU-2026-000001").message_id,
        note: note.parse().unwrap(),
        resolved_by: "Gokhran".parse().unwrap(),
    };
    let refused = |replies: &[Reply]| match &replies[0] {
        Reply::Reject { refusal, .. } => refusal.clone(),
        other => panic!("accepted: {other:?}"),
    };
    let send = |from: &Side, to: &mut Side, note: &str| {
        let doc = from.signer.sign(&resolution(note)).unwrap();
        deliver(from, to, now, vec![(doc.message_id(), doc, 0)])
    };
    let resolution_at = |s: &Side| {
        get_record::<crate::storage::ResolutionRecord, _>(
            &s.store,
            Tree::Meta,
            &crate::storage::resolution_key(&cert.number),
        )
        .unwrap()
    };

    // No discrepancy yet: refused, nothing stored.
    let r = refused(&send(&ru, &mut inn, "early"));
    assert_eq!(r.code, RejectCode::Conflict);
    assert!(r.detail.contains("only a certificate in import_discrepancy can be resolved"), "{}", r.detail);
    assert!(resolution_at(&inn).is_none());

    // IN confirms with a carat missing: a discrepancy.
    confirm(&mut inn, "RU-2026-000001", "409.00", now);
    assert_eq!(inn.cert("RU-2026-000001").status, CertStatus::ImportDiscrepancy);

    // A third participant cannot resolve someone else's certificate.
    let r = refused(&send(&ae, &mut inn, "not mine"));
    assert_eq!(r.code, RejectCode::UnknownCertificate);
    assert!(r.detail.contains("only the two participants"), "{}", r.detail);
    assert!(resolution_at(&inn).is_none());

    // The exporter can; a resend gets a receipt again, another resolution is refused.
    let doc = ru.signer.sign(&resolution("settled")).unwrap();
    let first = deliver(&ru, &mut inn, now, vec![(doc.message_id(), doc.clone(), 0)]);
    assert!(matches!(&first[0], Reply::Receipt { duplicate: false, .. }), "{first:?}");
    let stored = resolution_at(&inn).unwrap();
    assert_eq!((stored.participant, stored.note.as_str()), (RU, "settled"));
    let again = deliver(&ru, &mut inn, now, vec![(doc.message_id(), doc, 0)]);
    assert!(matches!(&again[0], Reply::Receipt { duplicate: true, .. }), "{again:?}");
    let r = refused(&send(&ru, &mut inn, "settled differently"));
    assert_eq!(r.code, RejectCode::Conflict);
    assert!(r.detail.contains("already resolved by RU"), "{}", r.detail);
    assert_eq!(resolution_at(&inn).unwrap().note, "settled");
}

fn stored_replies(inn: &mut Side, now: Timestamp, items: Vec<Received>) -> Vec<Reply> {
    match inn.apply(now, vec![Command::Deliveries { peer: RU, under: None, items }]).remove(0) {
        Outcome::Delivered(r) => r,
        other => panic!("{other:?}"),
    }
}

fn signing_rotation(
    ru: &Enrollee,
    new_key: &SigningKeyPair,
    signed_at: i64,
    effective_from: i64,
) -> SignedDocument {
    let body = kp_protocol::KeyRotation::new_with_signing_key(
        RU,
        1,
        ru.signing.key_id(),
        new_key.signing_key(),
        None,
        Timestamp::from_unix_millis(effective_from),
    );
    SignedDocument::sign(&body, RU, ru.signing.signing_key(), Timestamp::from_unix_millis(signed_at))
}

fn rejection(reply: &Reply) -> String {
    match reply {
        Reply::Reject { refusal, .. } => refusal.detail.clone(),
        other => panic!("expected a reject, got {other:?}"),
    }
}

/// Review High 2: RU sends rotation 1 to key X on one link and another rotation 1 to key Y on
/// a second link, then certificates signed with Y. Each link checks against its own copy;
/// the store keeps the first and refuses the fork and everything signed under it, in the
/// same batch and in later ones.
#[test]
fn a_second_rotation_with_the_same_sequence_is_refused_as_a_fork_with_what_it_signed() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (mut inn, ru) = in_with_ru(&clock);
    let now = Timestamp::from_unix_millis(T0 + 10);
    let (kx, ky) = (SigningKeyPair::generate(), SigningKeyPair::generate());
    let x = signing_rotation(&ru, &kx, T0 + 10, T0 + 10);
    let y = signing_rotation(&ru, &ky, T0 + 10, T0 + 10);
    let before = link_history(&ru);
    let (mut link_a, mut link_b) = (before.clone(), before);

    let items = checked_by_link(now, &mut link_a, vec![x.clone()]);
    assert!(matches!(&stored_replies(&mut inn, now, items)[..], [Reply::Receipt { .. }]));

    let cert = |n: &str| SignedDocument::sign(&certificate(n, "100.00"), RU, ky.signing_key(), now);
    let items = checked_by_link(now, &mut link_b, vec![y, cert("RU-2026-000001")]);
    let replies = stored_replies(&mut inn, now, items);
    assert_eq!(replies.len(), 2);
    let fork = rejection(&replies[0]);
    assert!(fork.contains("the key history forks"), "{fork}");
    let signed_under_fork = rejection(&replies[1]);
    assert!(
        signed_under_fork.contains("not in the key history this node holds for RU"),
        "{signed_under_fork}"
    );
    // A later batch on the same link, still checked against the forked copy.
    let items = checked_by_link(now, &mut link_b, vec![cert("RU-2026-000002")]);
    let later = rejection(&stored_replies(&mut inn, now, items)[0]);
    assert!(later.contains("not in the key history"), "{later}");

    assert!(get_record::<CertRecord, _>(&inn.store, Tree::Certs, b"RU-2026-000001").unwrap().is_none());
    assert!(get_record::<CertRecord, _>(&inn.store, Tree::Certs, b"RU-2026-000002").unwrap().is_none());
    let stored: crate::storage::PeerRecord =
        get_record(&inn.store, Tree::Peers, &RU.as_bytes()).unwrap().unwrap();
    assert_eq!(stored.rotations, vec![x], "the first rotation stays");
    // The same statement again (as a bundle or another link would bring it) is still taken.
    let mut fresh = link_history(&ru);
    let items = checked_by_link(now, &mut fresh, vec![stored.rotations[0].clone()]);
    assert!(matches!(&stored_replies(&mut inn, now, items)[..], [Reply::Receipt { .. }]));
}

/// Review High 1: RU backdates both `signed_at` and `effective_from` of a signing-key
/// rotation to just after its key was made. The statement is consistent in itself, but it
/// would disown the certificate IN already stored: refused.
#[test]
fn a_rotation_backdated_with_its_signing_time_cannot_disown_stored_documents() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (mut inn, ru) = in_with_ru(&clock);
    let now = Timestamp::from_unix_millis(T0 + 100);
    let mut link = link_history(&ru);
    let cert =
        SignedDocument::sign(&certificate("RU-2026-000001", "100.00"), RU, ru.signing.signing_key(), now);
    let items = checked_by_link(now, &mut link, vec![cert]);
    assert!(matches!(&stored_replies(&mut inn, now, items)[..], [Reply::Receipt { .. }]));

    let root_from = link.root().valid_from.unix_millis();
    let new_key = SigningKeyPair::generate();
    for (signed, effective) in [(root_from + 1, root_from + 1), (T0 + 100, T0 + 100)] {
        let backdated = signing_rotation(&ru, &new_key, signed, effective);
        let items = checked_by_link(now, &mut link.clone(), vec![backdated]);
        let detail = rejection(&stored_replies(&mut inn, now, items)[0]);
        assert!(detail.contains("a rotation cannot disown what was already received"), "{detail}");
    }
    let stored: crate::storage::PeerRecord =
        get_record(&inn.store, Tree::Peers, &RU.as_bytes()).unwrap().unwrap();
    assert!(stored.rotations.is_empty());
    // Taking effect after what IN holds: fine.
    let honest = signing_rotation(&ru, &new_key, T0 + 101, T0 + 101);
    let later = Timestamp::from_unix_millis(T0 + 200);
    let items = checked_by_link(later, &mut link, vec![honest]);
    assert!(matches!(&stored_replies(&mut inn, later, items)[..], [Reply::Receipt { .. }]));
}

/// Review Low 8: a stored record that decodes but no longer verifies (here: a forged
/// rotation appended) was replaced by any valid bundle, another identity without the flag
/// included, and not archived.
#[test]
fn a_record_that_does_not_verify_still_needs_the_flag_for_a_new_identity() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (mut inn, ru) = in_with_ru(&clock);
    let mut damaged = ru.record.clone();
    damaged.rotations.push(signing_rotation(&enrollee(RU), &SigningKeyPair::generate(), T0 + 10, T0 + 10));
    assert!(crate::trust::PeerTrust::from_record(&damaged).is_err());
    let mut writes = crate::storage::Writes::new();
    writes.insert((Tree::Peers, RU.as_bytes().to_vec()), Some(crate::storage::encode_record(&damaged)));
    inn.store.commit(&writes).unwrap();

    let ru2 = enrollee(RU);
    match enrol(&mut inn, &ru2, false) {
        Outcome::Refused(EngineError::Enrol(e @ crate::enrol::EnrolError::IdentityChange { .. })) => {
            assert!(e.to_string().contains("--replace-identity"), "{e}")
        }
        other => panic!("expected an IdentityChange refusal, got {other:?}"),
    }
    assert!(matches!(enrol(&mut inn, &ru2, true), Outcome::Done));
    let archived = inn.store.range(Tree::PeerArchive, &[], &[0xff; 16], usize::MAX).unwrap();
    assert_eq!(archived.len(), 1, "the unloadable record is archived");
    // The same identity's current bundle replaces such a record without the flag.
    let mut inn = side(IN, &clock);
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
    inn.store.commit(&writes).unwrap();
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
}

/// Found by the simulator (seed 3165287591, hostile partner): IN stored a flood of RU's TLS
/// rotation statements that RU dated up to 11 ms ahead of IN's clock (within the clock
/// tolerance); 6 ms later IN's operator enrolled a new identity for RU, archiving the old one
/// as replaced then. The archive's keys ended just after the replacement's millisecond, so the
/// statements IN had already stored, dated after it, no longer verified: `log verify` refused
/// them ("RU's key … was not valid at T (valid from … until T)"). What this node stored signed
/// with a key must verify after the key's identity is archived; nothing signed with it is
/// stored after.
#[test]
fn what_was_stored_before_an_identity_replacement_verifies_though_dated_after_it() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let mut inn = side(IN, &clock);
    let ru = enrollee(RU);
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
    let now = Timestamp::from_unix_millis(T0 + 100);
    let replaced = Timestamp::from_unix_millis(T0 + 106);
    // Dated in the millisecond the archive's keys would end: one after the replacement's.
    let ahead = replaced.saturating_add_millis(1);
    let tls = kp_keys::TlsKeyPair::generate();
    let mut body = kp_protocol::KeyRotation {
        participant: RU,
        sequence: 1,
        previous_key: ru.signing.key_id(),
        new_signing_key: None,
        new_tls_certificate: Some(kp_keys::tlscert::self_signed(&tls, RU).unwrap()),
        effective_from: ahead,
        tls_possession: None,
    };
    tls.prove_possession(&mut body);
    let rotation = SignedDocument::sign(&body, RU, ru.signing.signing_key(), ahead);
    let cert =
        SignedDocument::sign(&certificate("RU-2026-000001", "100.00"), RU, ru.signing.signing_key(), ahead);
    let registry = Registry::default();
    let ctx = CheckContext {
        me: IN,
        peer: RU,
        now,
        clock_tolerance_ms: 300_000,
        retired_key_grace_ms: 7 * 86_400_000,
        registry: registry.on(now.date()),
    };
    let mut link = crate::trust::PeerTrust::from_record(&ru.record).unwrap().history;
    let docs = vec![(rotation.message_id(), None, rotation), (cert.message_id(), None, cert)];
    let items: Vec<Received> =
        check_batch(&ctx, &mut link, docs).into_iter().map(|r| r.expect("within the tolerance")).collect();
    assert!(matches!(
        &stored_replies(&mut inn, now, items)[..],
        [Reply::Receipt { .. }, Reply::Receipt { .. }]
    ));

    let ru2 = enrollee(RU);
    let command =
        Command::EnrolPeer { record: Box::new(ru2.record.clone()), replace_identity: true, officer: None };
    assert!(matches!(inn.apply(replaced, vec![command]).remove(0), Outcome::Done));

    let trust = crate::trust::load(&inn.store).unwrap();
    let report = crate::audit::verify_log(&inn.store, IN, &inn.history, &trust, |_| {})
        .unwrap_or_else(|e| panic!("log verify refuses what IN stored before the replacement: {e}"));
    assert_eq!(report.received, 2, "{report:?}");
    // The old identity's keys still end: through the latest signature stored, not after it.
    let old = trust.known(RU).unwrap();
    old.signing_key_at(ru.signing.key_id(), ahead).unwrap();
    let e = old.signing_key_at(ru.signing.key_id(), ahead.saturating_add_millis(1)).unwrap_err();
    assert!(matches!(e, kp_keys::HistoryError::KeyNotValidAt { .. }), "{e}");
    // And the store takes nothing more signed with them, even dated before the replacement.
    let later = Timestamp::from_unix_millis(T0 + 110);
    let stale =
        SignedDocument::sign(&certificate("RU-2026-000002", "100.00"), RU, ru.signing.signing_key(), now);
    let items = checked_by_link(later, &mut link, vec![stale]);
    let refused = rejection(&stored_replies(&mut inn, later, items)[0]);
    assert!(refused.contains("not in the key history this node holds for RU"), "{refused}");
    crate::audit::verify_log(&inn.store, IN, &inn.history, &crate::trust::load(&inn.store).unwrap(), |_| {})
        .unwrap();
}

#[test]
fn a_batch_larger_than_one_receipt_batch_is_refused_whole_with_its_own_error() {
    use crate::engine::{Event, MAX_DELIVERIES};
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (ru, mut inn) = (side(RU, &clock), side(IN, &clock));
    let doc = ru.signer.sign(&certificate("RU-2026-000001", "100.00")).unwrap();
    let item = checked_by_link(now, &mut ru.history.clone(), vec![doc]).remove(0);
    let deliver = |inn: &mut Side, n: usize| {
        let items = vec![item.clone(); n];
        let applied = inn
            .engine
            .apply(&inn.store, now, vec![Command::Deliveries { peer: RU, under: None, items }])
            .unwrap();
        inn.store.flush().unwrap();
        applied
    };

    let mut applied = deliver(&mut inn, MAX_DELIVERIES + 1);
    match applied.outcomes.remove(0) {
        Outcome::Refused(e @ EngineError::TooManyDeliveries { peer: RU, documents, max }) => {
            assert_eq!((documents, max), (MAX_DELIVERIES + 1, MAX_DELIVERIES));
            assert!(e.to_string().contains("nothing of it was stored"), "{e}");
        }
        other => panic!("expected the batch refused as too large, got {:?}", std::mem::discriminant(&other)),
    }
    assert_eq!(
        applied.events,
        [Event::OversizedBatchRefused { peer: RU, documents: MAX_DELIVERIES + 1, max: MAX_DELIVERIES }]
    );
    assert_eq!(applied.appended, 0);
    assert!(inn.log().is_empty());
    assert!(get_record::<CertRecord, _>(&inn.store, Tree::Certs, b"RU-2026-000001").unwrap().is_none());

    // At the limit the batch is taken: stored once, every copy receipted.
    match deliver(&mut inn, MAX_DELIVERIES).outcomes.remove(0) {
        Outcome::Delivered(replies) => assert_eq!(replies.len(), MAX_DELIVERIES),
        other => panic!("{:?}", std::mem::discriminant(&other)),
    }
    assert_eq!(inn.log().len(), 1);
}

/// A receipt is logged with what it acknowledges, so it must verify by the stored key history
/// as `log verify` will judge it: IN's receipt signed with the key IN's stored rotation
/// retired (a link that checked it before the rotation was in force) is not recorded and the
/// message stays queued; the same receipt again (what a resend gets) is refused again, nothing
/// changing; a receipt signed with IN's new key is taken, and the log verifies.
#[test]
fn a_receipt_signed_with_a_key_the_stored_history_retired_is_not_recorded() {
    use kp_protocol::receipt::{sign_batch, ReceiptItem};
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let mut ru = side(RU, &clock);
    let inn = enrollee_at(RU, IN);
    assert!(matches!(enrol(&mut ru, &inn, false), Outcome::Done));
    submit(&mut ru, now, certificate("RU-2026-000001", "100.00"));
    let (id, _, oseq) = ru.outbox(IN).remove(0);

    // IN rotates its signing key at T0 + 50; RU stores the statement.
    let new_key = SigningKeyPair::generate();
    let effective = Timestamp::from_unix_millis(T0 + 50);
    let body = kp_protocol::KeyRotation::new_with_signing_key(
        IN,
        1,
        inn.signing.key_id(),
        new_key.signing_key(),
        None,
        effective,
    );
    let signed = Timestamp::from_unix_millis(T0 + 40);
    let statement = SignedDocument::sign(&body, IN, inn.signing.signing_key(), signed);
    let mut history = link_history(&inn);
    let items: Vec<Received> = link_checks(
        RU,
        IN,
        effective,
        300_000,
        &mut history,
        vec![(statement.message_id(), None, statement)],
    )
    .into_iter()
    .map(|r| r.expect("a valid rotation"))
    .collect();
    assert!(matches!(
        ru.apply(effective, vec![Command::Deliveries { peer: IN, under: None, items }]).remove(0),
        Outcome::Delivered(_)
    ));

    let item = ReceiptItem { message_id: id, log_seq: 1, entry_hash: kp_protocol::Digest([7; 32]) };
    let receipt = |key: &SigningKeyPair, at: i64| {
        let (batch, mut proofs) =
            sign_batch(&[item], IN, RU, key.signing_key(), Timestamp::from_unix_millis(at)).unwrap();
        kp_protocol::MessageReceipt { batch, proof: proofs.remove(0) }
    };
    let later = Timestamp::from_unix_millis(T0 + 60);
    let stale = Command::Receipts { peer: IN, items: vec![(id, oseq, receipt(&inn.signing, T0 + 60))] };
    let applied = ru.engine.apply(&ru.store, later, vec![stale]).unwrap();
    ru.store.flush().unwrap();
    match &applied.outcomes[..] {
        [Outcome::Refused(e @ EngineError::ReceiptOutsideHistory { peer: IN, .. })] => {
            assert!(e.to_string().contains("stays queued"), "{e}")
        }
        other => panic!("expected the receipt refused, got {other:?}"),
    }
    assert!(matches!(&applied.events[..], [crate::engine::Event::ReceiptOutsideHistory { peer: IN, .. }]));
    assert_eq!(ru.outbox(IN).len(), 1, "the message stays queued");
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Queued);
    let again = Command::Receipts { peer: IN, items: vec![(id, oseq, receipt(&inn.signing, T0 + 60))] };
    let applied = ru.engine.apply(&ru.store, later, vec![again]).unwrap();
    assert!(matches!(applied.outcomes[..], [Outcome::Refused(EngineError::ReceiptOutsideHistory { .. })]));
    assert_eq!((applied.appended, ru.outbox(IN).len()), (0, 1));

    let fresh = Command::Receipts { peer: IN, items: vec![(id, oseq, receipt(&new_key, T0 + 70))] };
    assert!(matches!(ru.apply(Timestamp::from_unix_millis(T0 + 70), vec![fresh]).remove(0), Outcome::Done));
    assert!(ru.outbox(IN).is_empty());
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Delivered);
    let trust = crate::trust::load(&ru.store).unwrap();
    crate::audit::verify_log(&ru.store, RU, &ru.history, &trust, |_| {}).expect("RU's log verifies");
}

/// Recovery from partners (`crate::recover`): RU loses its store (keeping its keys); IN's
/// pages give back RU's own certificates and void (with IN's original receipts) and IN's
/// confirmation (with RU's receipt), checked on RU's side, so that the new store shows what
/// the lost one did; asking again stores nothing twice; a forged item is refused.
#[test]
fn a_node_that_lost_its_store_recovers_its_traffic_from_a_partners_pages() {
    use crate::recover::{check_received, check_sent, order, page};
    use kp_protocol::frame::Recovered;

    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = one_delivered(&clock);
    submit(&mut ru, now, certificate("RU-2026-000002", "100.00"));
    exchange(&mut ru, &mut inn, now);
    assert!(matches!(void(&mut ru, "RU-2026-000002", now), Outcome::Updated(_)));
    exchange(&mut ru, &mut inn, now);
    assert!(matches!(confirm(&mut inn, "RU-2026-000001", "410.00", now), Outcome::Updated(_)));
    exchange(&mut inn, &mut ru, now);
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::ImportConfirmed);
    assert_eq!(ru.cert("RU-2026-000002").status, CertStatus::Voided);

    // The partner's pages: bounded by max_items, continued by the cursor.
    let (mut items, mut cursor) = (Vec::new(), 0);
    loop {
        let p = page(&inn.store, RU, 0, Timestamp::from_unix_millis(0), cursor, 1).unwrap();
        assert!(p.items.len() <= 1);
        items.extend(p.items);
        match p.next {
            Some(n) => {
                assert!(n > cursor);
                cursor = n;
            }
            None => {
                assert_eq!(p.highest_number.unwrap().as_str(), "RU-2026-000002");
                break;
            }
        }
    }
    // Two certificates and a void RU sent, and the confirmation IN delivered; nothing else.
    assert_eq!(items.len(), 4, "{items:?}");
    // Nothing of RU's traffic is given to another participant.
    let other = ParticipantCode::from_static("KZ");
    assert!(page(&inn.store, other, 0, Timestamp::from_unix_millis(0), 0, 256).unwrap().items.is_empty());

    // RU starts again from nothing but its keys.
    let store = MemStorage::new();
    let engine = Engine::load(&store, ru.signer.clone()).unwrap();
    let mut lost = Side { code: RU, store, engine, signer: ru.signer.clone(), history: ru.history.clone() };
    let recover = |lost: &mut Side, items: &[Recovered]| -> (usize, usize) {
        let mut sorted = items.to_vec();
        sorted.sort_by_key(order);
        let (mut stored, mut held) = (0, 0);
        for item in sorted {
            match item {
                Recovered::Sent { document, receipt } => {
                    let content =
                        check_sent(RU, IN, &lost.history, &inn.history, &document, &receipt).unwrap();
                    let command = Command::RecoveredSent {
                        peer: IN,
                        document,
                        content: Box::new(content),
                        receipt: Box::new(receipt),
                    };
                    match lost.apply(now, vec![command]).remove(0) {
                        Outcome::Updated(_) => stored += 1,
                        Outcome::Done => held += 1,
                        other => panic!("{other:?}"),
                    }
                }
                Recovered::Received { document, receipt } => {
                    let at = check_received(RU, IN, &lost.history, &document, &receipt).unwrap();
                    let docs = vec![(document.message_id(), None, document)];
                    let checked = link_checks(RU, IN, at, 300_000, &mut inn.history.clone(), docs);
                    let items = checked.into_iter().map(|r| r.unwrap()).collect();
                    match lost
                        .apply(now, vec![Command::Deliveries { peer: IN, under: None, items }])
                        .remove(0)
                    {
                        Outcome::Delivered(r) => match &r[0] {
                            Reply::Receipt { duplicate: false, .. } => stored += 1,
                            Reply::Receipt { duplicate: true, .. } => held += 1,
                            other => panic!("{other:?}"),
                        },
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
        (stored, held)
    };
    assert_eq!(recover(&mut lost, &items), (4, 0));
    for number in ["RU-2026-000001", "RU-2026-000002"] {
        let (was, is) = (ru.cert(number), lost.cert(number));
        assert_eq!(
            (is.status, is.message_id, is.delivered_at),
            (was.status, was.message_id, was.delivered_at)
        );
        assert_eq!(
            is.void.map(|v| (v.message_id, v.acknowledged)),
            was.void.map(|v| (v.message_id, v.acknowledged))
        );
        assert_eq!(is.confirmation.map(|c| c.message_id), was.confirmation.map(|c| c.message_id));
    }
    assert!(lost.outbox(IN).is_empty(), "recovered documents are acknowledged, not queued");
    assert_eq!(lost.log().len(), 4);
    assert_eq!(lost.engine.last_number(2026), 2, "numbering resumes above what was recovered");
    // Asking again stores nothing twice.
    assert_eq!(recover(&mut lost, &items), (0, 4));
    assert_eq!(lost.log().len(), 4);

    // A document RU never signed, offered as RU's, or another's receipt, is refused.
    let Some(Recovered::Sent { mut document, receipt }) =
        items.iter().find(|i| matches!(i, Recovered::Sent { .. })).cloned()
    else {
        panic!()
    };
    let err = check_sent(RU, IN, &lost.history, &inn.history, &document, &receipt).map(|_| ());
    assert!(err.is_ok());
    // The receipt's time becomes the delivery's: it must lie between signing and now.
    let signed = document.signed_at.unix_millis();
    let at = |ms: i64| Timestamp::from_unix_millis(ms);
    assert!(crate::recover::check_receipt_time(&document, &receipt, at(signed + 3_600_000), 1000).is_ok());
    let err =
        crate::recover::check_receipt_time(&document, &receipt, at(signed - 7_200_000), 1000).unwrap_err();
    assert!(err.contains("in the future"), "{err}");
    let err = check_sent(RU, IN, &lost.history, &lost.history, &document, &receipt).unwrap_err();
    assert!(err.contains("receipt"), "{err}");
    document.signature[0] ^= 1;
    let err = check_sent(RU, IN, &lost.history, &inn.history, &document, &receipt).unwrap_err();
    assert!(err.contains("signature does not verify"), "{err}");
    let Some(Recovered::Received { document, receipt }) =
        items.iter().find(|i| matches!(i, Recovered::Received { .. })).cloned()
    else {
        panic!()
    };
    let err = check_received(RU, IN, &inn.history, &document, &receipt).unwrap_err();
    assert!(err.contains("receipt"), "{err}");

    // RaiseNumbers lifts the counter above a number a partner reports.
    lost.apply(now, vec![Command::RaiseNumbers { numbers: vec![(2026, 41)] }]);
    assert_eq!(lost.engine.last_number(2026), 41);
    let engine = Engine::load(&lost.store, lost.signer.clone()).unwrap();
    assert_eq!(engine.last_number(2026), 41, "kept in the store");
}

/// A restored RU that lacks RU-2026-000001: while it awaits recovery, IN's confirmation of
/// that certificate is held back (no receipt, no refusal: IN sends it again) and no new
/// certificate is issued; once every partner is recovered from, the state ends and the
/// ordinary refusal applies again.
#[test]
fn a_restored_node_holds_back_follow_ups_it_cannot_place_until_recovered() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (_ru, mut inn) = one_delivered(&clock);
    assert!(matches!(confirm(&mut inn, "RU-2026-000001", "100.00", now), Outcome::Updated(_)));
    let mut restored = side(RU, &clock);
    let (key, value) = crate::engine::set_recovery_pending(now);
    restored.store.commit(&crate::storage::Writes::from([((Tree::Meta, key), Some(value))])).unwrap();

    let replies = deliver(&inn, &mut restored, now, inn.outbox(RU));
    assert!(matches!(&replies[..], [Reply::Held { .. }]), "{replies:?}");
    let pending = crate::engine::recovery_pending(&restored.store).unwrap().unwrap();
    assert_eq!(pending.held, 1);
    assert!(matches!(
        submit(&mut restored, now, certificate("RU-2026-000002", "1.00")),
        Outcome::Refused(EngineError::RecoveryPending)
    ));

    let partners = vec![IN, "KZ".parse().unwrap()];
    let progress = |p: &str| Command::RecoveryProgress {
        recovered: Some(p.parse().unwrap()),
        partners: partners.clone(),
    };
    restored.apply(now, vec![progress("IN")]);
    assert_eq!(crate::engine::recovery_pending(&restored.store).unwrap().unwrap().recovered, vec![IN]);
    restored.apply(now, vec![progress("KZ")]);
    assert_eq!(crate::engine::recovery_pending(&restored.store).unwrap(), None);

    let replies = deliver(&inn, &mut restored, now, inn.outbox(RU));
    assert_eq!(rejected(&replies).code, RejectCode::UnknownCertificate);
    // The operator's `--finish` ends it too, whoever is left.
    let (key, value) = crate::engine::set_recovery_pending(now);
    restored.store.commit(&crate::storage::Writes::from([((Tree::Meta, key), Some(value))])).unwrap();
    restored.apply(now, vec![Command::RecoveryProgress { recovered: None, partners: partners.clone() }]);
    assert_eq!(crate::engine::recovery_pending(&restored.store).unwrap(), None);
    assert!(matches!(
        submit(&mut restored, now, certificate("RU-2026-000002", "1.00")),
        Outcome::Submitted { .. }
    ));
}

/// Every change to whom this node trusts is a log entry signed by this node, naming what
/// happened and who did it; a refused enrolment records nothing.
#[test]
fn enrolment_changes_are_signed_log_entries_with_their_officer() {
    use kp_protocol::{PeerAction, PeerChange};
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let mut inn = side(IN, &clock);
    let now = Timestamp::from_unix_millis(T0);
    let officer = |name: &str| Some(crate::storage::Officer::new(name).unwrap());
    let (ru, ru2) = (enrollee(RU), enrollee(RU));
    let enrol = |inn: &mut Side, e: &Enrollee, replace_identity: bool, who: &str| {
        let command = Command::EnrolPeer {
            record: Box::new(e.record.clone()),
            replace_identity,
            officer: officer(who),
        };
        inn.apply(now, vec![command]).remove(0)
    };
    assert!(matches!(enrol(&mut inn, &ru, false, "anna"), Outcome::Done));
    assert!(matches!(enrol(&mut inn, &ru, false, "bob"), Outcome::Done));
    // A new identity without --replace-identity is refused: nothing is recorded.
    assert!(matches!(enrol(&mut inn, &ru2, false, "carl"), Outcome::Refused(_)));
    assert!(matches!(enrol(&mut inn, &ru2, true, "dina"), Outcome::Done));
    let remove = Command::RemovePeer { participant: RU, officer: officer("emil") };
    assert!(matches!(inn.apply(now, vec![remove]).remove(0), Outcome::Done));
    assert!(matches!(enrol(&mut inn, &ru2, false, "fay"), Outcome::Done));

    let log = inn.log();
    let seen: Vec<(PeerAction, &str)> = log
        .iter()
        .map(|e| {
            assert_eq!(e.peer(), RU);
            assert_eq!(e.document().signer, IN);
            let key = inn.history.signing_key_at(e.document().key_id, e.document().signed_at).unwrap();
            e.document().verify_signature(key).unwrap();
            let change: PeerChange = e.document().body().unwrap();
            assert_eq!(change.bundle.is_none(), change.action == PeerAction::Removed);
            (change.action, e.officer.as_ref().map_or("", |o| o.as_str()))
        })
        .collect();
    assert_eq!(
        seen,
        [
            (PeerAction::Enrolled, "anna"),
            (PeerAction::Updated, "bob"),
            (PeerAction::IdentityReplaced, "dina"),
            (PeerAction::Removed, "emil"),
            (PeerAction::Enrolled, "fay"),
        ]
    );
    let fingerprint = |e: &Enrollee| {
        let b = kp_keys::bundle::VerifiedBundle::from_bytes(&e.record.bundle).unwrap();
        b.fingerprint.to_string()
    };
    let change = |i: usize| log[i].document().body::<PeerChange>().unwrap();
    assert_eq!(change(0).fingerprint.as_str(), fingerprint(&ru));
    assert_eq!(change(2).fingerprint.as_str(), fingerprint(&ru2));
    assert_eq!(change(2).bundle, Some(kp_protocol::Digest::of_parts(&[&ru2.record.bundle])));
}

/// Both sides index a new certificate by its date of issue in the commit that stores it, and
/// keep the index complete for their counters, so opening the store never rebuilds it.
#[test]
fn a_new_certificate_is_indexed_by_its_date_of_issue_on_both_sides() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (mut ru, inn) = one_delivered(&clock);
    let now = Timestamp::from_unix_millis(T0);
    void(&mut ru, "RU-2026-000001", now);
    let issued = kp_protocol::Date::from_ymd(2026, 11, 18).unwrap();
    for s in [&ru, &inn] {
        let numbers = crate::storage::index::numbers_issued(&s.store, issued, issued).unwrap();
        assert_eq!(numbers, ["RU-2026-000001"], "{}", s.code);
        let other_days = crate::storage::index::numbers_issued(
            &s.store,
            issued.add_days(1).unwrap(),
            issued.add_days(400).unwrap(),
        )
        .unwrap();
        assert!(other_days.is_empty(), "{other_days:?}");
        assert_eq!(
            crate::storage::index::ensure_issued(&s.store).unwrap(),
            None,
            "{}: nothing to rebuild",
            s.code
        );
    }
    // A store whose index is not known complete (written by an older kpnode) is indexed
    // again from its certificate records.
    ru.store.commit(&Writes::from([((Tree::Meta, meta::ISSUED_INDEX_AT.to_vec()), None)])).unwrap();
    assert_eq!(crate::storage::index::ensure_issued(&ru.store).unwrap().map(|b| b.certificates), Some(1));
    assert_eq!(crate::storage::index::ensure_issued(&ru.store).unwrap(), None);
}

/// The importer indexes a certificate it receives as waiting for its confirmation (by its day
/// of expiry), and moves it to its date of import when it confirms it, in the same commits;
/// the exporter indexes nothing there. A store whose index is not known complete is indexed
/// again, stale entries removed, a damaged record left out rather than keeping the store shut.
#[test]
fn a_received_certificate_is_indexed_as_waiting_then_by_its_date_of_import() {
    use crate::storage::index::{awaiting_key, ensure_imported, numbers_awaiting, numbers_imported};
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let (ru, mut inn) = one_delivered(&clock);
    let now = Timestamp::from_unix_millis(T0);
    let today = now.date();
    let far = today.add_days(400).unwrap();
    let before = today.add_days(-400).unwrap();
    let expires = inn.cert("RU-2026-000001").expires_on;
    assert_eq!(numbers_awaiting(&inn.store, before).unwrap(), ["RU-2026-000001"]);
    assert_eq!(numbers_awaiting(&inn.store, expires).unwrap(), ["RU-2026-000001"]);
    assert!(numbers_awaiting(&inn.store, expires.add_days(1).unwrap()).unwrap().is_empty(), "expired before");
    assert!(numbers_imported(&inn.store, before, far).unwrap().is_empty());

    assert!(matches!(confirm(&mut inn, "RU-2026-000001", "100.00", now), Outcome::Updated(_)));
    assert!(numbers_awaiting(&inn.store, before).unwrap().is_empty());
    assert_eq!(numbers_imported(&inn.store, today, today).unwrap(), ["RU-2026-000001"]);
    assert!(numbers_imported(&inn.store, today.add_days(1).unwrap(), far).unwrap().is_empty());
    for s in [&ru, &inn] {
        assert_eq!(ensure_imported(&s.store).unwrap(), None, "{}: nothing to rebuild", s.code);
    }
    assert!(numbers_awaiting(&ru.store, before).unwrap().is_empty());
    assert!(numbers_imported(&ru.store, before, far).unwrap().is_empty());

    // Written by a kpnode that does not keep the index: its copy of the counters is not
    // current, what the index holds may be stale, and a record may be damaged.
    inn.store
        .commit(&Writes::from([
            ((Tree::Meta, meta::IMPORTED_INDEX_AT.to_vec()), None),
            ((Tree::Imported, awaiting_key(expires, "RU-2026-000001")), Some(Vec::new())),
            ((Tree::Certs, b"RU-2026-999999".to_vec()), Some(b"not a record".to_vec())),
        ]))
        .unwrap();
    let built = ensure_imported(&inn.store).unwrap().expect("built again");
    assert_eq!(built.certificates, 1);
    assert_eq!(built.damaged.len(), 1, "{:?}", built.damaged);
    assert!(built.damaged[0].contains("RU-2026-999999"), "{:?}", built.damaged);
    assert!(numbers_awaiting(&inn.store, before).unwrap().is_empty());
    assert_eq!(numbers_imported(&inn.store, today, today).unwrap(), ["RU-2026-000001"]);
    assert_eq!(ensure_imported(&inn.store).unwrap(), None);
}

/// RU's certificate `number` replacing `old`.
fn replacement(number: &str, old: &str) -> Certificate {
    let mut cert = certificate(number, "100.00");
    cert.content.replaces = Some(old.parse().unwrap());
    cert
}

#[test]
fn a_replacement_the_importer_refuses_leaves_the_old_certificate_as_it_was() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = one_delivered(&clock);

    // IN confirms the import while RU, not knowing yet, replaces the certificate.
    confirm(&mut inn, "RU-2026-000001", "410.00", now);
    assert!(matches!(
        submit(&mut ru, now, replacement("RU-2026-000002", "RU-2026-000001")),
        Outcome::Submitted { already_stored: false, .. }
    ));
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Replaced);
    // A second replacement of the same certificate is refused.
    let again = submit(&mut ru, now, replacement("RU-2026-000003", "RU-2026-000001"));
    assert!(
        matches!(&again, Outcome::Refused(EngineError::WrongState { why, .. }) if why.contains("already replaced")),
        "{again:?}"
    );

    // IN refuses the replacement of what it confirmed; RU's certificate stands again.
    exchange(&mut ru, &mut inn, now);
    assert_eq!(inn.cert("RU-2026-000001").status, CertStatus::ImportConfirmed);
    assert!(inn.store.get(Tree::Certs, b"RU-2026-000002").unwrap().is_none(), "nothing stored");
    let rejected = ru.cert("RU-2026-000002");
    assert_eq!(rejected.status, CertStatus::Rejected);
    assert!(rejected.rejection.unwrap().detail.contains("confirmed"));
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Delivered);
    assert!(ru
        .store
        .get(Tree::Meta, &crate::storage::replacement_key(&"RU-2026-000001".parse().unwrap()))
        .unwrap()
        .is_none());

    // And IN's confirmation lands on it as on any certificate.
    exchange(&mut inn, &mut ru, now);
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::ImportConfirmed);
}

#[test]
fn a_replacement_of_a_certificate_the_importer_never_had_is_refused() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = (side(RU, &clock), side(IN, &clock));
    // RU-2026-000001 was never issued: RU's own engine refuses to replace it.
    let refused = submit(&mut ru, now, replacement("RU-2026-000002", "RU-2026-000001"));
    assert!(matches!(refused, Outcome::Refused(EngineError::NotFound(_))), "{refused:?}");
    // One signed by RU all the same, delivered to IN, is refused there.
    let forged = replacement("RU-2026-000005", "RU-2026-000004");
    let document = ru.signer.sign(&forged).unwrap();
    let replies = deliver(&ru, &mut inn, now, vec![(document.message_id(), document, 0)]);
    let Reply::Reject { refusal, .. } = &replies[0] else { panic!("stored: {replies:?}") };
    assert_eq!(refusal.code, RejectCode::UnknownCertificate, "{refusal:?}");
    assert!(
        refusal.detail.contains("replaces RU-2026-000004, which IN never received from RU"),
        "{}",
        refusal.detail
    );
}

// An outside review's proofs of concept, kept as regression tests with the fixed outcome.

/// The old certificate was queued when replaced, was then delivered, and the replacement is
/// refused: it stands again as delivered, not as the queued it was when replaced.
#[test]
fn a_refused_replacement_restores_what_happened_to_the_old_certificate_since() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let now = Timestamp::from_unix_millis(T0);
    let (mut ru, mut inn) = (side(RU, &clock), side(IN, &clock));
    submit(&mut ru, now, certificate("RU-2026-000001", "100.00"));
    assert!(matches!(
        submit(&mut ru, now, replacement("RU-2026-000002", "RU-2026-000001")),
        Outcome::Submitted { already_stored: false, .. }
    ));
    // Only the old one goes out and is acknowledged.
    let sent: Queued = ru.outbox(IN).into_iter().take(1).collect();
    let replies = deliver(&ru, &mut inn, now, sent.clone());
    acknowledge(&mut ru, &inn, now, &sent, replies);
    let old = ru.cert("RU-2026-000001");
    assert_eq!(old.status, CertStatus::Replaced);
    assert!(old.log_seq.is_some() && old.delivered_at.is_some());
    // IN confirms it; then the replacement arrives and is refused.
    confirm(&mut inn, "RU-2026-000001", "410.00", now);
    exchange(&mut ru, &mut inn, now);
    assert_eq!(ru.cert("RU-2026-000002").status, CertStatus::Rejected);
    let old = ru.cert("RU-2026-000001");
    assert_eq!(old.status, CertStatus::Delivered, "{old:?}");
    assert!(old.log_seq.is_some() && old.oseq.is_none());
    assert!(ru.outbox(IN).is_empty());
    // IN's confirmation then lands on it.
    exchange(&mut inn, &mut ru, now);
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::ImportConfirmed);
}

/// What IN's link check says of `cert`, signed now by RU's `key` (history `history`), given
/// `registry`: the refusal, if any.
fn refusal_of(
    registry: &Registry,
    key: &SigningKeyPair,
    history: &KeyHistory,
    cert: &Certificate,
) -> Option<String> {
    let now = Timestamp::from_unix_millis(T0);
    let doc = SignedDocument::sign(cert, RU, key.signing_key(), now);
    let ctx = CheckContext {
        me: IN,
        peer: RU,
        now,
        clock_tolerance_ms: 0,
        retired_key_grace_ms: 0,
        registry: registry.on(now.date()),
    };
    match check_batch(&ctx, &mut history.clone(), vec![(doc.message_id(), None, doc)]).remove(0) {
        Err(f) => Some(f.to_string()),
        Ok(r) => r.refused.map(|f| f.to_string()),
    }
}

/// A signing key of RU's and its key history.
fn ru_signing() -> (SigningKeyPair, KeyHistory) {
    let key = SigningKeyPair::generate();
    let tls = kp_keys::TlsKeyPair::generate();
    let history = KeyHistory::genesis(
        RU,
        &key.verifying_key().to_bytes(),
        Timestamp::from_unix_millis(T0 - 1000),
        kp_keys::tlscert::self_signed(&tls, RU).unwrap(),
    )
    .unwrap();
    (key, history)
}

/// The union EA of RU and `members`, with `status` from 2026-06-01.
fn union_ea(
    status: kp_protocol::ParticipantStatus,
    members: Vec<ParticipantCode>,
) -> kp_protocol::ParticipantEntry {
    kp_protocol::ParticipantEntry {
        code: "EA".parse().unwrap(),
        name: "Eurasian Economic Union".parse().unwrap(),
        status,
        effective_from: "2026-06-01".parse().unwrap(),
        reason: None,
        approved_origin_areas: vec![],
        members,
    }
}

/// RU joined union EA, which is suspended today. RU's node backdates issued_on to the day
/// before the join and issues in RU's own name: refused, as the names are judged on the day
/// of signing and the suspension of RU's union counts for RU's node.
#[test]
fn a_backdated_issue_date_does_not_escape_a_unions_suspension() {
    let by: ParticipantCode = "BY".parse().unwrap();
    let registry =
        Registry::from_entries([union_ea(kp_protocol::ParticipantStatus::Suspended, vec![RU, by])], [RU]);
    let (key, history) = ru_signing();
    let issued = |on: &str| {
        let mut cert = certificate("RU-2026-000009", "100.00");
        cert.content.issued_on = on.parse().unwrap();
        refusal_of(&registry, &key, &history, &cert)
    };
    // Issued today (2026-11-18) in RU's own name: refused (RU is a member state of EA).
    assert!(issued("2026-11-18").is_some());
    // Backdated to before the join: refused all the same (validity 223 days).
    let backdated = issued("2026-05-31");
    assert!(backdated.as_deref().is_some_and(|r| r.contains("member state of EA")), "{backdated:?}");
}

/// RU is suspended under its own entry; a union EA (active) lists RU as a member. The
/// registry refuses such a join, and should one be held all the same (from a list), RU's
/// node is still held to its own suspension: its certificates in EA's name are refused and
/// messages for it are held.
#[test]
fn a_suspended_participant_does_not_escape_by_joining_a_union() {
    let mut ru_entry = crate::registry::shipped()[&RU].clone();
    ru_entry.status = kp_protocol::ParticipantStatus::Suspended;
    ru_entry.effective_from = "2026-01-01".parse().unwrap();
    let union = union_ea(kp_protocol::ParticipantStatus::Active, vec![RU]);
    let registry = Registry::from_entries([ru_entry, union.clone()], [RU]);
    let on = registry.on(Timestamp::from_unix_millis(T0).date());
    let problems = crate::registry::change_problems(&on, &union);
    assert!(problems.iter().any(|p| p.message.contains("RU is suspended")), "{problems:?}");
    let (key, history) = ru_signing();
    let named = |exporting: &str, number: &str| {
        let mut cert = certificate("RU-2026-000009", "100.00");
        cert.number = number.parse().unwrap();
        cert.content.exporting_participant = exporting.parse().unwrap();
        refusal_of(&registry, &key, &history, &cert)
    };
    assert!(named("RU", "RU-2026-000009").is_some());
    let union_name = named("EA", "EA-RU-2026-000009");
    assert!(union_name.as_deref().is_some_and(|r| r.contains("RU is suspended")), "{union_name:?}");
    assert!(on.held(RU).is_some(), "messages for suspended RU are held");
}
