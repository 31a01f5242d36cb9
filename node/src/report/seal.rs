//! Certificate seals as QR codes: made by the issuing node (`kpnode cert qr`), checked
//! offline at a border post (`kpnode verify --qr`). The seal itself is
//! [`kp_protocol::seal`]; this module signs it, draws it (SVG or PNG, with the `qrcode`
//! encoder) and reads it back from a PNG (with the `rqrr` decoder).

use ed25519_dalek::VerifyingKey;
use kp_keys::{HistoryError, VerifiedBundle};
use kp_protocol::seal::{from_qr_text, to_qr_text, CertificateSeal};
use kp_protocol::{Certificate, SignedDocument};
use qrcode::{Color, EcLevel, QrCode};

use crate::store::{CertRecord, Direction, Storage, StoreError};
use kp_exchange::engine::document_of;
use kp_exchange::signer::Signer;

/// Why no seal or `.kpc` was made: refused for the certificate's sake (not issued here,
/// voided), its signed document missing or unreadable in the store, or the store failed to
/// read it.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{0}")]
    Refused(String),
    /// The store holds the certificate's record but not a usable signed document: damage,
    /// not a refusal.
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pixels per QR module in a PNG, and the quiet zone around the code (in modules).
const PNG_SCALE: usize = 8;
const QUIET: usize = 4;
/// Largest PNG read: dimensions and the decoder's memory.
const MAX_SIDE: u32 = 8192;
const MAX_PNG_BYTES: usize = 256 << 20;

/// Signs the seal of an outbound certificate held in `store`.
pub fn make<S: Storage + ?Sized>(
    store: &S,
    rec: &CertRecord,
    signer: &Signer,
) -> Result<(SignedDocument, CertificateSeal), SealError> {
    if rec.direction != Direction::Out {
        return Err(SealError::Refused(format!(
            "certificate {} was issued by {}; only the issuing authority's node can seal it",
            rec.number, rec.peer
        )));
    }
    // A seal says "this certificate is valid" at a border post that cannot ask this node: a
    // voided certificate must never get one.
    if let Some(void) = &rec.void {
        return Err(SealError::Refused(format!(
            "certificate {} was voided at {} (reason: {}); a voided certificate gets no seal",
            rec.number, void.voided_at, void.reason
        )));
    }
    let doc = document_of(|t, k| store.get(t, k), rec)?.ok_or_else(|| {
        SealError::Damaged(format!("the signed certificate {} is missing from the store", rec.number))
    })?;
    let cert: Certificate = doc.body().map_err(|e| SealError::Damaged(e.to_string()))?;
    let seal = CertificateSeal::of(&doc, &cert);
    Ok((signer.sign(&seal).map_err(StoreError::from)?, seal))
}

/// The portable signed certificate (`.kpc`) of a certificate held in `store`, issued here or
/// received: the very document the issuer signed, checkable offline with `kpnode verify`
/// against the issuer's bundle. Refused for a voided certificate, for the reason a seal is:
/// offline, the file would vouch for a certificate that no longer stands.
pub fn portable<S: Storage + ?Sized>(store: &S, rec: &CertRecord) -> Result<String, SealError> {
    if let Some(void) = &rec.void {
        return Err(SealError::Refused(format!(
            "certificate {} was voided at {} (reason: {}); a voided certificate is not exported as a .kpc (its signed \
document stays in the log: kpnode log export)",
            rec.number, void.voided_at, void.reason
        )));
    }
    let doc = document_of(|t, k| store.get(t, k), rec)?.ok_or_else(|| {
        SealError::Damaged(format!("the signed certificate {} is missing from the store", rec.number))
    })?;
    let cert: Certificate = doc.body().map_err(|e| SealError::Damaged(e.to_string()))?;
    Ok(kp_protocol::portable::to_armored(&doc, &cert))
}

fn code(text: &str) -> Result<QrCode, String> {
    QrCode::with_error_correction_level(text, EcLevel::M)
        .map_err(|e| format!("cannot encode the QR code: {e}"))
}

/// The QR code as its width in modules (without the quiet zone) and its modules row by row,
/// `true` for dark: the same code [`png`] and [`svg`] draw, for the printed certificate to
/// draw as vector shapes.
pub fn modules(text: &str) -> Result<(usize, Vec<bool>), String> {
    let code = code(text)?;
    Ok((code.width(), code.to_colors().into_iter().map(|c| c == Color::Dark).collect()))
}

