//! `kpnode cert …`: certificates.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use kp_protocol::{portable, CertificateDraft, Date, ValidationContext};

use serde_json::Value;

use super::{read_input, write_output, CliResult, DirArg, Failure};
use crate::client::{segment, Client};
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;
use kp_exchange::registry::Registry;
use kp_exchange::signer::Signer;

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Check certificate JSON against every rule, listing every problem by field.
    #[command(
        long_about = "Check certificate JSON (docs/certificate-json.md; `kpnode cert example` prints one) against every \
Kimberley Process rule kpnode knows: HS codes, amounts, dates, participants, the number's \
prefix. Every problem is listed, one line each, naming its field (parcels[2].carats). \
Works without a node; with --dir it applies that node's settings (its participant as exporter, \
its max_validity_days)."
    )]
    Validate {
        /// The certificate JSON file.
        file: PathBuf,
        /// Apply this node's settings.
        #[arg(long, env = "KPNODE_DIR", value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print a valid certificate JSON, dated today, to start from.
    #[command(long_about = "Print certificate JSON that passes every check today: issued today, \
valid for 30 days (or max_validity_days, if shorter), two parcels, a declaration, no number \
(the node assigns one on submit). With --dir it is in the name of that node's participant and \
authority; without, of RU. Edit the parties, parcels and references, then `kpnode cert \
validate` and `kpnode cert submit` it. Every field is described in docs/certificate-json.md.")]
    Example {
        /// Use this node's participant, authority and max_validity_days.
        #[arg(long, env = "KPNODE_DIR", value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The importing participant (default IN, or RU if the exporter is IN).
        #[arg(long, value_name = "CC")]
        to: Option<String>,
    },
    /// Validate and sign a certificate into a portable signed certificate (.kpc).
    #[command(long_about = "Validate certificate JSON with this node's settings and sign it with \
the node's signing key into a portable signed certificate (.kpc, ASCII armor). Anyone holding \
this node's enrolment bundle can check it offline with `kpnode verify`. The JSON must carry a \
number; `kpnode cert submit` numbers certificates itself. A number this node already holds \
(issued or received) is refused, exit status 2.")]
    Sign {
        /// The certificate JSON file.
        file: PathBuf,
        /// Where to write the signed certificate.
        #[arg(long, value_name = "FILE.kpc")]
        out: PathBuf,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Validate, number if needed, sign and queue certificates for their importers.
    #[command(
        long_about = "Send certificate JSON to the running daemon: it validates it with the node's settings, assigns a number (<CC>-<YYYY>-<seq>) if it has none, signs it, stores it durably and queues it for the importing participant's node. Prints the number and status.

Submitting the same file again is safe: kpnode sends the file's SHA-256 as the request's Idempotency-Key, which the node stores with the certificate and remembers for 30 days, so a retry (after a timeout, or a crash of the daemon before it answered) prints the certificate of the first submission, marked (already stored), and issues no second one. A file with a number is stored once whenever it is submitted; the same number with different content is refused (exit status 2). To issue a second certificate for identical JSON without a number, change the file (e.g. give it a number).

Several files, or - (NDJSON on stdin: one certificate per line), are sent through the bulk route POST /v1/certificates/batch, in batches of at most 1000 certificates and 16 × api.max_body_bytes. One line per certificate: `FILE: NUMBER STATUS` (or `-:LINE: …` for stdin) on stdout, or its problems, one per line, as `error: FILE: field: message` on stderr. Each is keyed by its SHA-256 as a single file is, so submitting the same files again is safe and a file already submitted alone is recognised. Two identical lines or files without a number are one certificate; an NDJSON line is keyed without its newline, so the same certificate sent once as a file and once as a line is issued twice: give each its own number if it may arrive both ways. Valid certificates are stored even if others are refused. Exit status: 0 if every certificate is stored, 1 if any failed at the node or on the way (submit again: those stored are answered already stored), else 2 if any was refused for its content (or could not be read)."
    )]
    Submit {
        /// Certificate JSON files; - reads NDJSON (one certificate per line) from stdin.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        dir: DirArg,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Show one certificate: its content, status, timestamps, receipt, confirmation.
    Show {
        /// The certificate number.
        number: String,
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List certificates, newest numbers last.
    #[command(
        long_about = "List certificates in number order (newest numbers last). Without --limit every \
certificate the filters select is listed (up to 100,000; past that, the cursor to go on with is \
printed on stderr). With --limit N, one page of at most N (1 to 1000) is listed and, if there \
may be more, the next page's cursor is printed on stderr as `next page: --cursor C`; give it \
back with --cursor and the same filters for the next page. A page may be shorter than N, even \
empty, and still have a next one: each page looks through at most 10,000 certificates, so that \
a filter few match answers quickly on a large store. --json prints the page as a JSON array \
on stdout; the cursor still goes to stderr."
    )]
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Only outbound (issued here) or inbound (received) certificates.
        #[arg(long, value_parser = ["in", "out"])]
        direction: Option<String>,
        /// Only this status: queued, delivered, received, import_confirmed,
        /// import_discrepancy, rejected, voided, expired, replaced.
        #[arg(long)]
        status: Option<String>,
        /// Only certificates exchanged with this participant.
        #[arg(long)]
        peer: Option<String>,
        /// List one page of at most this many certificates (1 to 1000) and print the next
        /// page's cursor on stderr.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: Option<u16>,
        /// Start at the page this cursor (printed by the previous page) names; same filters.
        #[arg(long, value_name = "C")]
        cursor: Option<String>,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// Importing side: confirm receipt of a shipment, signed and sent to the exporter.
    #[command(
        long_about = "Importing side: confirm that the shipment of an inbound certificate arrived, with the date, the parcels counted and the carats weighed. The confirmation is signed and sent to the exporting authority's node. If the parcels or carats differ from the certificate, both sides record an import_discrepancy with the exact difference. A voided certificate cannot be confirmed."
    )]
    Confirm {
        /// The certificate number.
        number: String,
        /// The date the shipment arrived (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        received_on: String,
        /// Parcels counted on arrival.
        #[arg(long)]
        parcels: u32,
        /// Total carats weighed on arrival, e.g. 1830.35.
        #[arg(long)]
        carats: String,
        /// Remarks to add to the confirmation.
        #[arg(long)]
        remarks: Option<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Exporting side: void a certificate this node issued.
    #[command(
        long_about = "Exporting side: void a certificate this node issued (issued in error, shipment cancelled, returned, lost, replaced). The void is signed and sent to the importer's node; a voided certificate can no longer be confirmed. A certificate whose import was already confirmed cannot be voided, nor one that was replaced (void its replacement instead). Voiding a replacement does not bring back the certificate it replaced, which stays replaced: issue a new certificate if the shipment goes ahead."
    )]
    Void {
        /// The certificate number.
        number: String,
        /// Why, e.g. "shipment cancelled".
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Exporting side: issue a certificate that replaces one this node issued.
    #[command(
        long_about = "Exporting side: correct a certificate this node issued (a wrong address, weight or value, a new expiry date) by issuing a replacement. FILE is the new certificate's JSON, as `cert submit` takes it; its \"replaces\" may be left out (it is set to OLD) or must be OLD. The new certificate is signed and queued for the importer, and OLD becomes replaced here in the same durable write; the importer's node marks OLD replaced when the new one arrives and links the two (`cert show`), and statistics count only the new one. Only a certificate that is queued or delivered can be replaced, by one to the same importer: not one confirmed, voided, refused or already replaced (void it and issue a new certificate instead). If the importer's node refuses the replacement because it confirmed OLD meanwhile, OLD stands again. Submitting the same file again is safe, as with `cert submit`."
    )]
    Replace {
        /// The certificate to replace.
        #[arg(value_name = "OLD")]
        old: String,
        /// The replacement's certificate JSON.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        dir: DirArg,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Either side: settle an import discrepancy with a signed note, sent to the partner.
    #[command(
        long_about = "Either side: record that a certificate's import discrepancy (status import_discrepancy) was looked into and settled. The resolution (the note, who resolved it) is signed by this node and sent to the partner's node, which stores it too; from then on `kpnode reconcile` lists the discrepancy as resolved on both sides and no longer counts it as needing attention. `kpnode cert show` shows it. A certificate is resolved once; the discrepancy itself stays on record."
    )]
    Resolve {
        /// The certificate number.
        number: String,
        /// What was found and how it was settled, e.g. "recounted: 2 ct of dust lost in transit".
        #[arg(long)]
        note: String,
        /// Who resolved it (a person or office); default: this node's authority (node.toml).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Write the portable signed certificate (.kpc) of a certificate this node holds.
    #[command(
        long_about = "Write the portable signed certificate (.kpc, ASCII armor) of a certificate this node issued or received: exactly the document its issuer signed. Anyone with the issuer's enrolment bundle checks it offline with `kpnode verify FILE.kpc --bundle B` (and, with `--qr`, that a QR seal names it). A voided certificate is refused.

Works on a running daemon or, stopped, on the store."
    )]
    Export {
        /// The certificate number.
        number: String,
        /// Where to write it.
        #[arg(long, value_name = "FILE.kpc")]
        out: PathBuf,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Exporting side: the printable certificate, an A4 PDF with its QR seal.
    #[command(
        long_about = "Write the printable certificate: an A4 PDF laid out as KPCS Annex I asks (the title, the statement that the rough diamonds were handled in accordance with the KPCS, the number, issuing authority, exporter and importer, dates of issue and expiry, the parcels with HS code, origin, carats and US$ and their totals, the number of parcels, the shipment's references, declarations, remarks, and when given the certificate it replaces, the importing member state, the parties' licences, the port of entry, mode of transport, transport document and container seals; the validating authority and the signed certificate's message id). Labels are in English and the issuing participant's language (Russian for RU, BY, KZ and KG). The text is real text (searchable, copyable), in fonts embedded in the file.

The certificate's QR seal, signed now (the one `kpnode cert qr` draws), is printed in the top right corner: a border post checks a scan or photo of the page offline with `kpnode verify --qr PAGE.png --bundle B`. The paper's text alone proves nothing (a PDF can be edited); the seal does, and `verify` prints what it seals (number, parties, dates, parcels, carats, US$) to compare with the paper. A voided certificate prints without a seal, marked VOID with the date and reason.

Works on a running daemon or, stopped, on the store."
    )]
    Pdf {
        /// The certificate number (issued by this node).
        number: String,
        /// Where to write the PDF.
        #[arg(long, value_name = "FILE.pdf")]
        out: PathBuf,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Exporting side: a QR code that proves the certificate offline (PNG or SVG).
    #[command(
        long_about = "Draw a QR code for the shipment's paperwork: a seal signed now by this node's signing key that names the certificate (number, participants, dates, parcels, carats, US$) and commits to the exact signed certificate by its message id. A border post checks it offline with `kpnode verify --qr IMAGE --bundle B` (and the .kpc, if it has one), against this node's enrolment bundle; it keeps verifying after key rotations, with the updated bundle.

The format follows the file name: .png or .svg. Works on a running daemon or, stopped, on the store."
    )]
    Qr {
        /// The certificate number (issued by this node).
        number: String,
        /// Where to write the code: FILE.png or FILE.svg.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        dir: DirArg,
    },
}

