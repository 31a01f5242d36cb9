//! The certificates by date of issue (`issued.v1`): one empty record per certificate, keyed by
//! its `issued_on` and then its number, so that what concerns a period (a quarter's statistics,
//! its reconciliation) reads that period's certificates, not every certificate of the store.
//!
//! The engine writes a certificate's index record in the same commit as the certificate's
//! record ([`put_cert`](crate::engine)), and with every change of the counters
//! (`meta`/`counts`, which count each new certificate) it copies them to
//! [`meta::ISSUED_INDEX_AT`]: the index is complete for a store whose counters equal that copy.
//! A store written by a kpnode older than the index (or by one that did not keep it) has
//! other counters, and [`ensure_issued`] builds the index again from the certificate records
//! when the store is opened. A certificate's date of issue never changes, so a record never
//! moves, and no certificate record is ever removed.

use kp_protocol::Date;

use super::{decode_record, meta, CertRecord, Storage, StoreError, Tree, Writes};

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
    let end = match to.add_days(1) {
        Some(next) => day_key(next).to_vec(),
        None => vec![0xff; 5],
    };
    let mut start = day_key(from).to_vec();
    let mut out = Vec::new();
    const PAGE: usize = 10_000;
    loop {
        let page = store.range(Tree::Issued, &start, &end, PAGE)?;
        let n = page.len();
        for (k, _) in page {
            let number =
                k.get(4..).and_then(|n| std::str::from_utf8(n).ok()).ok_or_else(|| StoreError::Corrupt {
                    tree: Tree::Issued.name(),
                    key: kp_protocol::digest::hex(&k),
                    detail: "not a day and a certificate number".into(),
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

/// Whether the index is complete for the store's counters (see the module).
pub fn issued_is_complete<S: Storage + ?Sized>(store: &S) -> Result<bool, StoreError> {
    Ok(store.get(Tree::Meta, meta::ISSUED_INDEX_AT)? == store.get(Tree::Meta, meta::COUNTS)?)
}

/// Builds the index from the certificate records unless it is complete (see the module);
/// returns how many certificates it indexed if it built it.
pub fn ensure_issued<S: Storage + ?Sized>(store: &S) -> Result<Option<u64>, StoreError> {
    if issued_is_complete(store)? {
        return Ok(None);
    }
    let counts = store.get(Tree::Meta, meta::COUNTS)?;
    let mut indexed = 0u64;
    let mut start: Vec<u8> = Vec::new();
    const PAGE: usize = 10_000;
    loop {
        let page = store.range(Tree::Certs, &start, &[0xff; 40], PAGE)?;
        let n = page.len();
        let mut writes = Writes::new();
        for (k, v) in page {
            let rec: CertRecord = decode_record(Tree::Certs, &k, &v)?;
            writes.insert((Tree::Issued, issued_key(rec.issued_on, rec.number.as_str())), Some(Vec::new()));
            indexed += 1;
            start = k;
            start.push(0);
        }
        if n < PAGE {
            writes.insert((Tree::Meta, meta::ISSUED_INDEX_AT.to_vec()), counts);
            store.commit(&writes)?;
            store.flush()?;
            return Ok(Some(indexed));
        }
        store.commit(&writes)?;
    }
}
