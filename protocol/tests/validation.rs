//! One test per validation rule of a certificate (docs/certificate-json.md): each bad certificate is refused with a
//! message naming the field, and the good one (with a mixed-origin parcel) is accepted.

use kp_protocol::{CertificateDraft, Date, ParticipantCode, Problem, Problems, ValidationContext};
use serde_json::{json, Value};

const KNOWN: &[&str] = &["RU", "IN", "AE", "BY", "KZ", "AM", "KG", "EU"];

fn known(code: ParticipantCode) -> bool {
    KNOWN.contains(&code.as_str())
}

fn ctx() -> ValidationContext<'static> {
    ValidationContext {
        today: "2026-11-28".parse::<Date>().unwrap(),
        max_validity_days: Some(60),
        participants: &known,
        exporter: Some(ParticipantCode::from_static("RU")),
        importer: None,
    }
}

fn good() -> Value {
    serde_json::from_str(include_str!("fixtures/certificate.json")).unwrap()
}

fn problems(v: &Value) -> Vec<Problem> {
    match CertificateDraft::from_json(&v.to_string(), &ctx()) {
        Ok(_) => Vec::new(),
        Err(Problems(p)) => p,
    }
}

/// Asserts that `v` is refused, with a problem at `field` whose message contains `words`.
fn refused(v: Value, field: &str, words: &str) {
    let p = problems(&v);
    assert!(
        p.iter().any(|p| p.field == field && p.message.contains(words)),
        "expected a problem at {field} containing {words:?}, got {p:#?}"
    );
}

fn with(path: &[&str], value: Value) -> Value {
    let mut v = good();
    let mut cur = &mut v;
    for (i, key) in path.iter().enumerate() {
        let last = i == path.len() - 1;
        cur = if let Ok(idx) = key.parse::<usize>() {
            &mut cur[idx]
        } else if last {
            cur.as_object_mut().unwrap().insert(key.to_string(), value.clone());
            return v;
        } else {
            &mut cur[*key]
        };
    }
    *cur = value;
    v
}

fn without(key: &str) -> Value {
    let mut v = good();
    v.as_object_mut().unwrap().remove(key);
    v
}

#[test]
fn accepts_a_good_certificate_with_a_mixed_origin_parcel() {
    let draft = CertificateDraft::from_json(&good().to_string(), &ctx()).unwrap();
    let c = draft.into_certificate(|| unreachable!());
    assert_eq!(c.number.as_str(), "RU-2026-000123");
    assert_eq!(c.total_carats(), 183_035);
    assert_eq!(c.total_value_usd(), 424_650_000);
    assert_eq!(c.parcel_count(), 2);
    assert_eq!(c.content.parcels[1].origin.to_string(), "MIXED");
}

#[test]
fn number_is_optional_on_submit() {
    let draft = CertificateDraft::from_json(&without("number").to_string(), &ctx()).unwrap();
    assert!(draft.number.is_none());
}

#[test]
fn number_must_start_with_the_exporting_code() {
    refused(with(&["number"], json!("IN-2026-1")), "number", "must start with");
}

#[test]
fn number_has_3_to_32_characters_of_the_alphabet() {
    refused(with(&["number"], json!("RU")), "number", "at least 3");
    refused(with(&["number"], json!(format!("RU-{}", "1".repeat(31)))), "number", "at most 32");
    refused(with(&["number"], json!("RU-2026/../1")), "number", "A-Z");
    refused(with(&["number"], json!("ru-2026-1")), "number", "A-Z");
}

#[test]
fn exporting_and_importing_participants_differ() {
    refused(with(&["importing_participant"], json!("RU")), "importing_participant", "must differ");
}

#[test]
fn participants_must_be_known() {
    refused(with(&["importing_participant"], json!("ZZ")), "importing_participant", "Section III(c)");
    refused(with(&["parcels", "0", "origin"], json!("ZZ")), "parcels[0].origin", "not a Kimberley");
}

#[test]
fn exporting_participant_is_the_issuing_node() {
    let v = with(&["exporting_participant"], json!("BY"));
    let v = with_value(v, &["number"], json!("BY-2026-1"));
    refused(v, "exporting_participant", "can only be issued in the name of RU");
}

fn with_value(mut v: Value, path: &[&str], value: Value) -> Value {
    v[path[0]] = value;
    v
}

#[test]
fn participant_codes_are_two_capitals() {
    refused(with(&["importing_participant"], json!("India")), "importing_participant", "two-letter");
}