pub fn run(c: CertCommand) -> CliResult {
    match c {
        CertCommand::Validate { file, dir } => validate(&file, dir.as_deref()),
        CertCommand::Example { dir, to } => example(dir.as_deref(), to.as_deref()),
        CertCommand::Sign { file, out, dir } => sign(&file, &out, &dir),
        CertCommand::Submit { files, dir, json } => match files.as_slice() {
            [file] if file != Path::new("-") => submit(file, &dir, json),
            files => super::submit::submit_many(files, &dir, json),
        },
        CertCommand::Show { number, dir, json } => show(&number, &dir, json),
        CertCommand::List { dir, direction, status, peer, limit, cursor, json } => {
            list(&dir, ListArgs { direction, status, peer, limit: limit.map(usize::from), cursor }, json)
        }
        CertCommand::Confirm { number, received_on, parcels, carats, remarks, dir } => {
            let body = serde_json::json!({"received_on": received_on, "parcels": parcels, "carats": carats, "remarks": remarks});
            update(&dir, &number, "confirm", body)
        }
        CertCommand::Void { number, reason, dir } => {
            update(&dir, &number, "void", serde_json::json!({"reason": reason}))
        }
        CertCommand::Replace { old, file, dir, json } => {
            submit_to(&file, &format!("/v1/certificates/{}/replace", segment(&old)), Some(&old), &dir, json)
        }
        CertCommand::Resolve { number, note, by, dir } => {
            update(&dir, &number, "resolve", serde_json::json!({"note": note, "resolved_by": by}))
        }
        CertCommand::Qr { number, out, dir } => qr(&number, &out, &dir),
        CertCommand::Pdf { number, out, dir } => pdf(&number, &out, &dir),
        CertCommand::Export { number, out, dir } => export(&number, &out, &dir),
    }
}

