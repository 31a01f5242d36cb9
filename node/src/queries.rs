//! Reading the store for people: certificate views for `cert show/list` and the API, peer
//! views. Reads go straight to the store (sled reads are safe beside the writer thread).

use kp_protocol::amount::format_hundredths;
use kp_protocol::{Certificate, Date, Digest, MessageId, ParticipantCode, Timestamp};
use serde::Serialize;

use crate::state::{LinkStatus, Shared};
use crate::store::{
    decode_record, get_record, log_key, CertRecord, CertStatus, ConfirmationRecord, Direction, EntryBody,
    LogEntry, Officer, Rejection, ReplacementRecord, ResolutionRecord, Storage, StoreError, Tree, VoidRecord,
};
use kp_exchange::engine::document_of;
use kp_exchange::trust::PeerTrust;

/// The status a record shows on `today`: a certificate not confirmed (or voided, or refused)
/// by its expiry date shows `expired`.
pub fn effective_status(rec: &CertRecord, today: Date) -> CertStatus {
    match rec.status {
        CertStatus::Queued | CertStatus::Delivered | CertStatus::Received if rec.expires_on < today => {
            CertStatus::Expired
        }
        s => s,
    }
}

/// A certificate as shown to operators and integrators.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CertView {
    pub number: String,
    pub direction: Direction,
    pub peer: ParticipantCode,
    pub status: CertStatus,
    pub issued_on: Date,
    pub expires_on: Date,
    pub signed_at: Timestamp,
    #[schema(value_type = Digest)]
    pub message_id: MessageId,
    pub parcels: u32,
    pub carats: String,
    pub value_usd: String,
    /// Where the certificate sits in this node's log, once acknowledged.
    pub log_seq: Option<u64>,
    /// Outbound: when the importer's node stored it (its receipt). Inbound: when it arrived.
    pub delivered_at: Option<Timestamp>,
    /// Outbound: the importer's signed receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<ConfirmationView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub void: Option<VoidRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// The signed settlement of an import discrepancy (`kpnode cert resolve`), by either side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionRecord>,
    /// Status `replaced`: the certificate that replaces this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<ReplacementRecord>,
    pub updated_at: Timestamp,
    /// The shipment was received (the confirmation's `received_on`) after the certificate's
    /// `expires_on`: a late arrival, confirmed all the same. Derived from the two dates, which
    /// both nodes hold, so the exporter and the importer show the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_arrival: Option<LateArrival>,
    /// Inbound from a restricted participant: accepted under enhanced vigilance, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enhanced_vigilance: Option<String>,
    /// Who on this node issued, confirmed, voided or resolved it (shown with the certificate,
    /// not in lists).
    #[serde(skip_serializing_if = "Officers::is_empty")]
    pub officers: Officers,
    /// The certificate itself, as signed.
    pub certificate: Option<Certificate>,
}

/// A confirmation whose shipment arrived after the certificate expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LateArrival {
    /// The confirmation's `received_on`.
    pub received_on: Date,
    /// Days from `expires_on` to `received_on` (at least 1).
    pub days_late: u32,
}

/// The late arrival of `rec`'s confirmation, if its `received_on` is after `expires_on`.
pub fn late_arrival(rec: &CertRecord) -> Option<LateArrival> {
    let received_on = rec.confirmation.as_ref()?.received_on;
    let days = received_on.days_after(rec.expires_on);
    (days > 0).then(|| LateArrival { received_on, days_late: days.unsigned_abs() })
}

/// The officers of this node's actions on a certificate: the console account, the API token's
/// name or the operating-system user each log entry names. A partner's actions, and those
/// recorded before store format `kpnode-store/3`, name no one here.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Officers {
    /// Who submitted it (outbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub issued: Option<Officer>,
    /// Who confirmed its import (inbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub confirmed: Option<Officer>,
    /// Who voided it (outbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub voided: Option<Officer>,
    /// Who signed this node's resolution of its discrepancy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub resolved: Option<Officer>,
}

impl Officers {
    pub fn is_empty(&self) -> bool {
        self.issued.is_none() && self.confirmed.is_none() && self.voided.is_none() && self.resolved.is_none()
    }

