//! `kpnode participants …`: the participant registry. Works on a running daemon (through its
//! API, taking effect at once) or, with the daemon stopped, on the store directly. Every
//! change is signed by this node and recorded in its log.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use kp_protocol::{ParticipantCode, ParticipantEntry};
use serde_json::{json, Value};

use super::output::table;
use super::peer::{access, apply_offline, Access};
use super::{read_input, write_output, CliResult, DirArg, Failure};
use crate::client::Client;
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;
use crate::service::participants::{self, SetRequest};
use crate::store::SledStore;
use kp_exchange::engine::Command;
use kp_exchange::registry::{Registry, TomlEntry};

#[derive(Debug, Subcommand)]
pub enum ParticipantsCommand {
    /// List the participants in force today, with their status.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print the list as TOML (the format of the list shipped with kpnode).
        #[arg(long, conflicts_with = "json")]
        toml: bool,
    },
    /// Show one participant (or member state): status, rule, members, recorded changes.
    Show {
        /// The participant's code, e.g. CF.
        code: String,
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a participant's status (or add a participant), recorded in the log.
    #[command(long_about = "Change a participant's status in this node's registry, or add a new \
participant (then --name is required). The change is signed by this node, recorded in its log, \
and in force from --effective-from (default today).\n\n\
suspended: no certificate is issued to it or accepted from it, and messages queued for its node \
are held, not dropped, until it is reinstated (set back to active).\n\
restricted: its certificates are accepted only if every parcel names one of the approved origin \
areas (--area, repeatable) as its origin_area; they are marked for enhanced vigilance.\n\
--member (repeatable) makes the participant a union of member states (like the EU), whose \
nodes issue certificates in its name.\n\n\
The log entry names the officer: with the daemon running, the API token's name \
(api.token_name in node.toml); with it stopped, the operating-system user running this \
command.")]
    Set {
        /// The participant's code, e.g. CF.
        code: String,
        /// active, suspended or restricted.
        #[arg(long, value_name = "STATUS")]
        status: String,
        /// Why (the plenary decision, the Chair's notice …).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// The day the status applies from (YYYY-MM-DD); default today.
        #[arg(long, value_name = "DATE")]
        effective_from: Option<String>,
        /// The participant's name (required for a participant not yet in the registry).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// For restricted: an approved origin area (repeatable). Default: the current ones.
        #[arg(long = "area", value_name = "AREA")]
        areas: Vec<String>,
        /// For a union: a member state (repeatable). Default: the current ones.
        #[arg(long = "member", value_name = "CODE")]
        members: Vec<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Import a signed participant list (from `participants export` on a trusted node).
    #[command(long_about = "Import a participant list signed by this node or by a peer enrolled \
now (for instance the node that circulates the Chair's list; a removed peer's lists are \
refused): the signature is checked against the signer's key history, every entry is checked, \
and each entry that differs from this node's registry is recorded as a change, signed by this \
node, in its log. An entry is ignored (and the dry run says why) if this node recorded a newer \
change for that participant: a change by the operator after the list was issued, or one from a \
later list (of the same issuer: a higher registry revision). So a stale list never undoes a \
newer suspension. Each change's log entry names the officer: the API token's name with the \
daemon running, else the operating-system user running this command.")]
    Import {
        /// The signed list file.
        file: PathBuf,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Write the registry in force as a list signed by this node, for other nodes to import.
    Export {
        #[command(flatten)]
        dir: DirArg,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub fn run(c: ParticipantsCommand) -> CliResult {
    match c {
        ParticipantsCommand::List { dir, json, toml } => list(&dir, json, toml),
        ParticipantsCommand::Show { code, dir, json } => show(&dir, &code, json),
        ParticipantsCommand::Set { code, status, reason, effective_from, name, areas, members, dir } => {
            let req = SetRequest {
                status,
                name,
                effective_from,
                reason,
                approved_origin_areas: (!areas.is_empty()).then_some(areas),
                members: (!members.is_empty()).then_some(members),
            };
            set(&dir, &code, req)
        }
        ParticipantsCommand::Import { file, dry_run, dir } => import(&dir, &file, dry_run),
        ParticipantsCommand::Export { dir, out } => export(&dir, out),
    }
}

fn code(s: &str) -> Result<ParticipantCode, Failure> {
    s.parse().map_err(|e| Failure::input(format!("{s:?}: {e}")))
}

fn runtime(e: impl std::fmt::Display) -> Failure {
    Failure::runtime(e.to_string())
}

fn offline_registry(store: &SledStore) -> Result<Registry, Failure> {
    let trust = crate::state::load_trust(store).map_err(runtime)?;
    crate::state::load_registry(store, &trust).map_err(runtime)
}

/// The registry of a node: from its store, or from its running daemon.
pub fn node_registry(home: &NodeDir) -> Result<Registry, Failure> {
    match access(home)? {
        Access::Offline(store) => offline_registry(&store),
        Access::Daemon(client) => daemon_registry(&client),
    }
}

/// The node's registry if it can be read; otherwise the shipped list, with a warning saying
/// why (a daemon that holds the store but does not answer, for instance).
pub fn node_registry_or_shipped(home: &NodeDir) -> Registry {
    match node_registry(home) {
        Ok(r) => r,
        Err(f) => {
            eprintln!(
                "warning: could not read this node's participant registry ({}); checking against the list shipped with kpnode only",
                f.lines.join("; ")
            );
            Registry::default()
        }
    }
}

fn daemon_registry(client: &Client) -> Result<Registry, Failure> {
    let list = client.get("/v1/participants")?;
    let mut entries = Vec::new();
    for v in list.as_array().into_iter().flatten() {
        let mut e = serde_json::Map::new();
        for key in ["code", "name", "status", "effective_from", "reason", "approved_origin_areas", "members"]
        {
            if let Some(x) = v.get(key) {
                e.insert(key.into(), x.clone());
            }
        }
        let toml: TomlEntry = serde_json::from_value(Value::Object(e)).map_err(runtime)?;
        entries.push(toml.to_entry().map_err(|p| Failure::runtime(p.join("; ")))?);
    }
    let peers = client.get("/v1/peers")?;
    let enrolled = peers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["participant"].as_str()?.parse::<ParticipantCode>().ok());
    Ok(Registry::from_entries(entries, enrolled))
}

fn list(dir: &DirArg, as_json: bool, as_toml: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let today = SystemClock.now().date();
    let (views, registry): (Value, Option<Registry>) = match access(&home)? {
        Access::Daemon(client) => {
            let registry = if as_toml { Some(daemon_registry(&client)?) } else { None };
            (client.get("/v1/participants")?, registry)
        }
        Access::Offline(store) => {
            let registry = offline_registry(&store)?;
            (serde_json::to_value(participants::list(&registry, today)).map_err(runtime)?, Some(registry))
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&views).unwrap_or_default());
        return Ok(());
    }
    if let (true, Some(registry)) = (as_toml, registry) {
        let entries: Vec<ParticipantEntry> = registry.on(today).entries().into_iter().cloned().collect();
        print!("{}", kp_exchange::registry::render_toml(&entries));
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let rows: Vec<Vec<String>> = views
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let mut note = Vec::new();
            if let Some(m) = v["members"].as_array() {
                note.push(format!("union of {} member states", m.len()));
            }
            if let Some(a) = v["approved_origin_areas"].as_array() {
                let areas: Vec<String> = a.iter().map(s).collect();
                note.push(format!("approved areas: {}", areas.join(", ")));
            }
            if let Some(p) = v["pending"].as_array().filter(|p| !p.is_empty()) {
                let next: Vec<String> = p
                    .iter()
                    .map(|e| format!("{} from {}", s(&e["status"]), s(&e["effective_from"])))
                    .collect();
                note.push(format!("pending: {}", next.join(", ")));
            }
            vec![s(&v["code"]), s(&v["name"]), s(&v["status"]), s(&v["effective_from"]), note.join("; ")]
        })
        .collect();
    table(&["CODE", "NAME", "STATUS", "SINCE", "NOTES"], &rows);
    Ok(())
}

fn show(dir: &DirArg, code_text: &str, as_json: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let code = code(code_text)?;
    let v: Value = match access(&home)? {
        Access::Daemon(client) => client.get(&format!("/v1/participants/{code}"))?,
        Access::Offline(store) => {
            let registry = offline_registry(&store)?;
            let detail = participants::show(&registry, SystemClock.now().date(), code).ok_or_else(|| {
                Failure::runtime(format!("{code} is not in this node's participant registry"))
            })?;
            serde_json::to_value(detail).map_err(runtime)?
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    print_detail(&v);
    Ok(())
}

fn print_detail(v: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let code = s(&v["code"]);
    if let Some(union) = v["member_of"].as_str() {
        println!("{code} is a member state of {union}: its node issues certificates in {union}'s name");
    }
    let p = &v["participant"];
    if !p.is_null() {
        println!("{} — {}", s(&p["code"]), s(&p["name"]));
        println!("  status        {} (since {})", s(&p["status"]), s(&p["effective_from"]));
        if let Some(r) = p["reason"].as_str() {
            println!("  reason        {r}");
        }
        if let Some(a) = p["approved_origin_areas"].as_array() {
            let areas: Vec<String> = a.iter().map(s).collect();
            println!("  rule          certificates accepted only for parcels from: {}", areas.join(", "));
        }
        if let Some(m) = p["members"].as_array() {
            let members: Vec<String> = m.iter().map(s).collect();
            println!("  members       {}", members.join(", "));
        }
        for e in p["pending"].as_array().into_iter().flatten() {
            println!("  pending       {} from {}", s(&e["status"]), s(&e["effective_from"]));
        }
    }
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if history.is_empty() {
        println!("  changes       none recorded on this node (as shipped with kpnode)");
    }
    for h in history {
        println!(
            "  change        {} from {} — recorded {} (log entry {})",
            s(&h["entry"]["status"]),
            s(&h["entry"]["effective_from"]),
            s(&h["recorded_at"]),
            h["log_seq"]
        );
    }
}

fn set(dir: &DirArg, code_text: &str, req: SetRequest) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let code = code(code_text)?;
    let v: Value = match access(&home)? {
        Access::Daemon(client) => {
            let body = json!({
                "status": req.status,
                "name": req.name,
                "effective_from": req.effective_from,
                "reason": req.reason,
                "approved_origin_areas": req.approved_origin_areas,
                "members": req.members,
            });
            let body: serde_json::Map<String, Value> = body
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            client.post(&format!("/v1/participants/{code}"), Value::Object(body).to_string().as_bytes())?.1
        }
        Access::Offline(store) => {
            let today = SystemClock.now().date();
            let registry = offline_registry(&store)?;
            let entry = participants::prepare_set(&registry, today, code, &req)
                .map_err(|p| Failure::inputs(p.iter().map(ToString::to_string).collect()))?;
            let signer = offline_signer(&home)?;
            let officer = Some(crate::cli::peer::os_officer());
            apply_offline(
                &home,
                &store,
                Command::record_participant(&signer, entry, "operator", None, officer)?,
            )?;
            let registry = offline_registry(&store)?;
            let detail = participants::show(&registry, today, code)
                .ok_or_else(|| Failure::runtime("the recorded participant is missing"))?;
            serde_json::to_value(detail).map_err(runtime)?
        }
    };
    println!("Recorded in this node's log:");
    print_detail(&v);
    Ok(())
}

/// This node's signer for a command run on a stopped node (seals, prints, registry changes).
pub(super) fn offline_signer(home: &NodeDir) -> Result<kp_exchange::signer::Signer, Failure> {
    let config = home.config()?;
    let keys = home.keys(&config)?;
    Ok(kp_exchange::signer::Signer::new(config.participant, keys.signing.backend(), Arc::new(SystemClock)))
}

fn import(dir: &DirArg, file: &std::path::Path, dry_run: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let text = read_input(file)?;
    let plan: Value = match access(&home)? {
        Access::Daemon(client) => {
            let body = json!({"list": text, "dry_run": dry_run});
            client.post("/v1/participants/import", body.to_string().as_bytes())?.1
        }
        Access::Offline(store) => {
            let config = home.config()?;
            let keys = home.keys(&config)?;
            let now = SystemClock.now();
            let registry = offline_registry(&store)?;
            let trust = crate::state::load_trust(&store).map_err(runtime)?;
            let plan = participants::prepare_import(
                &registry,
                now,
                config.participant,
                &keys.history,
                &trust,
                &text,
                config.keys.tls_grace_period.as_millis() as i64,
            )
            .map_err(|p| {
                Failure::inputs(p.into_iter().map(|m| format!("{}: {m}", file.display())).collect())
            })?;
            let mut plan = plan;
            if !dry_run {
                let signer = kp_exchange::signer::Signer::new(
                    config.participant,
                    keys.signing.backend(),
                    Arc::new(SystemClock),
                );
                for entry in std::mem::take(&mut plan.changes) {
                    let origin = Some(plan.origin.clone());
                    let officer = Some(crate::cli::peer::os_officer());
                    let command =
                        Command::record_participant(&signer, entry.clone(), &plan.source, origin, officer)?;
                    match apply_offline(&home, &store, command)? {
                        // Recorded since the plan was made (another import): ignored.
                        kp_exchange::engine::Outcome::Refused(
                            kp_exchange::engine::EngineError::OlderList(why),
                        ) => plan.ignored.push(participants::IgnoredEntry { entry, why }),
                        _ => plan.changes.push(entry),
                    }
                }
            }
            serde_json::to_value(&plan).map_err(runtime)?
        }
    };
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    println!(
        "List signed by {}, issued {}: {} change(s), {} unchanged{}",
        s(&plan["signed_by"]),
        s(&plan["issued_on"]),
        changes.len(),
        plan["unchanged"],
        if dry_run { " (dry run: nothing recorded)" } else { "" }
    );
    for c in changes {
        println!("  {}  {} from {}", s(&c["code"]), s(&c["status"]), s(&c["effective_from"]));
    }
    let ignored = plan["ignored"].as_array().cloned().unwrap_or_default();
    if !ignored.is_empty() {
        println!(
            "{} entr{} ignored: this node recorded a newer change",
            ignored.len(),
            if ignored.len() == 1 { "y" } else { "ies" }
        );
    }
    for i in ignored {
        let e = &i["entry"];
        println!(
            "  {}  {} from {}: ignored, {}",
            s(&e["code"]),
            s(&e["status"]),
            s(&e["effective_from"]),
            s(&i["why"])
        );
    }
    Ok(())
}

fn export(dir: &DirArg, out: Option<PathBuf>) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let text = match access(&home)? {
        Access::Daemon(client) => s_of(&client.get("/v1/participants/export")?["list"]),
        Access::Offline(store) => {
            let registry = offline_registry(&store)?;
            participants::export(&registry, SystemClock.now().date(), &offline_signer(&home)?)?
        }
    };
    match out {
        Some(path) => {
            write_output(&path, &text)?;
            println!("Wrote this node's participant list, signed, to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn s_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}
