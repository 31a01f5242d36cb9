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
use crate::store::{
    decode_record, get_record, outbox_range, CertRecord, CertStatus, LogEntry, MemStorage, OutboxEntry,
    Storage, Tree,
};
use crate::verify::{check_batch, CheckContext, Received};

const RU: ParticipantCode = ParticipantCode::from_static("RU");
const IN: ParticipantCode = ParticipantCode::from_static("IN");
const T0: i64 = 1_795_000_000_000; // 2026-11-18

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
    fn outbox(&self, peer: ParticipantCode) -> Vec<(MessageId, SignedDocument, u64)> {
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
            .map(|(k, v)| crate::store::decode_log(k, v).unwrap().0)
            .collect()
    }
}

/// `to` checks and stores what `from` has queued for it; returns the replies.
fn deliver(
    from: &Side,
    to: &mut Side,
    now: Timestamp,
    queued: Vec<(MessageId, SignedDocument, u64)>,
) -> Vec<Reply> {
    let docs: Vec<crate::verify::Delivery> = queued.into_iter().map(|(id, d, _)| (id, None, d)).collect();
    let registry = Registry::default();
    let ctx = CheckContext {
        me: to.code,
        peer: from.code,
        now,
        clock_tolerance_ms: 300_000,
        retired_key_grace_ms: 7 * 86_400_000,
        registry: registry.on(now.date()),
    };
    let mut history = from.history.clone();
    let mut replies = Vec::new();
    let mut items: Vec<Received> = Vec::new();
    let checked = check_batch(&ctx, &mut history, docs);
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
    let mut stored = match to.apply(now, vec![Command::Deliveries { peer: from.code, items }]).pop() {
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
        }
    }
    commands.push(Command::Receipts { peer: to.code, items: receipts });
    from.apply(now, commands);
}

fn certificate(number: &str, carats: &str) -> Certificate {
    let text = include_str!("../../protocol/tests/fixtures/certificate.json")
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
    let document = ru.signer.sign(&cert);
    ru.apply(now, vec![Command::Submit { document, certificate: Box::new(cert), assigned: None }])
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
    let doc = ru.signer.sign(&other);
    let replies = deliver(&ru, &mut inn, now, vec![(doc.message_id(), doc, 0)]);
    assert!(matches!(&replies[0], Reply::Reject { refusal, .. } if refusal.code == RejectCode::Conflict));
    assert_eq!(inn.log().len(), 1);

    // IN confirms with one carat missing: a discrepancy on both sides.
    let cert = certificate("RU-2026-000001", "100.00");
    let confirmation = ImportConfirmation {
        certificate: cert.number.clone(),
        certificate_id: inn.cert("RU-2026-000001").message_id,
        exporting_participant: RU,
        importing_participant: IN,
        exporter: cert.content.exporter.clone(),
        importer: cert.content.importer.clone(),
        received_on: now.date(),
        parcels: 2,
        carats: "409.00".parse().unwrap(),
        confirming_authority: "DGFT".parse().unwrap(),
        remarks: None,
    };
    let document = inn.signer.sign(&confirmation);
    inn.apply(now, vec![Command::Confirm { document, confirmation: Box::new(confirmation) }]);
    assert_eq!(inn.cert("RU-2026-000001").status, CertStatus::ImportDiscrepancy);
    let sent = inn.outbox(RU);
    let replies = deliver(&inn, &mut ru, now, sent.clone());
    acknowledge(&mut inn, &ru, now, &sent, replies);
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
    let registry = Registry::default();
    let ctx = CheckContext {
        me: IN,
        peer: RU,
        now,
        clock_tolerance_ms: 0,
        retired_key_grace_ms: 0,
        registry: registry.on(now.date()),
    };
    let docs = queued[1..].iter().map(|(i, d, _)| (*i, None, d.clone())).collect();
    let items = check_batch(&ctx, &mut ru.history.clone(), docs).into_iter().map(Result::unwrap).collect();
    inn.engine.apply(&inn.store, now, vec![Command::Deliveries { peer: RU, items }]).unwrap();
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
    let (mut ru, mut inn) = (side(RU, &clock), side(IN, &clock));
    submit(&mut ru, now, certificate("RU-2026-000001", "100.00"));
    let sent = ru.outbox(IN);
    let replies = deliver(&ru, &mut inn, now, sent.clone());
    acknowledge(&mut ru, &inn, now, &sent, replies);

    let void = kp_protocol::Void {
        certificate: "RU-2026-000001".parse().unwrap(),
        certificate_id: ru.cert("RU-2026-000001").message_id,
        reason: "shipment cancelled".parse().unwrap(),
    };
    let document = ru.signer.sign(&void);
    ru.apply(now, vec![Command::Void { document, void }]);
    assert_eq!(ru.cert("RU-2026-000001").status, CertStatus::Voided);
    let sent = ru.outbox(IN);
    let replies = deliver(&ru, &mut inn, now, sent.clone());
    acknowledge(&mut ru, &inn, now, &sent, replies);
    assert_eq!(inn.cert("RU-2026-000001").status, CertStatus::Voided);
    assert!(crate::engine::confirmable(&inn.cert("RU-2026-000001")).is_some());
}

