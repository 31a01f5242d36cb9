//! `kpnode stats` and `kpnode reconcile`: trade statistics from the log and each partner's
//! certificates against their confirmations. Daemon (through its API) or offline (the store).

use std::path::PathBuf;

use serde_json::Value;

use super::output::table;
use super::peer::{access, Access};
use super::{write_output, CliResult, DirArg, Failure};
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;
use crate::report::stats::{self, By, Period, StatsReport};

/// The long help of the command (clap takes a subcommand's from its variant, see `cli::Command`).
pub(crate) const STATS_LONG_ABOUT: &str =
    "Exports and imports of a period, computed from the log: carats, US$ and \
certificate counts by partner and HS code, as participants report them to the Kimberley Process. \
A certificate counts in the period holding its date of issue (imports: see --basis); only acknowledged certificates \
count (exports: the importer's signed receipt is held; imports: stored and acknowledged), and \
voided ones are left out. Sums are exact, to the hundredth of a carat and the cent.\n\n\
Beside the partner (provenance: where a shipment came from or went to) the figures are broken down \
by country of origin (where the diamonds were mined), as the KP statistics distinguish them; a \
parcel of mixed origin counts under MIXED.\n\n\
--basis places imports in the period: `issued` (the default) by the certificate's date of issue, \
`imported` by the date of import (the received_on of this node's confirmation). The default is \
`issued` because then the exporter and the importer count every certificate in the same period, \
so one side's exports equal the other's imports and the two reports can be compared row for row, \
and an import counts from its arrival even before it is confirmed. With `imported`, an import not \
yet confirmed has no date of import: it is left out, and the report says how many such imports \
were valid during the period. Exports always count by date of issue.\n\n\
--kp-csv prints the layout of the KP statistics submissions: one partner per row, carats and US$ \
for each HS subheading (7102.10, 7102.21, 7102.31), then the certificate count; exports, then \
imports, each with a TOTAL row.\n\n\
--chart draws exports and imports per partner per month as an SVG for a report.";

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The period: 2026-Q3, 2026-H1, 2026-07, 2026, or 2026-07-01..2026-09-30.
    #[arg(long, value_name = "PERIOD")]
    period: String,
    /// Break down by partner, hs_code, or both.
    #[arg(long, value_name = "LIST", default_value = "partner,hs_code")]
    by: String,
    /// Place imports by date of issue (issued) or date of import (imported); see above.
    #[arg(long, value_name = "BASIS", default_value = "issued")]
    basis: String,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV.
    #[arg(long, conflicts_with = "kp_csv")]
    csv: bool,
    /// Print CSV in the KP statistics submission layout: one partner per row, carats and US$
    /// for HS 7102.10, 7102.21 and 7102.31, and the certificate count (needs the default --by).
    #[arg(long, conflicts_with = "json")]
    kp_csv: bool,
    /// Also draw the chart into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// What the chart's bars measure: usd or carats.
    #[arg(long, value_name = "WHAT", default_value = "usd")]
    measure: String,
    #[command(flatten)]
    dir: DirArg,
}

/// The long help of the command (clap takes a subcommand's from its variant, see `cli::Command`).
pub(crate) const RECONCILE_LONG_ABOUT: &str =
    "For each partner: certificates sent and their confirmations, confirmations \
whose parcels or carats differ from the certificate (with the exact difference), certificates past \
expiry with no confirmation, and inbound certificates this node has not confirmed; late arrivals \
(confirmations received after the certificate expired) are listed for the record.\n\n\
Exit status 1 when anything needs attention (for cron), 0 when all is reconciled.";

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Only this partner.
    #[arg(long, value_name = "CODE")]
    partner: Option<String>,
    /// Only certificates issued in this period (2026-Q3, 2026-07, …).
    #[arg(long, value_name = "PERIOD")]
    period: Option<String>,
    /// Judge expiry as of this day (YYYY-MM-DD); default today.
    #[arg(long, value_name = "DATE")]
    on: Option<String>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV: one line per finding.
    #[arg(long)]
    csv: bool,
    #[command(flatten)]
    dir: DirArg,
}

fn runtime(e: impl std::fmt::Display) -> Failure {
    Failure::runtime(e.to_string())
}

