//! Issuing a certificate: validate the draft, number it once, sign it, and hand it to the store
//! actor, which stores and queues it durably. The path of `POST /v1/certificates` and of
//! `kpnode bench`.
//!
//! Numbering lives here alone: `next_number` draws the next sequence of a year from the
//! node's counter (`Shared::numbers`), seeded on first use from the last sequence stored
//! (`meta` `number/<year>`). The engine only records, in the same durable write as the
//! certificate, the highest sequence stored, so a restart never draws a number again. The
//! number is drawn here, not in the engine, because it is signed with the certificate, and
//! signing stays off the store actor's thread.

use std::sync::Arc;

use kp_protocol::{CertificateDraft, CertificateNumber, Date, Problem, ValidationContext};
use serde::{Deserialize, Serialize};

use crate::actor::ActorError;
use crate::state::Shared;
use crate::store::{get_record, meta, CertRecord, Officer, StoreError, Tree};
use kp_exchange::engine::{Command, EngineError, Idempotency, Outcome};

/// The answer to a submission.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Submitted {
    pub number: String,
    pub status: String,
    pub message_id: String,
    /// True if nothing new was issued: this exact certificate was already stored, or the
    /// request's Idempotency-Key (with the same body) already produced this certificate.
    pub already_stored: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The draft is invalid: every problem, by field.
    #[error("invalid certificate: {0:?}")]
    Invalid(Vec<Problem>),
    /// The engine refused it (a number taken by other content, an idempotency key reused
    /// with another body…).
    #[error(transparent)]
    Refused(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Actor(#[from] ActorError),
    /// The store failed after the node numbered the certificate: it may or may not have been
    /// written. The message says how to retry without issuing the shipment twice.
    #[error("{}", uncertain_message(.error, .number, *.idempotent))]
    Uncertain { error: ActorError, number: CertificateNumber, idempotent: bool },
    /// Every number tried was taken by hand.
    #[error("could not find a free certificate number; give one in the JSON")]
    NoFreeNumber,
    /// Not stored because the batch was atomic and these items (0-based) were refused.
    #[error("{}", not_attempted_message(.0))]
    NotAttempted(Vec<usize>),
    /// The actor answered with an outcome a submission cannot have.
    #[error("unexpected outcome {0}")]
    Unexpected(String),
}

fn uncertain_message(error: &ActorError, number: &CertificateNumber, idempotent: bool) -> String {
    if idempotent {
        format!(
            "{error}. This certificate was numbered {number} and may have been written before the failure: once the node is back, send the same request with the same Idempotency-Key — you get {number} back if it was stored, and a new certificate is issued only if it was not"
        )
    } else {
        format!(
            "{error}. This certificate was numbered {number} and may have been written before the failure: once the node is back, submit it again with \"number\": \"{number}\" — if it was stored you get it back, and if that number has meanwhile gone to another certificate you get a conflict, and should submit it without a number"
        )
    }
}

fn not_attempted_message(refused: &[usize]) -> String {
    let shown: Vec<String> = refused.iter().take(10).map(usize::to_string).collect();
    let more = if refused.len() > 10 { format!(" and {} more", refused.len() - 10) } else { String::new() };
    format!(
        "not stored: the batch was sent with atomic=true and item(s) {}{more} (counting from 0) were refused, so none of it was stored; fix those and send the batch again",
        shown.join(", ")
    )
}

/// The next certificate number of `year`, above anything assigned or stored.
fn next_number(shared: &Shared, year: i32) -> Result<u64, StoreError> {
    let mut numbers = shared.numbers.lock().unwrap_or_else(|p| p.into_inner());
    let n = match numbers.entry(year) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            let key = format!("{}{year}", meta::NUMBER_PREFIX);
            e.insert(get_record::<u64, _>(&shared.store, Tree::Meta, key.as_bytes())?.unwrap_or(0))
        }
    };
    *n += 1;
    Ok(*n)
}

