//! Where a node's CPU goes: how many signatures and verifications it made, and the CPU time
//! spent in each of a few parts of the work (signing, verifying, parsing JSON, the store, TLS),
//! counted at the few places that do them. `kpnode bench` reads these to show what a
//! certificate costs above the floor of its signatures; the node's `/metrics` shows them too.
//!
//! Counting is always on and costs an atomic add. Timing needs a clock of CPU time per thread,
//! which this crate does not read (it touches no clock of its own): the node installs one with
//! [`install_clock`]; without it (the simulator, tests), only counts are kept.
//!
//! Time is exclusive: a part measured inside another (a receipt signed while the store applies
//! a batch) is counted in its own part only, and taken out of the enclosing one.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use kp_protocol::DocumentKind;

/// A part of the work whose calls and CPU time are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Ed25519 signatures of certificates.
    SignCertificate,
    /// Ed25519 signatures of receipt batches (one per group commit of deliveries).
    SignReceipt,
    /// Every other signature (confirmations, voids, rotations, registry changes, seals).
    SignOther,
    /// Strict Ed25519 verifications of delivered documents.
    VerifyDocument,
    /// Strict Ed25519 verifications of a peer's receipt batches.
    VerifyReceipt,
    /// Parsing and validating a submitted certificate's JSON.
    Json,
    /// Applying commands to the store (the exchange rules and sled's writes), less any
    /// signature made meanwhile.
    Store,
    /// Flushing the store to disk (sled's flush and the `fsync` under it).
    Flush,
    /// Reading and writing peer links: TLS encryption and decryption and the socket calls.
    Tls,
}

impl Part {
    pub const ALL: [Part; 9] = [
        Part::SignCertificate,
        Part::SignReceipt,
        Part::SignOther,
        Part::VerifyDocument,
        Part::VerifyReceipt,
        Part::Json,
        Part::Store,
        Part::Flush,
        Part::Tls,
    ];

    /// The label of the part in `/metrics` and in the bench's report.
    pub fn label(self) -> &'static str {
        match self {
            Part::SignCertificate => "sign_certificate",
            Part::SignReceipt => "sign_receipt",
            Part::SignOther => "sign_other",
            Part::VerifyDocument => "verify_document",
            Part::VerifyReceipt => "verify_receipt",
            Part::Json => "json",
            Part::Store => "store",
            Part::Flush => "flush",
            Part::Tls => "tls",
        }
    }

    /// The part a signature of a document of `kind` counts in.
    pub fn signing(kind: DocumentKind) -> Part {
        match kind {
            DocumentKind::Certificate => Part::SignCertificate,
            DocumentKind::Receipt => Part::SignReceipt,
            _ => Part::SignOther,
        }
    }
}

const PARTS: usize = Part::ALL.len();

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static CALLS: [AtomicU64; PARTS] = [ZERO; PARTS];
static NANOS: [AtomicU64; PARTS] = [ZERO; PARTS];
static CLOCK: OnceLock<fn() -> u64> = OnceLock::new();

thread_local! {
    /// CPU time of the measured parts running on this thread inside the current one.
    static INNER: Cell<u64> = const { Cell::new(0) };
}

/// Sets the clock parts are timed with: this thread's CPU time, in nanoseconds. The first
/// clock installed stays.
pub fn install_clock(clock: fn() -> u64) {
    let _ = CLOCK.set(clock);
}

/// Runs `f`, counting it as one call of `part` and its CPU time (less the parts measured
/// inside it) in `part`.
pub fn measure<T>(part: Part, f: impl FnOnce() -> T) -> T {
    CALLS[part as usize].fetch_add(1, Ordering::Relaxed);
    let Some(clock) = CLOCK.get() else { return f() };
    let inner_before = INNER.get();
    let start = clock();
    let out = f();
    let took = clock().saturating_sub(start);
    let inner = INNER.get().saturating_sub(inner_before);
    NANOS[part as usize].fetch_add(took.saturating_sub(inner), Ordering::Relaxed);
    INNER.set(inner_before.saturating_add(took));
    out
}

/// Counts `n` calls of `part` that are timed together elsewhere (the verifications of one
/// batch of deliveries, measured as one).
pub fn count(part: Part, n: u64) {
    CALLS[part as usize].fetch_add(n, Ordering::Relaxed);
}

/// One part's totals since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub part: Part,
    pub calls: u64,
    /// CPU time, in nanoseconds (0 without a clock).
    pub nanos: u64,
}

/// Every part's totals since the process started.
pub fn totals() -> Vec<Totals> {
    Part::ALL
        .iter()
        .map(|&part| Totals {
            part,
            calls: CALLS[part as usize].load(Ordering::Relaxed),
            nanos: NANOS[part as usize].load(Ordering::Relaxed),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static FAKE_NOW: Cell<u64> = const { Cell::new(0) };
    }

    fn advance(nanos: u64) {
        FAKE_NOW.set(FAKE_NOW.get() + nanos);
    }

    /// A part measured inside another counts in its own part only. The fake clock is this
    /// thread's alone: other tests' threads read 0 from it and add nothing.
    #[test]
    fn time_is_exclusive_of_the_parts_measured_inside() {
        install_clock(|| FAKE_NOW.get());
        let nanos = |p: Part| totals()[p as usize].nanos;
        let (store, sign) = (nanos(Part::Store), nanos(Part::SignReceipt));
        measure(Part::Store, || {
            advance(10);
            measure(Part::SignReceipt, || advance(3));
            advance(2);
        });
        assert_eq!(nanos(Part::Store) - store, 12);
        assert_eq!(nanos(Part::SignReceipt) - sign, 3);
    }

    #[test]
    fn calls_are_counted_per_part() {
        let before = totals();
        let got = measure(Part::SignOther, || measure(Part::Tls, || 7));
        assert_eq!(got, 7);
        count(Part::VerifyDocument, 3);
        let after = totals();
        let delta =
            |p: Part| after[p as usize].calls - before.iter().find(|t| t.part == p).map_or(0, |t| t.calls);
        assert!(delta(Part::SignOther) >= 1 && delta(Part::Tls) >= 1 && delta(Part::VerifyDocument) >= 3);
        assert_eq!(Part::signing(DocumentKind::Certificate), Part::SignCertificate);
        assert_eq!(Part::signing(DocumentKind::Receipt), Part::SignReceipt);
    }
}