fn qr(number: &str, out: &Path, dir: &DirArg) -> CliResult {
    let format = match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "png",
        Some("svg") => "svg",
        _ => return Err(Failure::input(format!("{}: name the file .png or .svg", out.display()))),
    };
    let home = NodeDir::new(&dir.dir);
    let (text, key_id) = match super::peer::access(&home)? {
        super::peer::Access::Daemon(client) => {
            let v = client.get(&format!("/v1/certificates/{}/seal", segment(number)))?;
            (v["qr_text"].as_str().unwrap_or("").to_owned(), v["key_id"].as_str().unwrap_or("").to_owned())
        }
        super::peer::Access::Offline(store) => {
            let rec = offline_record(&store, number)?;
            let signer = super::participants::offline_signer(&home)?;
            let (doc, _) = crate::report::seal::make(&store, &rec, &signer)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            (crate::report::seal::text(&doc), doc.key_id.to_string())
        }
    };
    if text.is_empty() {
        return Err(Failure::runtime("the daemon returned no seal"));
    }
    match format {
        "png" => {
            let bytes = crate::report::seal::png(&text).map_err(Failure::runtime)?;
            std::fs::write(out, bytes)
                .map_err(|e| Failure::runtime(format!("{}: cannot write: {e}", out.display())))?;
        }
        _ => write_output(out, &crate::report::seal::svg(&text).map_err(Failure::runtime)?)?,
    }
    println!(
        "Wrote the QR seal of {number} (signed with key {key_id}, {} characters) to {}",
        text.len(),
        out.display()
    );
    Ok(())
}

