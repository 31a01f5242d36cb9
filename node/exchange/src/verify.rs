//! The checks a receiver makes on a delivered document before the exchange rules see it,
//! none of which need the store: the signer is the participant at the other end of the
//! link, its key was valid when it signed, the signature holds, the time is plausible and
//! the content obeys the rules. Signatures are verified strictly, one by one (see
//! [`verify_signatures`]). A document that fails a check after it is known to be the
//! peer's, byte for byte, is refused by the store unless it holds it: a resend whose receipt
//! was lost gets the original receipt even if the checks would no longer pass (see
//! [`Received::refused`]).

use ed25519_dalek::VerifyingKey;
use kp_keys::KeyHistory;
use kp_protocol::certificate::ISSUE_DATE_TOLERANCE_DAYS;
use kp_protocol::{
    Certificate, DocumentKind, ImportConfirmation, KeyRotation, MessageId, ParticipantCode,
    ParticipantDirectory, RejectCode, Resolution, SignedDocument, Timestamp, ValidationContext, Void,
};

use crate::registry::View;

/// A delivered document that passed every check that does not need the store.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: MessageId,
    pub document: SignedDocument,
    pub content: Content,
    /// A certificate from a restricted participant, accepted under enhanced vigilance: why.
    pub vigilance: Option<String>,
    /// `Some`: the document failed a check, and is acknowledged only if the store already
    /// holds it (this very document, by its id), with the receipt given then; otherwise it
    /// is refused with this. Documents are stored once, but a receipt can be lost, and the
    /// resend may come after the checks would no longer pass (the certificate has expired,
    /// the signing key was replaced more than a grace period ago, the registry changed):
    /// refusing it would leave the sender believing refused what the receiver holds. This is
    /// no way around the checks: the id is the SHA-256 of the exact signed bytes (checked
    /// against the frame's), so a stored id means these bytes passed every check when they
    /// first arrived; and what the store does not hold is refused as before.
    pub refused: Option<Refusal>,
}

/// The decoded body of a delivered document.
#[derive(Debug, Clone)]
pub enum Content {
    Certificate(Certificate),
    Confirmation(ImportConfirmation),
    Void(Void),
    Rotation(KeyRotation),
    /// A settlement of an import discrepancy; the engine checks it against the certificate.
    Resolution(Resolution),
}

pub use crate::refusal::Refusal;

/// What the receiver knows when checking.
pub struct CheckContext<'a> {
    pub me: ParticipantCode,
    /// The participant at the other end of the TLS link.
    pub peer: ParticipantCode,
    pub now: Timestamp,
    pub clock_tolerance_ms: i64,
    /// How long after a rotation replaced a signing key documents signed with it are still
    /// accepted for delivery (`keys.tls_grace_period`): what the peer queued before it
    /// rotated. After that, the retired key is trusted only for what is already in the log,
    /// so a stolen retired key cannot deliver documents backdated into its old window.
    pub retired_key_grace_ms: i64,
    /// The participant registry on the day of checking.
    pub registry: View<'a>,
}

impl std::fmt::Debug for CheckContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckContext").field("me", &self.me).field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// A delivered document: the id the frame claims, the id the document actually has (if the
/// reader computed it from the frame's bytes; otherwise it is computed here), and the
/// document.
pub type Delivery = (MessageId, Option<MessageId>, SignedDocument);

