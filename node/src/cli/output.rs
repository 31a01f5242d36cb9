//! Tables for people.

/// Prints rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The KPCS Annex I title and statement, printed with every certificate shown.
pub const TITLE: &str = "Kimberley Process Certificate";
pub const STATEMENT: &str = "The rough diamonds in this shipment have been handled in accordance with the \
provisions of the Kimberley Process Certification Scheme for rough diamonds.";

/// The lines naming the certificate's participants and parties (of the certificate JSON `c`):
/// the certificate it replaces, the importing member state and the licences when given.
fn parties(c: &serde_json::Value) -> Vec<String> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let mut out = Vec::new();
    if let Some(old) = c["replaces"].as_str() {
        out.push(format!("  replaces      {old}"));
    }
    out.push(format!("  exporting     {} — {}", s(&c["exporting_participant"]), s(&c["issuing_authority"])));
    let member = c["importing_member"].as_str().map(|m| format!(" (member state {m})")).unwrap_or_default();
    out.push(format!("  importing     {}{member}", s(&c["importing_participant"])));
    for who in ["exporter", "importer"] {
        let p = &c[who];
        let licence = p["licence"].as_str().map(|l| format!(" (licence {l})")).unwrap_or_default();
        out.push(format!("  {who:<13} {}, {}{licence}", s(&p["name"]), s(&p["address"])));
    }
    out
}

/// One line per element of the certificate's shipment (of the certificate JSON `c`), the
/// container seals on one line.
fn shipment(c: &serde_json::Value) -> Vec<String> {
    let Some(sh) = c["shipment"].as_object() else { return Vec::new() };
    sh.iter()
        .map(|(k, val)| {
            // The seals are a list; every other shipment element is one text.
            let text = match val.as_array() {
                Some(items) => items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(", "),
                None => val.as_str().unwrap_or("").to_owned(),
            };
            format!("  {:<13} {text}", k.replace('_', " "))
        })
        .collect()
}

