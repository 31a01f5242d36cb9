//! The checks a receiver makes on a delivered document before the exchange rules see it,
//! none of which need the store: the signer is the participant at the other end of the
//! link, its key was valid when it signed, the signature holds, the time is plausible and
//! the content obeys the rules. Signatures of a batch are verified together.

use ed25519_dalek::{Signature, VerifyingKey};
use kp_keys::KeyHistory;
use kp_protocol::{
    Certificate, DocumentKind, ImportConfirmation, KeyRotation, MessageId, ParticipantCode,
    ParticipantDirectory, RejectCode, SignedDocument, Timestamp, ValidationContext, Void,
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
}

/// The decoded body of a delivered document.
#[derive(Debug, Clone)]
pub enum Content {
    Certificate(Certificate),
    Confirmation(ImportConfirmation),
    Void(Void),
    Rotation(KeyRotation),
}

/// A permanent refusal, sent back as `Reject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: RejectCode,
    pub detail: String,
}

impl Refusal {
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Refusal {
        Refusal { code, detail: detail.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// What the receiver knows when checking.
pub struct CheckContext<'a> {
    pub me: ParticipantCode,
    /// The participant at the other end of the TLS link.
    pub peer: ParticipantCode,
    pub now: Timestamp,
    pub clock_tolerance_ms: i64,
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
    // Rotations change which keys are valid, so a batch that holds one is checked one by
    // one in order; others have their signatures verified together.
    if items.iter().any(|(_, _, d)| d.kind == DocumentKind::KeyRotation) {
        return items
            .into_iter()
            .map(|(id, actual, doc)| {
                let key = precheck(ctx, history, &id, &actual, &doc)?;
                doc.verify_signature(&key)
                    .map_err(|e| Refusal::new(RejectCode::BadSignature, e.to_string()))?;
                let (content, vigilance) = check_content(ctx, history, &doc)?;
                if let Content::Rotation(_) = &content {
                    history
                        .apply(&doc)
                        .map_err(|e| Refusal::new(RejectCode::InvalidDocument, e.to_string()))?;
                }
                Ok(Received { message_id: id, document: doc, content, vigilance })
            })
            .collect();
    }

    let prechecked: Vec<Result<VerifyingKey, Refusal>> =
        items.iter().map(|(id, actual, doc)| precheck(ctx, history, id, actual, doc)).collect();
    let to_verify: Vec<(usize, &SignedDocument, &VerifyingKey)> = prechecked
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|k| (i, &items[i].2, k)))
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
            pre?;
            if !ok {
                return Err(Refusal::new(
                    RejectCode::BadSignature,
                    format!(
                        "the signature of this {} does not verify with {}'s key {}",
                        doc.kind, doc.signer, doc.key_id
                    ),
                ));
            }
            let (content, vigilance) = check_content(ctx, history, &doc)?;
            Ok(Received { message_id: id, document: doc, content, vigilance })
        })
        .collect()
}

/// Verifies signatures, all at once when there are several (about twice as fast per
/// signature); if the batch fails, one by one to find the bad ones.
pub fn verify_signatures(items: &[(&SignedDocument, &VerifyingKey)]) -> Vec<bool> {
    if items.len() >= 4 {
        let messages: Vec<Vec<u8>> = items.iter().map(|(d, _)| d.signing_message()).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let sigs: Vec<Signature> = items.iter().map(|(d, _)| Signature::from_bytes(&d.signature)).collect();
        let keys: Vec<VerifyingKey> = items.iter().map(|(_, k)| **k).collect();
        // Weak keys never enter a history (checked at enrolment), so a batch that passes
        // means every signature is valid.
        if ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok() {
            return vec![true; items.len()];
        }
    }
    items.iter().map(|(d, k)| d.verify_signature(k).is_ok()).collect()
}

/// Signer, key and time; returns the key to check the signature with.
fn precheck(
    ctx: &CheckContext<'_>,
    history: &KeyHistory,
    claimed_id: &MessageId,
    actual: &MessageId,
    doc: &SignedDocument,
) -> Result<VerifyingKey, Refusal> {
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
    if doc.signed_at > ctx.now.saturating_add_millis(ctx.clock_tolerance_ms) {
        return Err(Refusal::new(
            RejectCode::ClockSkew,
            format!(
                "signed at {}, which is in the future for this node (now {}); check the clocks",
                doc.signed_at, ctx.now
            ),
        ));
    }
    history
        .signing_key_at(doc.key_id, doc.signed_at)
        .copied()
        .map_err(|e| Refusal::new(RejectCode::UnknownKey, e.to_string()))
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
            if cert.content.expires_on < today {
                return Err(Refusal::new(
                    RejectCode::Expired,
                    format!(
                        "certificate {} expired on {} (today is {today})",
                        cert.number, cert.content.expires_on
                    ),
                ));
            }
            if cert.content.importing_participant != ctx.me {
                return Err(Refusal::new(
                    RejectCode::NotAddressedToUs,
                    format!(
                        "certificate {} is for {}, not {}",
                        cert.number, cert.content.importing_participant, ctx.me
                    ),
                ));
            }
            let vctx = ValidationContext {
                today,
                max_validity_days: None,
                participants: &ctx.registry,
                exporter: Some(doc.signer),
                importer: Some(ctx.me),
            };
            cert.validate(&vctx).map_err(invalid)?;
            let vigilance = ctx.registry.accept(&cert, ctx.me)?;
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
        DocumentKind::KeyRotation => {
            let r: KeyRotation = doc.body().map_err(invalid)?;
            // Checking that it applies (and its second signature) without changing anything.
            history.clone().apply(doc).map_err(invalid)?;
            Ok((Content::Rotation(r), None))
        }
        DocumentKind::Receipt => Err(Refusal::new(
            RejectCode::NotAllowed,
            "a receipt is not a deliverable document; it travels in Receipt frames",
        )),
        DocumentKind::ParticipantChange | DocumentKind::ParticipantList | DocumentKind::CertificateSeal => {
            Err(Refusal::new(
                RejectCode::NotAllowed,
                format!(
                    "a {} is not exchanged between nodes (participant lists are imported by the operator; seals travel as QR codes)",
                    doc.kind
                ),
            ))
        }
    }
}