/// The QR code as SVG.
pub fn svg(text: &str) -> Result<String, String> {
    Ok(code(text)?
        .render::<qrcode::render::svg::Color<'_>>()
        .quiet_zone(true)
        .min_dimensions(256, 256)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

/// The QR code as a greyscale PNG.
pub fn png(text: &str) -> Result<Vec<u8>, String> {
    let code = code(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c != Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
        for dy in 0..PNG_SCALE {
            let row = (my * PNG_SCALE + dy) * side;
            pixels[row + mx * PNG_SCALE..row + (mx + 1) * PNG_SCALE].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut out, side as u32, side as u32);
        enc.set_color(::png::ColorType::Grayscale);
        enc.set_depth(::png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&pixels).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Reads the text of the QR code in a PNG image.
pub fn read_png(bytes: &[u8]) -> Result<String, String> {
    read_png_within(bytes, u64::from(MAX_SIDE) * u64::from(MAX_SIDE))
}

/// [`read_png`] of an image of at most `max_pixels`, judged from its header before anything
/// is decoded (the console reads photos uploaded by anyone signed in).
fn read_png_within(bytes: &[u8], max_pixels: u64) -> Result<String, String> {
    let bytes_limit = usize::try_from(max_pixels.saturating_mul(8)).unwrap_or(usize::MAX).min(MAX_PNG_BYTES);
    let limits = ::png::Limits { bytes: bytes_limit };
    let mut decoder = ::png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    decoder.set_transformations(::png::Transformations::EXPAND | ::png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| format!("not a readable PNG image: {e}"))?;
    let (w, h) = (reader.info().width, reader.info().height);
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!("the image is {w}×{h} pixels; at most {MAX_SIDE}×{MAX_SIDE} is read"));
    }
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(format!(
            "the image is {w}×{h} pixels, more than the {} megapixels read; crop it to the QR code or scan it at a lower resolution",
            max_pixels / 1_000_000
        ));
    }
    let size = reader.output_buffer_size().ok_or("the image is too large to read")?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| format!("not a readable PNG image: {e}"))?;
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let stride = info.line_size;
    let luma = |x: usize, y: usize| -> u8 {
        let p = &buf[y * stride + x * channels..];
        match channels {
            1 | 2 => p[0],
            _ => ((u16::from(p[0]) * 3 + u16::from(p[1]) * 6 + u16::from(p[2])) / 10) as u8,
        }
    };
    decode(w, h, luma)
}

/// Reads the text of the QR code in a PNG image (a photo or scan, or a file of
/// `kpnode cert qr`) or in an SVG written by `kpnode cert qr`.
pub fn read_image(bytes: &[u8]) -> Result<String, String> {
    read_image_within(bytes, u64::from(MAX_SIDE) * u64::from(MAX_SIDE))
}

/// Whether `bytes` look like an image [`read_image_within`] reads (a PNG, a JPEG, or an SVG),
/// rather than a `.kpc` or anything else.
pub fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(PNG_SIGNATURE)
        || bytes.starts_with(JPEG_SIGNATURE)
        || bytes[..bytes.len().min(1024)].windows(4).any(|w| w == b"<svg")
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
/// A JPEG's start-of-image marker and the first byte of the next marker.
const JPEG_SIGNATURE: &[u8] = b"\xff\xd8\xff";

/// Reads the text of the QR code in a JPEG photo of at most `max_pixels`, judged from its
/// header before anything is decoded.
fn read_jpeg_within(bytes: &[u8], max_pixels: u64) -> Result<String, String> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(|e| format!("not a readable JPEG image: {e}"))?;
    let info = decoder.info().ok_or("not a readable JPEG image")?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > max_pixels {
        return Err(format!(
            "the image is {w}×{h} pixels, more than the {} megapixels read; crop it to the QR code or take it at a lower resolution",
            max_pixels / 1_000_000
        ));
    }
    let channels = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => 1,
        jpeg_decoder::PixelFormat::L16 => 2,
        jpeg_decoder::PixelFormat::RGB24 => 3,
        jpeg_decoder::PixelFormat::CMYK32 => {
            return Err(
                "the JPEG is in CMYK (a print file); give a photo or scan in colour or greyscale".into()
            )
        }
    };
    let (w, h) = (w as usize, h as usize);
    decoder.set_max_decoding_buffer_size(w * h * channels);
    let pixels = decoder.decode().map_err(|e| format!("not a readable JPEG image: {e}"))?;
    if pixels.len() < w * h * channels {
        return Err("the JPEG image is shorter than its size says".into());
    }
    decode(w, h, |x, y| {
        let p = &pixels[(y * w + x) * channels..];
        match channels {
            // 16-bit samples, most significant byte first.
            1 | 2 => p[0],
            _ => ((u16::from(p[0]) * 3 + u16::from(p[1]) * 6 + u16::from(p[2])) / 10) as u8,
        }
    })
}