/// Prints a certificate view (the API's JSON) for people.
pub fn certificate(v: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let c = &v["certificate"];
    println!("{TITLE} {}", s(&v["number"]));
    println!("{STATEMENT}");
    println!();
    let direction = if s(&v["direction"]) == "out" { "issued here, to" } else { "received from" };
    println!("  status        {} ({direction} {})", s(&v["status"]), s(&v["peer"]));
    if let Some(why) = v["enhanced_vigilance"].as_str() {
        println!("  VIGILANCE     {why}");
    }
    let replaced = &v["replaced_by"];
    if !replaced.is_null() {
        println!("  REPLACED BY   {} (signed {})", s(&replaced["by"]), s(&replaced["at"]));
    }
    let late = &v["late_arrival"];
    if !late.is_null() {
        println!(
            "  LATE ARRIVAL  received on {}, {} day(s) after it expired on {}; confirmed all the same",
            s(&late["received_on"]),
            late["days_late"],
            s(&v["expires_on"])
        );
    }
    if !c.is_null() {
        for line in parties(c) {
            println!("{line}");
        }
    }
    println!("  valid         {} to {}", s(&v["issued_on"]), s(&v["expires_on"]));
    println!(
        "  shipment      {} parcel(s), {} carats, US$ {}",
        v["parcels"],
        s(&v["carats"]),
        s(&v["value_usd"])
    );
    if let Some(parcels) = c["parcels"].as_array() {
        for (i, p) in parcels.iter().enumerate() {
            println!(
                "    {:>3}. HS {}  {:>12} ct  US$ {:>14}  origin {}{}",
                i + 1,
                s(&p["hs_code"]),
                s(&p["carats"]),
                s(&p["value_usd"]),
                s(&p["origin"]),
                p["origin_area"].as_str().map(|a| format!(" ({a})")).unwrap_or_default()
            );
        }
    }
    for line in shipment(c) {
        println!("{line}");
    }
    if let Some(ds) = c["declarations"].as_array() {
        for d in ds {
            println!("  declaration   {}: {}", s(&d["code"]), s(&d["text"]));
        }
    }
    if let Some(r) = c["remarks"].as_str() {
        println!("  remarks       {r}");
    }
    println!("  signed        {} (message {})", s(&v["signed_at"]), s(&v["message_id"]));
    if let Some(seq) = v["log_seq"].as_u64() {
        println!("  log entry     {seq}");
    }
    let r = &v["receipt"];
    if !r.is_null() {
        println!(
            "  receipt       {} stored it at {} (its log entry {}, hash {}), signed with key {}",
            s(&r["receiver"]),
            s(&r["received_at"]),
            r["receiver_log_seq"],
            s(&r["receiver_entry_hash"]),
            s(&r["signed_with_key"])
        );
    }
    let cf = &v["confirmation"];
    if !cf.is_null() {
        println!(
            "  confirmation  received {}: {} parcel(s), {} carats{}",
            s(&cf["received_on"]),
            cf["parcels"],
            s(&cf["carats"]),
            cf["discrepancy"].as_str().map(|d| format!(" — DISCREPANCY: {d}")).unwrap_or_default()
        );
        if let Some(r) = cf["remarks"].as_str() {
            println!("                remarks: {r}");
        }
        if let Some(rj) = cf["rejection"].as_object() {
            println!(
                "                refused by the exporter: {}: {}",
                rj["code"].as_str().unwrap_or(""),
                rj["detail"].as_str().unwrap_or("")
            );
        }
    }
    let vd = &v["void"];
    if !vd.is_null() {
        println!("  voided        {} — {}", s(&vd["voided_at"]), s(&vd["reason"]));
        if let Some(rj) = vd["rejection"].as_object() {
            println!(
                "                refused by the importer: {}: {}",
                rj["code"].as_str().unwrap_or(""),
                rj["detail"].as_str().unwrap_or("")
            );
        }
    }
    // Who did it on this node (the log entries name them).
    let officers = &v["officers"];
    for (key, label) in [
        ("issued", "issued by"),
        ("confirmed", "confirmed by"),
        ("voided", "voided by"),
        ("resolved", "resolved by"),
    ] {
        if let Some(name) = officers[key].as_str() {
            println!("  {label:<13} {name} (this node's officer)");
        }
    }
    let rs = &v["resolution"];
    if !rs.is_null() {
        println!(
            "  resolved      {} by {} ({}) — {}",
            s(&rs["resolved_at"]),
            s(&rs["participant"]),
            s(&rs["resolved_by"]),
            s(&rs["note"])
        );
    }
    let rj = &v["rejection"];
    if !rj.is_null() {
        println!("  rejected      {}: {}", s(&rj["code"]), s(&rj["detail"]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_show_names_what_a_certificate_replaces_its_member_state_licences_and_transport() {
        let c = serde_json::json!({
            "replaces": "RU-2026-000101",
            "exporting_participant": "RU",
            "importing_participant": "EU",
            "importing_member": "BE",
            "issuing_authority": "Gokhran of Russia",
            "exporter": {"name": "ALROSA", "address": "Mirny", "licence": "RU-EXP-2026-0417"},
            "importer": {"name": "ADT", "address": "Antwerpen"},
            "shipment": {
                "port_of_entry": "BEANR",
                "transport_mode": "hand-carried",
                "transport_document": "AWB 555-12345675",
                "container_seals": ["SEAL-1", "SEAL-2"]
            }
        });
        let text = [parties(&c), shipment(&c)].concat().join("\n");
        for line in [
            "  replaces      RU-2026-000101",
            "  importing     EU (member state BE)",
            "  exporter      ALROSA, Mirny (licence RU-EXP-2026-0417)",
            "  importer      ADT, Antwerpen\n",
            "  port of entry BEANR",
            "  transport mode hand-carried",
            "  transport document AWB 555-12345675",
            "  container seals SEAL-1, SEAL-2",
        ] {
            assert!(text.contains(line), "{line:?} is not in:\n{text}");
        }
        // A format 1 certificate shows as before.
        let c = serde_json::json!({
            "exporting_participant": "RU", "importing_participant": "IN", "issuing_authority": "G",
            "exporter": {"name": "A", "address": "B"}, "importer": {"name": "C", "address": "D"}
        });
        let text = parties(&c).join("\n");
        assert_eq!(
            text,
            "  exporting     RU — G\n  importing     IN\n  exporter      A, B\n  importer      C, D"
        );
        assert!(shipment(&c).is_empty());
    }
}