/// A participant's keys and the record `IN` stores when it enrols its bundle.
struct Enrollee {
    signing: SigningKeyPair,
    tls: kp_keys::TlsKeyPair,
    record: crate::store::PeerRecord,
}

fn enrollee(code: ParticipantCode) -> Enrollee {
    let signing = SigningKeyPair::generate();
    let tls = kp_keys::TlsKeyPair::generate();
    let bundle = kp_keys::Bundle {
        format: kp_keys::bundle::BUNDLE_FORMAT,
        participant: code,
        authority: "Authority".parse().unwrap(),
        endpoints: vec!["127.0.0.1:9".into()],
        root_key: signing.verifying_key().to_bytes(),
        root_created_at: Timestamp::from_unix_millis(T0 - 1000),
        root_tls_certificate: kp_keys::tlscert::self_signed(&tls, code).unwrap(),
        rotations: Vec::new(),
        created_at: Timestamp::from_unix_millis(T0),
    }
    .sign(&signing)
    .unwrap();
    let (record, _) = crate::enrol::prepare(
        IN,
        &bundle.to_armored(),
        &bundle.fingerprint.to_string(),
        None,
        Timestamp::from_unix_millis(T0),
    )
    .unwrap();
    Enrollee { signing, tls, record }
}

fn enrol(to: &mut Side, e: &Enrollee, replace_identity: bool) -> Outcome {
    let now = Timestamp::from_unix_millis(T0);
    to.apply(now, vec![Command::EnrolPeer { record: Box::new(e.record.clone()), replace_identity }]).remove(0)
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
    let mut history = crate::trust::PeerTrust::from_record(&ru.record).unwrap().history;
    let registry = Registry::default();
    let ctx = CheckContext {
        me: IN,
        peer: RU,
        now,
        clock_tolerance_ms: 0,
        retired_key_grace_ms: 7 * 86_400_000,
        registry: registry.on(now.date()),
    };
    let item = check_batch(&ctx, &mut history, vec![(doc.message_id(), None, doc)]).pop().unwrap().unwrap();
    let replies = match inn.apply(now, vec![Command::Deliveries { peer: RU, items: vec![item] }]).remove(0) {
        Outcome::Delivered(r) => r,
        other => panic!("{other:?}"),
    };
    match &replies[..] {
        [Reply::Reject { refusal, .. }] => {
            assert!(refusal.detail.contains("already bound to KZ"), "{refusal}")
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    let stored: crate::store::PeerRecord =
        get_record(&inn.store, Tree::Peers, &RU.as_bytes()).unwrap().unwrap();
    assert!(stored.rotations.is_empty());
}

#[test]
fn enrolment_is_judged_against_the_stored_record_in_the_transaction() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let mut inn = side(IN, &clock);
    let ru = enrollee(RU);
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
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
    let mut history = crate::trust::PeerTrust::from_record(&ru.record).unwrap().history;
    let registry = Registry::default();
    let ctx = CheckContext {
        me: IN,
        peer: RU,
        now,
        clock_tolerance_ms: 0,
        retired_key_grace_ms: 7 * 86_400_000,
        registry: registry.on(now.date()),
    };
    let item = check_batch(&ctx, &mut history, vec![(doc.message_id(), None, doc)]).pop().unwrap().unwrap();
    inn.apply(now, vec![Command::Deliveries { peer: RU, items: vec![item] }]);
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
    let command = Command::EnrolPeer { record: Box::new(ru2.record.clone()), replace_identity: true };
    assert!(matches!(inn.apply(replaced, vec![command]).remove(0), Outcome::Done));
    let trust = crate::node::load_trust(&inn.store).unwrap();
    let ru_trust = trust.known(RU).unwrap();
    assert_eq!(ru_trust.archived.len(), 1);
    assert_eq!(ru_trust.archived[0].history.rotations().len(), 1, "the archive keeps the wire rotation");
    // Keys of the old identity still verify what was signed under them, before it was
    // replaced.
    ru_trust.signing_key_at(new_key.key_id(), Timestamp::from_unix_millis(T0 + 20)).unwrap();
    ru_trust.signing_key_at(new_key.key_id(), replaced).unwrap_err();
    ru_trust.signing_key_at(ru2.signing.key_id(), Timestamp::from_unix_millis(T0 + 20)).unwrap();
}

/// A certificate's `signed_at` may not lie before its issue date (one day of tolerance): the
/// lower bound on a certificate's signing time, as the clock tolerance is the upper one.
#[test]
fn a_certificate_signed_before_its_issue_date_is_refused() {
    const DAY: i64 = 86_400_000;
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

/// What `IN`'s link to `RU` accepts when it checks `docs` against its own copy of RU's key
/// history, `history` (updated by the rotations among them, as a link's is).
fn checked_by_link(now: Timestamp, history: &mut KeyHistory, docs: Vec<SignedDocument>) -> Vec<Received> {
    let registry = Registry::default();
    let ctx = CheckContext {
        me: IN,
        peer: RU,
        now,
        clock_tolerance_ms: 0,
        retired_key_grace_ms: 7 * 86_400_000,
        registry: registry.on(now.date()),
    };
    let docs = docs.into_iter().map(|d| (d.message_id(), None, d)).collect();
    check_batch(&ctx, history, docs).into_iter().map(|r| r.expect("the link accepts it")).collect()
}

fn stored_replies(inn: &mut Side, now: Timestamp, items: Vec<Received>) -> Vec<Reply> {
    match inn.apply(now, vec![Command::Deliveries { peer: RU, items }]).remove(0) {
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
    let mut inn = side(IN, &clock);
    let ru = enrollee(RU);
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
    let now = Timestamp::from_unix_millis(T0 + 10);
    let (kx, ky) = (SigningKeyPair::generate(), SigningKeyPair::generate());
    let x = signing_rotation(&ru, &kx, T0 + 10, T0 + 10);
    let y = signing_rotation(&ru, &ky, T0 + 10, T0 + 10);
    let before = crate::trust::PeerTrust::from_record(&ru.record).unwrap().history;
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
    let stored: crate::store::PeerRecord =
        get_record(&inn.store, Tree::Peers, &RU.as_bytes()).unwrap().unwrap();
    assert_eq!(stored.rotations, vec![x], "the first rotation stays");
    // The same statement again (as a bundle or another link would bring it) is still taken.
    let mut fresh = crate::trust::PeerTrust::from_record(&ru.record).unwrap().history;
    let items = checked_by_link(now, &mut fresh, vec![stored.rotations[0].clone()]);
    assert!(matches!(&stored_replies(&mut inn, now, items)[..], [Reply::Receipt { .. }]));
}

/// Review High 1: RU backdates both `signed_at` and `effective_from` of a signing-key
/// rotation to just after its key was made. The statement is consistent in itself, but it
/// would disown the certificate IN already stored: refused.
#[test]
fn a_rotation_backdated_with_its_signing_time_cannot_disown_stored_documents() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0)));
    let mut inn = side(IN, &clock);
    let ru = enrollee(RU);
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
    let now = Timestamp::from_unix_millis(T0 + 100);
    let mut link = crate::trust::PeerTrust::from_record(&ru.record).unwrap().history;
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
    let stored: crate::store::PeerRecord =
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
    let mut inn = side(IN, &clock);
    let ru = enrollee(RU);
    assert!(matches!(enrol(&mut inn, &ru, false), Outcome::Done));
    let mut damaged = ru.record.clone();
    damaged.rotations.push(signing_rotation(&enrollee(RU), &SigningKeyPair::generate(), T0 + 10, T0 + 10));
    assert!(crate::trust::PeerTrust::from_record(&damaged).is_err());
    let mut writes = crate::store::Writes::new();
    writes.insert((Tree::Peers, RU.as_bytes().to_vec()), Some(crate::store::encode_record(&damaged)));
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