/// Checks a batch of deliveries from one peer whose key history is `history` (updated in
/// place by rotation statements in the batch, so that later documents in the same batch
/// can use the new key). Results are in order.
///
/// A document that is what the frame says (its id is the SHA-256 of its bytes) and is
/// signed by the peer, but fails a later check, comes back `Ok` with the refusal in
/// [`Received::refused`] if its body decodes: only the store can tell whether it is a resend
/// of a document it accepted before, which gets its original receipt (see there).
pub fn check_batch(
    ctx: &CheckContext<'_>,
    history: &mut KeyHistory,
    items: Vec<Delivery>,
) -> Vec<Result<Received, Refusal>> {
    let items: Vec<(MessageId, MessageId, SignedDocument)> = items
        .into_iter()
        .map(|(claimed, actual, doc)| {
            let actual = actual.unwrap_or_else(|| doc.message_id());
            (claimed, actual, doc)
        })
        .collect();
    // Rotations change which keys are valid, so a batch that holds one is checked document
    // by document in order; in others every precheck comes first, then the signatures.
    if items.iter().any(|(_, _, d)| d.kind == DocumentKind::KeyRotation) {
        return items
            .into_iter()
            .map(|(id, actual, doc)| {
                identify(ctx, &id, &actual, &doc)?;
                let checked = precheck(ctx, history, &doc).and_then(|key| {
                    crate::meter::measure(crate::meter::Part::VerifyDocument, || doc.verify_signature(&key))
                        .map_err(|e| Refusal::new(RejectCode::BadSignature, e.to_string()))?;
                    let (content, vigilance) = check_content(ctx, history, &doc)?;
                    if let Content::Rotation(_) = &content {
                        history
                            .apply(&doc)
                            .map_err(|e| Refusal::new(RejectCode::InvalidDocument, e.to_string()))?;
                    }
                    Ok((content, vigilance))
                });
                match checked {
                    Ok((content, vigilance)) => {
                        Ok(Received { message_id: id, document: doc, content, vigilance, refused: None })
                    }
                    Err(refusal) => unless_stored(id, doc, refusal),
                }
            })
            .collect();
    }

    // The outer `Err`: not what the frame says, or not the peer's (refused outright).
    let prechecked: Vec<Result<Result<VerifyingKey, Refusal>, Refusal>> = items
        .iter()
        .map(|(id, actual, doc)| {
            identify(ctx, id, actual, doc)?;
            Ok(precheck(ctx, history, doc))
        })
        .collect();
    let to_verify: Vec<(usize, &SignedDocument, &VerifyingKey)> = prechecked
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(Ok(k)) => Some((i, &items[i].2, k)),
            _ => None,
        })
        .collect();
    let good = verify_signatures(&to_verify.iter().map(|(_, d, k)| (*d, *k)).collect::<Vec<_>>());
    let mut sig_ok = vec![false; items.len()];
    for ((i, _, _), ok) in to_verify.iter().zip(good) {
        sig_ok[*i] = ok;
    }
    items
        .into_iter()
        .zip(prechecked)
        .zip(sig_ok)
        .map(|(((id, _, doc), pre), ok)| {
            let checked = match pre? {
                Err(refusal) => Err(refusal),
                Ok(_) if !ok => Err(Refusal::new(
                    RejectCode::BadSignature,
                    format!(
                        "the signature of this {} does not verify with {}'s key {}",
                        doc.kind, doc.signer, doc.key_id
                    ),
                )),
                Ok(_) => check_content(ctx, history, &doc),
            };
            match checked {
                Ok((content, vigilance)) => {
                    Ok(Received { message_id: id, document: doc, content, vigilance, refused: None })
                }
                Err(refusal) => unless_stored(id, doc, refusal),
            }
        })
        .collect()
}

/// Verifies signatures one by one with `verify_strict`, the check `log verify`, `kpnode
/// verify` and every other path make, so that all accept exactly the same signatures.
///
/// Not with ed25519-dalek's `verify_batch`: its equation is not multiplied by the cofactor,
/// so a signer can craft a signature whose R carries a small-order component (accepted by
/// the batch about half the time) or is the identity (accepted every time) although
/// `verify_strict` refuses it. A batch made exactly equivalent needs a subgroup check of
/// every R, and that check costs as much as a strict verification (measured on 256
/// signatures: 9.4 ms of `[ℓ]R` checks plus 5.1 ms of batch against 14.3 ms strict), so the
/// batch would gain nothing.
pub fn verify_signatures(items: &[(&SignedDocument, &VerifyingKey)]) -> Vec<bool> {
    items
        .iter()
        .map(|(d, k)| {
            crate::meter::measure(crate::meter::Part::VerifyDocument, || d.verify_signature(k).is_ok())
        })
        .collect()
}

/// The document is the one the frame names and is signed by the participant at the other
/// end of the link. What fails here is refused outright; what passes is, byte for byte, a
/// document of the peer's that the store may hold (see [`Received::refused`]).
fn identify(
    ctx: &CheckContext<'_>,
    claimed_id: &MessageId,
    actual: &MessageId,
    doc: &SignedDocument,
) -> Result<(), Refusal> {
    if actual != claimed_id {
        return Err(Refusal::new(
            RejectCode::InvalidDocument,
            format!("the frame names message {claimed_id:?}, but the document's id is {actual:?}"),
        ));
    }
    if doc.signer != ctx.peer {
        return Err(Refusal::new(
            RejectCode::WrongSigner,
            format!("the document is signed by {}, but this link belongs to {}", doc.signer, ctx.peer),
        ));
    }
    Ok(())
}

