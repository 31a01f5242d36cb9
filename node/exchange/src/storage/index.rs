//! Two indexes of the certificate records (`certs.v1`), so that what concerns a period (a
//! quarter's statistics, its reconciliation) reads that period's certificates, not every
//! certificate of the store.
//!
//! - **By date of issue** (`issued.v1`): one empty record per certificate, keyed by its
//!   `issued_on` and then its number. A certificate's date of issue never changes, so a record
//!   never moves, and no certificate record is ever removed.
//! - **The certificates received** (`imported.v1`), for the statistics by date of import: an
//!   inbound certificate this node confirmed is keyed `d` ‖ the confirmation's `received_on` ‖
//!   number; one not confirmed here is keyed `w` ‖ number, until it is confirmed (it moves to
//!   `d`: a confirmation is never taken back) or voided (it leaves the index). What waits here
//!   is what the statistics report as imports not confirmed: it grows with what is
//!   outstanding, not with the store.
//!
//! The engine writes a certificate's index records in the same commit as the certificate's
//! record (`Txn::put_cert` in [`crate::engine`]), and with every change of the counters
//! (`meta`/`counts`, which change in every commit that stores a certificate or queues a
//! confirmation) it copies them to [`meta::ISSUED_INDEX_AT`] and [`meta::IMPORTED_INDEX_AT`]:
//! an index is complete for a store whose counters equal its copy. A store written by a
//! kpnode older than an index (or by one that did not keep it) has other counters, and
//! [`ensure_issued`] and [`ensure_imported`] build the index again from the certificate
//! records when the store is opened.

use kp_protocol::Date;

use super::{decode_record, meta, CertRecord, CertStatus, Direction, Storage, StoreError, Tree, Writes};

/// The index key of the certificate `number` issued on `issued_on`.
pub fn issued_key(issued_on: Date, number: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + number.len());
    k.extend_from_slice(&day_key(issued_on));
    k.extend_from_slice(number.as_bytes());
    k
}

/// A day as 4 bytes that sort as the days do.
fn day_key(d: Date) -> [u8; 4] {
    ((d.days_since_epoch() as u32) ^ 0x8000_0000).to_be_bytes()
}

/// The numbers of the certificates issued from `from` to `to` (both included), in the index's
/// order (by day, then number), read a page at a time.
pub fn numbers_issued<S: Storage + ?Sized>(
    store: &S,
    from: Date,
    to: Date,
) -> Result<Vec<String>, StoreError> {
    numbers_by_day(store, Tree::Issued, None, from, Some(to))
}

/// Whether the index is complete for the store's counters (see the module).
pub fn issued_is_complete<S: Storage + ?Sized>(store: &S) -> Result<bool, StoreError> {
    Ok(store.get(Tree::Meta, meta::ISSUED_INDEX_AT)? == store.get(Tree::Meta, meta::COUNTS)?)
}

/// Builds the index by date of issue from the certificate records unless it is complete (see
/// the module).
pub fn ensure_issued<S: Storage + ?Sized>(store: &S) -> Result<Option<Built>, StoreError> {
    if issued_is_complete(store)? {
        return Ok(None);
    }
    // Its records never move: what it holds is right, only incomplete.
    rebuild(store, Tree::Issued, meta::ISSUED_INDEX_AT, false, |rec, writes| {
        writes.insert((Tree::Issued, issued_key(rec.issued_on, rec.number.as_str())), Some(Vec::new()));
        true
    })
    .map(Some)
}

/// The `imported.v1` key of an inbound certificate confirmed here, imported on `received_on`.
pub fn imported_key(received_on: Date, number: &str) -> Vec<u8> {
    day_number_key(b'd', received_on, number)
}

/// The `imported.v1` key of an inbound certificate waiting for this node's confirmation, by
/// the day it expires: a period's statistics read only those still valid in it.
pub fn awaiting_key(expires_on: Date, number: &str) -> Vec<u8> {
    day_number_key(b'w', expires_on, number)
}

fn day_number_key(kind: u8, day: Date, number: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + number.len());
    k.push(kind);
    k.extend_from_slice(&day_key(day));
    k.extend_from_slice(number.as_bytes());
    k
}

/// Whether `rec` is an import that waits for this node's confirmation: received, not
/// confirmed, and neither voided nor replaced (neither can be confirmed any more). What the
/// statistics by date of import report as not confirmed, whether they read the index or the
/// whole log.
pub fn awaits_confirmation(rec: &CertRecord) -> bool {
    rec.direction == Direction::In
        && rec.confirmation.is_none()
        && !matches!(rec.status, CertStatus::Voided | CertStatus::Replaced)
}

/// The `imported.v1` writes that keep the index in step with `rec` as it is stored: none for a
/// certificate this node issued.
pub fn imported_writes(rec: &CertRecord) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    if rec.direction != Direction::In {
        return Vec::new();
    }
    let number = rec.number.as_str();
    let waiting = awaiting_key(rec.expires_on, number);
    match &rec.confirmation {
        Some(c) => vec![(waiting, None), (imported_key(c.received_on, number), Some(Vec::new()))],
        None if awaits_confirmation(rec) => vec![(waiting, Some(Vec::new()))],
        None => vec![(waiting, None)],
    }
}

