//! `kpnode verify`: offline verification of a signed certificate, or of its QR seal.

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
With --qr, check the QR seal in an image the same way: a PNG (a photo or scan of the paperwork, \
or the file `kpnode cert qr` wrote) or an SVG as `kpnode cert qr` writes it (other SVGs are not \
read; give a PNG of them): signed by \
the bundle's participant with a key valid when it signed; given the .kpc too, also that the seal \
names exactly that signed certificate.\n\n\
Every check runs before anything is printed: one verdict, after all of them. Exit status 0 if \
the certificate (and the seal) are authentic, 2 if anything does not hold (with the reason, and \
no \"Authentic\" line).")]
pub struct VerifyArgs {
    /// The signed certificate (.kpc); optional with --qr.
    #[arg(required_unless_present = "qr")]
    file: Option<PathBuf>,
    /// The issuing participant's enrolment bundle (the latest one, after key rotations).
    #[arg(long, value_name = "FILE")]
    bundle: PathBuf,
    /// An image of the certificate's QR seal: PNG (photo, scan or `cert qr` file) or an SVG
    /// written by `kpnode cert qr`.
    #[arg(long, value_name = "IMAGE")]
    qr: Option<PathBuf>,
}

/// Runs every check first and prints one verdict after all of them: a border officer must
/// never see "Authentic" for a file whose seal then turns out not to match.
pub fn run(a: VerifyArgs) -> CliResult {
    let bundle_text = read_input(&a.bundle)?;
    let bundle = VerifiedBundle::from_armored(&bundle_text)
        .map_err(|e| Failure::input(format!("{}: {e}", a.bundle.display())))?;
    let kpc = match &a.file {
        Some(file) => Some(verify_kpc(file, &bundle)?),
        None => None,
    };
    let seal = match &a.qr {
        Some(image) => Some(verify_qr(image, &bundle, kpc.as_ref().map(|(signed, _)| signed))?),
        None => None,
    };
    // Every check passed.
    let mut lines = Vec::new();
    match (kpc, seal) {
        (Some((_, report)), Some(seal)) => {
            lines.extend(report);
            lines.extend(seal.into_iter().skip(1));
        }
        (Some((_, report)), None) => lines.extend(report),
        (None, Some(seal)) => lines.extend(seal),
        (None, None) => {}
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// Checks a QR seal image; returns what to print if everything holds (the verdict first).
fn verify_qr(
    image: &std::path::Path,
    bundle: &VerifiedBundle,
    kpc: Option<&(kp_protocol::SignedDocument, kp_protocol::Certificate)>,
) -> Result<Vec<String>, Failure> {
    let fail = |msg: String| Failure::input(format!("{}: {msg}", image.display()));
    let bytes = std::fs::read(image).map_err(|e| fail(format!("cannot read: {e}")))?;
    let text = crate::seal::read_image(&bytes).map_err(fail)?;
    let v = crate::seal::verify(&text, bundle, kpc).map_err(fail)?;
    let s = &v.seal;
    let mut lines = vec![
        format!(
            "Authentic QR seal: certificate {} issued by {} ({}) to {}",
            s.number, v.document.signer, bundle.bundle.authority, s.importing_participant
        ),
        format!(
            "  sealed     {} with key {} (fingerprint {})",
            v.document.signed_at, v.document.key_id, bundle.fingerprint
        ),
        format!(
            "  sealed for {} parcel(s), {} carats, US$ {}; valid {} to {}",
            s.parcels,
            kp_protocol::amount::format_hundredths(s.carats),
            kp_protocol::amount::format_hundredths(s.value_usd),
            s.issued_on,
            s.expires_on
        ),
    ];
    lines.push(match kpc {
        Some(_) => format!(
            "  matches    the QR seal names exactly this signed certificate (message {})",
            s.certificate_id
        ),
        None => {
            format!("  names      signed certificate {} (give the .kpc to check it too)", s.certificate_id)
        }
    });
    Ok(lines)
}

/// A `.kpc` that passed every check, and what to print about it (the verdict first).
type CheckedKpc = ((kp_protocol::SignedDocument, kp_protocol::Certificate), Vec<String>);

/// Checks a `.kpc`; returns it, for the QR check, with what to print if everything holds.
fn verify_kpc(file: &std::path::Path, bundle: &VerifiedBundle) -> Result<CheckedKpc, Failure> {
    let text = read_input(file)?;
    let fail = |msg: String| Failure::input(format!("{}: {msg}", file.display()));
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
        Failure::inputs(p.0.iter().map(|p| format!("{}: signed, but invalid: {p}", file.display())).collect())
    })?;

    let c = &cert.content;
    let mut lines = vec![
        format!(
            "Authentic: certificate {} issued by {issuer} ({}) to {}",
            cert.number, bundle.bundle.authority, c.importing_participant
        ),
        format!(
            "  signed     {} with key {} (fingerprint {})",
            doc.signed_at, doc.key_id, bundle.fingerprint
        ),
        format!(
            "  shipment   {} parcel(s), {} carats, US$ {}",
            cert.parcel_count(),
            kp_protocol::amount::format_hundredths(cert.total_carats()),
            kp_protocol::amount::format_hundredths(cert.total_value_usd())
        ),
        format!("  valid      {} to {}", c.issued_on, c.expires_on),
    ];
    for d in &c.declarations {
        lines.push(format!("  declares   {}: {}", d.code.as_str(), d.text));
    }
    let today = SystemClock.now().date();
    if c.expires_on < today {
        lines.push(format!("  note       expired on {} (today is {today})", c.expires_on));
    }
    Ok(((doc, cert), lines))
}