pub fn run_stats(a: StatsArgs) -> CliResult {
    let period: Period = a.period.parse().map_err(|e: String| Failure::input(format!("--period: {e}")))?;
    let by: By = a.by.parse().map_err(|e: String| Failure::input(format!("--by: {e}")))?;
    if a.kp_csv && !(by.partner && by.hs_code) {
        return Err(Failure::input("--kp-csv needs --by partner,hs_code (the default)".to_owned()));
    }
    let basis: stats::Basis = a.basis.parse().map_err(|e: String| Failure::input(format!("--basis: {e}")))?;
    let measure: crate::report::chart::Measure =
        a.measure.parse().map_err(|e: String| Failure::input(format!("--measure: {e}")))?;
    let home = NodeDir::new(&a.dir.dir);
    let report: StatsReport = match access(&home)? {
        Access::Daemon(client) => {
            let v = client.get(&format!(
                "/v1/stats?period={}&by={}&basis={}",
                crate::client::segment(&a.period),
                crate::client::segment(&a.by),
                crate::client::segment(&a.basis)
            ))?;
            from_json(&v)?
        }
        Access::Offline(store) => {
            let config = home.config()?;
            stats::compute(&store, config.participant, &period, by, basis).map_err(runtime)?
        }
    };
    if let Some(path) = &a.chart {
        write_output(path, &crate::report::chart::render(&report, measure))?;
        eprintln!("chart written to {}", path.display());
    }
    if (a.csv || a.kp_csv) && report.basis == stats::Basis::Imported && report.unconfirmed_imports > 0 {
        // The CSV has no place for it, and nothing may disappear silently.
        eprintln!(
            "{} import(s) valid during the period are not confirmed yet and are left out of the CSV.",
            report.unconfirmed_imports
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else if a.kp_csv {
        match stats::to_kp_csv(&report) {
            Some(csv) => print!("{csv}"),
            None => {
                return Err(Failure::input("--kp-csv needs --by partner,hs_code (the default)".to_owned()))
            }
        }
    } else if a.csv {
        print!("{}", stats::to_csv(&report));
    } else {
        print_stats(&report);
    }
    Ok(())
}

/// The report as the API sent it.
fn from_json(v: &Value) -> Result<StatsReport, Failure> {
    serde_json::from_value(v.clone())
        .map_err(|e| Failure::runtime(format!("the daemon's statistics could not be read: {e}")))
}

fn print_stats(r: &StatsReport) {
    println!(
        "{}: trade statistics for {} ({} to {})",
        r.participant, r.period.label, r.period.start, r.period.end
    );
    println!();
    let flow = |f: stats::Flow| if f == stats::Flow::Export { "export" } else { "import" };
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            vec![
                flow(row.flow).to_owned(),
                row.partner.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                row.hs_code.map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
                row.certificates.to_string(),
                row.parcels.to_string(),
                row.carats.clone(),
                row.value_usd.clone(),
            ]
        })
        .chain(r.totals.iter().map(|row| {
            vec![
                format!("{} total", flow(row.flow)),
                String::new(),
                String::new(),
                row.certificates.to_string(),
                row.parcels.to_string(),
                row.carats.clone(),
                row.value_usd.clone(),
            ]
        }))
        .collect();
    table(&["FLOW", "PARTNER", "HS CODE", "CERTIFICATES", "PARCELS", "CARATS", "US$"], &rows);
    println!();
    println!("By country of origin (MIXED: parcels of mixed origin):");
    let origins: Vec<Vec<String>> = r
        .origins
        .iter()
        .map(|o| {
            vec![
                flow(o.flow).to_owned(),
                o.origin.clone(),
                o.certificates.to_string(),
                o.parcels.to_string(),
                o.carats.clone(),
                o.value_usd.clone(),
            ]
        })
        .collect();
    table(&["FLOW", "ORIGIN", "CERTIFICATES", "PARCELS", "CARATS", "US$"], &origins);
    if !r.members.is_empty() {
        println!();
        println!("Unions by member state (whose node sent or received the certificates):");
        let members: Vec<Vec<String>> = r
            .members
            .iter()
            .map(|m| {
                vec![
                    flow(m.flow).to_owned(),
                    m.union.to_string(),
                    m.member.to_string(),
                    m.certificates.to_string(),
                    m.parcels.to_string(),
                    m.carats.clone(),
                    m.value_usd.clone(),
                ]
            })
            .collect();
        table(&["FLOW", "UNION", "MEMBER", "CERTIFICATES", "PARCELS", "CARATS", "US$"], &members);
    }
    if r.basis == stats::Basis::Imported {
        println!();
        println!(
            "Imports counted by date of import; {} import(s) valid during the period are not confirmed yet and are left out.",
            r.unconfirmed_imports
        );
    }
    if r.voided_excluded > 0 {
        println!();
        println!("{} voided certificate(s) of the period are left out.", r.voided_excluded);
    }
    if r.replaced_excluded > 0 {
        println!();
        println!(
            "{} replaced certificate(s) of the period are left out (their replacements count).",
            r.replaced_excluded
        );
    }
}

