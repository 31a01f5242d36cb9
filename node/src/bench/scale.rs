//! `kpnode bench --scale N,N,…`: what the questions an authority asks of its node cost as the
//! store grows. For each size, a node's store is filled with that many certificates received
//! from a partner (each a real certificate signed by the partner's key, its log entry chained
//! and covered by a receipt this node signed, its record, one in a hundred voided), issued at
//! a steady [`PER_DAY`] a day up to yesterday, so that a quarter holds about the same number
//! of certificates at every size: what grows is the store, not the answer. Then, on that
//! store, through the functions the API and the CLI call: the statistics and the
//! reconciliation of the last full quarter, the first page of the certificate list (with and
//! without a filter few certificates match), `cert show` of random numbers, and `log verify`
//! with its rate against this machine's Ed25519 speed on every core.
//!
//! Every answer is also checked (the statistics against the same statistics computed from
//! the whole log, the list's pages against the store, the audit's counts), so the small run in
//! the tests proves the indexes right, not only fast.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kp_protocol::receipt::{try_sign_batch_with, ReceiptItem};
use kp_protocol::{
    Carats, Certificate, CertificateDraft, Date, ImportConfirmation, MessageReceipt, ParticipantCode,
    SignedDocument, Text, Timestamp, ValidationContext, Void,
};
use serde::Serialize;

use super::{init_node, sample_json, tempdir, Crypto};
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;
use crate::node::{Node, NodeOptions};
use crate::queries::{self, CertFilter};
use crate::report::stats::{self, Basis, By, Period};
use crate::store::{
    encode_record, hash_entry_bytes, log_key, meta, CertRecord, CertStatus, ConfirmationRecord, Counts,
    Direction, EntryBody, LogEntry, LogHead, LogRecord, SledStore, Storage, Tree, VoidRecord, Writes,
};
use kp_exchange::signer::Signer;

/// Certificates issued a day in the filled stores: about 9,000 in a quarter.
pub const PER_DAY: u64 = 100;
/// One certificate in this many is voided by its exporter.
const VOID_EVERY: u64 = 100;
/// Certificates issued in the last this many days wait for IN's confirmation; the earlier
/// ones are confirmed (but the voided).
const WAITING_DAYS: i32 = 10;
/// Log entries covered by one receipt this node signs (a delivery's batch).
const RECEIPT_BATCH: usize = 100;
/// Random certificates shown, for `cert show`'s time.
const SHOWS: usize = 200;

/// What one size measured. Times in milliseconds unless named otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub certificates: u64,
    pub log_entries: u64,
    pub store_mb: f64,
    /// Filling the store (signing every certificate and receipt), seconds.
    pub fill_s: f64,
    /// Opening the filled store, which builds the indexes by date of issue and of the
    /// certificates received (the store was written without them, as by a kpnode older than
    /// the indexes), seconds.
    pub open_with_index_build_s: f64,
    pub quarter: String,
    pub quarter_certificates: u64,
    pub stats_quarter_ms: f64,
    pub stats_quarter_from_whole_log_ms: f64,
    /// The quarter's statistics by date of import (`--basis imported`), through the index of
    /// certificates received, and the same from the whole log.
    pub stats_quarter_imported_ms: f64,
    pub stats_quarter_imported_from_whole_log_ms: f64,
    pub reconcile_quarter_ms: f64,
    pub reconcile_whole_store_ms: f64,
    pub list_first_page_ms: f64,
    /// The first page of `status=voided&peer=…`: few match, the page stops at its bound.
    pub list_filtered_first_page_ms: f64,
    pub show_p50_ms: f64,
    pub show_p99_ms: f64,
    pub show_max_ms: f64,
    pub log_verify_s: f64,
    pub log_verify_entries_per_s: f64,
    /// The same audit with one verifying thread beside the reading one (the two already fill
    /// two cores): what more verifying threads gain on this machine as it was loaded then.
    pub log_verify_one_thread_s: f64,
    /// The rate against cores × one core's strict verifications a second (what `log verify`
    /// does for each document).
    pub verify_vs_strict: f64,
    /// The rate against cores × one core's batched verifications a second.
    pub verify_vs_batched: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub per_day: u64,
    pub crypto: Crypto,
    pub rows: Vec<ScaleRow>,
}