/// The answer to a request whose idempotency key is remembered: the certificate it produced,
/// or the conflict. `None` if the key is new (or its window has passed).
fn remembered(shared: &Shared, idem: &Idempotency) -> Result<Option<Submitted>, IssueError> {
    let key = kp_exchange::engine::idempotency_meta_key(&idem.key);
    let record = get_record::<crate::store::IdempotencyRecord, _>(&shared.store, Tree::Meta, &key)?;
    let Some(prior) = kp_exchange::engine::live_idempotency(record, shared.now()) else { return Ok(None) };
    if prior.content != idem.content {
        return Err(EngineError::IdempotencyConflict { key: idem.key.clone(), number: prior.number }.into());
    }
    let Some(record) =
        get_record::<CertRecord, _>(&shared.store, Tree::Certs, prior.number.as_str().as_bytes())?
    else {
        return Ok(None);
    };
    Ok(Some(submitted(&record, true, Vec::new())))
}

fn submitted(record: &CertRecord, already_stored: bool, warnings: Vec<String>) -> Submitted {
    Submitted {
        number: record.number.to_string(),
        status: record.status.as_str().into(),
        message_id: record.message_id.to_string(),
        already_stored,
        warnings,
    }
}

/// The draft in `body`, checked against the registry in force today and the node's settings;
/// with the warnings it deserves (an authority named otherwise, an importer not enrolled).
/// Its CPU time is the `json` part of [`kp_exchange::meter`].
fn validate(
    shared: &Shared,
    today: Date,
    body: &[u8],
) -> Result<(CertificateDraft, Vec<String>), IssueError> {
    kp_exchange::meter::measure(kp_exchange::meter::Part::Json, || validate_draft(shared, today, body))
}

fn validate_draft(
    shared: &Shared,
    today: Date,
    body: &[u8],
) -> Result<(CertificateDraft, Vec<String>), IssueError> {
    let mut warnings = Vec::new();
    let registry = shared.registry.get();
    let on = registry.on(today);
    let ctx = ValidationContext {
        today,
        max_validity_days: Some(shared.config.certificates.max_validity_days),
        participants: &on,
        exporter: Some(shared.me),
        importer: None,
    };
    let draft = CertificateDraft::from_json_bytes(body, &ctx).map_err(|p| IssueError::Invalid(p.0))?;
    let mut problems = on.issue_problems(&draft.content);
    if let Some(why) = shared.config.authority_mismatch(draft.content.issuing_authority.as_str()) {
        match shared.config.certificates.authority_mismatch {
            kp_config::AuthorityMismatch::Refuse => problems.push(
                Problem::new("issuing_authority", why).coded(super::NodeText::AuthorityMismatch {
                    given: draft.content.issuing_authority.as_str().into(),
                    authority: shared.config.authority.as_str().into(),
                    setting: shared.config.certificates.authority_mismatch.as_str().into(),
                }),
            ),
            kp_config::AuthorityMismatch::Warn => warnings.push(format!("issuing_authority {why}")),
            kp_config::AuthorityMismatch::Allow => {}
        }
    }
    // A member state's node receives for its union what names it as `importing_member`.
    let importer = draft.content.importing_member.unwrap_or(draft.content.importing_participant);
    let enrolled = shared.trust.get().active(importer).is_some();
    if on.entry(importer).is_some_and(|e| !e.members.is_empty()) && !enrolled {
        problems.push(
            Problem::new(
                "importing_member",
                format!(
                "{importer} is a union of member states, and no node of {importer}'s own is enrolled here: \
                 name the member state where the shipment is imported (importing_member, such as \"BE\"), \
                 whose node receives and confirms it"
            ),
            )
            .coded(super::NodeText::UnionWithoutNode { importer: importer.into() }),
        );
    }
    if !problems.is_empty() {
        return Err(IssueError::Invalid(problems));
    }
    if !enrolled {
        warnings.push(format!(
            "{importer} is not an enrolled peer; the certificate stays queued until its node is enrolled (kpnode peer add)"
        ));
    }
    Ok((draft, warnings))
}

/// A valid draft numbered (if it had no number) and signed: the command that stores it.
struct Signed {
    command: Command,
    number: CertificateNumber,
    /// The year and sequence this node assigned, if it numbered the draft.
    assigned: Option<(i32, u64)>,
}

