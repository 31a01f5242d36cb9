//! `kpnode bench`.

use super::{CliResult, Failure};
use crate::bench::{self, BenchOptions};

/// The long help of the command (clap takes a subcommand's from its variant, see `cli::Command`).
pub(crate) const LONG_ABOUT: &str =
    "Measure a real exchange on this machine: two nodes enrolled to each other \
over mutual TLS, with durable sled stores in a temporary directory. By default both run in this \
process and certificates go through the API's submission path (validate, sign, store, flush); with \
--processes both run as `kpnode run` daemons and certificates are POSTed to the exporter's HTTP API, \
so each node's peak memory is its own; with --processes --batch N, N certificates per request through \
the bulk route POST /v1/certificates/batch. Each certificate is timed until the exporter has stored the \
importer's receipt. Beside the result, the machine's Ed25519 speed gives the limit the exchange is measured \
against: cores / (2 signatures + 2 verifications) per certificate.\n\n\
The floor is what a certificate must cost at least: its signature, its verification by the importer, \
and a receipt's signature and verification shared by the certificates of one receipt batch (as many as \
the run had); ratio_to_floor is the throughput over cores / that. The CPU the nodes used over the run \
(getrusage of this process, or /proc/PID/stat of each daemon) is shown per certificate and split into \
signing (certificates, receipts, anything else), verification, JSON, store (applying, flushing), TLS and other, with how many \
signatures and verifications one certificate cost.\n\n\
One certificate at a time (--concurrency 1) measures latency, beside its own floor measured in the same \
run: the exporter's and the importer's mean flush and a loopback round trip; many at once, throughput. \
With --processes, the same number of certificates is exchanged in one process right after, and the \
ratio of the two throughputs reported.\n\n\
With --hsm-module /usr/lib/softhsm/libsofthsm2.so, the bench also makes a SoftHSM2 token of its own \
in the temporary directory (softhsm2-util must be installed) and runs the same exchange again with \
the exporter's signing key in it (every certificate and receipt signed by the token), reporting \
both throughputs side by side and the time of one token signature. In one process only.\n\n\
--scale 10000,100000,1000000 measures instead what questions cost as the store grows: for each \
size, a node's store in a temporary directory is filled with that many certificates received from \
a partner (real signed certificates and receipts, 100 issued a day up to yesterday, one in a \
hundred voided, those older than 10 days confirmed), then it times opening it (which builds the \
indexes by date of issue and of the certificates received), the last full quarter's statistics \
(by date of issue and by date of import) and reconciliation, the whole store's reconciliation, the first page of the \
certificate list (and of a filter few match), cert show of random numbers, and log verify with its \
rate against this machine's Ed25519 verifications on every core. Every answer is checked.";

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Certificates to exchange.
    #[arg(long, default_value_t = 10_000)]
    certs: u64,
    /// Deliveries in flight per link (delivery.max_in_flight).
    #[arg(long, default_value_t = 256)]
    window: u32,
    /// Certificates submitted at once; 1 means one at a time, each waiting for its receipt.
    /// With --processes, the number of HTTP connections (at most 64), none waiting for receipts.
    #[arg(long, default_value_t = 1024)]
    concurrency: usize,
    /// Run both nodes as `kpnode run` daemons and submit over HTTP.
    #[arg(long)]
    processes: bool,
    /// With --processes: submit N certificates per request through the bulk route
    /// POST /v1/certificates/batch (at most 1000) instead of one per POST /v1/certificates.
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Also time the start of a node whose log holds this many entries.
    #[arg(long, value_name = "N")]
    startup_entries: Option<u64>,
    /// Also measure with the exporter's signing key in a SoftHSM2 token the bench makes,
    /// through this PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "PATH", conflicts_with = "processes")]
    hsm_module: Option<std::path::PathBuf>,
    /// Instead of the exchange: time the statistics, reconciliation, list, show and log
    /// verify on stores of these many certificates (comma-separated, e.g. 10000,100000).
    #[arg(long, value_name = "N,N,…", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    scale: Vec<u64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: BenchArgs) -> CliResult {
    if !a.scale.is_empty() {
        return scale(&a.scale, a.json);
    }
    if a.certs == 0 {
        return Err(Failure::input("--certs must be at least 1"));
    }
    let batch = match a.batch {
        None => 0,
        Some(_) if !a.processes => {
            return Err(Failure::input("--batch needs --processes (it measures the HTTP route)"))
        }
        Some(n @ 1..=crate::service::issuing::MAX_BATCH_ITEMS) => n,
        Some(n) => {
            return Err(Failure::input(format!(
                "--batch {n}: give 1 to {} (the bulk route's limit)",
                crate::service::issuing::MAX_BATCH_ITEMS
            )))
        }
    };
    let opts = BenchOptions {
        batch,
        certs: a.certs,
        window: a.window.clamp(1, 65_536),
        concurrency: a.concurrency.clamp(1, 100_000),
        processes: a.processes,
        startup_entries: a.startup_entries,
        progress: !a.json,
        hsm_module: a.hsm_module,
    };
    let r = bench::run(&opts).map_err(|e| Failure::runtime(format!("bench failed: {e}")))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(());
    }
    let c = &r.crypto;
    println!();
    println!(
        "kpnode bench: {} certificates RU → IN, window {}, {} submitted at once, {}",
        r.certs, r.window, r.concurrency, r.mode
    );
    println!();
    println!(
        "  acknowledged {} of {} (each receipt verified and stored by the exporter)",
        r.acknowledged, r.certs
    );
    println!(
        "  throughput   {:>10.0} certificates/s   (acknowledged and durable on both sides; {:.2} s)",
        r.throughput_per_s, r.elapsed_s
    );
    println!(
        "  latency      p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   (submit → receipt stored)",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max
    );
    println!("  peak RSS     exporter {:.1} MB, importer {:.1} MB", r.rss_mb.exporter, r.rss_mb.importer);
    if let (Some(ex), Some(im)) = (r.rss_mb.idle_exporter, r.rss_mb.idle_importer) {
        println!("  idle RSS     exporter {ex:.1} MB, importer {im:.1} MB (connected, before the first certificate)");
    }
    println!("               ({})", r.rss_mb.note);
    println!(
        "  this machine Ed25519 on one core, {}-byte document: sign {:.1} µs, verify {:.1} µs, batch verify {:.1} µs; {} cores",
        c.document_bytes, c.sign_us, c.verify_us, c.batch_verify_us, c.cores
    );
    println!(
        "  limit        {:>10.0} certificates/s   = {} cores / (2 × sign + 2 × verify)",
        r.limit_per_s, c.cores
    );
    if let Some(h) = &r.hsm {
        println!(
            "  in a token   {:>10.0} certificates/s   (the exporter's signing key in SoftHSM2; acknowledged {} of {}; {:.2} s)",
            h.throughput_per_s, h.acknowledged, r.certs, h.elapsed_s
        );
        println!(
            "               latency p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms; one token signature {:.1} µs ({})",
            h.latency_ms.p50, h.latency_ms.p99, h.latency_ms.max, h.token_sign_us, h.module
        );
    }
    println!("  ratio        {:>10.2}", r.ratio);
    println!("               {}", r.ratio_note);
    print_costs(&r);
    if let Some(f) = &r.latency_floor {
        println!(
            "  latency floor {:.2} ms = exporter flush {:.2} + importer flush {:.2} + loopback round trip {:.3} (mean flushes, median RTT, this run)",
            f.sum_ms, f.exporter_flush_ms, f.importer_flush_ms, f.rtt_ms
        );
        println!(
            "               p50 {:.2} ms = {:.2} × the floor; flushes per certificate: exporter {:.2}, importer {:.2}",
            r.latency_ms.p50, f.p50_over_floor, f.exporter_flushes_per_cert, f.importer_flushes_per_cert
        );
    }
    if let Some(c) = &r.in_process {
        println!(
            "  in process   {:>10.0} certificates/s   (the same {} certificates in one process, {} at a time, run right after); this run = {:.2} × it",
            c.throughput_per_s, c.certs, c.concurrency, c.ratio
        );
    }
    if let Some(s) = &r.startup {
        println!(
            "  start-up     {:.3} s to serve with {} log entries ({:.0} MB store)",
            s.seconds_to_serve, s.log_entries, s.store_mb
        );
    }
    Ok(())
}