pub fn run_reconcile(a: ReconcileArgs) -> CliResult {
    let partner = a
        .partner
        .as_deref()
        .map(str::parse::<kp_protocol::ParticipantCode>)
        .transpose()
        .map_err(|e| Failure::input(format!("--partner: {e}")))?;
    let period = a
        .period
        .as_deref()
        .map(str::parse::<Period>)
        .transpose()
        .map_err(|e| Failure::input(format!("--period: {e}")))?;
    let on = match a.on.as_deref() {
        Some(d) => d.parse::<kp_protocol::Date>().map_err(|e| Failure::input(format!("--on: {e}")))?,
        None => SystemClock.now().date(),
    };
    let home = NodeDir::new(&a.dir.dir);
    let v: Value = match access(&home)? {
        Access::Daemon(client) => {
            let mut q = vec![format!("on={on}")];
            if let Some(p) = partner {
                q.push(format!("partner={p}"));
            }
            if let Some(p) = &a.period {
                q.push(format!("period={}", crate::client::segment(p)));
            }
            client.get(&format!("/v1/reconcile?{}", q.join("&")))?
        }
        Access::Offline(store) => {
            let config = home.config()?;
            let r = stats::reconcile(&store, config.participant, partner, period.as_ref(), on)
                .map_err(runtime)?;
            serde_json::to_value(r).map_err(runtime)?
        }
    };
    let attention = v["attention"].as_u64().unwrap_or(0);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if a.csv {
        print!("{}", reconcile_csv(&v));
    } else {
        print_reconcile(&v);
    }
    if attention > 0 {
        return Err(Failure { code: 1, lines: vec![format!("{attention} certificate(s) need attention")] });
    }
    Ok(())
}

/// Every kind of finding, as the JSON key and the name printed. `resolved` lists discrepancies
/// settled by `kpnode cert resolve`, and `late_arrivals` confirmations received after the
/// certificate expired: shown, but not needing attention.
const KINDS: [(&str, &str); 5] = [
    ("discrepancies", "discrepancy"),
    ("resolved", "resolved"),
    ("unconfirmed_past_expiry", "unconfirmed_past_expiry"),
    ("not_confirmed_here", "not_confirmed_here"),
    ("late_arrivals", "late_arrival"),
];

/// The kinds of finding that are shown but need no one's attention.
fn for_the_record(key: &str) -> bool {
    matches!(key, "resolved" | "late_arrivals")
}

fn reconcile_csv(v: &Value) -> String {
    let mut out = String::from("partner,finding,number,issued_on,expires_on,detail\n");
    for p in v["partners"].as_array().into_iter().flatten() {
        for (key, name) in KINDS {
            for f in p[key].as_array().into_iter().flatten() {
                let detail = f["detail"].as_str().unwrap_or("").replace('"', "\"\"");
                out.push_str(&format!(
                    "{},{name},{},{},{},\"{detail}\"\n",
                    p["partner"].as_str().unwrap_or(""),
                    f["number"].as_str().unwrap_or(""),
                    f["issued_on"].as_str().unwrap_or(""),
                    f["expires_on"].as_str().unwrap_or("")
                ));
            }
        }
    }
    out
}

fn print_reconcile(v: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let scope = v["period"]["label"].as_str().map(|p| format!(" for {p}")).unwrap_or_default();
    println!("{}: reconciliation{scope}, as of {}", s(&v["participant"]), s(&v["on"]));
    println!();
    let n = |p: &Value, k: &str| p[k].as_array().map_or(0, Vec::len).to_string();
    let partners = v["partners"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = partners
        .iter()
        .map(|p| {
            vec![
                s(&p["partner"]),
                p["sent"].to_string(),
                p["confirmed"].to_string(),
                p["awaiting_confirmation"].to_string(),
                n(p, "discrepancies"),
                n(p, "unconfirmed_past_expiry"),
                p["received"].to_string(),
                n(p, "not_confirmed_here"),
                n(p, "late_arrivals"),
            ]
        })
        .collect();
    table(
        &[
            "PARTNER",
            "SENT",
            "CONFIRMED",
            "AWAITING",
            "DISCREPANCIES",
            "UNCONFIRMED PAST EXPIRY",
            "RECEIVED",
            "NOT CONFIRMED HERE",
            "LATE ARRIVALS",
        ],
        &rows,
    );
    let (mut any, mut needs) = (false, false);
    for p in &partners {
        for (key, name) in KINDS {
            for f in p[key].as_array().into_iter().flatten() {
                if !any {
                    println!();
                    any = true;
                }
                needs |= !for_the_record(key);
                println!(
                    "  {}  {:<24} {}  {}",
                    s(&p["partner"]),
                    name.replace('_', " "),
                    s(&f["number"]),
                    s(&f["detail"])
                );
            }
        }
    }
    if !needs {
        let awaiting: u64 = partners.iter().filter_map(|p| p["awaiting_confirmation"].as_u64()).sum();
        println!();
        if awaiting > 0 {
            println!(
                "Nothing needs attention; {awaiting} certificate(s) await their importer's confirmation within their validity."
            );
        } else {
            println!("Everything is reconciled.");
        }
    }
}
