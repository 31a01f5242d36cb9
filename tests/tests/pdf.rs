//! The printable certificate (`kpnode cert pdf`), read back with independent tools as a border
//! post would: poppler's `pdftotext` finds every element's value and the labels of both
//! languages, `pdftoppm` renders page 1 at 150 dpi, `zbarimg` decodes the QR seal from that
//! picture and `kpnode verify --qr` verifies it. A forged figure in the PDF's text changes what
//! the paper says but not what the seal verifies. A voided certificate prints marked VOID,
//! without a seal. Without poppler-utils and zbar-tools those parts are skipped visibly (and
//! fail under CI=true).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kp_tests::*;
use serde_json::{json, Value};

/// Whether `tool` runs; a visible skip (a failure in CI) if not.
fn have(tool: &str, package: &str) -> bool {
    match Command::new(tool).arg("-v").output() {
        Ok(_) => true,
        Err(e) => {
            skip_part(
                &format!("the {tool} part"),
                &format!("{tool} does not run ({e}); install Debian's {package}"),
                None,
            );
            false
        }
    }
}

/// The text of a PDF, whitespace collapsed (so a wrapped sentence reads whole).
fn pdftotext(pdf: &Path) -> String {
    let out = Command::new("pdftotext").arg(pdf).arg("-").output().expect("pdftotext runs");
    assert!(out.status.success(), "pdftotext: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 text").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Page 1 of a PDF as a 150 dpi PNG.
fn render(pdf: &Path, png_base: &Path) -> PathBuf {
    let out = Command::new("pdftoppm")
        .args(["-r", "150", "-png", "-f", "1", "-l", "1", "-singlefile"])
        .arg(pdf)
        .arg(png_base)
        .output()
        .expect("pdftoppm runs");
    assert!(out.status.success(), "pdftoppm: {}", String::from_utf8_lossy(&out.stderr));
    png_base.with_extension("png")
}

/// What zbarimg reads in an image: `Some(text)` of its one code, `None` if it finds none.
fn zbarimg(png: &Path) -> Option<String> {
    let out = Command::new("zbarimg").args(["--raw", "-q"]).arg(png).output().expect("zbarimg runs");
    match out.status.code() {
        Some(0) => Some(String::from_utf8(out.stdout).unwrap().trim_end_matches('\n').to_owned()),
        // 4: no symbol found.
        Some(4) => None,
        other => panic!("zbarimg exited {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Every label of a language, by key.
fn labels(code: &str) -> Vec<(String, String)> {
    let l = kp_node::report::pdf::labels::labels(code).unwrap().unwrap();
    match serde_json::to_value(l).unwrap() {
        Value::Object(m) => m.into_iter().map(|(k, v)| (k, v.as_str().unwrap().to_owned())).collect(),
        other => panic!("{other}"),
    }
}

/// The ToUnicode maps of the PDF's fonts (each character → its glyph code, 4 hex digits).
fn unicode_maps(pdf: &[u8]) -> Vec<std::collections::HashMap<char, String>> {
    let text = String::from_utf8_lossy(pdf);
    text.split("begincmap")
        .skip(1)
        .map(|cmap| {
            let body = cmap.split("endcmap").next().unwrap();
            body.split("beginbfchar")
                .skip(1)
                .flat_map(|block| block.split("endbfchar").next().unwrap().lines())
                .filter_map(|line| {
                    let (glyph, unicode) = line.trim().split_once("> <")?;
                    let glyph = glyph.strip_prefix('<')?.to_owned();
                    let c = char::from_u32(u32::from_str_radix(unicode.strip_suffix('>')?, 16).ok()?)?;
                    Some((c, glyph))
                })
                .collect()
        })
        .collect()
}

/// `pdf` with the figure `from` (drawn in one piece) changed in its first digit, to another
/// digit of the same font: a forger's edit of the printed figure. Returns the forged PDF and
/// the figure it now shows.
fn forge(pdf: &[u8], from: &str) -> (Vec<u8>, String) {
    for map in unicode_maps(pdf) {
        let hex = |s: &str| -> Option<String> { s.chars().map(|c| map.get(&c).cloned()).collect() };
        let first = from.chars().next().unwrap();
        let Some(digit) = ('0'..='9').find(|d| *d != first && map.contains_key(d)) else { continue };
        let to = format!("{digit}{}", &from[first.len_utf8()..]);
        let (Some(a), Some(b)) = (hex(from), hex(&to)) else { continue };
        let needle = format!("<{a}> Tj");
        let bytes = needle.as_bytes();
        if let Some(at) = pdf.windows(bytes.len()).position(|w| w == bytes) {
            let mut out = pdf.to_vec();
            out[at..at + bytes.len()].copy_from_slice(format!("<{b}> Tj").as_bytes());
            return (out, to);
        }
    }
    panic!("the text {from:?} is not drawn in one piece in the PDF");
}

#[test]
fn the_printed_certificate_carries_every_element_and_its_seal_verifies_from_a_scan() {
    let tools = have("pdftotext", "poppler-utils")
        & have("pdftoppm", "poppler-utils")
        & have("zbarimg", "zbar-tools");
    let ProcessPair { tmp, ru_dir, in_dir, mut ru, inn } = enrolled_processes();
    let (ru_s, in_s) = (ru_dir.root().to_str().unwrap(), in_dir.root().to_str().unwrap());
    let p = |name: &str| tmp.path().join(name);
    let s = |path: &Path| path.to_str().unwrap().to_owned();
    wait_linked(&ru.api(), "IN".parse().unwrap());

    let mut cert: Value = serde_json::from_str(&certificate_json("RU", "IN", None, 0)).unwrap();
    cert["exporter"] = json!({"name": "АО «Алмазы Севера»", "address": "ул. Ленина 6, Мирный", "licence": "RU-EXP-2026-0417"});
    cert["importer"] = json!({"name": "Bharat Diamond Traders Pvt", "address": "BKC, Mumbai 400051", "licence": "IEC 0305012345"});
    cert["parcels"] = json!([
        {"hs_code": "7102.31", "carats": "1520.35", "value_usd": "4231000.00", "origin": "RU", "origin_area": "Yakutia"},
        {"hs_code": "7102.21", "carats": "310.00", "value_usd": "15500.00", "origin": "MIXED"},
        {"hs_code": "7102.10", "carats": "42.07", "value_usd": "61234.56", "origin": "RU"}
    ]);
    cert["shipment"] = json!({
        "port_of_export": "Moscow Sheremetyevo",
        "customs_reference": "10005020/071226/0001234",
        "port_of_entry": "INBOM",
        "transport_mode": "air",
        "transport_document": "AWB 555-12345675",
        "container_seals": ["SEAL-0045117", "SEAL-0045118"]
    });
    cert["declarations"] = json!([{"code": "WDC-SoW", "text": "The diamonds herein invoiced have been purchased from legitimate sources not involved in funding conflict."}]);
    cert["remarks"] = "Three sealed parcels in one tamper-evident container.".into();
    std::fs::write(p("c.json"), cert.to_string()).unwrap();
    let out = kpnode_ok(&["cert", "submit", &s(&p("c.json")), "--dir", ru_s]);
    let number = out.split_whitespace().next().unwrap().to_owned();
    let shown: Value =
        serde_json::from_str(&kpnode_ok(&["cert", "show", &number, "--json", "--dir", ru_s])).unwrap();

    let out = kpnode_ok(&["cert", "pdf", &number, "--out", &s(&p("c.pdf")), "--dir", ru_s]);
    assert!(out.contains(&number) && out.contains("c.pdf"), "{out}");
    let pdf = std::fs::read(p("c.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "a PDF");
    let raw = String::from_utf8_lossy(&pdf);
    assert!(raw.contains("/FontFile2") && raw.contains("/ToUnicode"), "embedded fonts with a text layer");

    // The importer's node does not print it (only the issuer seals it); an unknown number fails.
    wait_until(Duration::from_secs(20), "IN has it", || {
        kpnode(&["cert", "show", &number, "--dir", in_s]).0 == 0
    });
    let (code, _, err) = kpnode(&["cert", "pdf", &number, "--out", &s(&p("in.pdf")), "--dir", in_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only the issuing authority's node prints it"), "{err}");
    assert!(!p("in.pdf").exists());
    let (code, _, err) = kpnode(&["cert", "pdf", "RU-2026-999999", "--out", &s(&p("x.pdf")), "--dir", ru_s]);
    assert_ne!(code, 0);
    assert!(err.contains("no certificate RU-2026-999999"), "{err}");

    kpnode_ok(&["peer", "export", "--out", &s(&p("ru.bundle")), "--dir", ru_s]);

    // The voided certificate: marked VOID, with the reason, and no seal.
    let voided = ru.api().submit(&certificate_json("RU", "IN", None, 3));
    kpnode_ok(&["cert", "void", &voided, "--reason", "shipment cancelled by the exporter", "--dir", ru_s]);
    kpnode_ok(&["cert", "pdf", &voided, "--out", &s(&p("void.pdf")), "--dir", ru_s]);

    // Stopped, the node prints from its store.
    ru.stop();
    kpnode_ok(&["cert", "pdf", &number, "--out", &s(&p("offline.pdf")), "--dir", ru_s]);
    drop(inn);

    if !tools {
        return;
    }
    let text = pdftotext(&p("c.pdf"));
    let c = &shown["certificate"];
    let mut values: Vec<String> = vec![
        number.clone(),
        "RU".into(),
        "IN".into(),
        c["issuing_authority"].as_str().unwrap().into(),
        c["issued_on"].as_str().unwrap().into(),
        c["expires_on"].as_str().unwrap().into(),
        "АО «Алмазы Севера»".into(),
        "ул. Ленина 6, Мирный".into(),
        "Bharat Diamond Traders Pvt".into(),
        "BKC, Mumbai 400051".into(),
        "Moscow Sheremetyevo".into(),
        "10005020/071226/0001234".into(),
        "RU-EXP-2026-0417".into(),
        "IEC 0305012345".into(),
        "INBOM".into(),
        "AWB 555-12345675".into(),
        "SEAL-0045117, SEAL-0045118".into(),
        "WDC-SoW".into(),
        "The diamonds herein invoiced have been purchased from legitimate sources not involved in funding conflict."
            .into(),
        "Three sealed parcels in one tamper-evident container.".into(),
        "Yakutia".into(),
        "MIXED".into(),
        // Totals and the number of parcels.
        "1872.42".into(),
        "4307734.56".into(),
        "3".into(),
        shown["message_id"].as_str().unwrap().into(),
    ];
    for p in c["parcels"].as_array().unwrap() {
        for k in ["hs_code", "carats", "value_usd", "origin"] {
            values.push(p[k].as_str().unwrap().into());
        }
    }
    for v in &values {
        assert!(text.contains(v.as_str()), "pdftotext does not find {v:?} in:\n{text}");
    }
    let only_on_void = ["void", "voided_at", "reason"];
    // Printed only on a replacement and on a certificate to a union (the other test), and the
    // names of the transport modes this one does not use.
    let not_on_this_one = [
        "replaces",
        "importing_member",
        "transport_sea",
        "transport_road",
        "transport_rail",
        "transport_post",
        "transport_hand_carried",
    ];
    for code in ["en", "ru"] {
        for (key, label) in labels(code) {
            if key == "language"
                || only_on_void.contains(&key.as_str())
                || not_on_this_one.contains(&key.as_str())
            {
                continue;
            }
            assert!(
                text.contains(&label),
                "pdftotext does not find the {code} label {key} ({label:?}) in:\n{text}"
            );
        }
    }
    assert!(
        text.contains("Kimberley Process Certificate") && text.contains("Сертификат Кимберлийского процесса")
    );

    // The seal, from a 150 dpi rendering of page 1, read by zbar and verified by kpnode.
    let page = render(&p("c.pdf"), &p("page"));
    let qr = zbarimg(&page).expect("zbarimg finds the seal on page 1");
    let (_, seal) = kp_protocol::seal::from_qr_text(&qr).unwrap();
    assert_eq!(seal.number.as_str(), number);
    assert_eq!(seal.certificate_id.to_string(), shown["message_id"].as_str().unwrap());
    let verified = kpnode_ok(&["verify", "--qr", &s(&page), "--bundle", &s(&p("ru.bundle"))]);
    assert!(verified.contains("Authentic QR seal") && verified.contains(&number), "{verified}");
    assert!(verified.contains("3 parcel(s), 1872.42 carats, US$ 4307734.56"), "{verified}");

    // A forger edits the printed total: the paper now says otherwise, the seal does not.
    let (forged, figure) = forge(&pdf, "1872.42");
    assert_eq!(forged.len(), pdf.len());
    std::fs::write(p("forged.pdf"), &forged).unwrap();
    let forged_text = pdftotext(&p("forged.pdf"));
    assert!(forged_text.contains(&figure) && !forged_text.contains("1872.42"), "{figure}: {forged_text}");
    let page = render(&p("forged.pdf"), &p("forged-page"));
    let verified = kpnode_ok(&["verify", "--qr", &s(&page), "--bundle", &s(&p("ru.bundle"))]);
    assert!(verified.contains("1872.42 carats") && !verified.contains(&figure), "{verified}");

    // The voided one.
    let text = pdftotext(&p("void.pdf"));
    for v in ["VOID", "АННУЛИРОВАН", "shipment cancelled by the exporter", voided.as_str()] {
        assert!(text.contains(v), "pdftotext does not find {v:?} in the voided certificate:\n{text}");
    }
    for (key, label) in labels("en").into_iter().chain(labels("ru")) {
        if only_on_void.contains(&key.as_str()) {
            assert!(text.contains(&label), "the voided certificate lacks {key} ({label:?}):\n{text}");
        }
    }
    let page = render(&p("void.pdf"), &p("void-page"));
    assert_eq!(zbarimg(&page), None, "a voided certificate carries no seal");
    let (code, _, err) = kpnode(&["verify", "--qr", &s(&page), "--bundle", &s(&p("ru.bundle"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no QR code found"), "{err}");

    // Printed offline: the same certificate, with a seal of its own.
    let text = pdftotext(&p("offline.pdf"));
    assert!(text.contains(&number) && text.contains("4307734.56"), "{text}");
    let page = render(&p("offline.pdf"), &p("offline-page"));
    kpnode_ok(&["verify", "--qr", &s(&page), "--bundle", &s(&p("ru.bundle"))]);
}

/// The elements of certificate format 2 that only a replacement and a shipment to a union
/// carry print too, each with its labels in both languages, as does every transport mode's
/// name; a certificate without them prints none of their labels.
#[test]
fn a_replacement_to_a_union_member_prints_what_it_replaces_and_the_member_state() {
    if !have("pdftotext", "poppler-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let print = |json: &Value, name: &str| -> String {
        let ctx = kp_protocol::ValidationContext {
            today: "2026-03-02".parse().unwrap(),
            max_validity_days: Some(60),
            participants: &kp_protocol::AnyParticipant,
            exporter: None,
            importer: None,
        };
        let cert = kp_protocol::CertificateDraft::from_json(&json.to_string(), &ctx)
            .unwrap()
            .into_certificate(|| unreachable!("the JSON has a number"));
        let sheet = kp_node::report::pdf::Sheet {
            certificate: &cert,
            message_id: kp_protocol::Digest::of(b"certificate"),
            signed_at: kp_protocol::Timestamp::from_unix_millis(1_772_443_200_000),
            key_id: "k1-0123abcd".into(),
            signer: "RU".parse().unwrap(),
            seal: None,
            void: None,
        };
        let path = tmp.path().join(name);
        std::fs::write(&path, kp_node::report::pdf::render(&sheet).unwrap()).unwrap();
        pdftotext(&path)
    };
    let mut cert = json!({
        "number": "RU-2026-000142",
        "replaces": "RU-2026-000101",
        "exporting_participant": "RU",
        "importing_participant": "EU",
        "importing_member": "BE",
        "issuing_authority": "Gokhran of Russia",
        "exporter": {"name": "ALROSA", "address": "Mirny"},
        "importer": {"name": "Antwerp Diamond Traders", "address": "Hoveniersstraat 2, Antwerpen"},
        "issued_on": "2026-03-02",
        "expires_on": "2026-04-30",
        "parcels": [{"hs_code": "7102.31", "carats": "100.35", "value_usd": "4000.00", "origin": "RU"}],
        "shipment": {"port_of_entry": "BEANR", "transport_mode": "hand-carried"}
    });
    let text = print(&cert, "replacement.pdf");
    for v in ["RU-2026-000142", "RU-2026-000101", "EU", "BE", "BEANR"] {
        assert!(text.contains(v), "pdftotext does not find {v:?} in:\n{text}");
    }
    let label = |code: &str, key: &str| -> String {
        labels(code).into_iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no label {key}")).1
    };
    for code in ["en", "ru"] {
        for key in
            ["replaces", "importing_member", "port_of_entry", "transport_mode", "transport_hand_carried"]
        {
            let l = label(code, key);
            assert!(text.contains(&l), "pdftotext does not find the {code} label {key} ({l:?}) in:\n{text}");
        }
        // Absent elements print no label.
        for key in ["licence", "transport_document", "container_seals"] {
            let l = label(code, key);
            assert!(!text.contains(&l), "the {code} label {key} ({l:?}) is printed for an absent element");
        }
    }
    // Every mode prints by its name in both languages.
    for mode in kp_protocol::TransportMode::ALL {
        cert["shipment"]["transport_mode"] = mode.as_str().into();
        let text = print(&cert, &format!("{mode}.pdf"));
        let key = format!("transport_{}", mode.as_str().replace('-', "_"));
        for code in ["en", "ru"] {
            let l = label(code, &key);
            assert!(text.contains(&l), "{mode}: pdftotext does not find the {code} name {l:?} in:\n{text}");
        }
    }
}
