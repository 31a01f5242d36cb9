//! `kpnode verify`: offline verification of a signed certificate, or of its QR seal.

use std::path::PathBuf;

use kp_keys::VerifiedBundle;
use kp_protocol::portable;

use super::{read_input, CliResult, Failure};
use crate::clock::{Clock, SystemClock};

/// The long help of the command (clap takes a subcommand's from its variant, see `cli::Command`).
pub(crate) const LONG_ABOUT: &str = "Check a signed certificate (.kpc) offline against the issuing \
participant's enrolment bundle: the bundle's self-signature and key history, that the \
certificate was signed by that participant with a key valid at the time of signing, the \
signature, and the certificate's content. Works without a node directory.\n\n\
With --qr, check the QR seal in an image the same way: a PNG (a photo or scan of the paperwork, \
or the file `kpnode cert qr` wrote) or an SVG as `kpnode cert qr` writes it (other SVGs are not \
read; give a PNG of them): signed by \
the bundle's participant with a key valid when it signed; given the .kpc too, also that the seal \
names exactly that signed certificate.\n\n\
A key that a later rotation has retired is trusted only for a certificate (and seal) still \
valid today, valid at most 60 days and issued by the day after its signature: what a thief of \
a retired key could backdate stops verifying 60 days after the rotation.\n\n\
Every check runs before anything is printed: one verdict, after all of them. Exit status 0 if \
the certificate (and the seal) are authentic, 2 if anything does not hold (with the reason, and \
no \"Authentic\" line).\n\n\
A bundle vouches for its own identity's keys only. A document signed before the participant \
replaced its identity (a fresh `kpnode init`) is not authentic by the new bundle: check it with \
the bundle of the identity that signed it, after confirming that bundle's fingerprint with the \
participant's authority.";

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The signed certificate (.kpc); optional with --qr.
    #[arg(required_unless_present = "qr")]
    file: Option<PathBuf>,
    /// The issuing participant's enrolment bundle: the latest one, after key rotations; for a
    /// document signed before the participant replaced its identity, that identity's bundle.
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
    let text = crate::report::seal::read_image(&bytes).map_err(fail)?;
    let v = crate::report::seal::verify(&text, bundle, kpc).map_err(fail)?;
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

    let today = SystemClock.now().date();
    let checked = crate::report::seal::check_kpc(doc, cert, bundle, today).map_err(|problems| {
        Failure::inputs(problems.into_iter().map(|p| format!("{}: {p}", file.display())).collect())
    })?;
    let (doc, cert) = (checked.document, checked.certificate);
    let issuer = bundle.bundle.participant;
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
    lines.extend(checked.retired_key_note);
    if c.expires_on < today {
        lines.push(format!("  note       expired on {} (today is {today})", c.expires_on));
    }
    Ok(((doc, cert), lines))
}

#[cfg(test)]
mod tests {
    use kp_keys::{Bundle, SigningKeyPair, VerifiedBundle};
    use kp_protocol::{
        seal::CertificateSeal, Certificate, CertificateDraft, Date, ParticipantCode, SignedDocument,
        Timestamp, ValidationContext,
    };

    use super::verify_kpc;
    use crate::clock::{Clock, SystemClock};
    use kp_exchange::registry::Registry;

    const RU: ParticipantCode = ParticipantCode::from_static("RU");
    const DAY: i64 = 86_400_000;

    /// RU's keys: `old`, retired by a rotation `retired_days_ago`, and its bundle after it.
    fn rotated(retired_days_ago: i64) -> (SigningKeyPair, VerifiedBundle, Timestamp) {
        let now = SystemClock.now();
        let old = SigningKeyPair::generate();
        let new = SigningKeyPair::generate();
        let tls = kp_keys::TlsKeyPair::generate();
        let at = Timestamp::from_unix_millis(now.unix_millis() - retired_days_ago * DAY);
        let body =
            kp_protocol::KeyRotation::new_with_signing_key(RU, 1, old.key_id(), new.signing_key(), None, at);
        let rotation = SignedDocument::sign(&body, RU, old.signing_key(), at);
        let bundle = Bundle {
            format: kp_keys::bundle::BUNDLE_FORMAT,
            participant: RU,
            authority: "Authority".parse().unwrap(),
            endpoints: vec!["127.0.0.1:9".into()],
            root_key: old.verifying_key().to_bytes(),
            root_created_at: Timestamp::from_unix_millis(now.unix_millis() - 400 * DAY),
            root_tls_certificate: kp_keys::tlscert::self_signed(&tls, RU).unwrap(),
            rotations: vec![rotation],
            created_at: now,
        }
        .sign(&new)
        .unwrap();
        (old, bundle, at)
    }