/// Runs the scale bench for each of `sizes`.
pub fn run(sizes: &[u64], per_day: u64, progress: bool) -> Result<ScaleReport, String> {
    let per_day = per_day.max(1);
    let crypto = super::measure_crypto();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kpnode-bench")
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for &n in sizes {
        if n == 0 {
            return Err("every size must be at least 1 certificate".into());
        }
        let tmp = tempdir()?;
        let result = runtime.block_on(one_size(&tmp, Layout { n, per_day }, &crypto, progress));
        let _ = std::fs::remove_dir_all(&tmp);
        rows.push(result?);
    }
    Ok(ScaleReport { per_day, crypto, rows })
}

fn say(progress: bool, text: impl AsRef<str>) {
    if progress {
        eprintln!("{}", text.as_ref());
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The IN node of `root`, enrolled with RU, its store filled with `n` certificates from RU.
async fn one_size(root: &Path, at: Layout, crypto: &Crypto, progress: bool) -> Result<ScaleRow, String> {
    let n = at.n;
    let ru_dir = init_node(root, "RU", 0, 256, None)?;
    let in_dir = init_node(root, "IN", 0, 256, None)?;
    enrol_offline(&in_dir, &ru_dir).await?;
    let today = SystemClock.now().date();
    say(progress, format!("filling a store with {n} certificates …"));
    let started = Instant::now();
    let entries = fill(&in_dir, &ru_dir, at, today, progress)?;
    let fill_s = started.elapsed().as_secs_f64();
    let store_mb = super::dir_size(&in_dir.store_dir()) as f64 / 1e6;

    let config = in_dir.config().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (store, report) =
        SledStore::open(&in_dir.store_dir(), config.store.cache_capacity_mb).map_err(|e| e.to_string())?;
    let open_with_index_build_s = started.elapsed().as_secs_f64();
    if report.indexed != Some(n) || report.indexed_imports != Some(n) {
        return Err(format!(
            "opening the filled store indexed {:?} certificates by date of issue and {:?} received, not {n}",
            report.indexed, report.indexed_imports
        ));
    }
    let me = config.participant;
    let ru = ParticipantCode::from_static("RU");

    // The last full quarter.
    let (y, m, _) = today.ymd();
    let (qy, qn) = if m <= 3 { (y - 1, 4) } else { (y, (m - 1) / 3) };
    let period: Period = format!("{qy}-Q{qn}").parse()?;
    say(progress, format!("  statistics and reconciliation of {} …", period.label));
    let started = Instant::now();
    let by = By { partner: true, hs_code: true };
    let indexed = stats::compute(&store, me, &period, by, Basis::Issued).map_err(|e| e.to_string())?;
    let stats_quarter_ms = ms(started);
    let started = Instant::now();
    let scanned =
        stats::compute_from_log(&store, me, &period, by, Basis::Issued).map_err(|e| e.to_string())?;
    let stats_quarter_from_whole_log_ms = ms(started);
    let as_json = |r: &stats::StatsReport| serde_json::to_string(r).unwrap_or_default();
    if as_json(&indexed) != as_json(&scanned) {
        return Err(format!(
            "the quarter's statistics through the index differ from the whole log's:\n{}\n{}",
            as_json(&indexed),
            as_json(&scanned)
        ));
    }
    let quarter_certificates =
        indexed.totals.iter().map(|r| r.certificates).sum::<u64>() + indexed.voided_excluded;
    let expected_in_quarter = (0..n).filter(|i| period.contains(at.issued_on(*i, today))).count() as u64;
    if quarter_certificates != expected_in_quarter {
        return Err(format!(
            "the quarter's statistics count {quarter_certificates} certificates, the store holds {expected_in_quarter}"
        ));
    }

    // By date of import: the imports confirmed with a date of import in the quarter.
    let started = Instant::now();
    let indexed = stats::compute(&store, me, &period, by, Basis::Imported).map_err(|e| e.to_string())?;
    let stats_quarter_imported_ms = ms(started);
    let started = Instant::now();
    let scanned =
        stats::compute_from_log(&store, me, &period, by, Basis::Imported).map_err(|e| e.to_string())?;
    let stats_quarter_imported_from_whole_log_ms = ms(started);
    if as_json(&indexed) != as_json(&scanned) {
        return Err(format!(
            "the quarter's statistics by date of import through the index differ from the whole log's:\n{}\n{}",
            as_json(&indexed),
            as_json(&scanned)
        ));
    }
    // The quarter, and the last 30 days (where the small stores of the tests have their
    // certificates, confirmed and waiting): the indexes against the whole log, both bases.
    let recent: Period = format!("{}..{today}", today.add_days(-30).unwrap_or(today)).parse()?;
    for (period, basis) in [(&period, Basis::Imported), (&recent, Basis::Imported), (&recent, Basis::Issued)]
    {
        let indexed = stats::compute(&store, me, period, by, basis).map_err(|e| e.to_string())?;
        let scanned = stats::compute_from_log(&store, me, period, by, basis).map_err(|e| e.to_string())?;
        if as_json(&indexed) != as_json(&scanned) {
            return Err(format!(
                "the statistics of {} by {basis:?} through the index differ from the whole log's:\n{}\n{}",
                period.label,
                as_json(&indexed),
                as_json(&scanned)
            ));
        }
        let counted: u64 = indexed.totals.iter().map(|r| r.certificates).sum();
        let expected = (0..n)
            .filter(|i| {
                !is_voided(*i)
                    && match basis {
                        Basis::Imported => at.received_on(*i, today).is_some_and(|d| period.contains(d)),
                        Basis::Issued => period.contains(at.issued_on(*i, today)),
                    }
            })
            .count() as u64;
        let waiting = (0..n)
            .filter(|i| {
                !is_voided(*i)
                    && at.received_on(*i, today).is_none()
                    && period.contains(at.issued_on(*i, today))
            })
            .count() as u64;
        if counted != expected || (basis == Basis::Imported && indexed.unconfirmed_imports != waiting) {
            return Err(format!(
                "the statistics of {} by {basis:?} count {counted} certificates and {} not confirmed; the store holds {expected} and {waiting}",
                period.label, indexed.unconfirmed_imports
            ));
        }
    }

    let started = Instant::now();
    let rec = stats::reconcile(&store, me, None, Some(&period), today).map_err(|e| e.to_string())?;
    let reconcile_quarter_ms = ms(started);
    let received: u64 = rec.partners.iter().map(|p| p.received).sum();
    let voided_in_quarter =
        (0..n).filter(|i| period.contains(at.issued_on(*i, today)) && is_voided(*i)).count() as u64;
    if received != expected_in_quarter - voided_in_quarter {
        return Err(format!(
            "the quarter's reconciliation counts {received} certificates received, the store holds {}",
            expected_in_quarter - voided_in_quarter
        ));
    }
    let started = Instant::now();
    let whole = stats::reconcile(&store, me, None, None, today).map_err(|e| e.to_string())?;
    let reconcile_whole_store_ms = ms(started);
    let whole_received: u64 = whole.partners.iter().map(|p| p.received).sum();
    if whole_received != n - (0..n).filter(|i| is_voided(*i)).count() as u64 {
        return Err(format!("the whole reconciliation counts {whole_received} certificates received"));
    }

    say(progress, "  the certificate list, cert show …");
    let first = |filter: &CertFilter| -> Result<(Vec<queries::CertView>, Option<String>), String> {
        let (records, next) = queries::list_certs_page(&store, filter, today, crate::api::MAX_LIST_SCANNED)
            .map_err(|e| e.to_string())?;
        let views = records
            .iter()
            .map(|r| queries::cert_view(&store, r, today, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok((views, next))
    };
    let page = CertFilter { limit: crate::api::DEFAULT_LIST_LIMIT, ..CertFilter::default() };
    let started = Instant::now();
    let (views, next) = first(&page)?;
    let list_first_page_ms = ms(started);
    let want = (n as usize).min(crate::api::DEFAULT_LIST_LIMIT);
    if views.len() != want || views.first().map(|v| v.number.as_str()) != Some(at.number(0, today).as_str()) {
        return Err(format!(
            "the first page holds {} certificates, not {want} from the first number",
            views.len()
        ));
    }
    if (n as usize > want) != next.is_some() {
        return Err(format!("the first page's next cursor is {next:?} with {n} certificates"));
    }
    let filtered = CertFilter {
        status: Some(CertStatus::Voided),
        peer: Some(ru),
        limit: crate::api::DEFAULT_LIST_LIMIT,
        ..page
    };
    let started = Instant::now();
    let (views, _) = first(&filtered)?;
    let list_filtered_first_page_ms = ms(started);
    if views.iter().any(|v| v.status != CertStatus::Voided) {
        return Err("the filtered page lists a certificate that is not voided".into());
    }
    check_all_pages(&store, at, today)?;

    let mut times = Vec::with_capacity(SHOWS);
    let mut pick = 0x9e37_79b9_7f4a_7c15u64 ^ n;
    for _ in 0..SHOWS {
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        let wanted = at.number(pick % n, today);
        let started = Instant::now();
        let rec = crate::store::get_record::<CertRecord, _>(&store, Tree::Certs, wanted.as_bytes())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("certificate {wanted} is not in the store"))?;
        let view = queries::cert_view(&store, &rec, today, true).map_err(|e| e.to_string())?;
        times.push(ms(started));
        if view.number != wanted || view.certificate.is_none() {
            return Err(format!("cert show {wanted} did not show it with its signed certificate"));
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let (show_p50_ms, show_p99_ms, show_max_ms) = (at(0.5), at(0.99), at(1.0));

    say(progress, format!("  log verify of {entries} entries on {} cores …", crypto.cores));
    let keys = in_dir.keys(&config).map_err(|e| e.to_string())?;
    let trust = crate::state::load_trust(&store).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let audit = kp_exchange::audit::verify_log(&store, me, &keys.history, &trust, |_| {})
        .map_err(|e| format!("the filled log does not verify: {e}"))?;
    let log_verify_s = started.elapsed().as_secs_f64();
    // Besides the certificates received: IN's own signed record of enrolling RU.
    if audit.received != entries || audit.entries != entries + audit.recorded || audit.recorded != 1 {
        return Err(format!(
            "log verify checked {} entries ({} received, {} recorded), the log holds {entries} received and 1 enrolment",
            audit.entries, audit.received, audit.recorded
        ));
    }
    let log_verify_entries_per_s = entries as f64 / log_verify_s;
    let started = Instant::now();
    let single = kp_exchange::audit::verify_log_with(&store, me, &keys.history, &trust, |_| {}, 1)
        .map_err(|e| format!("the filled log does not verify on one thread: {e}"))?;
    let log_verify_one_thread_s = started.elapsed().as_secs_f64();
    if single.entries != audit.entries || single.signatures_checked != audit.signatures_checked {
        return Err(format!(
            "one verifying thread and {} disagree: {single:?} against {audit:?}",
            crypto.cores
        ));
    }
    let cores = crypto.cores as f64;
    Ok(ScaleRow {
        certificates: n,
        log_entries: entries,
        store_mb,
        fill_s,
        open_with_index_build_s,
        quarter: period.label.clone(),
        quarter_certificates,
        stats_quarter_ms,
        stats_quarter_from_whole_log_ms,
        stats_quarter_imported_ms,
        stats_quarter_imported_from_whole_log_ms,
        reconcile_quarter_ms,
        reconcile_whole_store_ms,
        list_first_page_ms,
        list_filtered_first_page_ms,
        show_p50_ms,
        show_p99_ms,
        show_max_ms,
        log_verify_s,
        log_verify_entries_per_s,
        log_verify_one_thread_s,
        verify_vs_strict: log_verify_entries_per_s / (cores * 1e6 / crypto.verify_us),
        verify_vs_batched: log_verify_entries_per_s / (cores * 1e6 / crypto.batch_verify_us),
    })
}

/// Follows the list's cursors from the first page to the last: every certificate once, in
/// number order.
fn check_all_pages(store: &SledStore, at: Layout, today: Date) -> Result<(), String> {
    let n = at.n;
    if n > 20_000 {
        return Ok(());
    }
    let base = CertFilter { limit: 1000, ..CertFilter::default() };
    let mut filter = base.clone();
    let mut seen = 0u64;
    loop {
        let (records, next) = queries::list_certs_page(store, &filter, today, crate::api::MAX_LIST_SCANNED)
            .map_err(|e| e.to_string())?;
        for r in &records {
            if r.number.as_str() != at.number(seen, today) {
                return Err(format!(
                    "page order: {} where {} was expected",
                    r.number,
                    at.number(seen, today)
                ));
            }
            seen += 1;
        }
        match next {
            Some(after) => {
                let cursor = queries::cursor::encode(&base, &after);
                filter.after = Some(queries::cursor::decode(&base, &cursor)?);
            }
            None => break,
        }
    }
    if seen != n {
        return Err(format!("the pages listed {seen} certificates of {n}"));
    }
    Ok(())
}

/// How the certificates of a filled store are laid out: `n` of them, `per_day` a day.
#[derive(Debug, Clone, Copy)]
struct Layout {
    n: u64,
    per_day: u64,
}

impl Layout {
    /// The day certificate `i` was issued: `per_day` a day, the last yesterday.
    fn issued_on(&self, i: u64, today: Date) -> Date {
        let days_back = 1 + (self.n - 1 - i) / self.per_day;
        today.add_days(-(days_back.min(i32::MAX as u64) as i32)).unwrap_or(today)
    }

    /// The day certificate `i`'s shipment arrived, as IN confirmed it: 1 to 7 days after its
    /// issue, for those issued more than [`WAITING_DAYS`] ago; the later ones wait for
    /// their confirmation.
    fn received_on(&self, i: u64, today: Date) -> Option<Date> {
        let issued = self.issued_on(i, today);
        if issued.days_after(today.add_days(-WAITING_DAYS)?) >= 0 {
            return None;
        }
        issued.add_days(1 + (i % 7) as i32)
    }

    /// Certificate `i`'s number: in the order of issue.
    fn number(&self, i: u64, today: Date) -> String {
        format!("RU-{:04}-{i:07}", self.issued_on(i, today).ymd().0)
    }
}

fn is_voided(i: u64) -> bool {
    i % VOID_EVERY == VOID_EVERY - 1
}

/// Records IN's confirmation of `cert` (received on `received_on`) on its record, as
/// `kpnode cert confirm` would: signed by IN, with what the certificate declares.
fn confirm(
    in_signer: &Signer,
    cert: &Certificate,
    doc: &SignedDocument,
    rec: &mut CertRecord,
    received_on: Date,
) -> Result<(), String> {
    let c = &cert.content;
    let confirmation = ImportConfirmation {
        certificate: cert.number.clone(),
        certificate_id: doc.message_id(),
        exporting_participant: c.exporting_participant,
        importing_participant: c.importing_participant,
        exporter: c.exporter.named(),
        importer: c.importer.named(),
        received_on,
        parcels: rec.parcels,
        carats: Carats::from_hundredths(rec.carats).map_err(|e| e.to_string())?,
        confirming_authority: "Directorate General of Foreign Trade".parse().map_err(|e| format!("{e}"))?,
        remarks: None,
    };
    let signed = in_signer.sign(&confirmation).map_err(|e| e.to_string())?;
    rec.status = CertStatus::ImportConfirmed;
    rec.confirmation = Some(ConfirmationRecord {
        message_id: signed.message_id(),
        received_on,
        parcels: confirmation.parcels,
        carats: confirmation.carats,
        discrepancy: None,
        confirmed_at: signed.signed_at,
        acknowledged: false,
        rejection: None,
        log_seq: None,
    });
    Ok(())
}

/// Enrols RU's node in IN's, as `kpnode peer add` would.
async fn enrol_offline(in_dir: &NodeDir, ru_dir: &NodeDir) -> Result<(), String> {
    let mut opts = NodeOptions::new(ru_dir.clone());
    opts.announce = false;
    let ru = Node::start(opts).await.map_err(|e| e.to_string())?;
    let bundle = ru.bundle().map_err(|e| e.to_string())?;
    ru.shutdown().await;
    let mut opts = NodeOptions::new(in_dir.clone());
    opts.announce = false;
    let node = Node::start(opts).await.map_err(|e| e.to_string())?;
    super::enrol(&node, &bundle).await?;
    node.shutdown().await;
    Ok(())
}

fn signer(dir: &NodeDir) -> Result<Signer, String> {
    let config = dir.config().map_err(|e| e.to_string())?;
    let keys = dir.keys(&config).map_err(|e| e.to_string())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(Signer::new(config.participant, keys.signing.backend(), clock))
}

/// Writes `n` certificates received from RU into IN's stopped store, as IN's engine would
/// have stored them (without the index by date of issue, which the next open builds);
/// returns the log entries written.
fn fill(in_dir: &NodeDir, ru_dir: &NodeDir, at: Layout, today: Date, progress: bool) -> Result<u64, String> {
    let n = at.n;
    let (ru_signer, in_signer) = (signer(ru_dir)?, signer(in_dir)?);
    let (ru, me) = (ParticipantCode::from_static("RU"), ParticipantCode::from_static("IN"));
    let config = in_dir.config().map_err(|e| e.to_string())?;
    let (store, _) =
        SledStore::open(&in_dir.store_dir(), config.store.cache_capacity_mb).map_err(|e| e.to_string())?;
    let mut head = crate::store::get_record::<LogHead, _>(&store, Tree::Meta, meta::LOG_HEAD)
        .map_err(|e| e.to_string())?
        .unwrap_or(LogHead { next_seq: 1, last_hash: kp_protocol::Digest::ZERO });
    let mut counts = crate::store::get_record::<Counts, _>(&store, Tree::Meta, meta::COUNTS)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let first_seq = head.next_seq;
    let now = SystemClock.now();
    let mut i = 0u64;
    while i < n {
        // One delivery: up to RECEIPT_BATCH entries, one receipt batch signed by IN.
        let mut entries: Vec<(Vec<u8>, ReceiptItem)> = Vec::new();
        let mut records: Vec<CertRecord> = Vec::new();
        // Room for a certificate and its void.
        while entries.len() + 2 <= RECEIPT_BATCH && i < n {
            let (doc, cert) = certificate(&ru_signer, &at.number(i, today), i, at.issued_on(i, today))?;
            let mut rec = received_record(&cert, &doc, head.next_seq, now);
            if let Some(received_on) = at.received_on(i, today).filter(|_| !is_voided(i)) {
                confirm(&in_signer, &cert, &doc, &mut rec, received_on)?;
            }
            entries.push(append(&mut head, now, ru, doc.clone()));
            if is_voided(i) {
                let void = Void {
                    certificate: cert.number.clone(),
                    certificate_id: doc.message_id(),
                    reason: "shipment cancelled".parse::<Text>().map_err(|e| e.to_string())?,
                };
                let vdoc = ru_signer.sign(&void).map_err(|e| e.to_string())?;
                rec.status = CertStatus::Voided;
                rec.void = Some(VoidRecord {
                    message_id: vdoc.message_id(),
                    reason: "shipment cancelled".into(),
                    voided_at: now,
                    acknowledged: false,
                    rejection: None,
                    log_seq: Some(head.next_seq),
                });
                entries.push(append(&mut head, now, ru, vdoc));
            }
            records.push(rec);
            i += 1;
        }
        let items: Vec<ReceiptItem> = entries.iter().map(|(_, item)| *item).collect();
        let (batch, proofs) = try_sign_batch_with(&items, me, ru, |body| in_signer.sign(body))
            .map_err(|e| e.to_string())?
            .ok_or("an empty delivery")?;
        let mut writes = Writes::new();
        for ((bytes, item), proof) in entries.into_iter().zip(proofs) {
            let record =
                LogRecord { entry: bytes, receipt: Some(MessageReceipt { batch: batch.clone(), proof }) };
            writes.insert((Tree::Log, log_key(item.log_seq).to_vec()), Some(encode_record(&record)));
        }
        counts.certificates_in += records.len() as u64;
        for rec in records {
            writes.insert((Tree::Certs, rec.number.as_str().as_bytes().to_vec()), Some(encode_record(&rec)));
        }
        writes.insert((Tree::Meta, meta::LOG_HEAD.to_vec()), Some(encode_record(&head)));
        writes.insert((Tree::Meta, meta::COUNTS.to_vec()), Some(encode_record(&counts)));
        store.commit(&writes).map_err(|e| e.to_string())?;
        if progress && i % 100_000 < RECEIPT_BATCH as u64 && i >= 100_000 {
            eprintln!("  {i} certificates …");
        }
    }
    store.flush().map_err(|e| e.to_string())?;
    Ok(head.next_seq - first_seq)
}

/// A certificate like a real one, numbered `number`, issued on `issued_on`, signed by RU.
fn certificate(
    ru: &Signer,
    number: &str,
    variant: u64,
    issued_on: Date,
) -> Result<(SignedDocument, Certificate), String> {
    let json = sample_json(number, variant, issued_on);
    let ctx = ValidationContext {
        today: issued_on,
        max_validity_days: None,
        participants: &kp_protocol::AnyParticipant,
        exporter: None,
        importer: None,
    };
    let cert = CertificateDraft::from_json(&json, &ctx)
        .map_err(|e| format!("the bench certificate {number}: {e:?}"))?
        .into_certificate(|| unreachable!("the bench certificate has its number"));
    let doc = ru.sign(&cert).map_err(|e| e.to_string())?;
    Ok((doc, cert))
}

/// The record IN's engine makes of a certificate received at `seq`.
fn received_record(cert: &Certificate, doc: &SignedDocument, seq: u64, now: Timestamp) -> CertRecord {
    CertRecord {
        number: cert.number.clone(),
        direction: Direction::In,
        peer: ParticipantCode::from_static("RU"),
        message_id: doc.message_id(),
        status: CertStatus::Received,
        issued_on: cert.content.issued_on,
        expires_on: cert.content.expires_on,
        signed_at: doc.signed_at,
        parcels: cert.parcel_count() as u32,
        carats: cert.total_carats(),
        value_usd: cert.total_value_usd(),
        log_seq: Some(seq),
        oseq: None,
        delivered_at: Some(now),
        confirmation: None,
        void: None,
        rejection: None,
        updated_at: now,
        vigilance: None,
    }
}

/// Chains `document`, received from `peer`, onto the log; its bytes and receipt item.
fn append(
    head: &mut LogHead,
    now: Timestamp,
    peer: ParticipantCode,
    document: SignedDocument,
) -> (Vec<u8>, ReceiptItem) {
    let id = document.message_id();
    let entry =
        LogEntry::new(head.next_seq, head.last_hash, now, EntryBody::Received { peer, document }, None);
    let bytes = encode_record(&entry);
    let hash = hash_entry_bytes(&entry.prev_hash, &bytes);
    let item = ReceiptItem { message_id: id, log_seq: entry.seq, entry_hash: hash };
    *head = LogHead { next_seq: entry.seq + 1, last_hash: hash };
    (bytes, item)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small instance of the scale bench: every answer it times is checked against the
    /// store (the statistics through the index against the whole log's, the list's pages,
    /// the audit), at two sizes.
    #[test]
    fn the_scale_bench_answers_correctly_on_small_stores() {
        // One a day, so that the last full quarter holds some of even the smaller store.
        let report = run(&[200, 2000], 1, false).unwrap();
        assert_eq!(report.rows.len(), 2);
        for row in &report.rows {
            assert!(row.quarter_certificates > 0, "{row:?}");
            assert!(row.log_entries > row.certificates, "the voids are in the log too: {row:?}");
        }
    }
}