/// The largest PDF read from the daemon: a certificate of 1000 parcels is about 1 MiB.
const MAX_PDF_BYTES: u64 = 64 << 20;

fn pdf(number: &str, out: &Path, dir: &DirArg) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let bytes = match super::peer::access(&home)? {
        super::peer::Access::Daemon(client) => {
            client.get_bytes(&format!("/v1/certificates/{}/pdf", segment(number)), MAX_PDF_BYTES)?
        }
        super::peer::Access::Offline(store) => {
            let rec = offline_record(&store, number)?;
            let signer = super::participants::offline_signer(&home)?;
            crate::report::pdf::print(&store, &rec, &signer).map_err(|e| Failure::runtime(e.to_string()))?
        }
    };
    if !bytes.starts_with(b"%PDF-") {
        return Err(Failure::runtime("the daemon's answer is not a PDF"));
    }
    std::fs::write(out, &bytes)
        .map_err(|e| Failure::runtime(format!("{}: cannot write: {e}", out.display())))?;
    println!("Wrote the printable certificate {number} ({} bytes) to {}", bytes.len(), out.display());
    Ok(())
}

/// The stored record of certificate `number`, read from the store itself (no daemon runs).
fn offline_record(
    store: &crate::store::SledStore,
    number: &str,
) -> Result<crate::store::CertRecord, Failure> {
    let n: kp_protocol::CertificateNumber =
        number.parse().map_err(|e| Failure::input(format!("{number:?}: {e}")))?;
    stored(store, &n)
}

fn export(number: &str, out: &Path, dir: &DirArg) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let text = match super::peer::access(&home)? {
        super::peer::Access::Daemon(client) => {
            match client.get(&format!("/v1/certificates/{}/kpc", segment(number)))? {
                Value::String(text) => text,
                other => {
                    return Err(Failure::runtime(format!("the daemon answered {other} instead of a .kpc")))
                }
            }
        }
        super::peer::Access::Offline(store) => {
            let rec = offline_record(&store, number)?;
            crate::report::seal::portable(&store, &rec).map_err(|e| Failure::runtime(e.to_string()))?
        }
    };
    write_output(out, &text)?;
    println!("Wrote the signed certificate {number} to {} (check it with `kpnode verify`)", out.display());
    Ok(())
}

/// The record of certificate `n` in a stopped node's store.
fn stored(
    store: &crate::store::SledStore,
    n: &kp_protocol::CertificateNumber,
) -> Result<crate::store::CertRecord, Failure> {
    crate::store::get_record::<crate::store::CertRecord, _>(
        store,
        crate::store::Tree::Certs,
        n.as_str().as_bytes(),
    )
    .map_err(|e| Failure::runtime(e.to_string()))?
    .ok_or_else(|| Failure::runtime(format!("there is no certificate {n} on this node")))
}

