//! `kpnode recover`: after a restore from an older backup, fetch back from the partners what
//! the node exchanged with them since (see `crate::recover` and docs/operations.md).

use serde_json::Value;

use super::{CliResult, DirArg, Failure};
use crate::client::{segment, Client};
use crate::home::NodeDir;

/// The long help of the command (clap takes a subcommand's from its variant, see `cli::Command`).
pub(crate) const LONG_ABOUT: &str = "\
Recover, from the partners, what this node exchanged with them after the backup it was \
restored from. Run it on the restored node with the daemon running (`kpnode run`), right after \
`kpnode restore` and before issuing certificates again. It works through the daemon, because \
it dials each partner over the node's own authenticated peer link (mutual TLS with the pinned \
keys), stores through the daemon's store, and must raise the daemon's certificate counter.

For each enrolled partner in turn (or only those named with --peer), it asks for this node's \
own traffic with that partner since the restored log head, page by page: (1) the documents the \
partner delivered that this node receipted beyond that point (certificates to this node, \
confirmations and voids of its certificates, resolutions, key rotations), and (2) copies of the \
documents this node sent it (certificates, confirmations, voids, resolutions), each checked \
against this node's own key history and stored with the partner's original receipt. Recovered \
documents are appended to the log (the chain stays intact: `kpnode log verify` passes) and the \
certificates' statuses follow. Then the certificate counter is raised above the highest number \
of this node's the partner holds, so no number is issued twice.

It prints a line per partner as it goes. It is safe to run again (nothing is stored twice; a \
second run finds everything held), and to run again for a partner that was offline. A partner \
answers only this node, over its own link, and only about this node's traffic with it.

What cannot be recovered: documents this node signed after the backup but never delivered to \
anyone; traffic with a partner that is offline (run it again later) or no longer enrolled; the \
log entries as they were (recovered documents get new log positions); local records never sent \
(participant registry changes, users, idempotency keys). docs/operations.md, \"Recovery from \
partners\", has the details.

Exit status: 0 when every partner answered, 1 if any failed (the others are still recovered; \
run it again), 2 for bad usage.";

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Recover only from this partner (repeatable); default: every enrolled partner.
    #[arg(long = "peer", value_name = "CODE")]
    peers: Vec<String>,
    /// Print each partner's report as JSON (one object a line).
    #[arg(long)]
    json: bool,
}

pub fn run(a: RecoverArgs) -> CliResult {
    let client = Client::for_dir(&NodeDir::new(&a.dir.dir))?;
    let peers: Vec<String> = if a.peers.is_empty() {
        let v = client.get("/v1/peers")?;
        v.as_array()
            .map(|all| {
                all.iter()
                    .filter(|p| p["removed"] != Value::Bool(true))
                    .filter_map(|p| p["participant"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        a.peers.clone()
    };
    if peers.is_empty() {
        return Err(Failure::input(
            "this node has no enrolled partner to recover from (see `kpnode peer list`)",
        ));
    }
    let mut failed = Vec::new();
    for peer in &peers {
        if !a.json {
            println!("{peer}: asking for this node's traffic…");
        }
        match client.post_long(&format!("/v1/recover/{}", segment(peer))) {
            Ok((_, r)) if a.json => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
            Ok((_, r)) => print_report(peer, &r),
            Err(e) => {
                let lines = Failure::from(e).lines;
                println!("{peer}: FAILED: {}", lines.join("; "));
                failed.push(format!("{peer}: {}", lines.join("; ")));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        failed.push(
            "run `kpnode recover` again once these partners can be reached; nothing recovered is lost".into(),
        );
        Err(Failure { code: 1, lines: failed })
    }
}

fn print_report(peer: &str, r: &Value) {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    println!(
        "{peer}: {} page(s) from log entry {}: {} sent document(s) and {} received document(s) recovered, {} already held, {} refused",
        n("pages"),
        n("after_seq"),
        n("sent_recovered"),
        n("received_recovered"),
        n("already_held"),
        n("refused"),
    );
    if let Some(refusals) = r["refusals"].as_array() {
        for why in refusals.iter().filter_map(Value::as_str) {
            println!("{peer}:   refused: {why}");
        }
    }
    match r["highest_number"].as_str() {
        Some(h) => println!("{peer}: highest number of ours it holds: {h}; new numbers continue above it"),
        None => println!("{peer}: it holds no number of ours"),
    }
}
