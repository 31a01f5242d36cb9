//! `kpnode peer …`: enrolment bundles and partners. `add`, `list` and `remove` work on a
//! running daemon (through its API, taking effect at once) or, with the daemon stopped, on
//! the store directly.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use serde_json::{json, Value};

use super::{read_input, write_output, CliResult, DirArg, Failure};
use crate::client::{segment, Client};
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;
use crate::store::{SledStore, Storage, StoreError};
use kp_exchange::engine::{Command, Engine, Outcome};

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Write this node's enrolment bundle and print its fingerprint.
    #[command(long_about = "Write this node's enrolment bundle: participant, authority, endpoints, \
signing key history and TLS certificate, signed by the current signing key, as ASCII armor that \
survives e-mail. Send it to each partner, and read them the fingerprint over the phone: they \
need both to enrol this node.")]
    Export {
        #[command(flatten)]
        dir: DirArg,
        /// Write the bundle to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Trust a partner's bundle, after checking the fingerprint read to you over the phone.
    #[command(long_about = "Trust a partner node: checks the bundle's self-signature and key \
history, and that its fingerprint is the one the partner's operator read to you over the \
phone. On a running daemon it takes effect at once (the link is dialled, and certificates \
queued for the partner go out); with the daemon stopped it is written to the store.\n\n\
Enrolling a partner again (a new bundle after a key rotation or a move) replaces the old one, \
if its key history extends the one held: a bundle older than what this node holds (fewer \
rotations, or different ones) is refused with exit status 2. A bundle with a different \
fingerprint for an enrolled partner (it made a new identity) is refused unless \
--replace-identity is given; the old identity is then archived, no longer trusted for new \
documents, so that log entries signed under it still verify.")]
    Add {
        /// The partner's enrolment bundle.
        bundle: PathBuf,
        /// The fingerprint the partner read to you, e.g. 7KQ2-9XMA-3F0D-HN5R.
        #[arg(long, value_name = "FP")]
        fingerprint: String,
        /// Dial this HOST:PORT instead of the bundle's endpoints (repeatable).
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: Vec<String>,
        /// Accept a new fingerprint for an enrolled partner (confirmed by phone); the old
        /// identity is archived.
        #[arg(long)]
        replace_identity: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// List enrolled partners, with their link state when the daemon runs.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a partner at once. Its queued messages stay queued.
    #[command(long_about = "Stop trusting a partner now: its open links close, new handshakes \
fail, and messages queued for it stay queued; they go out if it is enrolled again.")]
    Remove {
        /// The partner's participant code.
        code: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

pub fn run(c: PeerCommand) -> CliResult {
    match c {
        PeerCommand::Export { dir, out } => export(dir, out),
        PeerCommand::Add { bundle, fingerprint, endpoint, replace_identity, dir } => {
            add(&dir, &bundle, &fingerprint, endpoint, replace_identity)
        }
        PeerCommand::List { dir, json } => list(&dir, json),
        PeerCommand::Remove { code, dir } => remove(&dir, &code),
    }
}

fn export(dir: DirArg, out: Option<PathBuf>) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let config = home.config()?;
    let keys = home.keys(&config)?;
    let endpoints = config.endpoints();
    if let Some(zero) = endpoints.iter().find(|e| e.ends_with(":0")) {
        return Err(Failure::input(format!(
            "{}: network.peer_listen uses port 0 ({zero}), which partners cannot dial; set network.advertise",
            home.config_path().display()
        )));
    }
    let bundle = keys
        .bundle(config.authority.clone(), endpoints, SystemClock.now())
        .map_err(|e| Failure::runtime(format!("could not make the bundle: {e}")))?;
    let text = bundle.to_armored();
    match out {
        Some(path) => {
            write_output(&path, &text)?;
            println!("Wrote the enrolment bundle of {} to {}", config.participant, path.display());
            println!("fingerprint: {}", bundle.fingerprint);
        }
        None => {
            print!("{text}");
            eprintln!("fingerprint: {}", bundle.fingerprint);
        }
    }
    Ok(())
}

/// The daemon's API if it runs (it holds the store), else the store itself.
pub enum Access {
    Daemon(Client),
    Offline(SledStore),
}

pub fn access(home: &NodeDir) -> Result<Access, Failure> {
    let config = home.config()?;
    match SledStore::open(&home.store_dir(), config.store.cache_capacity_mb) {
        Ok((store, report)) => {
            if let Some(m) = &report.migrated {
                eprintln!("{}", m.line());
            }
            if let Some(line) = report.indexed_line() {
                eprintln!("{line}");
            }
            Ok(Access::Offline(store))
        }
        Err(StoreError::Locked { .. }) => Ok(Access::Daemon(Client::for_dir(home)?)),
        Err(e) => Err(Failure::store(&e)),
    }
}

/// The officer of a command applied offline: the operating-system user (there is no token
/// and no account in between).
pub(crate) fn os_officer() -> crate::store::Officer {
    crate::state::officer_named(&crate::os::user_name())
}

/// Applies one command to a stopped node's store.
pub(super) fn apply_offline(home: &NodeDir, store: &SledStore, command: Command) -> Result<Outcome, Failure> {
    let config = home.config()?;
    let keys = home.keys(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let signer =
        Arc::new(kp_exchange::signer::Signer::new(config.participant, keys.signing.backend(), clock.clone()));
    let mut engine = Engine::load(store, signer).map_err(|e| Failure::runtime(e.to_string()))?;
    let mut applied =
        engine.apply(store, clock.now(), vec![command]).map_err(|e| Failure::runtime(e.to_string()))?;
    store.flush().map_err(|e| Failure::runtime(e.to_string()))?;
    applied.outcomes.pop().ok_or_else(|| Failure::runtime("the store returned no outcome"))
}

fn add(
    dir: &DirArg,
    bundle: &std::path::Path,
    fingerprint: &str,
    endpoints: Vec<String>,
    replace_identity: bool,
) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let text = read_input(bundle)?;
    let endpoints = (!endpoints.is_empty()).then_some(endpoints);
    match access(&home)? {
        Access::Daemon(client) => {
            let body = json!({
                "bundle": text,
                "fingerprint": fingerprint,
                "endpoints": endpoints,
                "replace_identity": replace_identity,
            });
            let (_, peer) = client.post("/v1/peers", body.to_string().as_bytes())?;
            println!(
                "Enrolled {} ({}), fingerprint {}; dialling {}",
                peer["participant"].as_str().unwrap_or("?"),
                peer["authority"].as_str().unwrap_or("?"),
                peer["fingerprint"].as_str().unwrap_or("?"),
                peer["endpoints"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            );
        }
        Access::Offline(store) => {
            let config = home.config()?;
            let (record, verified) = kp_exchange::enrol::prepare(
                config.participant,
                &text,
                fingerprint,
                endpoints,
                SystemClock.now(),
            )
            .map_err(|e| Failure::input(format!("{}: {e}", bundle.display())))?;
            let endpoints = record.endpoints.join(", ");
            let command = Command::EnrolPeer {
                record: Box::new(record),
                replace_identity,
                officer: Some(os_officer()),
            };
            match apply_offline(&home, &store, command)? {
                Outcome::Done => {}
                Outcome::Refused(kp_exchange::engine::EngineError::Enrol(e)) => {
                    return Err(Failure::input(format!("{}: {e}", bundle.display())))
                }
                Outcome::Refused(e) => return Err(Failure::runtime(e.to_string())),
                other => return Err(Failure::runtime(format!("unexpected outcome {other:?}"))),
            }
            println!(
                "Enrolled {} ({}), fingerprint {}; endpoints {endpoints}",
                verified.bundle.participant, verified.bundle.authority, verified.fingerprint
            );
            println!("The daemon is not running: the link is dialled when it starts.");
        }
    }
    Ok(())
}

fn list(dir: &DirArg, as_json: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let not_enrolled: Value;
    let peers: Value = match access(&home)? {
        Access::Daemon(client) => {
            not_enrolled = client.get("/v1/status")?["not_enrolled"].take();
            client.get("/v1/peers")?
        }
        Access::Offline(store) => {
            let trust = crate::state::load_trust(&store).map_err(|e| Failure::runtime(e.to_string()))?;
            let queues = crate::queries::unenrolled_queues(&store, &trust)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            not_enrolled = serde_json::to_value(queues).map_err(|e| Failure::runtime(e.to_string()))?;
            let mut list: Vec<_> = trust.peers().collect();
            list.sort_by_key(|p| p.participant);
            let views = list
                .into_iter()
                .map(|p| {
                    Ok(crate::queries::peer_view(p, crate::queries::queued(&store, p.participant)?, None))
                })
                .collect::<Result<Vec<_>, StoreError>>()
                .map_err(|e| Failure::runtime(e.to_string()))?;
            serde_json::to_value(views).map_err(|e| Failure::runtime(e.to_string()))?
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&peers).unwrap_or_default());
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> =
        peers.as_array().map(|a| a.iter().map(peer_row).collect()).unwrap_or_default();
    // Participants with certificates queued but no node enrolled: listed, so they are not lost.
    for q in not_enrolled.as_array().into_iter().flatten() {
        let dash = || "-".to_owned();
        rows.push(vec![
            q["participant"].as_str().unwrap_or("").to_owned(),
            "(not enrolled: kpnode peer add)".to_owned(),
            dash(),
            dash(),
            "not enrolled".to_owned(),
            q["queued"].as_u64().unwrap_or(0).to_string(),
            dash(),
            dash(),
        ]);
    }
    super::output::table(
        &["PEER", "AUTHORITY", "FINGERPRINT", "ENDPOINT", "LINK", "QUEUED", "LAST DELIVERY", "LAST ERROR"],
        &rows,
    );
    Ok(())
}

fn peer_row(p: &Value) -> Vec<String> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let link = &p["link"];
    let state = if p["removed"].as_bool() == Some(true) {
        "removed".to_owned()
    } else if link.is_null() {
        "(daemon stopped)".to_owned()
    } else if link["connected"].as_bool() == Some(true) {
        "up".to_owned()
    } else {
        "down".to_owned()
    };
    vec![
        s(&p["participant"]),
        s(&p["authority"]),
        s(&p["fingerprint"]),
        p["endpoints"].as_array().and_then(|a| a.first()).map(s).unwrap_or_default(),
        state,
        p["queued"].as_u64().unwrap_or(0).to_string(),
        s(&link["last_delivery"]),
        s(&link["last_error"]),
    ]
}

fn remove(dir: &DirArg, code: &str) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let participant: kp_protocol::ParticipantCode =
        code.parse().map_err(|e| Failure::input(format!("{code:?}: {e}")))?;
    match access(&home)? {
        Access::Daemon(client) => {
            let v = client.delete(&format!("/v1/peers/{}", segment(participant.as_str())))?;
            println!(
                "Removed {participant}: its links are closed; {} message(s) stay queued for it",
                v["queued"].as_u64().unwrap_or(0)
            );
        }
        Access::Offline(store) => match apply_offline(
            &home,
            &store,
            Command::RemovePeer { participant, officer: Some(os_officer()) },
        )? {
            Outcome::Done => {
                let queued = crate::queries::queued(&store, participant)
                    .map_err(|e| Failure::runtime(e.to_string()))?;
                println!("Removed {participant}; {queued} message(s) stay queued for it");
            }
            Outcome::Refused(e) => return Err(Failure::runtime(e.to_string())),
            _ => {}
        },
    }
    Ok(())
}