fn client(dir: &DirArg) -> Result<Client, Failure> {
    Ok(Client::for_dir(&NodeDir::new(&dir.dir))?)
}

fn submit(file: &Path, dir: &DirArg, as_json: bool) -> CliResult {
    submit_to(file, "/v1/certificates", None, dir, as_json)
}

/// Sends certificate JSON `file` to the daemon's `route`: a submission, or the replacement of
/// certificate `replacing`.
fn submit_to(file: &Path, route: &str, replacing: Option<&str>, dir: &DirArg, as_json: bool) -> CliResult {
    let text = read_input(file)?;
    // The file's SHA-256 as the idempotency key: submitting the same file again (a retry after
    // a timeout or a crash) gets the certificate of the first submission, never a second one.
    // A replacement's key also names the certificate replaced, so the same file submitted, or
    // sent to replace another certificate, is not taken for this request.
    let key = match replacing {
        None => kp_protocol::Digest::of(text.as_bytes()),
        Some(old) => kp_protocol::Digest::of_parts(&[b"replace\0", old.as_bytes(), b"\0", text.as_bytes()]),
    }
    .to_hex();
    let headers = [(crate::api::IDEMPOTENCY_HEADER, key.as_str())];
    let (_, v) = client(dir)?.post_with(route, text.as_bytes(), &headers).map_err(|e| {
        let mut f = Failure::from(e);
        f.lines = f.lines.into_iter().map(|l| format!("{}: {l}", file.display())).collect();
        f
    })?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let again = if v["already_stored"].as_bool() == Some(true) { " (already stored)" } else { "" };
        println!("{} {}{again}", v["number"].as_str().unwrap_or("?"), v["status"].as_str().unwrap_or("?"));
    }
    if let Some(w) = v["warnings"].as_array() {
        for w in w.iter().filter_map(Value::as_str) {
            eprintln!("warning: {w}");
        }
    }
    Ok(())
}

/// A certificate's view: from the daemon, or read from the stopped node's store.
fn show(number: &str, dir: &DirArg, as_json: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let v = match super::peer::access(&home)? {
        super::peer::Access::Daemon(client) => {
            client.get(&format!("/v1/certificates/{}", segment(number)))?
        }
        super::peer::Access::Offline(store) => {
            let n: kp_protocol::CertificateNumber =
                number.parse().map_err(|e| Failure::input(format!("number: {number:?} {e}")))?;
            let rec = stored(&store, &n)?;
            let view = crate::queries::cert_view(&store, &rec, today(), true)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            serde_json::to_value(view).map_err(|e| Failure::runtime(e.to_string()))?
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        super::output::certificate(&v);
    }
    Ok(())
}

/// What `cert list` was asked for.
struct ListArgs {
    direction: Option<String>,
    status: Option<String>,
    peer: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The most `cert list` prints without `--limit` (what the list route answered at most in one
/// request before it answered pages).
const LIST_ALL_MAX: usize = 100_000;

fn list(dir: &DirArg, args: ListArgs, as_json: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let access = super::peer::access(&home)?;
    let mut rows: Vec<Value> = Vec::new();
    let mut cursor = args.cursor.clone();
    let next = loop {
        let want = match args.limit {
            Some(n) => n,
            None => (LIST_ALL_MAX - rows.len()).min(crate::api::MAX_LIST_LIMIT),
        };
        let (page, next) = list_page(&access, &args, want, cursor.as_deref())?;
        rows.extend(page);
        match next {
            Some(c) if args.limit.is_none() && rows.len() < LIST_ALL_MAX => cursor = Some(c),
            other => break other,
        }
    };
    if let Some(c) = &next {
        if args.limit.is_none() {
            eprintln!(
                "listed the first {} certificates; there are more: go on with --limit 1000 --cursor {c}",
                rows.len()
            );
        } else {
            eprintln!("next page: --cursor {c}");
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(rows)).unwrap_or_default());
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            vec![
                s(&c["number"]),
                s(&c["direction"]),
                s(&c["peer"]),
                status_cell(c),
                s(&c["issued_on"]),
                s(&c["expires_on"]),
                c["parcels"].as_u64().unwrap_or(0).to_string(),
                s(&c["carats"]),
                s(&c["value_usd"]),
            ]
        })
        .collect();
    super::output::table(
        &["NUMBER", "DIR", "PEER", "STATUS", "ISSUED", "EXPIRES", "PARCELS", "CARATS", "US$"],
        &rows,
    );
    Ok(())
}

/// A certificate's status in `cert list`, with its marks: accepted under enhanced vigilance, and
/// a late arrival (received after it expired).
fn status_cell(c: &Value) -> String {
    let mut cell = c["status"].as_str().unwrap_or("").to_owned();
    if c["enhanced_vigilance"].is_string() {
        cell.push_str(" (VIGILANCE)");
    }
    if !c["late_arrival"].is_null() {
        cell.push_str(" (LATE)");
    }
    cell
}

/// One page of at most `limit` certificates from `cursor` on, from the daemon or a stopped
/// node's store, and the next page's cursor.
fn list_page(
    access: &super::peer::Access,
    args: &ListArgs,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), Failure> {
    match access {
        super::peer::Access::Daemon(client) => {
            let mut query = Vec::new();
            for (k, v) in [("direction", &args.direction), ("status", &args.status), ("peer", &args.peer)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", segment(v)));
                }
            }
            query.push(format!("limit={limit}"));
            if let Some(c) = cursor {
                query.push(format!("cursor={}", segment(c)));
            }
            let path = format!("/v1/certificates?{}", query.join("&"));
            let (v, next) = client.get_with_header(&path, crate::api::NEXT_CURSOR_HEADER)?;
            Ok((v.as_array().cloned().unwrap_or_default(), next))
        }
        super::peer::Access::Offline(store) => list_offline(store, args, limit, cursor),
    }
}