#[test]
fn at_least_one_parcel() {
    refused(with(&["parcels"], json!([])), "parcels", "at least one parcel");
}

#[test]
fn at_most_1000_parcels() {
    let parcel = good()["parcels"][0].clone();
    refused(with(&["parcels"], json!(vec![parcel; 1001])), "parcels", "at most 1000");
}

#[test]
fn hs_code_must_be_a_rough_diamond_code() {
    refused(with(&["parcels", "0", "hs_code"], json!("7103.10")), "parcels[0].hs_code", "7102.10");
}

#[test]
fn synthetic_diamonds_are_outside_the_scheme() {
    refused(
        with(&["parcels", "1", "hs_code"], json!("7104.21")),
        "parcels[1].hs_code",
        "synthetic diamonds are outside the Kimberley Process",
    );
}

#[test]
fn carats_must_be_positive() {
    refused(with(&["parcels", "0", "carats"], json!("0.00")), "parcels[0].carats", "greater than zero");
    refused(with(&["parcels", "0", "carats"], json!("-5")), "parcels[0].carats", "decimal number");
}

#[test]
fn value_must_be_positive() {
    refused(with(&["parcels", "1", "value_usd"], json!("0")), "parcels[1].value_usd", "greater than zero");
}

#[test]
fn amounts_have_at_most_two_decimals() {
    refused(with(&["parcels", "0", "carats"], json!("1.005")), "parcels[0].carats", "two decimals");
    refused(with(&["parcels", "0", "value_usd"], json!("10.999")), "parcels[0].value_usd", "two decimals");
}

#[test]
fn amounts_are_strings_not_floats() {
    refused(with(&["parcels", "0", "carats"], json!(1520.35)), "parcels[0].carats", "floating point");
}

#[test]
fn origin_is_a_code_or_mixed() {
    refused(with(&["parcels", "0", "origin"], json!("Mixed")), "parcels[0].origin", "MIXED");
}

#[test]
fn issued_on_is_not_in_the_future() {
    refused(with(&["issued_on"], json!("2026-12-01")), "issued_on", "in the future");
    // One day of clock tolerance.
    assert!(problems(&with_value(
        with(&["issued_on"], json!("2026-11-29")),
        &["expires_on"],
        json!("2027-01-20")
    ))
    .is_empty());
}

#[test]
fn expires_after_issue() {
    refused(with(&["expires_on"], json!("2026-11-28")), "expires_on", "must be after issued_on");
}

#[test]
fn validity_is_at_most_max_validity_days() {
    refused(with(&["expires_on"], json!("2027-01-28")), "expires_on", "at most 60 days");
}

#[test]
fn not_already_expired() {
    let v = with(&["issued_on"], json!("2026-10-01"));
    let v = with_value(v, &["expires_on"], json!("2026-11-27"));
    refused(v, "expires_on", "already passed");
}

#[test]
fn names_addresses_and_authority_are_bounded_text() {
    refused(with(&["exporter", "name"], json!("")), "exporter.name", "must not be empty");
    refused(with(&["importer", "address"], json!("x".repeat(257))), "importer.address", "at most 256");
    refused(with(&["issuing_authority"], json!("Gokhran\u{0007}")), "issuing_authority", "control character");
    refused(with(&["exporter", "name"], json!("ALROSA\nPJSC")), "exporter.name", "control character");
}

#[test]
fn dates_are_real_calendar_dates() {
    refused(with(&["issued_on"], json!("2026-02-30")), "issued_on", "calendar");
    refused(with(&["issued_on"], json!("28.11.2026")), "issued_on", "YYYY-MM-DD");
}

#[test]
fn unknown_fields_are_errors() {
    refused(with(&["colour"], json!("D")), "colour", "unknown field");
    refused(with(&["parcels", "0", "weight"], json!("1")), "parcels[0].weight", "unknown field");
}

#[test]
fn required_fields_and_types() {
    refused(without("exporter"), "exporter", "is required");
    refused(with(&["parcels"], json!({})), "parcels", "must be an array");
    refused(with(&["exporter"], json!("ALROSA")), "exporter", "must be an object");
}