/// [`read_image`] of an image of at most `max_pixels`, refused from its header (a PNG, a JPEG)
/// or its declared size (an SVG) before any pixel is decoded. Also reads JPEG photos (the
/// console's Verify page takes them; `kpnode verify --qr` asks for a PNG).
pub fn read_image_within(bytes: &[u8], max_pixels: u64) -> Result<String, String> {
    if bytes.starts_with(PNG_SIGNATURE) {
        return read_png_within(bytes, max_pixels);
    }
    if bytes.starts_with(JPEG_SIGNATURE) {
        return read_jpeg_within(bytes, max_pixels);
    }
    let head = &bytes[..bytes.len().min(1024)];
    if head.windows(4).any(|w| w == b"<svg") {
        let text = std::str::from_utf8(bytes).map_err(|_| "the SVG is not UTF-8 text".to_owned())?;
        return read_svg_within(text, max_pixels);
    }
    Err("not a readable PNG image (it has no PNG signature), nor an SVG seal written by `kpnode cert qr`"
        .into())
}

/// Reads the QR code of an SVG written by `kpnode cert qr`: the `width` and `height` of its
/// `<svg>` and one path of rectangles (`M<x> <y>h<w>v<h>H<x>V<y>`, one per dark module),
/// drawn into pixels and decoded like a PNG. Other SVGs (with curves, transforms, several
/// paths) are refused rather than guessed at: for those, a PNG photo or scan is read.
pub fn read_svg(text: &str) -> Result<String, String> {
    read_svg_within(text, u64::from(MAX_SIDE) * u64::from(MAX_SIDE))
}

fn read_svg_within(text: &str, max_pixels: u64) -> Result<String, String> {
    let not_ours = |what: &str| {
        format!(
            "{what}: only SVG seals as `kpnode cert qr` writes them are read; for any other image, give a PNG photo or scan"
        )
    };
    let svg_tag = text
        .split_once("<svg")
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(tag, _)| tag)
        .ok_or_else(|| not_ours("no <svg> element"))?;
    let attr = |name: &str| -> Option<usize> {
        let (_, rest) = svg_tag.split_once(&format!(" {name}=\""))?;
        rest.split_once('"')?.0.parse().ok()
    };
    let (Some(w), Some(h)) = (attr("width"), attr("height")) else {
        return Err(not_ours("no whole-pixel width and height on the <svg> element"));
    };
    if w == 0
        || h == 0
        || w > MAX_SIDE as usize
        || h > MAX_SIDE as usize
        || (w as u64) * (h as u64) > max_pixels
    {
        return Err(format!("the image is {w}×{h} pixels; at most {MAX_SIDE}×{MAX_SIDE} is read"));
    }
    let mut paths = text.split("<path").skip(1);
    let d = paths
        .next()
        .and_then(|p| p.split_once(" d=\""))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(d, _)| d)
        .ok_or_else(|| not_ours("no <path> with the dark modules"))?;
    if paths.next().is_some() {
        return Err(not_ours("more than one <path>"));
    }
    let mut pixels = vec![255u8; w * h];
    for rect in d.split('M').filter(|r| !r.trim().is_empty()) {
        let spaced: String = rect
            .chars()
            .flat_map(|c| if c.is_ascii_alphabetic() { vec![' ', c, ' '] } else { vec![c] })
            .collect();
        let t: Vec<&str> = spaced.split_whitespace().collect();
        let n = |i: usize| t.get(i).and_then(|v| v.parse::<usize>().ok());
        let shape = t.len() == 10 && t[2] == "h" && t[4] == "v" && t[6] == "H" && t[8] == "V";
        let (Some(x), Some(y), Some(rw), Some(rh)) = (n(0), n(1), n(3), n(5)) else {
            return Err(not_ours(&format!("the path step \"M{rect}\" is not a rectangle")));
        };
        if !shape || x.saturating_add(rw) > w || y.saturating_add(rh) > h {
            return Err(not_ours(&format!("the path step \"M{rect}\" is not a rectangle inside the image")));
        }
        for row in y..y + rh {
            pixels[row * w + x..row * w + x + rw].fill(0);
        }
    }
    decode(w, h, |x, y| pixels[y * w + x])
}