/// Refused before a number is drawn while the node awaits recovery from its partners (the
/// engine refuses too, for numbers given by hand).
fn not_pending(shared: &Shared) -> Result<(), IssueError> {
    if kp_exchange::engine::recovery_pending(&shared.store)?.is_some() {
        return Err(EngineError::RecoveryPending.into());
    }
    Ok(())
}

/// Numbers `draft` (from this node's counter of `year`, if it has no number) and signs it.
fn sign(
    shared: &Shared,
    draft: CertificateDraft,
    year: i32,
    idempotency: Option<Idempotency>,
    officer: &Officer,
) -> Result<Signed, StoreError> {
    let exporting = draft.content.exporting_participant;
    let (cert, assigned) = match draft.number.clone() {
        Some(n) => (draft.into_certificate(|| n), None),
        None => {
            let seq = next_number(shared, year)?;
            let n = if exporting == shared.me {
                CertificateNumber::assigned(shared.me, year, seq)
            } else {
                CertificateNumber::assigned_for_union(exporting, shared.me, year, seq)
            };
            (draft.into_certificate(|| n), Some((year, seq)))
        }
    };
    let document = shared.signer.sign(&cert)?;
    let number = cert.number.clone();
    Ok(Signed {
        command: Command::Submit {
            document,
            certificate: Box::new(cert),
            assigned,
            idempotency,
            officer: Some(officer.clone()),
        },
        number,
        assigned,
    })
}

/// Validates, numbers, signs and stores a certificate: the path of the API and of `bench`.
/// With `idem`, a request already answered gets its first answer again.
pub async fn submit(
    shared: &Arc<Shared>,
    body: &[u8],
    idem: Option<Idempotency>,
    officer: &Officer,
) -> Result<Submitted, IssueError> {
    submit_as(shared, body, idem, officer, None).await
}

/// Issues the certificate in `body` as the replacement of certificate `old` (its `replaces`,
/// which the JSON may leave out or must give as `old`). The engine checks, in the same write
/// that stores the new certificate, that `old` can be replaced, and marks it `replaced`.
pub async fn submit_replacement(
    shared: &Arc<Shared>,
    old: &CertificateNumber,
    body: &[u8],
    idem: Option<Idempotency>,
    officer: &Officer,
) -> Result<Submitted, IssueError> {
    submit_as(shared, body, idem, officer, Some(old)).await
}

/// `draft` as the replacement of `old`, or why it cannot be.
fn replacing(mut draft: CertificateDraft, old: &CertificateNumber) -> Result<CertificateDraft, IssueError> {
    use kp_protocol::problem::{Arg, ProblemText};
    if let Some(given) = draft.content.replaces.as_ref().filter(|g| *g != old) {
        return Err(IssueError::Invalid(vec![Problem::new(
            "replaces",
            format!("is {given}, but this is the replacement of {old}: leave replaces out or give {old}"),
        )
        .coded(super::NodeText::ReplacesOther { given: Arg::text(given), old: Arg::text(old) })]));
    }
    if draft.number.as_ref() == Some(old) {
        return Err(IssueError::Invalid(vec![Problem::new(
            "number",
            format!(
                "{old} cannot replace itself: a replacement needs a number of its own (leave number out to have one assigned)"
            ),
        )
        .coded(ProblemText::ReplacesItself { number: Arg::text(old) })]));
    }
    draft.content.replaces = Some(old.clone());
    Ok(draft)
}

