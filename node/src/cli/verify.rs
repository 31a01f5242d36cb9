//! `kpnode verify`: offline verification of a signed certificate.

use std::path::PathBuf;

use kp_keys::VerifiedBundle;
use kp_protocol::{portable, ValidationContext};

use super::{read_input, CliResult, Failure};
use crate::clock::{Clock, SystemClock};
use crate::registry::Registry;

#[derive(Debug, clap::Args)]
#[command(long_about = "Check a signed certificate (.kpc) offline against the issuing \
participant's enrolment bundle: the bundle's self-signature and key history, that the \
certificate was signed by that participant with a key valid at the time of signing, the \
signature, and the certificate's content. Works without a node directory.\n\n\
Exit status 0 if the certificate is authentic, 2 if anything does not hold (with the reason).")]
pub struct VerifyArgs {
    /// The signed certificate (.kpc).
    file: PathBuf,
    /// The issuing participant's enrolment bundle (the latest one, after key rotations).
    #[arg(long, value_name = "FILE")]
    bundle: PathBuf,
}

pub fn run(a: VerifyArgs) -> CliResult {
    let bundle_text = read_input(&a.bundle)?;
    let bundle = VerifiedBundle::from_armored(&bundle_text)
        .map_err(|e| Failure::input(format!("{}: {e}", a.bundle.display())))?;
    let text = read_input(&a.file)?;
    let fail = |msg: String| Failure::input(format!("{}: {msg}", a.file.display()));
    let (doc, cert) = portable::from_armored(&text).map_err(|e| fail(e.to_string()))?;

    let issuer = bundle.bundle.participant;
    if doc.signer != issuer {
        return Err(fail(format!(
            "signed by {}, but the bundle is {issuer}'s; verify it with {}'s bundle",
            doc.signer, doc.signer
        )));
    }
    let key = bundle
        .history
        .signing_key_at(doc.key_id, doc.signed_at)
        .map_err(|e| fail(format!("{e}; if {issuer} rotated its keys, ask for its latest bundle")))?;
    doc.verify_signature(key).map_err(|e| fail(e.to_string()))?;

    // The content as it stood when signed.
    let registry = Registry::new(Default::default(), [issuer]);
    let directory = registry.on(doc.signed_at.date());
    let ctx = ValidationContext {
        today: doc.signed_at.date(),
        max_validity_days: None,
        participants: &directory,
        exporter: Some(issuer),
        importer: None,
    };
    cert.validate(&ctx).map_err(|p| {
        Failure::inputs(
            p.0.iter().map(|p| format!("{}: signed, but invalid: {p}", a.file.display())).collect(),
        )
    })?;

    let c = &cert.content;
    println!(
        "Authentic: certificate {} issued by {issuer} ({}) to {}",
        cert.number, bundle.bundle.authority, c.importing_participant
    );
    println!("  signed     {} with key {} (fingerprint {})", doc.signed_at, doc.key_id, bundle.fingerprint);
    println!(
        "  shipment   {} parcel(s), {} carats, US$ {}",
        cert.parcel_count(),
        kp_protocol::amount::format_hundredths(cert.total_carats()),
        kp_protocol::amount::format_hundredths(cert.total_value_usd())
    );
    println!("  valid      {} to {}", c.issued_on, c.expires_on);
    for d in &c.declarations {
        println!("  declares   {}: {}", d.code.as_str(), d.text);
    }
    let today = SystemClock.now().date();
    if c.expires_on < today {
        println!("  note       expired on {} (today is {today})", c.expires_on);
    }
    Ok(())
}