/// The numbers of the inbound certificates confirmed here with a date of import from `from`
/// to `to` (both included), by day then number.
pub fn numbers_imported<S: Storage + ?Sized>(
    store: &S,
    from: Date,
    to: Date,
) -> Result<Vec<String>, StoreError> {
    numbers_by_day(store, Tree::Imported, Some(b'd'), from, Some(to))
}

/// The numbers of the inbound certificates waiting for this node's confirmation that expire on
/// or after `from`, by day of expiry then number.
pub fn numbers_awaiting<S: Storage + ?Sized>(store: &S, from: Date) -> Result<Vec<String>, StoreError> {
    numbers_by_day(store, Tree::Imported, Some(b'w'), from, None)
}

/// The numbers of the keys `[kind] ‖ day ‖ number` of `tree` with a day from `from` to `to`
/// (both included; no end without `to`).
fn numbers_by_day<S: Storage + ?Sized>(
    store: &S,
    tree: Tree,
    kind: Option<u8>,
    from: Date,
    to: Option<Date>,
) -> Result<Vec<String>, StoreError> {
    let prefix: Vec<u8> = kind.into_iter().collect();
    let start = [&prefix[..], &day_key(from)].concat();
    let end = match to.and_then(|to| to.add_days(1)) {
        Some(next) => [&prefix[..], &day_key(next)].concat(),
        None => [&prefix[..], &[0xff; 5]].concat(),
    };
    numbers_in(store, tree, start, &end, prefix.len() + 4)
}

/// The certificate numbers that end the keys of `tree` from `start` to `end` (excluded), after a
/// prefix of `skip` bytes, read a page at a time.
fn numbers_in<S: Storage + ?Sized>(
    store: &S,
    tree: Tree,
    mut start: Vec<u8>,
    end: &[u8],
    skip: usize,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    const PAGE: usize = 10_000;
    loop {
        let page = store.range(tree, &start, end, PAGE)?;
        let n = page.len();
        for (k, _) in page {
            let number = k.get(skip..).and_then(|n| std::str::from_utf8(n).ok()).ok_or_else(|| {
                StoreError::Corrupt {
                    tree: tree.name(),
                    key: kp_protocol::digest::hex(&k),
                    detail: "not an index key ending in a certificate number".into(),
                }
            })?;
            out.push(number.to_owned());
            start = k;
            start.push(0);
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// Whether the index of certificates received is complete for the store's counters.
pub fn imported_is_complete<S: Storage + ?Sized>(store: &S) -> Result<bool, StoreError> {
    Ok(store.get(Tree::Meta, meta::IMPORTED_INDEX_AT)? == store.get(Tree::Meta, meta::COUNTS)?)
}

/// Builds the index of certificates received from the certificate records unless it is
/// complete, removing first what it holds (a kpnode that did not keep it may have confirmed
/// some since).
pub fn ensure_imported<S: Storage + ?Sized>(store: &S) -> Result<Option<Built>, StoreError> {
    if imported_is_complete(store)? {
        return Ok(None);
    }
    rebuild(store, Tree::Imported, meta::IMPORTED_INDEX_AT, true, |rec, writes| {
        for (key, value) in imported_writes(rec) {
            if value.is_some() {
                writes.insert((Tree::Imported, key), value);
            }
        }
        rec.direction == Direction::In
    })
    .map(Some)
}

/// What building an index did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// The certificates it indexed.
    pub certificates: u64,
    /// The certificate records that could not be read, each named with its damage: left out
    /// of the index (a request for one of them reports the damage, as it did before), so
    /// that one damaged record does not keep the store from opening.
    pub damaged: Vec<String>,
}

/// Builds `tree` from every certificate record, `index` adding each one's records (and saying
/// whether it indexed it), a page at a time; then marks it complete with `marker`, the
/// counters' copy, in the last commit, and flushes. Interrupted, it is built again on the
/// next open: the marker is only written at the end.
fn rebuild<S: Storage + ?Sized>(
    store: &S,
    tree: Tree,
    marker: &[u8],
    clear: bool,
    index: impl Fn(&CertRecord, &mut Writes) -> bool,
) -> Result<Built, StoreError> {
    let counts = store.get(Tree::Meta, meta::COUNTS)?;
    const PAGE: usize = 10_000;
    if clear {
        loop {
            let stale = store.range(tree, &[], &[0xff], PAGE)?;
            if stale.is_empty() {
                break;
            }
            let writes: Writes = stale.into_iter().map(|(k, _)| ((tree, k), None)).collect();
            store.commit(&writes)?;
        }
    }
    let mut built = Built::default();
    let mut start: Vec<u8> = Vec::new();
    loop {
        let page = store.range(Tree::Certs, &start, &[0xff; 40], PAGE)?;
        let n = page.len();
        let mut writes = Writes::new();
        for (k, v) in page {
            match decode_record::<CertRecord>(Tree::Certs, &k, &v) {
                Ok(rec) => built.certificates += u64::from(index(&rec, &mut writes)),
                Err(e) => built.damaged.push(e.to_string()),
            }
            start = k;
            start.push(0);
        }
        if n < PAGE {
            writes.insert((Tree::Meta, marker.to_vec()), counts);
            store.commit(&writes)?;
            store.flush()?;
            return Ok(built);
        }
        store.commit(&writes)?;
    }
}