async fn submit_as(
    shared: &Arc<Shared>,
    body: &[u8],
    idem: Option<Idempotency>,
    officer: &Officer,
    replaces: Option<&CertificateNumber>,
) -> Result<Submitted, IssueError> {
    // Answered before: no number is drawn. (Two requests racing with one key are settled by
    // the engine, which sees the key in the store or in the batch.)
    if let Some(answer) = idem.as_ref().map(|i| remembered(shared, i)).transpose()?.flatten() {
        return Ok(answer);
    }
    not_pending(shared)?;
    let today = shared.now().date();
    let (draft, warnings) = validate(shared, today, body)?;
    let draft = match replaces {
        Some(old) => replacing(draft, old)?,
        None => draft,
    };
    let year = today.year();
    // A number we assign may already have been taken by hand; then take the next.
    // Only a number this node assigns is worth retrying; a given one is used once.
    let attempts = if draft.number.is_some() { 1 } else { 16 };
    let mut draft = Some(draft);
    for attempt in 1..=attempts {
        let d = if attempt == attempts { draft.take() } else { draft.clone() };
        let Some(d) = d else { break };
        let Signed { command, number, assigned } = sign(shared, d, year, idem.clone(), officer)?;
        let outcome = match shared.actor.call(command).await {
            Ok(o) => o,
            // The batch was committed but not made durable: it may or may not survive. A
            // number the caller chose makes a retry harmless; one the node chose must be
            // named, or a retry could issue the shipment twice.
            Err(error @ ActorError::Storage(_)) if assigned.is_some() => {
                return Err(IssueError::Uncertain { error, number, idempotent: idem.is_some() })
            }
            Err(e) => return Err(e.into()),
        };
        match outcome {
            Outcome::Submitted { record, already_stored } => {
                if !already_stored {
                    tracing::info!(number = %record.number, to = %record.peer, "certificate signed and queued");
                }
                return Ok(submitted(&record, already_stored, warnings));
            }
            Outcome::Refused(EngineError::Conflict(_)) if assigned.is_some() => continue,
            Outcome::Refused(e) => return Err(e.into()),
            other => return Err(IssueError::Unexpected(format!("{other:?}"))),
        }
    }
    Err(IssueError::NoFreeNumber)
}

/// The most certificates one bulk submission (`POST /v1/certificates/batch`) may hold.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// A bulk submission's body may be this many times `api.max_body_bytes` (each certificate in
/// it at most once, as alone): 16 MiB by default, room for 1000 certificates of 16 KiB.
pub const BATCH_BODY_FACTOR: usize = 16;

/// One certificate of a bulk submission: its JSON and its idempotency key, if any.
#[derive(Debug)]
pub struct BatchItem {
    pub body: Vec<u8>,
    pub idempotency: Option<Idempotency>,
}

/// Where an item of a batch stands before it is stored.
enum Step {
    /// Answered without storing: remembered by its idempotency key, or refused.
    Done(Result<Submitted, IssueError>),
    Valid(Box<CertificateDraft>, Vec<String>),
}

/// A signed certificate of a batch waiting for the store: its place, number, whether this
/// node numbered it, and its warnings.
type Pending = (usize, CertificateNumber, Option<(i32, u64)>, Vec<String>);

/// A batch validated, numbered and signed: the answers known already (`None` where the store
/// will answer), and the commands that store the rest.
struct Prepared {
    answers: Vec<Option<Result<Submitted, IssueError>>>,
    pending: Vec<Pending>,
    commands: Vec<Command>,
}

/// Validates, numbers and signs a batch (the CPU-bound part, run off the async workers).
fn prepare(shared: &Shared, items: &[BatchItem], atomic: bool, officer: &Officer) -> Prepared {
    let today = shared.now().date();
    let year = today.year();
    let steps: Vec<Step> = items
        .iter()
        .map(|item| {
            match item.idempotency.as_ref().map(|i| remembered(shared, i)).transpose() {
                Err(e) => return Step::Done(Err(e)),
                Ok(Some(Some(answer))) => return Step::Done(Ok(answer)),
                Ok(_) => {}
            }
            match validate(shared, today, &item.body) {
                Ok((draft, warnings)) => Step::Valid(Box::new(draft), warnings),
                Err(e) => Step::Done(Err(e)),
            }
        })
        .collect();
    let refused: Vec<usize> =
        steps.iter().enumerate().filter(|(_, s)| matches!(s, Step::Done(Err(_)))).map(|(i, _)| i).collect();
    if atomic && !refused.is_empty() {
        let answers = steps
            .into_iter()
            .map(|s| match s {
                Step::Done(r @ Err(_)) => Some(r),
                _ => Some(Err(IssueError::NotAttempted(refused.clone()))),
            })
            .collect();
        return Prepared { answers, pending: Vec::new(), commands: Vec::new() };
    }
    // Number and sign in order, so the numbers of one batch follow its order.
    let mut prepared =
        Prepared { answers: Vec::with_capacity(items.len()), pending: Vec::new(), commands: Vec::new() };
    for ((i, step), item) in steps.into_iter().enumerate().zip(items) {
        match step {
            Step::Done(r) => prepared.answers.push(Some(r)),
            Step::Valid(draft, warnings) => {
                match sign(shared, *draft, year, item.idempotency.clone(), officer) {
                    Ok(Signed { command, number, assigned }) => {
                        prepared.commands.push(command);
                        prepared.pending.push((i, number, assigned, warnings));
                        prepared.answers.push(None);
                    }
                    Err(e) => prepared.answers.push(Some(Err(e.into()))),
                }
            }
        }
    }
    prepared
}