/// The floor, the CPU a certificate cost, and where it went.
fn print_costs(r: &bench::BenchReport) {
    let (Some(f), Some(cpu)) = (&r.floor, &r.cpu) else { return };
    println!(
        "  floor        {:>10.0} certificates/s   = {} cores / {:.1} µs (sign + verify + a receipt's sign + verify shared by {:.1} certificates)",
        f.per_s, r.crypto.cores, f.us_per_cert, f.certs_per_receipt
    );
    println!("  ratio to floor {:>8.2}", r.ratio_to_floor.unwrap_or(0.0));
    println!(
        "  CPU          {:>10.1} µs per certificate = {:.2} × the floor's {:.1} µs",
        cpu.us_per_cert, cpu.over_floor, f.us_per_cert
    );
    if let (Some(ex), Some(im), Some(cl)) =
        (cpu.exporter_us_per_cert, cpu.importer_us_per_cert, cpu.clients_us_per_cert)
    {
        println!("               exporter {ex:.1} µs, importer {im:.1} µs; the bench's HTTP clients {cl:.1} µs besides");
    }
    for p in &cpu.parts {
        let calls =
            if p.part == "other" { String::new() } else { format!("   {:.3} calls", p.calls_per_cert) };
        println!("    {:<18} {:>8.1} µs {:>5.1}%{calls}", p.part, p.us_per_cert, p.share * 100.0);
    }
    println!("               ({})", cpu.note);
}

