//! The `kpnode` command line: argument parsing and one module per group of subcommands.
//! Every command returns a [`Failure`] rather than exiting, so `main` alone decides the exit
//! status: 0 success, 1 runtime failure, 2 invalid input or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backup;
mod bench;
mod cert;
mod docs;
mod init;
mod keys;
mod log;
mod output;
mod participants;
mod peer;
mod recover;
mod run;
mod stats;
mod status;
mod submit;
mod users;
mod verify;

/// Why a command failed: its exit status and one line per problem.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub lines: Vec<String>,
}

impl Failure {
    /// Invalid input or usage (exit 2).
    pub fn input(line: impl Into<String>) -> Failure {
        Failure { code: 2, lines: vec![line.into()] }
    }

    /// Every problem with some input (exit 2).
    pub fn inputs(lines: Vec<String>) -> Failure {
        Failure { code: 2, lines }
    }

    /// A runtime failure (exit 1).
    pub fn runtime(line: impl Into<String>) -> Failure {
        Failure { code: 1, lines: vec![line.into()] }
    }
    /// A store that cannot be opened or used: exit 2 when it is in a format this kpnode does
    /// not read (the operator must run another kpnode; retrying or restarting changes
    /// nothing), else 1.
    pub fn store(e: &crate::store::StoreError) -> Failure {
        let code = if matches!(e, crate::store::StoreError::Format { .. }) { 2 } else { 1 };
        Failure { code, lines: e.to_string().lines().map(str::to_owned).collect() }
    }
}

impl From<crate::home::HomeError> for Failure {
    fn from(e: crate::home::HomeError) -> Failure {
        use crate::home::HomeError as H;
        let code = match &e {
            H::Config(_) | H::AlreadyInitialised(..) | H::NotANode(_) => 2,
            H::Store(crate::store::StoreError::Format { .. }) => 2,
            _ => 1,
        };
        Failure { code, lines: e.to_string().lines().map(str::to_owned).collect() }
    }
}

/// The signing key's token could not sign: a runtime failure (exit 1), naming the key and
/// the token's answer; nothing was written.
impl From<kp_keys::SignError> for Failure {
    fn from(e: kp_keys::SignError) -> Failure {
        Failure::runtime(e.to_string())
    }
}

/// An API error exits 2 if the request itself was at fault (invalid input), else 1.
impl From<crate::client::ClientError> for Failure {
    fn from(e: crate::client::ClientError) -> Failure {
        use crate::client::ClientError as C;
        match e {
            C::Home(e) => e.into(),
            C::Transport(m) => Failure::runtime(m),
            C::Refused { invalid, lines, .. } => Failure { code: if invalid { 2 } else { 1 }, lines },
        }
    }
}

pub type CliResult = Result<(), Failure>;