    /// Who had this node send the documents of `rec` (and `resolution`), as remembered when
    /// each was queued.
    fn of<S: Storage + ?Sized>(
        store: &S,
        rec: &CertRecord,
        resolution: Option<&ResolutionRecord>,
    ) -> Result<Officers, StoreError> {
        let by = |id: &MessageId| {
            crate::store::get_record::<Officer, _>(store, Tree::Meta, &crate::store::meta::officer_key(id))
        };
        let mine = |d: Direction| rec.direction == d;
        Ok(Officers {
            issued: if mine(Direction::Out) { by(&rec.message_id)? } else { None },
            confirmed: match &rec.confirmation {
                Some(c) if mine(Direction::In) => by(&c.message_id)?,
                _ => None,
            },
            voided: match &rec.void {
                Some(v) if mine(Direction::Out) => by(&v.message_id)?,
                _ => None,
            },
            resolved: resolution.map(|r| by(&r.message_id)).transpose()?.flatten(),
        })
    }
}

/// An import confirmation: what the store records, and the remarks of the signed document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConfirmationView {
    #[serde(flatten)]
    pub record: ConfirmationRecord,
    /// The importing authority's remarks (`kpnode cert confirm --remarks`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// The most outbox entries looked through for a confirmation not yet acknowledged.
const OUTBOX_SEARCH: usize = 10_000;

/// The remarks of the signed confirmation of `rec`: from the log once it is there, else from
/// the outbox, where the importer's node keeps it until the exporter acknowledges it.
fn confirmation_remarks<S: Storage + ?Sized>(
    store: &S,
    rec: &CertRecord,
    c: &ConfirmationRecord,
) -> Result<Option<String>, StoreError> {
    let document = match c.log_seq {
        Some(seq) => crate::store::read_log(store, seq)?.map(|(e, _)| e.document().clone()),
        None if rec.direction == Direction::In && !c.acknowledged => {
            let (start, end) = crate::store::outbox_range(rec.peer, 0);
            let mut found = None;
            for (k, v) in store.range(Tree::Outbox, &start, &end, OUTBOX_SEARCH)? {
                let entry: crate::store::OutboxEntry = decode_record(Tree::Outbox, &k, &v)?;
                if entry.message_id == c.message_id {
                    found = Some(entry.document);
                    break;
                }
            }
            found
        }
        None => None,
    };
    Ok(document
        .filter(|d| d.message_id() == c.message_id)
        .and_then(|d| d.body::<kp_protocol::ImportConfirmation>().ok())
        .and_then(|body| body.remarks)
        .map(|r| r.to_string()))
}

/// What the importer's receipt says.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReceiptView {
    pub receiver: ParticipantCode,
    pub received_at: Timestamp,
    /// The entry of the receiver's log the certificate sits in, and that entry's hash.
    pub receiver_log_seq: u64,
    pub receiver_entry_hash: Digest,
    pub signed_with_key: String,
}