/// Validates, numbers, signs and stores many certificates, answering each in order exactly as
/// [`submit`] would have answered it alone. The valid ones go to the store actor as one job,
/// committed in parts of at most `store.max_batch` with shared flushes (instead of one round
/// trip each).
///
/// With `atomic`, nothing is stored if any item is refused before storing (invalid, or an
/// idempotency key reused with another body): the others are answered
/// [`IssueError::NotAttempted`]. What only the store can find (a number given in the JSON
/// that another certificate took meanwhile) still refuses that item alone.
pub async fn submit_batch(
    shared: &Arc<Shared>,
    items: Vec<BatchItem>,
    atomic: bool,
    officer: Officer,
) -> Vec<Result<Submitted, IssueError>> {
    let count = items.len();
    if not_pending(shared).is_err() {
        return (0..count).map(|_| Err(IssueError::Refused(EngineError::RecoveryPending))).collect();
    }
    // Validating and signing up to 1000 certificates takes tens of milliseconds of CPU: not
    // on a worker that serves links and other requests meanwhile.
    let job = {
        let (shared, officer) = (shared.clone(), officer.clone());
        tokio::task::spawn_blocking(move || {
            let prepared = prepare(&shared, &items, atomic, &officer);
            (items, prepared)
        })
    };
    let (items, Prepared { mut answers, pending, commands }) = match job.await {
        Ok(done) => done,
        Err(e) => {
            return (0..count)
                .map(|_| Err(IssueError::Unexpected(format!("preparing the batch failed: {e}"))))
                .collect()
        }
    };
    let receivers = if commands.is_empty() { Ok(Vec::new()) } else { shared.actor.send_all(commands).await };
    match receivers {
        Err(e) => {
            for (i, ..) in pending {
                answers[i] = Some(Err(e.clone().into()));
            }
        }
        Ok(receivers) => {
            for ((i, number, assigned, warnings), rx) in pending.into_iter().zip(receivers) {
                let item = &items[i];
                let outcome = match rx.await {
                    Ok(r) => r,
                    Err(_) => Err(ActorError::Stopped),
                };
                answers[i] = Some(match outcome {
                    Ok(Outcome::Submitted { record, already_stored }) => {
                        if !already_stored {
                            tracing::info!(number = %record.number, to = %record.peer, "certificate signed and queued");
                        }
                        Ok(submitted(&record, already_stored, warnings))
                    }
                    // The number this node drew was taken by hand meanwhile: the single path
                    // draws the next one.
                    Ok(Outcome::Refused(EngineError::Conflict(_))) if assigned.is_some() => {
                        Box::pin(submit(shared, &item.body, item.idempotency.clone(), &officer)).await
                    }
                    Ok(Outcome::Refused(e)) => Err(e.into()),
                    Ok(other) => Err(IssueError::Unexpected(format!("{other:?}"))),
                    Err(error @ ActorError::Storage(_)) if assigned.is_some() => {
                        Err(IssueError::Uncertain { error, number, idempotent: item.idempotency.is_some() })
                    }
                    Err(e) => Err(e.into()),
                });
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(IssueError::Unexpected("no answer for this item".into()))))
        .collect()
}
