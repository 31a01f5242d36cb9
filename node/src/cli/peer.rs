//! `kpnode peer …`: enrolment bundles and partners.

use std::path::PathBuf;

use clap::Subcommand;

use super::{write_output, CliResult, DirArg, Failure};
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;

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
}

pub fn run(c: PeerCommand) -> CliResult {
    match c {
        PeerCommand::Export { dir, out } => export(dir, out),
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