/// A refusal of an identified document, left for the store to overrule if it holds the
/// document (then the resend gets its original receipt); outright if the body does not
/// decode, as nothing stored can have that body.
fn unless_stored(id: MessageId, document: SignedDocument, refusal: Refusal) -> Result<Received, Refusal> {
    let content = match document.kind {
        DocumentKind::Certificate => document.body().ok().map(Content::Certificate),
        DocumentKind::ImportConfirmation => document.body().ok().map(Content::Confirmation),
        DocumentKind::Void => document.body().ok().map(Content::Void),
        DocumentKind::KeyRotation => document.body().ok().map(Content::Rotation),
        DocumentKind::Resolution => document.body().ok().map(Content::Resolution),
        DocumentKind::Receipt
        | DocumentKind::ParticipantChange
        | DocumentKind::PeerChange
        | DocumentKind::ParticipantList
        | DocumentKind::ParticipantListV2
        | DocumentKind::CertificateSeal => None,
    };
    match content {
        Some(content) => {
            Ok(Received { message_id: id, document, content, vigilance: None, refused: Some(refusal) })
        }
        None => Err(refusal),
    }
}

/// Time and key; returns the key to check the signature with.
fn precheck(
    ctx: &CheckContext<'_>,
    history: &KeyHistory,
    doc: &SignedDocument,
) -> Result<VerifyingKey, Refusal> {
    if doc.signed_at > ctx.now.saturating_add_millis(ctx.clock_tolerance_ms) {
        return Err(Refusal::new(
            RejectCode::ClockSkew,
            format!(
                "signed at {}, which is in the future for this node (now {}); check the clocks",
                doc.signed_at, ctx.now
            ),
        ));
    }
    // The key must have been valid when the document says it was signed ...
    let key = history
        .signing_key_at(doc.key_id, doc.signed_at)
        .copied()
        .map_err(|e| Refusal::new(RejectCode::UnknownKey, e.to_string()))?;
    // ... and, if a rotation has since retired it, the delivery must come within the grace
    // period: otherwise whoever holds an old key could sign today and date it back into the
    // key's window, since nothing else bounds how old `signed_at` may be.
    let retired = history.signing_keys().iter().find(|e| e.key_id == doc.key_id).and_then(|e| e.valid_until);
    if let Some(until) = retired {
        let last_delivery = until.saturating_add_millis(ctx.retired_key_grace_ms);
        if ctx.now >= last_delivery {
            return Err(Refusal::new(
                RejectCode::UnknownKey,
                format!(
                    "{}'s key {} was replaced at {until}; documents signed with it are accepted for \
                     delivery only until {last_delivery} (the grace period), and it is now {}",
                    doc.signer, doc.key_id, ctx.now
                ),
            ));
        }
    }
    Ok(key)
}

fn invalid(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(RejectCode::InvalidDocument, e.to_string())
}