#[derive(Debug, Parser)]
#[command(
    name = "kpnode",
    version,
    about = "A Kimberley Process certificate node: issue, sign, exchange and confirm KP certificates with partner participants",
    long_about = "kpnode is the node a Kimberley Process participant's authority runs. It validates and \
signs the KP certificates its authority issues, delivers them over mutual TLS to the importing \
participant's node, stores signed receipts and import confirmations, and keeps every acknowledged \
message in an append-only, hash-chained log.\n\n\
Start with `kpnode init`, exchange enrolment bundles with partners (`kpnode peer export`, \
`kpnode peer add`), then `kpnode run`.\n\n\
Exit status: 0 success, 1 runtime failure, 2 invalid input or usage.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The node directory, for commands that use one.
#[derive(Debug, clap::Args)]
pub struct DirArg {
    /// The node directory (created by `kpnode init`).
    #[arg(long, env = "KPNODE_DIR", value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node directory: keys, configuration, API token and store.
    #[command(long_about = init::LONG_ABOUT)]
    Init(init::InitArgs),
    /// Run the node: serve peers and the local API until SIGINT or SIGTERM.
    #[command(long_about = run::LONG_ABOUT)]
    Run(run::RunArgs),
    /// Enrol, list and remove partner nodes; export this node's enrolment bundle.
    #[command(subcommand)]
    Peer(peer::PeerCommand),
    /// Validate, sign, submit, show, list, confirm, void, seal and export certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Check a signed certificate (.kpc) offline against the issuer's enrolment bundle.
    #[command(long_about = verify::LONG_ABOUT)]
    Verify(verify::VerifyArgs),
    /// The participant registry: list, show, set status (suspend, restrict, reinstate), import, export.
    #[command(subcommand)]
    Participants(participants::ParticipantsCommand),
    /// Trade statistics of a period from the log: by partner and HS code; CSV, JSON, SVG chart.
    #[command(long_about = stats::STATS_LONG_ABOUT)]
    Stats(stats::StatsArgs),
    /// Each partner's certificates against their confirmations; exit 1 if any need attention.
    #[command(long_about = stats::RECONCILE_LONG_ABOUT)]
    Reconcile(stats::ReconcileArgs),
    /// Show the running node: fingerprint, counts, and each peer's link.
    #[command(long_about = status::LONG_ABOUT)]
    Status(status::StatusArgs),
    /// The console's accounts: add (with a role), list, disable, passwd.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Show this node's and its peers' keys over time; rotate keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Verify the hash-chained log and every signature in it; export it.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Measure throughput and latency of a real two-node exchange on this machine.
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
    /// Write the node (store snapshot, configuration, optionally keys) into one backup file.
    #[command(long_about = backup::BACKUP_LONG_ABOUT)]
    Backup(backup::BackupArgs),
    /// Restore a backup file into a new node directory, checked and verified.
    #[command(long_about = backup::RESTORE_LONG_ABOUT)]
    Restore(backup::RestoreArgs),
    /// After a restore, fetch back from the partners what the node exchanged with them since.
    #[command(long_about = recover::LONG_ABOUT)]
    Recover(recover::RecoverArgs),
    /// Write the shell completion script for bash, zsh or fish to standard output.
    #[command(long_about = docs::COMPLETIONS_LONG_ABOUT)]
    Completions(docs::CompletionsArgs),
    /// Write the man pages (one per command) into a directory.
    #[command(long_about = docs::MAN_LONG_ABOUT)]
    Man(docs::ManArgs),
}

/// Parses the command line, runs the command, prints problems; returns the exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            // A forgotten --dir: say that KPNODE_DIR works too (clap only says --dir is missing).
            let missing_dir = e.kind() == ErrorKind::MissingRequiredArgument
                && matches!(e.get(ContextKind::InvalidArg), Some(ContextValue::Strings(args))
                    if args.iter().any(|a| a.starts_with("--dir")));
            if !missing_dir {
                e.exit();
            }
            let _ = e.print();
            if std::env::args().nth(1).as_deref() == Some("restore") {
                eprintln!("\ntip: name a new or empty directory to restore into with --dir DIR (KPNODE_DIR is not read here)");
            } else {
                eprintln!(
                    "\ntip: name the node directory (the one `kpnode init` created) with --dir DIR, or once for the \
shell with `export KPNODE_DIR=DIR`"
                );
            }
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Init(a) => init::run(a),
        Command::Run(a) => run::run(a),
        Command::Peer(c) => peer::run(c),
        Command::Cert(c) => cert::run(c),
        Command::Verify(a) => verify::run(a),
        Command::Participants(c) => participants::run(c),
        Command::Stats(a) => stats::run_stats(a),
        Command::Reconcile(a) => stats::run_reconcile(a),
        Command::Status(a) => status::run(a),
        Command::Users(c) => users::run(c),
        Command::Keys(c) => keys::run(c),
        Command::Log(c) => log::run(c),
        Command::Bench(a) => bench::run(a),
        Command::Backup(a) => backup::backup(a),
        Command::Restore(a) => backup::restore(a),
        Command::Recover(a) => recover::run(a),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            for line in &f.lines {
                eprintln!("error: {line}");
            }
            ExitCode::from(f.code)
        }
    }
}

/// Reads a file the user named, as text; a failure names the file.
pub fn read_input(path: &std::path::Path) -> Result<String, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::input(format!("{}: cannot read: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| Failure::input(format!("{}: is not UTF-8 text", path.display())))
}

/// Writes a file the user asked for.
pub fn write_output(path: &std::path::Path, text: &str) -> CliResult {
    std::fs::write(path, text).map_err(|e| Failure::runtime(format!("{}: cannot write: {e}", path.display())))
}