#[test]
fn duplicate_keys_and_broken_json_are_refused() {
    let text = good().to_string().replacen('{', r#"{"remarks":"a","remarks":"b","#, 1);
    let p = CertificateDraft::from_json(&text, &ctx()).unwrap_err();
    assert!(p.0[0].message.contains("duplicate key"), "{p}");
    let p = CertificateDraft::from_json("{\"number\": ", &ctx()).unwrap_err();
    assert!(p.0[0].message.contains("not valid JSON"), "{p}");
    let p = CertificateDraft::from_json_bytes(b"\xff\xfe", &ctx()).unwrap_err();
    assert!(p.0[0].message.contains("UTF-8"), "{p}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut v = good();
    v["importing_participant"] = json!("RU");
    v["parcels"][0]["hs_code"] = json!("7104.10");
    v["parcels"][1]["carats"] = json!("1.234");
    v["exporter"]["name"] = json!("");
    v["expires_on"] = json!("2030-01-01");
    v["extra"] = json!(1);
    let fields: Vec<String> = problems(&v).into_iter().map(|p| p.field).collect();
    for f in [
        "importing_participant",
        "parcels[0].hs_code",
        "parcels[1].carats",
        "exporter.name",
        "expires_on",
        "extra",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
}

/// The EU as a union participant with member states BE and DE (which are not participants).
struct WithUnion;

impl kp_protocol::ParticipantDirectory for WithUnion {
    fn is_participant(&self, code: ParticipantCode) -> bool {
        known(code)
    }
    fn union_of(&self, member: ParticipantCode) -> Option<ParticipantCode> {
        ["BE", "DE"].contains(&member.as_str()).then(|| ParticipantCode::from_static("EU"))
    }
    fn is_union(&self, code: ParticipantCode) -> bool {
        code.as_str() == "EU"
    }
}

fn union_problems(issuer: &str, exporting: &str, importing: &str, number: &str) -> Vec<Problem> {
    let mut v = good();
    v["exporting_participant"] = json!(exporting);
    v["importing_participant"] = json!(importing);
    v["number"] = json!(number);
    v["parcels"][0]["origin"] = json!("BE");
    let ctx =
        ValidationContext { participants: &WithUnion, exporter: Some(issuer.parse().unwrap()), ..ctx() };
    match CertificateDraft::from_json(&v.to_string(), &ctx) {
        Ok(_) => Vec::new(),
        Err(Problems(p)) => p,
    }
}

fn has(p: &[Problem], field: &str, words: &str) -> bool {
    p.iter().any(|p| p.field == field && p.message.contains(words))
}

#[test]
fn a_member_state_issues_in_its_unions_name() {
    assert_eq!(union_problems("BE", "EU", "RU", "EU-BE-2026-000001"), Vec::new());
    // A member may not take another member's numbers, nor numbers outside any member's range.
    for number in ["EU-DE-2026-000001", "EU-2026-000001", "EU-BEX-1"] {
        let p = union_problems("BE", "EU", "RU", number);
        assert!(has(&p, "number", "not in BE's range") && has(&p, "number", "EU-BE-"), "{number}: {p:#?}");
    }
    // Not a member: may not use the union's name.
    let p = union_problems("RU", "EU", "IN", "EU-RU-1");
    assert!(has(&p, "exporting_participant", "in the name of RU"), "{p:#?}");
    // The member's own code is not a participant: the message says what to write.
    let p = union_problems("BE", "BE", "RU", "BE-2026-1");
    assert!(has(&p, "exporting_participant", "member state of EU"), "{p:#?}");
    assert!(has(&p, "exporting_participant", r#"exporting_participant "EU""#), "{p:#?}");
}

/// The union's own node issues in its own name, but not from a member state's range: a
/// number `EU-DE-…` is DE's node's alone, whoever else signs it.
#[test]
fn the_unions_own_node_cannot_take_a_members_numbers() {
    for number in ["EU-2026-000001", "EU-X1-2026-1", "EU-DE", "EU-RU-2026-1"] {
        assert_eq!(union_problems("EU", "EU", "RU", number), Vec::new(), "{number}");
    }
    for (number, member) in [("EU-DE-2026-000001", "DE"), ("EU-BE-1", "BE")] {
        let p = union_problems("EU", "EU", "RU", number);
        assert!(has(&p, "number", &format!("{number} is in {member}'s range")), "{number}: {p:#?}");
        assert!(has(&p, "number", "EU-<year>-<sequence>"), "{number}: {p:#?}");
    }
    // The member itself still issues from its range.
    assert_eq!(union_problems("DE", "EU", "RU", "EU-DE-2026-000001"), Vec::new());
}

#[test]
fn trade_inside_a_union_needs_no_certificate() {
    for importing in ["DE", "EU", "BE"] {
        let p = union_problems("BE", "EU", importing, "EU-BE-2026-000002");
        assert!(
            has(&p, "importing_participant", "within EU") || has(&p, "importing_participant", "must differ"),
            "{importing}: {p:#?}"
        );
    }
    let p = union_problems("BE", "EU", "DE", "EU-BE-2026-000002");
    assert!(has(&p, "importing_participant", "BE and DE are both within EU"), "{p:#?}");
}

#[test]
fn an_import_into_a_union_names_the_union() {
    let mut v = good();
    v["importing_participant"] = json!("DE");
    let ctx = ValidationContext { participants: &WithUnion, ..ctx() };
    let Err(Problems(p)) = CertificateDraft::from_json(&v.to_string(), &ctx) else { panic!("accepted") };
    assert!(has(&p, "importing_participant", "name EU as the importing participant"), "{p:#?}");
}

#[test]
fn an_origin_area_is_checked_text() {
    refused(with(&["parcels", "0", "origin_area"], json!("Zone\u{7}")), "parcels[0].origin_area", "");
    refused(with(&["parcels", "0", "origin_area"], json!(7)), "parcels[0].origin_area", "string");
    assert!(problems(&with(&["parcels", "1", "origin_area"], json!("Nola"))).is_empty());
}

#[test]
fn annex_i_optional_elements_are_typed_and_checked_when_present() {
    let mut v = good();
    v["exporter"]["licence"] = json!("RU-EXP-0042");
    v["importer"]["licence"] = json!("IN-IMP-7");
    v["shipment"]["port_of_entry"] = json!("INBOM");
    v["shipment"]["transport_mode"] = json!("air");
    v["shipment"]["transport_document"] = json!("AWB 555-12345675");
    v["shipment"]["container_seals"] = json!(["0045117", "0045118"]);
    assert_eq!(problems(&v), Vec::new());
    let draft = CertificateDraft::from_json(&v.to_string(), &ctx()).unwrap();
    let s = draft.content.shipment.as_ref().unwrap();
    assert_eq!(s.port_of_entry.unwrap().as_str(), "INBOM");
    assert_eq!(s.container_seals.len(), 2);
    assert_eq!(draft.content.exporter.licence.as_ref().unwrap().as_str(), "RU-EXP-0042");
    // The JSON written back carries them where they were given.
    let out = serde_json::to_value(&draft).unwrap();
    assert_eq!(out["importer"]["licence"], "IN-IMP-7");
    assert_eq!(out["shipment"]["transport_mode"], "air");

    refused(with(&["shipment", "port_of_entry"], json!("Mumbai")), "shipment.port_of_entry", "UN/LOCODE");
    refused(with(&["shipment", "port_of_entry"], json!("inbom")), "shipment.port_of_entry", "UN/LOCODE");
    refused(
        with(&["shipment", "transport_mode"], json!("ship")),
        "shipment.transport_mode",
        "one of air, sea",
    );
    refused(with(&["shipment", "container_seals"], json!("0045117")), "shipment.container_seals", "array");
    refused(
        with(&["shipment", "container_seals"], json!(["ok", ""])),
        "shipment.container_seals[1]",
        "empty",
    );
    let seals: Vec<String> = (0..17).map(|i| format!("S{i}")).collect();
    refused(with(&["shipment", "container_seals"], json!(seals)), "shipment.container_seals", "at most 16");
    refused(with(&["exporter", "licence"], json!("")), "exporter.licence", "empty");
    refused(with(&["shipment", "wagon"], json!("7")), "shipment.wagon", "unknown field");
    refused(with(&["replaces"], json!("RU-2026-000123")), "replaces", "cannot replace itself");
    refused(with(&["replaces"], json!("ru-1")), "replaces", "capital letters");
}

#[test]
fn importing_member_names_a_member_state_of_the_importing_union() {
    let check = |importing: &str, member: &str| {
        let mut v = good();
        v["importing_participant"] = json!(importing);
        v["importing_member"] = json!(member);
        let ctx = ValidationContext { participants: &WithUnion, ..ctx() };
        match CertificateDraft::from_json(&v.to_string(), &ctx) {
            Ok(_) => Vec::new(),
            Err(Problems(p)) => p,
        }
    };
    assert_eq!(check("EU", "BE"), Vec::new());
    assert!(has(&check("EU", "FR"), "importing_member", "FR is not a member state of EU"));
    assert!(has(&check("IN", "BE"), "importing_member", "IN is not a union"));
}
