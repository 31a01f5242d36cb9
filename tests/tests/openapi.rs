//! The API describes itself: `GET /v1/openapi.json` is an OpenAPI 3.1 document generated from
//! the handlers, covering every route, the certificate schema and the error shape. With
//! Python's openapi-spec-validator and schemathesis installed (`.ci/run` installs them), it
//! is validated, and schemathesis fuzzes a live node with it: no 5xx, no response outside the
//! schema. Under CI=true or KPNODE_REQUIRE_PYTHON_TOOLS=1 a missing tool fails the test rather
//! than skipping it.

use std::process::Command;

use kp_tests::*;

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn require(tool: &str) -> bool {
    if python_has(tool) {
        return true;
    }
    // A failure in CI or with KPNODE_REQUIRE_PYTHON_TOOLS set; a visible skip elsewhere.
    skip_part(
        &format!("the {tool} part"),
        &format!("python module {tool} is missing (pip install {tool})"),
        Some("KPNODE_REQUIRE_PYTHON_TOOLS"),
    );
    false
}

#[test]
fn the_openapi_document_covers_every_route_and_a_fuzzer_finds_nothing() {
    let Pair { rt: _rt, tmp, ru, inn: _inn } = enrolled_pair(0, 0);
    // Something to list and show.
    let number = ru.api.submit(&certificate_json("RU", "IN", None, 1));

    let (s, doc) = ru.api.get("/v1/openapi.json");
    assert_eq!(s, 200, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/certificates", "post"),
        ("/v1/certificates", "get"),
        ("/v1/certificates/{number}", "get"),
        ("/v1/certificates/{number}/confirm", "post"),
        ("/v1/certificates/{number}/void", "post"),
        ("/v1/certificates/{number}/resolve", "post"),
        ("/v1/certificates/{number}/pdf", "get"),
        ("/v1/peers", "get"),
        ("/v1/peers", "post"),
        ("/v1/peers/{code}", "delete"),
        ("/v1/keys", "get"),
        ("/v1/keys/rotate", "post"),
        ("/v1/log", "get"),
        ("/v1/log/verify", "get"),
        ("/v1/status", "get"),
        ("/v1/backup/snapshot", "post"),
        ("/v1/openapi.json", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "Certificate",
        "CertificateDraft",
        "CertificateContent",
        "Parcel",
        "ErrorBody",
        "Problem",
        "CertView",
        "ResolveRequest",
        "ResolutionRecord",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // An identity change is an explicit field of enrolment, and quarantined peers are in status.
    assert_eq!(schemas["AddPeerRequest"]["properties"]["replace_identity"]["type"], "boolean", "{doc}");
    assert!(schemas["Status"]["properties"].get("quarantined").is_some(), "{doc}");
    let spec = tmp.path().join("openapi.json");
    std::fs::write(&spec, serde_json::to_string_pretty(&doc).unwrap()).unwrap();

    if require("openapi_spec_validator") {
        let out = Command::new("python3")
            .args(["-c", "import sys, json; from openapi_spec_validator import validate; from openapi_spec_validator.versions.shortcuts import get_spec_version; d = json.load(open(sys.argv[1])); validate(d); print(get_spec_version(d))"])
            .arg(&spec)
            .output()
            .unwrap();
        assert!(out.status.success(), "not valid OpenAPI: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("3.1"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    if require("schemathesis") {
        let base = ru.api.base.clone();
        let out = Command::new("schemathesis")
            .args(["run", spec.to_str().unwrap(), "--url", &base])
            .args(["--header", &format!("Authorization: Bearer {}", ru.api.token)])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
            .args(["--max-examples", "60", "--seed", "1", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            // Its example cache goes in the working directory: a temporary one, not the repo.
            .current_dir(spec.parent().unwrap())
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "schemathesis found problems:\n{text}");
    }
    // The node is still healthy and its data intact after the fuzzing.
    assert_eq!(ru.api.certificate(&number)["number"], number.as_str());
    let (_, v) = ru.api.get("/v1/log/verify");
    assert_eq!(v["verified"], true, "{v}");
}

/// The elements of certificate format 2 are in the document the API serves (generated from the
/// types): a client reads their names, types and the allowed transport modes from it.
#[test]
fn the_openapi_document_describes_certificate_format_2() {
    let doc = serde_json::to_value(kp_node::api::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let properties = |schema: &str| -> Vec<String> {
        schemas[schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {schema} has no properties: {}", schemas[schema]))
            .keys()
            .cloned()
            .collect()
    };
    for (schema, fields) in [
        ("CertificateContent", &["replaces", "importing_member"][..]),
        ("Party", &["licence"][..]),
        ("Shipment", &["port_of_entry", "transport_mode", "transport_document", "container_seals"][..]),
    ] {
        let have = properties(schema);
        for f in fields {
            assert!(have.iter().any(|h| h == f), "{schema} lacks {f}: {have:?}");
        }
    }
    // What customs systems submit is the content (with an optional number).
    assert!(schemas["CertificateDraft"].to_string().contains("#/components/schemas/CertificateContent"));
    let shipment = &schemas["Shipment"]["properties"];
    assert_eq!(
        shipment["container_seals"]["maxItems"],
        kp_protocol::certificate::MAX_CONTAINER_SEALS,
        "{shipment}"
    );
    assert!(shipment["transport_mode"].to_string().contains("#/components/schemas/TransportMode"));
    assert_eq!(
        schemas["TransportMode"]["enum"],
        serde_json::json!(["air", "sea", "road", "rail", "post", "hand-carried"]),
        "{}",
        schemas["TransportMode"]
    );
    assert!(shipment["port_of_entry"].to_string().contains("#/components/schemas/Locode"));
    assert_eq!(schemas["Locode"]["pattern"], "^[A-Z]{2} ?[A-Z2-9]{3}$", "{}", schemas["Locode"]);
}