/// What `GET /v1/certificates` answers, read from a stopped node's store.
fn list_offline(
    store: &crate::store::SledStore,
    args: &ListArgs,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), Failure> {
    let direction = args.direction.as_deref().map(|d| match d {
        "in" => crate::store::Direction::In,
        _ => crate::store::Direction::Out,
    });
    let status = args
        .status
        .as_deref()
        .map(|s| s.parse::<crate::store::CertStatus>().map_err(|e| Failure::input(format!("--status: {e}"))))
        .transpose()?;
    let peer = args
        .peer
        .as_deref()
        .map(|p| {
            p.parse::<kp_protocol::ParticipantCode>()
                .map_err(|e| Failure::input(format!("--peer {p:?}: {e}")))
        })
        .transpose()?;
    let mut filter = crate::queries::CertFilter {
        direction,
        status,
        peer,
        after: None,
        issued_from: None,
        issued_to: None,
        limit,
    };
    let cursor_of = filter.clone();
    if let Some(c) = cursor {
        filter.after = Some(
            crate::queries::cursor::decode(&filter, c)
                .map_err(|why| Failure::input(format!("--cursor {why}")))?,
        );
    }
    let today = today();
    let (records, next) =
        crate::queries::list_certs_page(store, &filter, today, crate::api::MAX_LIST_SCANNED)
            .map_err(|e| Failure::runtime(e.to_string()))?;
    let views = records
        .iter()
        .map(|r| {
            crate::queries::cert_view(store, r, today, true)
                .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    Ok((views, next.map(|after| crate::queries::cursor::encode(&cursor_of, &after))))
}

fn update(dir: &DirArg, number: &str, action: &str, body: Value) -> CliResult {
    let (_, v) = client(dir)?
        .post(&format!("/v1/certificates/{}/{action}", segment(number)), body.to_string().as_bytes())?;
    let mut line = format!("{} {}", v["number"].as_str().unwrap_or("?"), v["status"].as_str().unwrap_or("?"));
    if let Some(d) = v["confirmation"]["discrepancy"].as_str() {
        line.push_str(&format!(" ({d})"));
    }
    if action == "resolve" {
        line.push_str(", resolved; the resolution is queued for the partner");
    }
    println!("{line}");
    Ok(())
}

/// The problems of a draft, each as "FILE: field: message".
fn problem_lines(file: &Path, problems: kp_protocol::Problems) -> Failure {
    Failure::inputs(problems.0.iter().map(|p| format!("{}: {p}", file.display())).collect())
}

/// What the participant registry says against issuing the certificate (suspension, an unmet
/// restriction).
fn registry_problems(
    file: &Path,
    registry: &kp_exchange::registry::View<'_>,
    draft: &CertificateDraft,
) -> CliResult {
    let problems = registry.issue_problems(&draft.content);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problem_lines(file, kp_protocol::Problems(problems)))
    }
}