/// The view of `rec`, with the signed certificate if `with_certificate`.
pub fn cert_view<S: Storage + ?Sized>(
    store: &S,
    rec: &CertRecord,
    today: Date,
    with_certificate: bool,
) -> Result<CertView, StoreError> {
    let document = if with_certificate { document_of(|t, k| store.get(t, k), rec)? } else { None };
    let certificate = document.as_ref().and_then(|d| d.body::<Certificate>().ok());
    let receipt = match (rec.direction, rec.log_seq) {
        (Direction::Out, Some(seq)) => match crate::store::read_log(store, seq)?.map(|(e, _)| e) {
            Some(LogEntry { body: EntryBody::Sent { receipt, .. }, .. }) => Some(ReceiptView {
                receiver: receipt.batch.signer,
                received_at: receipt.batch.signed_at,
                receiver_log_seq: receipt.proof.item.log_seq,
                receiver_entry_hash: receipt.proof.item.entry_hash,
                signed_with_key: receipt.batch.key_id.to_string(),
            }),
            _ => None,
        },
        _ => None,
    };
    // Only a discrepancy can have been resolved: other certificates leave the hot `meta`
    // tree alone (after an I/O error, sled may refuse a read that would split its node).
    let resolution: Option<ResolutionRecord> =
        if rec.confirmation.as_ref().is_some_and(|c| c.discrepancy.is_some()) {
            crate::store::get_record(store, Tree::Meta, &crate::store::resolution_key(&rec.number))?
        } else {
            None
        };
    let replaced_by: Option<ReplacementRecord> = if rec.status == CertStatus::Replaced {
        crate::store::get_record(store, Tree::Meta, &kp_exchange::storage::replacement_key(&rec.number))?
    } else {
        None
    };
    Ok(CertView {
        number: rec.number.to_string(),
        direction: rec.direction,
        peer: rec.peer,
        status: effective_status(rec, today),
        issued_on: rec.issued_on,
        expires_on: rec.expires_on,
        signed_at: rec.signed_at,
        message_id: rec.message_id,
        parcels: rec.parcels,
        carats: format_hundredths(rec.carats),
        value_usd: format_hundredths(rec.value_usd),
        log_seq: rec.log_seq,
        delivered_at: rec.delivered_at,
        receipt,
        confirmation: match &rec.confirmation {
            Some(c) => {
                Some(ConfirmationView { record: c.clone(), remarks: confirmation_remarks(store, rec, c)? })
            }
            None => None,
        },
        void: rec.void.clone(),
        rejection: rec.rejection.clone(),
        // Only a discrepancy can have been resolved: other certificates leave the hot `meta`
        // tree alone (after an I/O error, sled may refuse a read that would split its node).
        officers: if with_certificate {
            Officers::of(store, rec, resolution.as_ref())?
        } else {
            Officers::default()
        },
        resolution,
        replaced_by,
        updated_at: rec.updated_at,
        late_arrival: late_arrival(rec),
        enhanced_vigilance: rec.vigilance.clone(),
        certificate,
    })
}

/// Which certificates to list.
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    pub direction: Option<Direction>,
    pub status: Option<CertStatus>,
    pub peer: Option<ParticipantCode>,
    /// List numbers after this one (paging).
    pub after: Option<String>,
    /// Only certificates issued on or after this day.
    pub issued_from: Option<Date>,
    /// Only certificates issued on or before this day.
    pub issued_to: Option<Date>,
    pub limit: usize,
}

/// Certificate records matching `filter`, in number order.
pub fn list_certs<S: Storage + ?Sized>(
    store: &S,
    filter: &CertFilter,
    today: Date,
) -> Result<Vec<CertRecord>, StoreError> {
    Ok(list_certs_bounded(store, filter, today, usize::MAX)?.0)
}

/// [`list_certs`], looking at no more than `max_scanned` records, so that a filter few
/// certificates match still answers in bounded time on a large store. Also returns the number
/// of the last record looked at when the bound stopped the search (list on after it).
pub fn list_certs_bounded<S: Storage + ?Sized>(
    store: &S,
    filter: &CertFilter,
    today: Date,
    max_scanned: usize,
) -> Result<(Vec<CertRecord>, Option<String>), StoreError> {
    let mut scanned = 0usize;
    let mut start = filter.after.as_ref().map(|a| a.as_bytes().to_vec()).unwrap_or_default();
    if filter.after.is_some() {
        start.push(0);
    }
    let mut out = Vec::new();
    const PAGE: usize = 1024;
    loop {
        let page = store.range(
            Tree::Certs,
            &start,
            &[0xff; 33],
            PAGE.min(max_scanned.saturating_sub(scanned).saturating_add(1)),
        )?;
        let n = page.len();
        for (k, v) in page {
            if scanned >= max_scanned {
                let last = String::from_utf8_lossy(&start[..start.len().saturating_sub(1)]).into_owned();
                return Ok((out, Some(last)));
            }
            scanned += 1;
            let rec: CertRecord = decode_record(Tree::Certs, &k, &v)?;
            start = k;
            start.push(0);
            let keep = filter.direction.is_none_or(|d| d == rec.direction)
                && filter.peer.is_none_or(|p| p == rec.peer)
                && filter.issued_from.is_none_or(|d| rec.issued_on >= d)
                && filter.issued_to.is_none_or(|d| rec.issued_on <= d)
                && filter.status.is_none_or(|s| s == effective_status(&rec, today));
            if keep {
                out.push(rec);
                if out.len() >= filter.limit {
                    return Ok((out, None));
                }
            }
        }
        if n < PAGE {
            return Ok((out, None));
        }
    }
}