/// The body decodes and obeys the rules for its kind, given the registry; a certificate
/// accepted under enhanced vigilance comes with the reason.
fn check_content(
    ctx: &CheckContext<'_>,
    history: &KeyHistory,
    doc: &SignedDocument,
) -> Result<(Content, Option<String>), Refusal> {
    match doc.kind {
        DocumentKind::Certificate => {
            let cert: Certificate = doc.body().map_err(invalid)?;
            let today = ctx.now.date();
            // A certificate cannot have been signed before it was issued: the signing node
            // accepts an issue date at most a day after its own today. This bounds a
            // certificate's `signed_at` from below, as the clock tolerance bounds it from above.
            let signed_on = doc.signed_at.date();
            if cert.content.issued_on.days_after(signed_on) > ISSUE_DATE_TOLERANCE_DAYS {
                return Err(invalid(format!(
                    "certificate {} is signed at {}, before its issue date {}",
                    cert.number, doc.signed_at, cert.content.issued_on
                )));
            }
            if cert.content.expires_on < today {
                return Err(Refusal::new(
                    RejectCode::Expired,
                    format!(
                        "certificate {} expired on {} (today is {today})",
                        cert.number, cert.content.expires_on
                    ),
                ));
            }
            if cert.delivered_to() != ctx.me {
                let whom = match cert.content.importing_member {
                    Some(m) => format!("{m}, a member state of {}", cert.content.importing_participant),
                    None => cert.content.importing_participant.to_string(),
                };
                return Err(Refusal::new(
                    RejectCode::NotAddressedToUs,
                    format!("certificate {} is for {whom}, not {}", cert.number, ctx.me),
                ));
            }
            // Who may issue in whose name is judged on the day it was signed (an honest node
            // validates with its registry of that day): a participant that has joined a union
            // since signed this one in its own name, and that name stands. Not the issue date,
            // which the signer chooses: a backdated one would reopen a name it has left.
            let on_issue = ctx.registry.at(signed_on.min(today));
            let vctx = ValidationContext {
                today,
                max_validity_days: None,
                participants: &on_issue,
                exporter: Some(doc.signer),
                // A member state's node receives for its union what names it as the member.
                importer: Some(cert.content.importing_participant),
            };
            cert.validate(&vctx).map_err(invalid)?;
            let vigilance = ctx.registry.accept(&cert, doc.signer, ctx.me)?;
            Ok((Content::Certificate(cert), vigilance))
        }
        DocumentKind::ImportConfirmation => {
            let c: ImportConfirmation = doc.body().map_err(invalid)?;
            if c.importing_participant != doc.signer {
                return Err(invalid(format!(
                    "a confirmation for {}'s import must be signed by {}, not {}",
                    c.importing_participant, c.importing_participant, doc.signer
                )));
            }
            if c.exporting_participant != ctx.me
                && ctx.registry.union_of(ctx.me) != Some(c.exporting_participant)
            {
                return Err(Refusal::new(
                    RejectCode::NotAddressedToUs,
                    format!(
                        "the confirmation concerns an export by {}, not {}",
                        c.exporting_participant, ctx.me
                    ),
                ));
            }
            Ok((Content::Confirmation(c), None))
        }
        DocumentKind::Void => Ok((Content::Void(doc.body().map_err(invalid)?), None)),
        DocumentKind::Resolution => Ok((Content::Resolution(doc.body().map_err(invalid)?), None)),
        DocumentKind::KeyRotation => {
            let r: KeyRotation = doc.body().map_err(invalid)?;
            // A statement arriving now takes effect by now: a future `effective_from` would let
            // a burst of rotations dated a day apart through the per-day bound at once.
            if r.effective_from > ctx.now.saturating_add_millis(ctx.clock_tolerance_ms) {
                return Err(Refusal::new(
                    RejectCode::ClockSkew,
                    format!(
                        "the rotation takes effect at {}, in the future for this node (now {}); a \
                         rotation is sent when it takes effect",
                        r.effective_from, ctx.now
                    ),
                ));
            }
            // Checking that it applies (and its second signature) without changing anything.
            history.clone().apply(doc).map_err(invalid)?;
            Ok((Content::Rotation(r), None))
        }
        DocumentKind::Receipt => Err(Refusal::new(
            RejectCode::NotAllowed,
            "a receipt is not a deliverable document; it travels in Receipt frames",
        )),
        DocumentKind::ParticipantChange
        | DocumentKind::PeerChange
        | DocumentKind::ParticipantList
        | DocumentKind::ParticipantListV2
        | DocumentKind::CertificateSeal => {
            Err(Refusal::new(
                RejectCode::NotAllowed,
                format!(
                    "a {} is not exchanged between nodes (it is kept in its signer's own log; participant lists are imported by the operator; seals travel as QR codes)",
                    doc.kind
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::SigningKey;
    use sha2::{Digest, Sha512};

    use super::*;
    use ed25519_dalek::Signature;

    const RU: ParticipantCode = ParticipantCode::from_static("RU");
    const T0: i64 = 1_795_000_000_000;

    fn honest(key: &SigningKey, n: u8) -> SignedDocument {
        SignedDocument::sign_bytes(DocumentKind::Void, vec![n; 8], RU, key, Timestamp::from_unix_millis(T0))
    }

    fn scalar_of(bytes: impl AsRef<[u8]>) -> Scalar {
        let wide: [u8; 64] = Sha512::digest(bytes.as_ref()).into();
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    /// The signer's own forgery of a signature over `doc`'s message with R = `r_point`, whose
    /// discrete log in the prime-order part is `r`: the challenge is recomputed over the
    /// crafted R, so `[s]B = R - T + [k]A`. The cofactorless batch equation holds whenever
    /// the batch's random coefficient kills the small-order part `T`; `verify_strict` never.
    fn crafted(doc: &SignedDocument, key: &SigningKey, r: Scalar, torsion: EdwardsPoint) -> SignedDocument {
        let message = doc.signing_message();
        let r_point = (ED25519_BASEPOINT_POINT * r + torsion).compress();
        let mut hram = Sha512::new();
        hram.update(r_point.as_bytes());
        hram.update(key.verifying_key().as_bytes());
        hram.update(&message);
        let k = Scalar::from_bytes_mod_order_wide(&hram.finalize().into());
        let s = r + k * key.to_scalar();
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(r_point.as_bytes());
        signature[32..].copy_from_slice(s.as_bytes());
        SignedDocument { signature, ..doc.clone() }
    }

    fn raw_batch(items: &[(&SignedDocument, &VerifyingKey)]) -> bool {
        let messages: Vec<Vec<u8>> = items.iter().map(|(d, _)| d.signing_message()).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let sigs: Vec<Signature> = items.iter().map(|(d, _)| Signature::from_bytes(&d.signature)).collect();
        let keys: Vec<VerifyingKey> = items.iter().map(|(_, k)| **k).collect();
        ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok()
    }

    /// A signature whose R has an order-2 component added: `verify_strict` refuses it, the
    /// bare batch accepts it about half the time, and `verify_signatures` must refuse it every
    /// time, while still accepting the honest signatures batched with it.
    #[test]
    fn a_mixed_order_r_is_refused_on_every_path() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let vk = key.verifying_key();
        let order_two = EIGHT_TORSION[4];
        assert!(order_two.is_small_order() && order_two != EdwardsPoint::default());
        let docs: Vec<SignedDocument> = (0..4).map(|n| honest(&key, n)).collect();
        // The batch's coefficients are derived from its inputs, so each trial crafts the
        // signature with another nonce.
        let mut batch_accepted = 0;
        for trial in 0u32..64 {
            let mut docs = docs.clone();
            docs[3] = crafted(&docs[3], &key, scalar_of(trial.to_be_bytes()), order_two);
            let refused = docs[3].verify_signature(&vk).unwrap_err();
            assert_eq!(refused, kp_protocol::DocumentError::BadSignature(docs[3].key_id));
            let items: Vec<(&SignedDocument, &VerifyingKey)> = docs.iter().map(|d| (d, &vk)).collect();
            batch_accepted += usize::from(raw_batch(&items));
            assert_eq!(verify_signatures(&items), vec![true, true, true, false], "trial {trial}");
        }
        // The crafted signature really is one the cofactorless batch lets through.
        assert!(batch_accepted > 0, "the bare batch never accepted the crafted signature");
    }

    /// R = the identity and s = k·a: the batch equation holds every time, `verify_strict`
    /// refuses a small-order R.
    #[test]
    fn an_identity_r_is_refused_on_every_path() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let vk = key.verifying_key();
        let mut docs: Vec<SignedDocument> = (0..5).map(|n| honest(&key, n)).collect();
        docs[1] = crafted(&docs[1], &key, Scalar::ZERO, EdwardsPoint::default());
        assert!(docs[1].verify_signature(&vk).is_err());
        let items: Vec<(&SignedDocument, &VerifyingKey)> = docs.iter().map(|d| (d, &vk)).collect();
        assert!(raw_batch(&items), "the crafted signature should pass the bare batch");
        assert_eq!(verify_signatures(&items), vec![true, false, true, true, true]);
    }

    /// Through the receiver's checks: a batch of deliveries holding the identity-R forgery
    /// (which the bare batch always accepts) gets a `bad_signature` refusal for it alone.
    #[test]
    fn a_delivered_batch_refuses_the_crafted_signature() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let tls = kp_keys::TlsKeyPair::generate();
        let tls_cert = kp_keys::tlscert::self_signed(&tls, RU).unwrap();
        let history = KeyHistory::genesis(
            RU,
            key.verifying_key().as_bytes(),
            Timestamp::from_unix_millis(T0 - DAY),
            tls_cert,
        )
        .unwrap();
        let mut docs: Vec<SignedDocument> = (0..6).map(|i| void_signed(&key, T0 - 1000 + i)).collect();
        docs[4] = crafted(&docs[4], &key, Scalar::ZERO, EdwardsPoint::default());
        let items = docs.iter().map(|d| (d.message_id(), None, d.clone())).collect();
        let results: Vec<_> = check_all_at(&history, T0, items).into_iter().map(settled).collect();
        for (i, r) in results.iter().enumerate() {
            match (i, r) {
                (4, Err(refusal)) => {
                    assert_eq!(refusal.code, RejectCode::BadSignature, "{refusal}");
                    assert!(refusal.detail.contains("does not verify"), "{refusal}");
                }
                (4, Ok(_)) => panic!("the crafted signature was accepted"),
                (_, r) => assert!(r.is_ok(), "{i}: {r:?}"),
            }
        }
    }

    /// Honest signatures still go through the batch and are all accepted; one altered is found.
    #[test]
    fn honest_batches_still_verify_and_a_bad_one_is_found() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let vk = key.verifying_key();
        let mut docs: Vec<SignedDocument> = (0..6).map(|n| honest(&key, n)).collect();
        let items: Vec<(&SignedDocument, &VerifyingKey)> = docs.iter().map(|d| (d, &vk)).collect();
        assert_eq!(verify_signatures(&items), vec![true; 6]);
        docs[2].signature[40] ^= 1;
        let items: Vec<(&SignedDocument, &VerifyingKey)> = docs.iter().map(|d| (d, &vk)).collect();
        assert_eq!(verify_signatures(&items), vec![true, true, false, true, true, true]);
    }

    const DAY: i64 = 86_400_000;
    const GRACE: i64 = 7 * DAY;

    fn void_signed(key: &SigningKey, at: i64) -> SignedDocument {
        let void = kp_protocol::Void {
            certificate: "RU-2026-000001".parse().unwrap(),
            certificate_id: kp_protocol::Digest::of(b"cert"),
            reason: "issued in error".parse().unwrap(),
        };
        SignedDocument::sign(&void, RU, key, Timestamp::from_unix_millis(at))
    }

    /// IN checks `items` from RU at `now` against a copy of `history`.
    fn check_all_at(history: &KeyHistory, now: i64, items: Vec<Delivery>) -> Vec<Result<Received, Refusal>> {
        let registry = crate::registry::Registry::default();
        let now = Timestamp::from_unix_millis(now);
        let ctx = CheckContext {
            me: ParticipantCode::from_static("IN"),
            peer: RU,
            now,
            clock_tolerance_ms: 300_000,
            retired_key_grace_ms: GRACE,
            registry: registry.on(now.date()),
        };
        check_batch(&ctx, &mut history.clone(), items)
    }

    fn check_at(history: &KeyHistory, now: i64, doc: &SignedDocument) -> Result<Received, Refusal> {
        let delivery = (doc.message_id(), None, doc.clone());
        settled(check_all_at(history, now, vec![delivery]).pop().unwrap())
    }

    /// The result for a document the store does not hold: a refusal left to the store is one.
    fn settled(checked: Result<Received, Refusal>) -> Result<Received, Refusal> {
        checked.and_then(|r| match r.refused {
            Some(refusal) => Err(refusal),
            None => Ok(r),
        })
    }

    /// Someone holding RU's retired key signs a document today and dates it back into the
    /// key's old window. It is accepted while the peer may still have such documents queued
    /// (the grace period after the rotation), and refused, naming the rule, after it.
    #[test]
    fn a_retired_key_cannot_deliver_documents_backdated_into_its_window() {
        let (old, new) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let tls = kp_keys::TlsKeyPair::generate();
        let tls_cert = kp_keys::tlscert::self_signed(&tls, RU).unwrap();
        let created = T0 - 365 * DAY;
        let mut history = KeyHistory::genesis(
            RU,
            old.verifying_key().as_bytes(),
            Timestamp::from_unix_millis(created),
            tls_cert,
        )
        .unwrap();
        let rotation = KeyRotation::new_with_signing_key(
            RU,
            1,
            kp_protocol::KeyId::of(&old.verifying_key()),
            &new,
            None,
            Timestamp::from_unix_millis(T0),
        );
        history
            .apply(&SignedDocument::sign(&rotation, RU, &old, Timestamp::from_unix_millis(T0 - 1)))
            .unwrap();

        let backdated = void_signed(&old, T0 - 30 * DAY);
        // Within the grace period: what RU queued before rotating still arrives.
        check_at(&history, T0 + DAY, &backdated).unwrap();
        // Long after: refused, although the signature holds and `signed_at` lies in the window.
        let now = T0 + 90 * DAY;
        let refusal = check_at(&history, now, &backdated).unwrap_err();
        assert_eq!(refusal.code, RejectCode::UnknownKey, "{refusal}");
        assert!(
            refusal.detail.contains("was replaced at") && refusal.detail.contains("grace period"),
            "{refusal}"
        );
        // The current key still delivers, and the old one is still right for what it signed.
        check_at(&history, now, &void_signed(&new, now - DAY)).unwrap();
        assert!(history.signing_key_at(backdated.key_id, backdated.signed_at).is_ok());
    }
}