/// Finds and decodes the QR code in a greyscale image.
fn decode(w: usize, h: usize, luma: impl FnMut(usize, usize) -> u8) -> Result<String, String> {
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, luma);
    let grids = img.detect_grids();
    let Some(grid) = grids.first() else {
        return Err("no QR code found in the image".into());
    };
    let (_, text) = grid.decode().map_err(|e| format!("the QR code could not be read: {e}"))?;
    Ok(text)
}

/// A signed certificate (`.kpc`) that passed every check of [`check_kpc`].
#[derive(Debug, Clone)]
pub struct CheckedKpc {
    pub document: SignedDocument,
    pub certificate: Certificate,
    /// Set when a rotation has retired the key that signed it (see [`retired_key_limit`]).
    pub retired_key_note: Option<String>,
}

/// Checks a signed certificate against its issuer's bundle: signed by the bundle's participant
/// with a key valid when it signed (a retired key only within [`retired_key_limit`]), the
/// signature, and the content as it stood when signed. Every problem, each a sentence; the
/// one check of `kpnode verify` and the console's Verify page.
pub fn check_kpc(
    document: SignedDocument,
    certificate: Certificate,
    bundle: &VerifiedBundle,
    today: kp_protocol::Date,
) -> Result<CheckedKpc, Vec<String>> {
    let issuer = bundle.bundle.participant;
    if document.signer != issuer {
        return Err(vec![format!(
            "signed by {}, but the bundle is {issuer}'s; verify it with {}'s bundle",
            document.signer, document.signer
        )]);
    }
    let key = issuer_key(bundle, &document).map_err(|e| vec![e])?;
    document.verify_signature(key).map_err(|e| vec![e.to_string()])?;
    // The content as it stood when signed.
    let registry = kp_exchange::registry::Registry::new(Default::default(), [issuer]);
    let directory = registry.on(document.signed_at.date());
    let ctx = kp_protocol::ValidationContext {
        today: document.signed_at.date(),
        max_validity_days: None,
        participants: &directory,
        exporter: Some(issuer),
        importer: None,
    };
    certificate
        .validate(&ctx)
        .map_err(|p| p.0.iter().map(|p| format!("signed, but invalid: {p}")).collect::<Vec<_>>())?;
    let c = &certificate.content;
    let retired_key_note =
        retired_key_limit(bundle, &document, c.issued_on, c.expires_on, today).map_err(|e| vec![e])?;
    Ok(CheckedKpc { document, certificate, retired_key_note })
}

/// What a checked seal says.
#[derive(Debug, Clone)]
pub struct Verified {
    pub document: SignedDocument,
    pub seal: CertificateSeal,
}

/// Checks QR text against the issuer's bundle (key history): signer, key valid when it
/// signed, signature. With a `.kpc`, also that the seal names exactly that signed
/// certificate.
pub fn verify(
    text: &str,
    bundle: &VerifiedBundle,
    kpc: Option<&(SignedDocument, Certificate)>,
) -> Result<Verified, String> {
    let (doc, seal) = from_qr_text(text).map_err(|e| e.to_string())?;
    let issuer = bundle.bundle.participant;
    if doc.signer != issuer {
        return Err(format!(
            "the seal is signed by {}, but the bundle is {issuer}'s; check it with {}'s bundle",
            doc.signer, doc.signer
        ));
    }
    let key = issuer_key(bundle, &doc)?;
    doc.verify_signature(key).map_err(|e| format!("the seal is not authentic: {e}"))?;
    let today = crate::clock::Clock::now(&crate::clock::SystemClock).date();
    retired_key_limit(bundle, &doc, seal.issued_on, seal.expires_on, today)?;
    if let Some((kdoc, kcert)) = kpc {
        if kdoc.message_id() != seal.certificate_id || kcert.number != seal.number {
            return Err(format!(
                "the seal is for certificate {} (signed document {}), not for this file's {} ({}): the file or the seal was altered",
                seal.number,
                seal.certificate_id,
                kcert.number,
                kdoc.message_id()
            ));
        }
    }
    Ok(Verified { document: doc, seal })
}