/// `kpnode bench --scale`.
fn scale(sizes: &[u64], json: bool) -> CliResult {
    let r = bench::scale::run(sizes, bench::scale::PER_DAY, !json)
        .map_err(|e| Failure::runtime(format!("bench failed: {e}")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(());
    }
    let c = &r.crypto;
    println!();
    println!(
        "kpnode bench --scale: certificates received from RU, {} issued a day; Ed25519 on one core: verify {:.1} µs, batch verify {:.1} µs; {} cores",
        r.per_day, c.verify_us, c.batch_verify_us, c.cores
    );
    println!();
    println!(
        "{:>9} {:>7} {:>7} {:>6} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>7} {:>7} {:>16} {:>8} {:>7} {:>7} {:>6} {:>6}",
        "certs",
        "store",
        "open",
        "qcerts",
        "stats",
        "stats*",
        "imp",
        "imp*",
        "recon-q",
        "recon",
        "list",
        "list-f",
        "show p50/p99/max",
        "verify",
        "/s",
        "1 ver",
        "×str",
        "×bat"
    );
    for w in &r.rows {
        println!(
            "{:>9} {:>5.0}MB {:>6.1}s {:>6} {:>6.0}ms {:>7.0}ms {:>6.0}ms {:>7.0}ms {:>6.0}ms {:>6.0}ms {:>5.1}ms {:>5.1}ms {:>4.2}/{:>4.2}/{:>4.1}ms {:>7.1}s {:>7.0} {:>6.1}s {:>6.2} {:>6.2}",
            w.certificates,
            w.store_mb,
            w.open_with_index_build_s,
            w.quarter_certificates,
            w.stats_quarter_ms,
            w.stats_quarter_from_whole_log_ms,
            w.stats_quarter_imported_ms,
            w.stats_quarter_imported_from_whole_log_ms,
            w.reconcile_quarter_ms,
            w.reconcile_whole_store_ms,
            w.list_first_page_ms,
            w.list_filtered_first_page_ms,
            w.show_p50_ms,
            w.show_p99_ms,
            w.show_max_ms,
            w.log_verify_s,
            w.log_verify_entries_per_s,
            w.log_verify_one_thread_s,
            w.verify_vs_strict,
            w.verify_vs_batched
        );
    }
    println!();
    println!(
        "  open: opening the store, building the indexes (by date of issue, of certificates received); qcerts: certificates of the quarter"
    );
    println!("  stats: the quarter's statistics (through the index); stats*: the same from the whole log");
    println!("  imp: the same by date of import (--basis imported, through the index of certificates received); imp*: from the whole log");
    println!("  recon-q: the quarter's reconciliation; recon: the whole store's");
    println!("  list: the first page (100); list-f: the first page of status=voided&peer=RU; show: cert show of 200 random numbers");
    println!("  verify: log verify on every core, entries a second, with one verifying thread beside the reader; the rate against cores × verify (strict) and cores × batch verify");
    Ok(())
}
