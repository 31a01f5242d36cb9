//! `kpnode cert …`: certificates.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use kp_protocol::{portable, CertificateDraft, Date, ValidationContext};

use super::{read_input, write_output, CliResult, DirArg, Failure};
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;
use crate::participants::Directory;
use crate::signer::Signer;

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Check certificate JSON against every rule, listing every problem by field.
    #[command(long_about = "Check certificate JSON (the format of DESIGN.md) against every \
Kimberley Process rule kpnode knows: HS codes, amounts, dates, participants, the number's \
prefix. Every problem is listed, one line each, naming its field (parcels[2].carats). \
Works without a node; with --dir it applies that node's settings (its participant as exporter, \
its max_validity_days).")]
    Validate {
        /// The certificate JSON file.
        file: PathBuf,
        /// Apply this node's settings.
        #[arg(long, env = "KPNODE_DIR", value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Validate and sign a certificate into a portable signed certificate (.kpc).
    #[command(long_about = "Validate certificate JSON with this node's settings and sign it with \
the node's signing key into a portable signed certificate (.kpc, ASCII armor). Anyone holding \
this node's enrolment bundle can check it offline with `kpnode verify`. The JSON must carry a \
number; `kpnode cert submit` numbers certificates itself.")]
    Sign {
        /// The certificate JSON file.
        file: PathBuf,
        /// Where to write the signed certificate.
        #[arg(long, value_name = "FILE.kpc")]
        out: PathBuf,
        #[command(flatten)]
        dir: DirArg,
    },
}

pub fn run(c: CertCommand) -> CliResult {
    match c {
        CertCommand::Validate { file, dir } => validate(&file, dir.as_deref()),
        CertCommand::Sign { file, out, dir } => sign(&file, &out, &dir),
    }
}

/// The problems of a draft, each as "FILE: field: message".
fn problem_lines(file: &Path, problems: kp_protocol::Problems) -> Failure {
    Failure::inputs(problems.0.iter().map(|p| format!("{}: {p}", file.display())).collect())
}

fn today() -> Date {
    SystemClock.now().date()
}

fn validate(file: &Path, dir: Option<&Path>) -> CliResult {
    let text = read_input(file)?;
    let config = dir.map(|d| NodeDir::new(d).config()).transpose()?;
    let directory = Directory::default();
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
    let directory = Directory::default();
    let ctx = ValidationContext {
        today: today(),
        max_validity_days: Some(config.certificates.max_validity_days),
        participants: &directory,
        exporter: Some(config.participant),
        importer: None,
    };
    let draft = CertificateDraft::from_json(&text, &ctx).map_err(|p| problem_lines(file, p))?;
    let Some(number) = draft.number.clone() else {
        return Err(Failure::input(format!(
            "{}: number: is required to sign offline (`kpnode cert submit` assigns numbers)",
            file.display()
        )));
    };
    let keys = home.keys(&config)?;
    let key_id = keys.signing.key_id();
    let signer = Signer::new(config.participant, keys.signing, std::sync::Arc::new(SystemClock));
    let cert = draft.into_certificate(|| number.clone());
    let doc = signer.sign(&cert);
    write_output(out, &portable::to_armored(&doc, &cert))?;
    println!("Signed certificate {number} with key {key_id} into {}", out.display());
    println!("message id {}", doc.message_id());
    Ok(())
}