/// One page of [`list_certs`]: at most `filter.limit` records, looking at no more than
/// `max_scanned`, and the number to list on after if there may be more (the last record
/// listed when the page is full, or the last one looked at when the bound stopped the search:
/// a page can then be short, even empty, and still have a next one).
pub fn list_certs_page<S: Storage + ?Sized>(
    store: &S,
    filter: &CertFilter,
    today: Date,
    max_scanned: usize,
) -> Result<(Vec<CertRecord>, Option<String>), StoreError> {
    let (records, resume) = list_certs_bounded(store, filter, today, max_scanned)?;
    let next =
        if records.len() >= filter.limit { records.last().map(|r| r.number.to_string()) } else { resume };
    Ok((records, next))
}

/// The opaque `cursor` of `GET /v1/certificates` and `kpnode cert list`: where the next page
/// starts, bound to the filters of the list it came from. Its text is base64url of a version
/// byte, a 12-byte check (SHA-256 of the filters and the position) and the certificate number
/// to list on after, in lowercase hex. The check is not a secret (the position is no more than `after` gives):
/// it refuses a cursor that was cut, edited, or is used with other filters, which would
/// otherwise silently list another selection.
pub mod cursor {
    use super::CertFilter;
    use sha2::{Digest as _, Sha256};

    const VERSION: u8 = 1;
    const CHECK: usize = 12;
    /// The longest cursor text read: a certificate number is at most a few dozen bytes.
    pub const MAX_CHARS: usize = 512;

    fn check(filter: &CertFilter, after: &str) -> [u8; CHECK] {
        let mut h = Sha256::new();
        h.update(b"kpnode list cursor 1\n");
        let text = |v: Option<String>| v.unwrap_or_default();
        for part in [
            text(filter.direction.map(|d| d.as_str().to_owned())),
            text(filter.status.map(|s| s.as_str().to_owned())),
            text(filter.peer.map(|p| p.to_string())),
            text(filter.issued_from.map(|d| d.to_string())),
            text(filter.issued_to.map(|d| d.to_string())),
            after.to_owned(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        let mut out = [0u8; CHECK];
        out.copy_from_slice(&digest[..CHECK]);
        out
    }

    /// The cursor of the page after the number `after` of the list `filter` selects.
    pub fn encode(filter: &CertFilter, after: &str) -> String {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&check(filter, after));
        bytes.extend_from_slice(after.as_bytes());
        kp_protocol::digest::hex(&bytes)
    }

    /// The number a cursor lists on after, if it is one this node made for `filter`; else
    /// why not, for the operator.
    pub fn decode(filter: &CertFilter, text: &str) -> Result<String, String> {
        const AGAIN: &str = "pass the cursor exactly as the previous page gave it, with the same filters, or start again from the first page without one";
        if text.len() > MAX_CHARS {
            return Err(format!(
                "is {} characters long, longer than any cursor this node gives; {AGAIN}",
                text.len()
            ));
        }
        let bytes =
            unhex(text).ok_or_else(|| format!("is not a cursor this node gave (not hex); {AGAIN}"))?;
        let (version, rest) = bytes.split_first().ok_or_else(|| format!("is empty; {AGAIN}"))?;
        if *version != VERSION || rest.len() <= CHECK {
            return Err(format!("is not a cursor this node gave; {AGAIN}"));
        }
        let (sum, after) = rest.split_at(CHECK);
        let after =
            std::str::from_utf8(after).map_err(|_| format!("is not a cursor this node gave; {AGAIN}"))?;
        if sum != check(filter, after) {
            return Err(format!(
                "does not belong to this list: it was altered, or made for other filters (direction, status, peer, issued_from, issued_to); {AGAIN}"
            ));
        }
        Ok(after.to_owned())
    }

    /// Lowercase or uppercase hex to bytes; `None` if it is not hex.
    fn unhex(text: &str) -> Option<Vec<u8>> {
        if !text.len().is_multiple_of(2) {
            return None;
        }
        let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        text.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::store::Direction;

        #[test]
        fn a_cursor_reads_back_only_with_its_own_filters_and_unaltered() {
            let filter = CertFilter { direction: Some(Direction::In), limit: 10, ..CertFilter::default() };
            let c = encode(&filter, "RU-2026-000042");
            assert_eq!(decode(&filter, &c).unwrap(), "RU-2026-000042");
            let other = CertFilter { direction: Some(Direction::Out), ..filter.clone() };
            assert!(decode(&other, &c).unwrap_err().contains("other filters"));
            // Every single-character change is refused, none panics.
            for i in 0..c.len() {
                let mut t = c.clone().into_bytes();
                t[i] = if t[i] == b'0' { b'1' } else { b'0' };
                assert!(decode(&filter, std::str::from_utf8(&t).unwrap()).is_err(), "{i}");
            }
            for bad in ["", "0", "zz", "01", &"a".repeat(MAX_CHARS + 2), "é€"] {
                assert!(decode(&filter, bad).is_err(), "{bad:?}");
            }
        }
    }
}

/// How many certificates the store holds in each status on `today`, in [`CertStatus::ALL`]'s
/// order: a scan of every record, a page at a time (the console's dashboard caches it).
pub fn count_by_status<S: Storage + ?Sized>(
    store: &S,
    today: Date,
) -> Result<Vec<(CertStatus, u64)>, StoreError> {
    let mut counts: Vec<(CertStatus, u64)> = CertStatus::ALL.iter().map(|s| (*s, 0)).collect();
    let mut start = Vec::new();
    const PAGE: usize = 1024;
    loop {
        let page = store.range(Tree::Certs, &start, &[0xff; 33], PAGE)?;
        let n = page.len();
        for (k, v) in page {
            let rec: CertRecord = decode_record(Tree::Certs, &k, &v)?;
            let status = effective_status(&rec, today);
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == status) {
                c.1 += 1;
            }
            start = k;
            start.push(0);
        }
        if n < PAGE {
            return Ok(counts);
        }
    }
}