    /// A certificate issued on `issued_on`, valid until `expires_on`.
    fn certificate(issued_on: Date, expires_on: Date) -> Certificate {
        let text = include_str!("../../../protocol/tests/fixtures/certificate.json")
            .replace("RU-2026-", &format!("RU-{}-", &issued_on.to_string()[..4]))
            .replace("2026-11-28", &issued_on.to_string())
            .replace("2027-01-27", &expires_on.to_string());
        let registry = Registry::default();
        let ctx = ValidationContext {
            today: issued_on,
            max_validity_days: None,
            participants: &registry.on(issued_on),
            exporter: Some(RU),
            importer: None,
        };
        CertificateDraft::from_json(&text, &ctx).unwrap().into_certificate(|| unreachable!())
    }

    /// Writes the `.kpc` and checks it, and its seal, offline.
    fn check(
        dir: &std::path::Path,
        key: &SigningKeyPair,
        bundle: &VerifiedBundle,
        signed_at: Timestamp,
        cert: Certificate,
    ) -> (Result<Vec<String>, String>, Result<(), String>) {
        let doc = SignedDocument::sign(&cert, RU, key.signing_key(), signed_at);
        let file = dir.join("c.kpc");
        std::fs::write(&file, kp_protocol::portable::to_armored(&doc, &cert)).unwrap();
        let kpc = verify_kpc(&file, bundle).map(|(_, lines)| lines).map_err(|f| format!("{f:?}"));
        let seal = SignedDocument::sign(&CertificateSeal::of(&doc, &cert), RU, key.signing_key(), signed_at);
        let seal = crate::report::seal::verify(&crate::report::seal::text(&seal), bundle, None).map(|_| ());
        (kpc, seal)
    }

    /// A thief of RU's retired key signs a certificate today, dated back into the key's window
    /// and valid until 2099: offline verification must refuse it (as the link does after the
    /// grace period), for the .kpc and for its QR seal alike.
    #[test]
    fn a_stolen_retired_key_cannot_forge_a_certificate_that_verifies_offline() {
        let dir = tempfile::tempdir().unwrap();
        let (old, bundle, retired_at) = rotated(100);
        let signed_at = Timestamp::from_unix_millis(retired_at.unix_millis() - 1);
        let forged = certificate(signed_at.date(), Date::from_ymd(2099, 1, 1).unwrap());
        let (kpc, seal) = check(dir.path(), &old, &bundle, signed_at, forged);
        let kpc = kpc.expect_err("the forged .kpc was reported authentic");
        assert!(kpc.contains("was retired at") && kpc.contains("at most 60 days"), "{kpc}");
        let seal = seal.expect_err("the forged seal was reported authentic");
        assert!(seal.contains("was retired at") && seal.contains("at most 60 days"), "{seal}");

        // Within 60 days of issue, the same key still verifies what it signed, and says so.
        let today = SystemClock.now().date();
        let issued = signed_at.date();
        let (kpc, _) = check(dir.path(), &old, &bundle, signed_at, certificate(issued, today));
        assert!(kpc.is_err(), "validity over 60 days");
        let (old, bundle, retired_at) = rotated(10);
        let signed_at = Timestamp::from_unix_millis(retired_at.unix_millis() - DAY);
        let issued = signed_at.date();
        let legit = certificate(issued, issued.add_days(60).unwrap());
        let (kpc, seal) = check(dir.path(), &old, &bundle, signed_at, legit);
        let lines = kpc.unwrap();
        assert!(lines.iter().any(|l| l.contains("retired")), "{lines:?}");
        seal.unwrap();
    }
}