/// The node's `certificates.authority_mismatch` applied to the certificate's issuing authority:
/// refused (exit 2), a warning on stderr, or nothing.
fn authority_check(file: &Path, config: &kp_config::NodeConfig, draft: &CertificateDraft) -> CliResult {
    let Some(why) = config.authority_mismatch(draft.content.issuing_authority.as_str()) else {
        return Ok(());
    };
    match config.certificates.authority_mismatch {
        kp_config::AuthorityMismatch::Refuse => {
            Err(Failure::input(format!("{}: issuing_authority: {why}", file.display())))
        }
        kp_config::AuthorityMismatch::Warn => {
            eprintln!("warning: {}: issuing_authority {why}", file.display());
            Ok(())
        }
        kp_config::AuthorityMismatch::Allow => Ok(()),
    }
}

fn today() -> Date {
    SystemClock.now().date()
}

fn example(dir: Option<&Path>, to: Option<&str>) -> CliResult {
    use kp_protocol::ParticipantDirectory as _;
    let config = dir.map(|d| NodeDir::new(d).config()).transpose()?;
    let registry = match dir {
        Some(d) => super::participants::node_registry_or_shipped(&NodeDir::new(d)),
        None => Registry::default(),
    };
    let today = today();
    let directory = registry.on(today);
    let (me, authority, max_days) = match &config {
        Some(c) => (c.participant, c.authority.to_string(), c.certificates.max_validity_days),
        None => (
            kp_protocol::ParticipantCode::from_static("RU"),
            "Gokhran of Russia".to_owned(),
            kp_protocol::certificate::DEFAULT_MAX_VALIDITY_DAYS,
        ),
    };
    // A member state's node issues in its union's name; the diamonds' origin is its own.
    let exporting = directory.union_of(me).unwrap_or(me);
    let importing = match to {
        Some(code) => code
            .parse::<kp_protocol::ParticipantCode>()
            .map_err(|e| Failure::input(format!("--to {code:?}: {e}")))?,
        None if exporting.as_str() == "IN" => kp_protocol::ParticipantCode::from_static("RU"),
        None => kp_protocol::ParticipantCode::from_static("IN"),
    };
    let expires = today
        .add_days(max_days.clamp(1, 30) as i32)
        .ok_or_else(|| Failure::runtime("cannot compute the expiry date"))?;
    // Written out rather than built as a map, so the fields come in the order a reader expects.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let text = format!(
        r#"{{
  "exporting_participant": {exporting},
  "importing_participant": {importing},
  "issuing_authority": {authority},
  "exporter": {{ "name": "Example Mining Ltd", "address": "1 Mine Road, Example Town", "licence": "EXP-0001" }},
  "importer": {{ "name": "Example Diamond Traders", "address": "2 Bourse Street, Example City", "licence": "IMP-0001" }},
  "issued_on": {issued},
  "expires_on": {expires},
  "parcels": [
    {{ "hs_code": "7102.31", "carats": "1520.35", "value_usd": "4231000.00", "origin": {origin} }},
    {{ "hs_code": "7102.21", "carats": "310.00", "value_usd": "15500.00", "origin": "MIXED" }}
  ],
  "shipment": {{
    "port_of_export": "Example Airport",
    "customs_reference": "EXAMPLE-0001",
    "transport_mode": "air",
    "transport_document": "AWB 000-00000000",
    "container_seals": ["SEAL-0001", "SEAL-0002"]
  }},
  "declarations": [
    {{ "code": "WDC-SoW", "text": "The diamonds herein invoiced have been purchased from legitimate sources not involved in funding conflict." }}
  ],
  "remarks": "Two sealed parcels."
}}"#,
        exporting = q(exporting.as_str()),
        importing = q(importing.as_str()),
        authority = q(&authority),
        issued = q(&today.to_string()),
        expires = q(&expires.to_string()),
        origin = q(me.as_str()),
    );
    // Printed only if it is what it claims to be: valid, today, for this node.
    let ctx = ValidationContext {
        today,
        max_validity_days: Some(max_days),
        participants: &directory,
        exporter: Some(me),
        importer: None,
    };
    let draft = CertificateDraft::from_json(&text, &ctx)
        .map_err(|p| Failure::inputs(p.0.iter().map(|p| format!("the example: {p}")).collect()))?;
    let problems = directory.issue_problems(&draft.content);
    if !problems.is_empty() {
        return Err(Failure::inputs(problems.iter().map(|p| format!("the example: {p}")).collect()));
    }
    println!("{text}");
    Ok(())
}

