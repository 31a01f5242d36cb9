use super::*;

fn minimal() -> &'static str {
    "participant = \"RU\"\nauthority = \"Gokhran of Russia\"\n"
}

#[test]
fn minimal_config_has_the_documented_defaults() {
    let c = NodeConfig::parse(minimal()).unwrap();
    let expected = NodeConfig::new(ParticipantCode::from_static("RU"), "Gokhran of Russia".parse().unwrap());
    assert_eq!(c, expected);
    assert_eq!(c.endpoints(), vec!["127.0.0.1:7700".to_string()]);
}

#[test]
fn rendered_config_loads_back_identically() {
    let mut c =
        NodeConfig::new(ParticipantCode::from_static("IN"), "Ministry of Commerce \"DGFT\"".parse().unwrap());
    c.network.advertise = vec!["kp.example.in:7700".into()];
    c.delivery.ack_timeout = Duration::from_millis(1500);
    c.keys.tls_grace_period = Duration::from_secs(3 * 86_400);
    c.api.header_read_timeout = Duration::from_millis(2500);
    c.api.body_read_timeout = Duration::from_secs(90);
    c.api.max_connections = 7;
    c.api.trusted_proxies = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    c.api.token_name = "customs-gateway (Mumbai)".parse().unwrap();
    let text = c.render();
    assert_eq!(NodeConfig::parse(&text).unwrap(), c, "{text}");
    for doc in DOCS {
        assert!(text.contains(doc.text), "{} is not documented", doc.key);
        assert!(text.contains(&format!("{} = ", doc.key)));
    }
}

#[test]
fn every_problem_names_its_key() {
    let text = "participant = \"Russia\"\nauthority = \"\"\ncolour = 1\n\
                [delivery]\nmax_in_flight = 0\nack_timeout = \"soon\"\nhandshake_timeout = 5\nfoo = true\n\
                [network]\npeer_listen = \"localhost\"\n[store]\nmax_batch = -1\n\
                [api]\nheader_read_timeout = \"1ms\"\nbody_read_timeout = \"2h\"\nmax_connections = 0\n\
                trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", 7]\ntoken_name = \" x\"\n";
    let problems = NodeConfig::parse(text).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "participant",
        "authority",
        "colour",
        "delivery.max_in_flight",
        "delivery.ack_timeout",
        "delivery.handshake_timeout",
        "delivery.foo",
        "network.peer_listen",
        "store.max_batch",
        "api.header_read_timeout",
        "api.body_read_timeout",
        "api.max_connections",
        "api.trusted_proxies[1]",
        "api.trusted_proxies[2]",
        "api.token_name",
    ] {
        assert!(keys.contains(&k), "{k} missing in {problems:#?}");
    }
    let network = problems.iter().find(|p| p.key == "api.trusted_proxies[1]").unwrap();
    assert!(network.message.contains("\"10.0.0.0/8\" is not an IP address"), "{network:?}");
    let unknown = problems.iter().find(|p| p.key == "delivery.foo").unwrap();
    assert!(unknown.message.contains("unknown key"));
}

#[test]
fn missing_required_keys_and_broken_toml() {
    let problems = NodeConfig::parse("").unwrap_err();
    assert_eq!(problems.len(), 2);
    assert!(problems[0].message.contains("is required"));
    let problems = NodeConfig::parse("participant = \"RU\"\n[delivery\n").unwrap_err();
    assert!(
        problems[0].message.contains("line 2") && problems[0].message.contains("not valid TOML"),
        "{problems:?}"
    );
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "participant = \"RU\"\nauthority = \"A\"\n[delivery]\nmax_in_flight = \"many\"\n")
        .unwrap();
    let err = NodeConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: delivery.max_in_flight: must be a whole number", path.display())),
        "{err}"
    );
    std::fs::write(&path, [0xff, 0xfe]).unwrap();
    assert!(NodeConfig::load(&path).unwrap_err().to_string().contains("not UTF-8"));
    let missing = NodeConfig::load(&dir.path().join("nope.toml")).unwrap_err().to_string();
    assert!(missing.contains("nope.toml: cannot read"), "{missing}");
}

#[test]
fn durations_are_written_as_the_header_says() {
    let text =
        NodeConfig::new(ParticipantCode::from_static("RU"), "Gokhran of Russia".parse().unwrap()).render();
    assert!(text.contains("Durations are written like \"10s\", \"5m\", \"7d\""), "{text}");
    assert!(text.contains("tls_grace_period = \"7d\"\n"), "{text}");
    assert!(text.contains("max_key_age = \"365d\"\n"), "{text}");
    assert!(text.contains("backoff_initial = \"200ms\"\n"), "{text}");
    for line in text.lines().filter(|l| l.contains(" = \"")) {
        assert!(!["days", "months", "year"].iter().any(|u| line.contains(u)), "{line}");
    }
    for d in [
        Duration::ZERO,
        Duration::from_millis(1500),
        Duration::from_secs(90),
        Duration::from_secs(7200),
        Duration::from_secs(365 * 86_400),
    ] {
        assert_eq!(humantime::parse_duration(&format_duration(d)).unwrap(), d, "{}", format_duration(d));
    }
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(format_duration(Duration::from_secs(90)), "90s");
}

#[test]
fn a_pin_in_the_signing_key_uri_is_never_echoed() {
    let text = format!(
        "{}[pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\nsigning_key = \"pkcs11:token=KP;object=k?pin-value=S3cr3tPIN\"\n",
        minimal()
    );
    let problems = NodeConfig::parse(&text).unwrap_err();
    let all = format!("{problems:?}");
    assert!(all.contains("pkcs11.signing_key") && all.contains("pin-value"), "{all}");
    assert!(!all.contains("S3cr3tPIN"), "the PIN is echoed: {all}");
}