/// A peer as shown by `peer list` and the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PeerView {
    pub participant: ParticipantCode,
    pub authority: String,
    pub fingerprint: String,
    pub endpoints: Vec<String>,
    pub enrolled_at: Timestamp,
    pub removed: bool,
    pub signing_key: String,
    pub rotations: usize,
    /// Messages waiting for the peer.
    pub queued: u64,
    /// The live link state (only from a running daemon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkStatus>,
}

pub fn peer_view(p: &PeerTrust, queued: u64, link: Option<LinkStatus>) -> PeerView {
    PeerView {
        participant: p.participant,
        authority: p.authority.clone(),
        fingerprint: p.fingerprint.to_string(),
        endpoints: p.endpoints.clone(),
        enrolled_at: p.enrolled_at,
        removed: p.removed,
        signing_key: p.history.current_signing().key_id.to_string(),
        rotations: p.history.rotations().len(),
        queued,
        link,
    }
}

/// How close to its expiry an unconfirmed certificate must be for
/// [`unconfirmed_expiring`] (and so the `KpnodeCertificatesExpiringUnconfirmed` alert) to
/// count it: a week leaves the exporter's office time to call the importer's.
pub const EXPIRING_WITHIN_DAYS: i32 = 7;

/// Per importer: certificates this node issued that are still waiting for the import
/// confirmation (queued or delivered, not voided or refused) and expire within
/// [`EXPIRING_WITHIN_DAYS`] days from `today` (today included; already expired ones are
/// `kpnode reconcile`'s findings, not counted). One pass over the certificate records, a page
/// at a time.
pub fn unconfirmed_expiring<S: Storage + ?Sized>(
    store: &S,
    today: Date,
) -> Result<std::collections::BTreeMap<ParticipantCode, u64>, StoreError> {
    let mut out = std::collections::BTreeMap::new();
    let mut start = Vec::new();
    let mut undecodable: Option<(u64, String)> = None;
    const PAGE: usize = 1024;
    loop {
        let page = store.range(Tree::Certs, &start, &[0xff; 33], PAGE)?;
        let n = page.len();
        for (k, v) in page {
            let rec = decode_record::<CertRecord>(Tree::Certs, &k, &v);
            start = k;
            start.push(0);
            // One damaged record must not take the whole of /metrics down: it is left out of
            // the count and reported in the log.
            let rec = match rec {
                Ok(rec) => rec,
                Err(e) => {
                    let u = undecodable.get_or_insert((0, e.to_string()));
                    u.0 += 1;
                    continue;
                }
            };
            let waiting = rec.direction == Direction::Out
                && matches!(rec.status, CertStatus::Queued | CertStatus::Delivered)
                && rec.confirmation.is_none();
            let days_left = rec.expires_on.days_after(today);
            if waiting && (0..EXPIRING_WITHIN_DAYS).contains(&days_left) {
                *out.entry(rec.peer).or_insert(0) += 1;
            }
        }
        if n < PAGE {
            if let Some((count, first)) = undecodable {
                tracing::warn!(
                    count,
                    first = %first,
                    "certificate records that do not decode were left out of kpnode_certificates_expiring_unconfirmed"
                );
            }
            return Ok(out);
        }
    }
}