/// Offline, a signing key that a rotation has retired is trusted only for a certificate that
/// is still valid today, issued no later than the day after the signature, and valid for at
/// most `DEFAULT_MAX_VALIDITY_DAYS`: a thief of a retired key can backdate a signature into
/// the key's window, but what it forges then stops verifying at most that many days after the
/// rotation (online, the link refuses it after the grace period). Returns the line to print
/// when the key was retired, `None` when it is current.
pub fn retired_key_limit(
    bundle: &VerifiedBundle,
    doc: &SignedDocument,
    issued_on: kp_protocol::Date,
    expires_on: kp_protocol::Date,
    today: kp_protocol::Date,
) -> Result<Option<String>, String> {
    use kp_protocol::certificate::{DEFAULT_MAX_VALIDITY_DAYS as MAX, ISSUE_DATE_TOLERANCE_DAYS};
    let retired =
        bundle.history.signing_keys().iter().find(|e| e.key_id == doc.key_id).and_then(|e| e.valid_until);
    let Some(at) = retired else { return Ok(None) };
    let rule = format!(
        "key {} was retired at {at}; a retired key is trusted offline only for a certificate issued by the day \
         after its signature, valid at most {MAX} days, and not yet expired",
        doc.key_id
    );
    if issued_on.days_after(doc.signed_at.date()) > ISSUE_DATE_TOLERANCE_DAYS {
        return Err(format!("{rule}: issued on {issued_on}, signed {}", doc.signed_at));
    }
    if expires_on.days_after(issued_on) > MAX as i32 {
        return Err(format!("{rule}: valid from {issued_on} to {expires_on}"));
    }
    if expires_on < today {
        return Err(format!("{rule}: it expired on {expires_on} (today is {today})"));
    }
    Ok(Some(format!(
        "  note       signed with key {} retired at {at}: trusted only until the certificate expires on {expires_on}",
        doc.key_id
    )))
}

/// The key that signed `doc`, judged offline by one bundle alone: a key of the bundle's
/// history, valid when the document was signed.
///
/// A bundle vouches for the keys of its own identity only. A document signed under an
/// identity its issuer has since replaced (a fresh `kpnode init`, enrolled by partners with
/// `peer add --replace-identity`) is **not** authentic by the current bundle: the new identity
/// never signed for the old keys, and an identity is replaced after a compromise, when the old
/// keys may be in other hands. Partners' nodes keep verifying such entries in their own logs
/// (they recorded them while the old identity was trusted); offline, the document is checked
/// with the bundle of the identity that signed it, whose fingerprint its issuer confirms. The
/// refusal says which case the bundle's own dates point to, so nobody is sent chasing a
/// "latest bundle" that cannot help.
pub fn issuer_key<'a>(bundle: &'a VerifiedBundle, doc: &SignedDocument) -> Result<&'a VerifyingKey, String> {
    let issuer = bundle.bundle.participant;
    let (fp, key_id, signed_at) = (&bundle.fingerprint, doc.key_id, doc.signed_at);
    match bundle.history.signing_key_at(key_id, signed_at) {
        Ok(key) => Ok(key),
        Err(HistoryError::UnknownKey { .. }) if signed_at < bundle.bundle.root_created_at => Err(format!(
            "{issuer}'s key {key_id} is not in this bundle: its identity (fingerprint {fp}) was created at {}, after \
the document was signed ({signed_at}), so it was signed under an earlier identity of {issuer}. A bundle does not vouch \
for an earlier identity: check it with the bundle of the identity that signed it, after confirming that bundle's \
fingerprint with {issuer}'s authority",
            bundle.bundle.root_created_at
        )),
        Err(HistoryError::UnknownKey { .. }) if signed_at > bundle.bundle.created_at => Err(format!(
            "{issuer}'s key {key_id} is not in this bundle (fingerprint {fp}), which was made at {}, before the \
document was signed ({signed_at}): if {issuer} rotated its keys since, ask for its latest bundle",
            bundle.bundle.created_at
        )),
        Err(HistoryError::UnknownKey { .. }) => Err(format!(
            "{issuer}'s key {key_id} was not a key of this bundle's identity (fingerprint {fp}) when the document \
was signed ({signed_at}): the document is not authentic by this bundle (it was forged, or signed under another identity \
of {issuer}, which only that identity's bundle can show)"
        )),
        // A later bundle cannot help: it never moves the start of a key's validity, and only
        // ever ends it earlier.
        Err(e) => Err(format!("{e}: the document is not authentic by this bundle")),
    }
}

/// The QR text of a signed seal.
pub fn text(doc: &SignedDocument) -> String {
    to_qr_text(doc)
}
