//! `kpnode log …`: auditing and exporting the hash-chained log, on a running daemon or on a
//! stopped node's store.

use clap::Subcommand;
use serde_json::Value;

use super::peer::{access, Access};
use super::{CliResult, DirArg, Failure};
use crate::home::NodeDir;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Re-check the whole hash chain and every signature in it against the key history.
    #[command(long_about = "Recompute the log's hash chain from the first entry and re-verify \
every signature in it against the key histories: each document's signer and key at the time it \
signed, each peer's receipt for what this node sent, and each receipt this node gave for what it \
received. Exits 1 naming the first entry that does not hold. Works on a running daemon or, with \
it stopped, on the store directly.")]
    Verify {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Write log entries as readable lines, or JSON lines with --json.
    #[command(long_about = "Write the log's entries, oldest first: one line each (seq, time, \
direction, peer, kind, certificate or participant, the start of the entry's hash, and its \
officer), or with --json one object per line (envelope, decoded document, receipt, officer). \
The officer is who on this node did what the entry records: the console account, the API \
token's name (api.token_name in node.toml) for the API and the CLI through it, or the \
operating-system user of a command run with the daemon stopped; \"-\" (null in JSON) for a \
partner's delivery and for entries written before store format kpnode-store/3. It is inside \
the hashed entry and never sent to a partner.")]
    Export {
        #[command(flatten)]
        dir: DirArg,
        /// Start at this entry.
        #[arg(long, value_name = "SEQ", default_value_t = 1)]
        from: u64,
        /// One JSON object per line: envelope, decoded document, receipt, officer.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(c: LogCommand) -> CliResult {
    match c {
        LogCommand::Verify { dir } => verify(&dir),
        LogCommand::Export { dir, from, json } => export(&dir, from, json),
    }
}

fn verify(dir: &DirArg) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let v: Value = match access(&home)? {
        Access::Daemon(client) => client.get("/v1/log/verify")?,
        Access::Offline(store) => {
            let config = home.config()?;
            let keys = home.keys(&config)?;
            let trust = crate::state::load_trust(&store).map_err(|e| Failure::runtime(e.to_string()))?;
            let progress = progress_printer(&store);
            match kp_exchange::audit::verify_log(&store, config.participant, &keys.history, &trust, progress)
            {
                Ok(r) => serde_json::json!({"verified": true, "report": r}),
                Err(e) => serde_json::json!({"verified": false, "seq": e.seq(), "error": e.to_string()}),
            }
        }
    };
    if v["verified"].as_bool() == Some(true) {
        let r = &v["report"];
        println!(
            "The log verifies: {} entries ({} sent, {} received, {} recorded by this node), {} signatures checked; head {}",
            r["entries"],
            r["sent"],
            r["received"],
            r["recorded"],
            r["signatures_checked"],
            r["head_hash"].as_str().unwrap_or("")
        );
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "the log does NOT verify: {}",
            v["error"].as_str().unwrap_or("unknown problem")
        )))
    }
}

/// How often `log verify` says how far it is.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// The progress of `log verify` on stderr, every [`PROGRESS_EVERY`]: entries checked, of how
/// many, the rate and the time left (a long log takes minutes).
fn progress_printer(store: &crate::store::SledStore) -> impl FnMut(u64) {
    let total = crate::store::get_record::<crate::store::LogHead, _>(
        store,
        crate::store::Tree::Meta,
        crate::store::meta::LOG_HEAD,
    )
    .ok()
    .flatten()
    .map_or(0, |h| h.next_seq.saturating_sub(1));
    let started = std::time::Instant::now();
    let mut last = started;
    move |n: u64| {
        if last.elapsed() < PROGRESS_EVERY {
            return;
        }
        last = std::time::Instant::now();
        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let percent = if total > 0 { 100.0 * n as f64 / total as f64 } else { 100.0 };
        let left = total.saturating_sub(n) as f64 / rate.max(1.0);
        eprintln!(
            "  checked {n} of {total} entries ({percent:.0} %), {rate:.0} a second, about {left:.0} s left …"
        );
    }
}

fn export(dir: &DirArg, from: u64, as_json: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let access = access(&home)?;
    let mut next = from.max(1);
    const PAGE: usize = 1000;
    loop {
        let page: Vec<Value> = match &access {
            Access::Daemon(client) => {
                let v = client.get(&format!("/v1/log?from={next}&limit={PAGE}"))?;
                v.as_array().cloned().unwrap_or_default()
            }
            Access::Offline(store) => {
                let entries = crate::queries::log_entries(store, next, PAGE)
                    .map_err(|e| Failure::runtime(e.to_string()))?;
                entries.into_iter().map(|e| serde_json::to_value(e).unwrap_or(Value::Null)).collect()
            }
        };
        for e in &page {
            if as_json {
                println!("{e}");
            } else {
                let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
                let subject = match e["document"]["entry"]["code"].as_str() {
                    Some(code) => format!("participant {code}"),
                    None => s(&e["certificate"]),
                };
                println!(
                    "{:>8}  {}  {:<5} {}  {:<19} {:<16} {}  {}",
                    e["seq"],
                    s(&e["recorded_at"]),
                    s(&e["direction"]),
                    s(&e["peer"]),
                    s(&e["kind"]),
                    subject,
                    &s(&e["hash"])[..16.min(s(&e["hash"]).len())],
                    s(&e["officer"])
                );
            }
        }
        match page.last().and_then(|e| e["seq"].as_u64()) {
            Some(last) if page.len() == PAGE => next = last + 1,
            _ => return Ok(()),
        }
    }
}