/// Messages queued for `peer`, as counted in `meta`.
pub fn queued<S: Storage + ?Sized>(store: &S, peer: ParticipantCode) -> Result<u64, StoreError> {
    let key = format!("{}{peer}", crate::store::meta::QUEUED_PREFIX);
    Ok(get_record::<u64, _>(store, Tree::Meta, key.as_bytes())?.unwrap_or(0))
}

/// Messages queued for a participant that is not enrolled (and never was): what submitting
/// to a participant before enrolling its node leaves. They are delivered once it is enrolled.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UnenrolledQueue {
    pub participant: ParticipantCode,
    pub queued: u64,
}

/// Every participant with messages queued but no peer record, in code order. Reads the
/// per-participant queue counters (one per participant ever queued for: a few hundred at most).
pub fn unenrolled_queues<S: Storage + ?Sized>(
    store: &S,
    trust: &kp_exchange::trust::Trust,
) -> Result<Vec<UnenrolledQueue>, StoreError> {
    let prefix = crate::store::meta::QUEUED_PREFIX.as_bytes();
    let mut end = prefix.to_vec();
    end.push(0xff);
    let mut out = Vec::new();
    for (key, value) in store.range(Tree::Meta, prefix, &end, 4096)? {
        let Some(participant) =
            std::str::from_utf8(&key[prefix.len()..]).ok().and_then(|c| c.parse::<ParticipantCode>().ok())
        else {
            continue;
        };
        let queued: u64 = decode_record(Tree::Meta, &key, &value)?;
        if queued > 0 && !trust.peers().any(|p| p.participant == participant) {
            out.push(UnenrolledQueue { participant, queued });
        }
    }
    Ok(out)
}

/// Every peer's view, in code order.
pub fn peer_views(shared: &Shared) -> Result<Vec<PeerView>, StoreError> {
    let trust = shared.trust.get();
    let mut peers: Vec<&PeerTrust> = trust.peers().collect();
    peers.sort_by_key(|p| p.participant);
    peers
        .into_iter()
        .map(|p| {
            Ok(peer_view(p, queued(&shared.store, p.participant)?, Some(shared.links.status(p.participant))))
        })
        .collect()
}

/// A log entry as exported: the envelope, the document's decoded content and, for what this
/// node sent, the peer's receipt.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogEntryView {
    pub seq: u64,
    pub recorded_at: Timestamp,
    pub prev_hash: Digest,
    pub hash: Digest,
    pub direction: Direction,
    pub peer: ParticipantCode,
    pub kind: kp_protocol::DocumentKind,
    #[schema(value_type = Digest)]
    pub message_id: MessageId,
    pub signer: ParticipantCode,
    pub key_id: String,
    pub signed_at: Timestamp,
    /// The certificate number the document concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The document's decoded content (a certificate, confirmation, void or key rotation).
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptView>,
    /// Who on this node did what the entry records (inside the hashed entry): a console
    /// account, the API token's name, or the operating-system user of an offline command.
    /// `null` for a partner's delivery, and for entries written before store format 3.
    #[schema(value_type = Option<String>)]
    pub officer: Option<Officer>,
}

