//! `kpnode status`: the node at a glance.

use serde_json::Value;

use super::{CliResult, DirArg};
use crate::client::Client;
use crate::home::NodeDir;

/// The long help of the command (clap takes a subcommand's from its variant, see `cli::Command`).
pub(crate) const LONG_ABOUT: &str =
    "Show the running node: participant, fingerprint and signing key, counts, \
and for each peer whether its link is up, how many messages are queued and in flight, the last \
delivery and the last error.";

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: StatusArgs) -> CliResult {
    let v = Client::for_dir(&NodeDir::new(&a.dir.dir))?.get("/v1/status")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    println!("{}  {}", s(&v["participant"]), s(&v["authority"]));
    println!("  fingerprint   {}", s(&v["fingerprint"]));
    println!("  signing key   {}", s(&v["signing_key"]));
    println!("  peers on      {}", s(&v["peer_listen"]));
    println!("  running since {}", s(&v["started_at"]));
    println!(
        "  certificates  {} issued, {} received; {} log entries",
        v["certificates_out"], v["certificates_in"], v["log_entries"]
    );
    if v["certificates_under_vigilance"].as_u64().unwrap_or(0) > 0 {
        println!(
            "  vigilance     {} received certificate(s) from restricted participants (kpnode cert list shows VIGILANCE)",
            v["certificates_under_vigilance"]
        );
    }
    if let Some(warnings) = v["warnings"].as_array() {
        for w in warnings.iter().filter_map(Value::as_str) {
            println!("  WARNING       {w}");
        }
    }
    println!();
    let rows: Vec<Vec<String>> = v["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let link = &p["link"];
                    let state = if p["removed"].as_bool() == Some(true) {
                        "removed"
                    } else if link["held"].is_string() {
                        "held"
                    } else if link["connected"].as_bool() == Some(true) {
                        "up"
                    } else {
                        "down"
                    };
                    vec![
                        s(&p["participant"]),
                        state.to_owned(),
                        p["queued"].as_u64().unwrap_or(0).to_string(),
                        link["in_flight"].as_u64().unwrap_or(0).to_string(),
                        link["inbound_connections"].as_u64().unwrap_or(0).to_string(),
                        link["last_delivery"].as_str().unwrap_or("-").to_owned(),
                        link["last_error"].as_str().unwrap_or("-").to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut rows = rows;
    for q in v["not_enrolled"].as_array().into_iter().flatten() {
        let dash = || "-".to_owned();
        rows.push(vec![
            s(&q["participant"]),
            "not enrolled".to_owned(),
            q["queued"].as_u64().unwrap_or(0).to_string(),
            dash(),
            dash(),
            dash(),
            dash(),
        ]);
    }
    super::output::table(
        &["PEER", "LINK", "QUEUED", "IN-FLIGHT", "INBOUND", "LAST-DELIVERY", "LAST-ERROR"],
        &rows,
    );
    Ok(())
}