fn validate(file: &Path, dir: Option<&Path>) -> CliResult {
    let text = read_input(file)?;
    let config = dir.map(|d| NodeDir::new(d).config()).transpose()?;
    let registry = match dir {
        Some(d) => super::participants::node_registry_or_shipped(&NodeDir::new(d)),
        None => Registry::default(),
    };
    let directory = registry.on(today());
    let ctx = ValidationContext {
        today: today(),
        max_validity_days: Some(
            config.as_ref().map_or(kp_protocol::certificate::DEFAULT_MAX_VALIDITY_DAYS, |c| {
                c.certificates.max_validity_days
            }),
        ),
        participants: &directory,
        exporter: config.as_ref().map(|c| c.participant),
        importer: None,
    };
    let draft = CertificateDraft::from_json(&text, &ctx).map_err(|p| problem_lines(file, p))?;
    registry_problems(file, &directory, &draft)?;
    if let Some(config) = &config {
        authority_check(file, config, &draft)?;
    }
    let number =
        draft.number.as_ref().map_or("(no number: assigned on submit)".to_owned(), |n| n.to_string());
    let c = &draft.content;
    let carats: u64 = c.parcels.iter().map(|p| p.carats.hundredths()).sum();
    let value: u64 = c.parcels.iter().map(|p| p.value_usd.hundredths()).sum();
    println!(
        "{}: valid certificate {number}: {} → {}, {} parcel(s), {} carats, US$ {}, expires {}",
        file.display(),
        c.exporting_participant,
        c.importing_participant,
        c.parcels.len(),
        kp_protocol::amount::format_hundredths(carats),
        kp_protocol::amount::format_hundredths(value),
        c.expires_on
    );
    Ok(())
}

fn sign(file: &Path, out: &Path, dir: &DirArg) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let config = home.config()?;
    let text = read_input(file)?;
    let registry = super::participants::node_registry_or_shipped(&home);
    let directory = registry.on(today());
    let ctx = ValidationContext {
        today: today(),
        max_validity_days: Some(config.certificates.max_validity_days),
        participants: &directory,
        exporter: Some(config.participant),
        importer: None,
    };
    let draft = CertificateDraft::from_json(&text, &ctx).map_err(|p| problem_lines(file, p))?;
    registry_problems(file, &directory, &draft)?;
    authority_check(file, &config, &draft)?;
    let Some(number) = draft.number.clone() else {
        return Err(Failure::input(format!(
            "{}: number: is required to sign offline (`kpnode cert submit` assigns numbers)",
            file.display()
        )));
    };
    if let Some(held) = held_status(&home, &number)? {
        return Err(Failure::input(format!(
            "{}: number: {number} is already on this node ({held}); a second signed certificate with that number \
would contradict the first. Give this certificate a number of its own, or leave the number out and \
`kpnode cert submit` it (the node numbers it)",
            file.display()
        )));
    }
    let keys = home.keys(&config)?;
    let key_id = keys.signing.key_id();
    let signer = Signer::new(config.participant, keys.signing.backend(), std::sync::Arc::new(SystemClock));
    let cert = draft.into_certificate(|| number.clone());
    let doc = signer.sign(&cert)?;
    write_output(out, &portable::to_armored(&doc, &cert))?;
    println!("Signed certificate {number} with key {key_id} into {}", out.display());
    println!("message id {}", doc.message_id());
    Ok(())
}

/// The status of the certificate numbered `number` if this node's store holds one: asked of
/// the running daemon, or read from the store when it is stopped.
fn held_status(home: &NodeDir, number: &kp_protocol::CertificateNumber) -> Result<Option<String>, Failure> {
    match super::peer::access(home)? {
        super::peer::Access::Daemon(client) => {
            Ok(client.get_optional(&format!("/v1/certificates/{}", segment(number.as_str())))?.map(|v| {
                format!("{}, {}", v["direction"].as_str().unwrap_or("?"), v["status"].as_str().unwrap_or("?"))
            }))
        }
        super::peer::Access::Offline(store) => Ok(crate::store::get_record::<crate::store::CertRecord, _>(
            &store,
            crate::store::Tree::Certs,
            number.as_str().as_bytes(),
        )
        .map_err(|e| Failure::runtime(e.to_string()))?
        .map(|r| format!("{}, {}", r.direction.as_str(), r.status.as_str()))),
    }
}