/// The decoded content of a document, as JSON.
pub fn document_json(doc: &kp_protocol::SignedDocument) -> (Option<String>, serde_json::Value) {
    use kp_protocol::{DocumentKind, ImportConfirmation, KeyRotation, Void};
    let to_value = |v: Result<serde_json::Value, serde_json::Error>| v.unwrap_or(serde_json::Value::Null);
    match doc.kind {
        DocumentKind::Certificate => match doc.body::<Certificate>() {
            Ok(c) => (Some(c.number.to_string()), to_value(serde_json::to_value(&c))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::ImportConfirmation => match doc.body::<ImportConfirmation>() {
            Ok(c) => (Some(c.certificate.to_string()), to_value(serde_json::to_value(&c))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::Void => match doc.body::<Void>() {
            Ok(v) => (Some(v.certificate.to_string()), to_value(serde_json::to_value(&v))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::Resolution => match doc.body::<kp_protocol::Resolution>() {
            Ok(r) => (Some(r.certificate.to_string()), to_value(serde_json::to_value(&r))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::KeyRotation => match doc.body::<KeyRotation>() {
            Ok(r) => (
                None,
                serde_json::json!({
                    "participant": r.participant,
                    "sequence": r.sequence,
                    "previous_key": r.previous_key.to_string(),
                    "new_signing_key": r.new_signing_key.as_ref().and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k.public_key).ok()).map(|k| kp_protocol::KeyId::of(&k).to_string()),
                    "new_tls_certificate": r.new_tls_certificate.is_some(),
                    "effective_from": r.effective_from,
                }),
            ),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::ParticipantChange => match doc.body::<kp_protocol::RegistryChange>() {
            Ok(c) => (None, to_value(serde_json::to_value(&c))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::ParticipantList => match doc.body::<kp_protocol::ParticipantList>() {
            Ok(l) => (None, to_value(serde_json::to_value(&l))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::ParticipantListV2 => match doc.body::<kp_protocol::registry::ParticipantListV2>() {
            Ok(l) => (None, to_value(serde_json::to_value(&l))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::CertificateSeal => match doc.body::<kp_protocol::seal::CertificateSeal>() {
            Ok(c) => (Some(c.number.to_string()), to_value(serde_json::to_value(&c))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::PeerChange => match doc.body::<kp_protocol::PeerChange>() {
            Ok(c) => (None, to_value(serde_json::to_value(&c))),
            Err(e) => (None, serde_json::json!({"undecodable": e.to_string()})),
        },
        DocumentKind::Receipt => (None, serde_json::Value::Null),
    }
}

/// Log entries from `from` on, at most `limit`.
pub fn log_entries<S: Storage + ?Sized>(
    store: &S,
    from: u64,
    limit: usize,
) -> Result<Vec<LogEntryView>, StoreError> {
    let start = log_key(from.max(1));
    let rows = store.range(Tree::Log, &start, &[0xff; 9], limit)?;
    rows.into_iter()
        .map(|(k, v)| {
            let (e, record) = crate::store::decode_log(&k, &v)?;
            let hash = crate::store::hash_entry_bytes(&e.prev_hash, &record.entry);
            let doc = e.document();
            let (certificate, document) = document_json(doc);
            let receipt = match &e.body {
                EntryBody::Sent { receipt, .. } => Some(ReceiptView {
                    receiver: receipt.batch.signer,
                    received_at: receipt.batch.signed_at,
                    receiver_log_seq: receipt.proof.item.log_seq,
                    receiver_entry_hash: receipt.proof.item.entry_hash,
                    signed_with_key: receipt.batch.key_id.to_string(),
                }),
                EntryBody::Received { .. } | EntryBody::Recorded { .. } => None,
            };
            Ok(LogEntryView {
                seq: e.seq,
                recorded_at: e.recorded_at,
                prev_hash: e.prev_hash,
                hash,
                direction: e.direction(),
                peer: e.peer(),
                kind: doc.kind,
                message_id: doc.message_id(),
                signer: doc.signer,
                key_id: doc.key_id.to_string(),
                signed_at: doc.signed_at,
                certificate,
                document,
                receipt,
                officer: e.officer,
            })
        })
        .collect()
}
