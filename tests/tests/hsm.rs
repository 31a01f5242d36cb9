//! The signing key in a PKCS#11 token, against a real SoftHSM2 token: `kpnode init` makes the
//! key pair inside the token (not extractable, sensitive), the node exchanges certificates
//! both ways with a file-key node, rotates the token key mid-stream (the new key made in the
//! same token), and its log, an offline-signed `.kpc` and `log verify` all check out; no
//! private signing key exists under the node directory. Every way the token can fail is named:
//! module not found, wrong PIN, token absent, key missing, a token without Ed25519, a PIN file
//! others can read; and a token that goes away while the node runs makes signing answer 503
//! naming the cause, and the node signs again once it is back, losing nothing.
//!
//! Needs `softhsm2-util` and `pkcs11-tool` (Debian: softhsm2, opensc). Without them the tests
//! say so and skip, except under `CI=true`, where they fail.
//!
//! SoftHSM2 reads its configuration from `SOFTHSM2_CONF`, which the `kpnode` processes inherit
//! from this one; so the tests run one at a time (a lock) and each sets it to its own token
//! directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use kp_node::home::NodeDir;
use kp_tests::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4321";
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A SoftHSM2 installation of its own: configuration, token directory, one token "KP".
struct SoftHsm {
    conf: PathBuf,
    tokens: PathBuf,
    pin_file: PathBuf,
}

impl SoftHsm {
    /// `None` (after saying so) when SoftHSM2 or pkcs11-tool is missing outside CI.
    fn new(root: &Path, mechanisms: &str) -> Option<SoftHsm> {
        // Installed if it runs at all (`pkcs11-tool --help` exits 2).
        let have = |cmd: &str, arg: &str| Command::new(cmd).arg(arg).output().is_ok();
        if !have("softhsm2-util", "--version")
            || !have("pkcs11-tool", "--help")
            || !Path::new(MODULE).exists()
        {
            skip_part(
                "the PKCS#11 tests",
                "softhsm2-util, pkcs11-tool or libsofthsm2.so is missing (apt-get install softhsm2 opensc)",
                None,
            );
            return None;
        }
        let tokens = root.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = root.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.mechanisms = {mechanisms}\n",
                tokens.display()
            ),
        )
        .unwrap();
        // SAFETY of the environment: the tests of this file run one at a time (ONE_AT_A_TIME).
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::remove_var("KPNODE_PKCS11_PIN");
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "KP", "--so-pin", "87654321", "--pin", PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
        let pin_file = root.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        Some(SoftHsm { conf, tokens, pin_file })
    }

    /// `pkcs11-tool -O` on the token, logged in: every object and its attributes.
    fn objects(&self) -> String {
        let out = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", "KP", "--login", "--pin", PIN, "-O"])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "pkcs11-tool: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `kpnode init` of RU with its signing key (and, with `tls`, its TLS key) in the token;
/// returns the directory.
fn init_hsm_node(root: &Path, hsm: &SoftHsm, uri: &str, tls: Option<&str>) -> NodeDir {
    let dir = root.join("RU");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "init",
        "--participant",
        "RU",
        "--authority",
        "Gokhran of Russia",
        "--dir",
        s(&dir),
        "--peer-listen",
        &listen,
        "--api-listen",
        "127.0.0.1:0",
        "--signing-key",
        uri,
        "--pkcs11-module",
        MODULE,
        "--pkcs11-pin-file",
        s(&hsm.pin_file),
    ];
    if let Some(t) = tls {
        args.extend(["--tls-key", t]);
    }
    let out = kpnode_ok(&args);
    assert!(out.contains("(not extractable)"), "{out}");
    if tls.is_some() {
        assert!(out.contains("TLS key") && !dir.join("keys/tls.key.pem").exists(), "{out}");
    }
    NodeDir::new(dir)
}

fn wait_status(api: &Api, number: &str, status: &str) {
    wait_until(Duration::from_secs(60), &format!("{number} is {status}"), || {
        api.certificate(number)["status"] == status
    });
}

#[test]
fn a_token_key_signs_everything_rotates_and_never_leaves_the_token() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    // With an id= in the URI: the rotation's new pair still gets an id of its own.
    let ru_dir = init_hsm_node(
        tmp.path(),
        &hsm,
        "pkcs11:token=KP;object=kp-signing;id=%01",
        Some("pkcs11:token=KP;object=kp-tls"),
    );
    let in_dir = init_dir(tmp.path(), "IN", free_port());

    // Both key pairs are in the token: private, sensitive, never extractable.
    let objects = hsm.objects();
    assert_eq!(objects.matches("Private Key Object; EC_EDWARDS").count(), 2, "{objects}");
    assert_eq!(objects.matches("never extractable").count(), 2, "{objects}");
    assert!(objects.contains("sensitive"), "{objects}");
    assert!(objects.contains("label:      kp-tls"), "{objects}");
    assert!(!ru_dir.keys_dir().join("signing.key.pem").exists(), "no signing key file");
    assert!(!ru_dir.keys_dir().join("tls.key.pem").exists(), "no TLS key file");
    let toml = std::fs::read_to_string(ru_dir.config_path()).unwrap();
    assert!(toml.contains("[pkcs11]") && !toml.contains(PIN), "{toml}");

    let mut ru = ProcessNode::start(&ru_dir);
    let mut inn = ProcessNode::start(&in_dir);
    enrol_cli(&ru_dir, &in_dir);
    let (ru_api, in_api) = (ru.api(), inn.api());

    // Both ways: RU's certificate signed in the token, IN's receipt; IN's certificate, and
    // RU's receipt signed in the token.
    let out1 = ru_api.submit(&certificate_json("RU", "IN", None, 1));
    let back = in_api.submit(&certificate_json("IN", "RU", None, 2));
    wait_status(&ru_api, &out1, "delivered");
    wait_status(&in_api, &back, "delivered");

    // Rotation mid-stream of both keys: the new pairs are made in the same token, under the
    // same labels; the TLS possession proof and the new certificate are signed by the token.
    let (st, v) = ru_api.post("/v1/keys/rotate", r#"{"signing": true, "tls": true}"#);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["tls_rotated"], true, "{v}");
    let out2 = ru_api.submit(&certificate_json("RU", "IN", None, 3));
    wait_status(&ru_api, &out2, "delivered");
    let objects = hsm.objects();
    assert_eq!(objects.matches("Private Key Object; EC_EDWARDS").count(), 4, "{objects}");
    assert_eq!(objects.matches("never extractable").count(), 4, "{objects}");
    let ids: std::collections::BTreeSet<&str> =
        objects.lines().filter(|l| l.trim_start().starts_with("ID:")).map(str::trim).collect();
    assert_eq!(ids.len(), 4, "four pairs, four CKA_IDs: {objects}");
    let (_, keys) = in_api.get("/v1/keys");
    let ru_keys = keys["peers"].as_array().unwrap().iter().find(|p| p["participant"] == "RU").unwrap();
    assert_eq!(ru_keys["history"]["signing"].as_array().unwrap().len(), 2, "{ru_keys}");
    assert_eq!(ru_keys["history"]["tls"].as_array().unwrap().len(), 2, "{ru_keys}");
    // New TLS handshakes with the new token key: IN restarts and dials RU again, both ways.
    inn.stop();
    let mut inn = ProcessNode::start(&in_dir);
    let in_api = inn.api();
    let out3 = ru_api.submit(&certificate_json("RU", "IN", None, 5));
    let back2 = in_api.submit(&certificate_json("IN", "RU", None, 6));
    wait_status(&ru_api, &out3, "delivered");
    wait_status(&in_api, &back2, "delivered");
    assert!(!ru_dir.keys_dir().join("tls.previous.key.pem").exists(), "no previous TLS key file");

    // Rotation into other objects of the token (the CLI, through the running daemon): the new
    // pairs are made under the new labels, node.toml names them, and a restart finds them.
    // IN is down meanwhile, so it only learns of the rotation after RU's restart, over a link
    // RU makes with its previous TLS key, which it finds under the old URI
    // (keys/tls.previous.place).
    // A target naming the other key's object is refused up front, changing nothing.
    let history = std::fs::read(ru_dir.root().join("keys/history.bin")).unwrap();
    for (body, field) in [
        (r#"{"signing_key":"pkcs11:token=KP;object=kp-tls"}"#, "signing_key"),
        (r#"{"tls_key":"pkcs11:token=KP;object=kp-signing"}"#, "tls_key"),
    ] {
        let (st, v) = ru_api.post("/v1/keys/rotate", body);
        assert_eq!(st, 422, "{v}");
        assert!(v.to_string().contains(field) && v.to_string().contains("object= of its own"), "{v}");
    }
    assert_eq!(std::fs::read(ru_dir.root().join("keys/history.bin")).unwrap(), history);
    inn.stop();
    kpnode_ok(&[
        "keys",
        "rotate",
        "--signing-key",
        "pkcs11:token=KP;object=kp-signing-2",
        "--tls-key",
        "pkcs11:token=KP;object=kp-tls-2",
        "--dir",
        s(ru_dir.root()),
    ]);
    let out4 = ru_api.submit(&certificate_json("RU", "IN", None, 7));
    let place = std::fs::read_to_string(ru_dir.root().join("keys/tls.previous.place")).unwrap();
    assert_eq!(place, "pkcs11:token=KP;object=kp-tls");
    let objects = hsm.objects();
    assert_eq!(objects.matches("never extractable").count(), 6, "{objects}");
    assert!(
        objects.contains("label:      kp-signing-2") && objects.contains("label:      kp-tls-2"),
        "{objects}"
    );
    let toml = std::fs::read_to_string(ru_dir.config_path()).unwrap();
    assert!(toml.contains("object=kp-signing-2") && toml.contains("object=kp-tls-2"), "{toml}");
    ru.stop();
    let mut ru = ProcessNode::start(&ru_dir);
    let ru_api = ru.api();
    let mut inn = ProcessNode::start(&in_dir);
    let in_api = inn.api();
    wait_status(&ru_api, &out4, "delivered");
    let log = std::fs::read_to_string(&ru.log).unwrap_or_default();
    assert!(!log.contains("previous TLS key is not presented"), "{log}");
    let out5 = ru_api.submit(&certificate_json("RU", "IN", None, 8));
    let back3 = in_api.submit(&certificate_json("IN", "RU", None, 9));
    wait_status(&ru_api, &out5, "delivered");
    wait_status(&in_api, &back3, "delivered");
    let (_, keys) = in_api.get("/v1/keys");
    let ru_keys = keys["peers"].as_array().unwrap().iter().find(|p| p["participant"] == "RU").unwrap();
    assert_eq!(ru_keys["history"]["signing"].as_array().unwrap().len(), 3, "{ru_keys}");
    assert_eq!(ru_keys["history"]["tls"].as_array().unwrap().len(), 3, "{ru_keys}");

    ru.stop();
    inn.stop();
    // The logs verify (RU's offline, through the token for nothing but its key history).
    for dir in [&ru_dir, &in_dir] {
        let out = kpnode_ok(&["log", "verify", "--dir", s(dir.root())]);
        assert!(out.contains("The log verifies"), "{out}");
    }
    // Offline signing with the token, checked offline against RU's bundle.
    let json = tmp.path().join("c.json");
    std::fs::write(&json, certificate_json("RU", "IN", Some("RU-2026-000900"), 4)).unwrap();
    let kpc = tmp.path().join("c.kpc");
    kpnode_ok(&["cert", "sign", s(&json), "--out", s(&kpc), "--dir", s(ru_dir.root())]);
    let bundle = tmp.path().join("ru.bundle");
    kpnode_ok(&["peer", "export", "--dir", s(ru_dir.root()), "--out", s(&bundle)]);
    kpnode_ok(&["verify", s(&kpc), "--bundle", s(&bundle)]);

    // No private key under the node directory: no file holds a PKCS#8 (or any PEM) private
    // key, nor the DER of one (the PKCS#8 Ed25519 prefix, RFC 8410).
    const PKCS8_ED25519: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut found = Vec::new();
    walk(ru_dir.root(), &mut |p| {
        let b = std::fs::read(p).unwrap_or_default();
        if String::from_utf8_lossy(&b).contains("PRIVATE KEY") || b.windows(16).any(|w| w == PKCS8_ED25519) {
            found.push(p.to_owned());
        }
    });
    assert!(found.is_empty(), "private key material under the node directory: {found:?}");
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// `kpnode init` with the token settings `extra`; returns (exit code, stderr).
fn init_fails(root: &Path, name: &str, args: &[&str]) -> (i32, String) {
    let dir = root.join(name);
    let mut all = vec!["init", "--participant", "RU", "--authority", "Gokhran of Russia", "--dir", s(&dir)];
    all.extend_from_slice(args);
    let (code, _, err) = kpnode(&all);
    assert!(!dir.join("node.toml").exists(), "a failed init leaves no node: {err}");
    (code, err)
}

#[test]
fn every_way_a_token_fails_is_named() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    let pin = s(&hsm.pin_file).to_owned();
    let uri = "pkcs11:token=KP;object=kp-signing";

    let (code, err) = init_fails(
        tmp.path(),
        "a",
        &["--signing-key", uri, "--pkcs11-module", "/nonexistent/libp11.so", "--pkcs11-pin-file", &pin],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/libp11.so cannot be loaded"), "{err}");

    let wrong = tmp.path().join("wrong-pin");
    std::fs::write(&wrong, "0000").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, err) = init_fails(
        tmp.path(),
        "b",
        &["--signing-key", uri, "--pkcs11-module", MODULE, "--pkcs11-pin-file", s(&wrong)],
    );
    assert!(err.contains("wrong PIN"), "{err}");

    let (_, err) = init_fails(
        tmp.path(),
        "c",
        &[
            "--signing-key",
            "pkcs11:token=NOPE;object=k",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-pin-file",
            &pin,
        ],
    );
    assert!(err.contains("token absent") && err.contains("\"KP\""), "{err}");

    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = init_fails(
        tmp.path(),
        "d",
        &["--signing-key", uri, "--pkcs11-module", MODULE, "--pkcs11-pin-file", s(&wrong)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("mode 0644") && err.contains("chmod 600"), "{err}");

    let (code, err) = init_fails(tmp.path(), "e", &["--signing-key", uri, "--pkcs11-module", MODULE]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("KPNODE_PKCS11_PIN"), "{err}");

    let (code, err) = init_fails(
        tmp.path(),
        "f",
        &["--signing-key", "pkcs11:token=KP;object=k?pin-value=4321", "--pkcs11-module", MODULE],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--signing-key") && err.contains("`pin-value` is refused"), "{err}");
    assert!(!err.contains("4321") && err.contains("?<redacted>"), "the PIN is echoed: {err}");

    // The key named in node.toml is not in the token.
    let dir = init_hsm_node(tmp.path(), &hsm, uri, None);
    let toml =
        std::fs::read_to_string(dir.config_path()).unwrap().replace("object=kp-signing", "object=gone");
    std::fs::write(dir.config_path(), toml).unwrap();
    let (code, _, err) =
        kpnode(&["peer", "export", "--dir", s(dir.root()), "--out", s(&tmp.path().join("x"))]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no key pair pkcs11:token=KP;object=gone"), "{err}");

    // A token without Ed25519.
    let other = tmp.path().join("no-eddsa");
    std::fs::create_dir_all(&other).unwrap();
    let Some(plain) = SoftHsm::new(&other, "CKM_SHA256,CKM_ECDSA,CKM_EC_KEY_PAIR_GEN") else { return };
    let (_, err) = init_fails(
        tmp.path(),
        "g",
        &["--signing-key", uri, "--pkcs11-module", MODULE, "--pkcs11-pin-file", s(&plain.pin_file)],
    );
    assert!(err.contains("does not support CKM_EDDSA"), "{err}");
}

#[test]
fn a_token_that_goes_away_makes_signing_unavailable_until_it_is_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    let ru_dir = init_hsm_node(
        tmp.path(),
        &hsm,
        "pkcs11:token=KP;object=kp-signing",
        Some("pkcs11:token=KP;object=kp-tls"),
    );
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    let mut ru = ProcessNode::start(&ru_dir);
    let mut inn = ProcessNode::start(&in_dir);
    enrol_cli(&ru_dir, &in_dir);
    let (ru_api, in_api) = (ru.api(), inn.api());
    let first = ru_api.submit(&certificate_json("RU", "IN", None, 1));
    wait_status(&ru_api, &first, "delivered");

    // The token goes away.
    let away = tmp.path().join("tokens.away");
    std::fs::rename(&hsm.tokens, &away).unwrap();
    let (st, v) = ru_api.post("/v1/certificates", &certificate_json("RU", "IN", None, 2));
    assert_eq!(st, 503, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("pkcs11:token=KP;object=kp-signing"), "{v}");
    // IN's certificate reaches RU, whose receipt cannot be signed: nothing is stored there,
    // and IN keeps it queued.
    let back = in_api.submit(&certificate_json("IN", "RU", None, 3));
    wait_until(Duration::from_secs(30), "RU refuses to acknowledge without a signature", || {
        std::fs::read_to_string(&ru.log).unwrap_or_default().contains("the signing key could not sign")
    });
    assert_eq!(in_api.certificate(&back)["status"], "queued");
    assert_eq!(ru_api.get(&format!("/v1/certificates/{back}")).0, 404);
    // New links need RU's TLS key, in the same token: IN restarts, and every handshake with
    // RU (RU accepting, RU dialling) fails on RU's side, saying why.
    inn.stop();
    let mut inn = ProcessNode::start(&in_dir);
    let in_api = inn.api();
    wait_until(Duration::from_secs(30), "RU's TLS handshakes fail without the token", || {
        let log = std::fs::read_to_string(&ru.log).unwrap_or_default();
        log.contains("the TLS handshake could not be signed") && log.contains("pkcs11:token=KP;object=kp-tls")
    });
    assert_eq!(in_api.certificate(&back)["status"], "queued");

    // Back: the node logs in again by itself; the refused submission succeeds when retried,
    // and IN's certificate is delivered.
    std::fs::rename(&away, &hsm.tokens).unwrap();
    let mut second = None;
    wait_until(Duration::from_secs(30), "RU signs again", || {
        match ru_api.try_post("/v1/certificates", &certificate_json("RU", "IN", None, 2)) {
            Some((201, v)) | Some((200, v)) => {
                second = v["number"].as_str().map(str::to_owned);
                true
            }
            _ => false,
        }
    });
    wait_status(&ru_api, &second.unwrap(), "delivered");
    wait_status(&in_api, &back, "delivered");
    ru.stop();
    inn.stop();
    kpnode_ok(&["log", "verify", "--dir", s(ru_dir.root())]);
}

/// Strangers who only open TLS connections to the peer port (each one makes the node's TLS
/// key in the token sign a handshake) cannot stall the node: the API answers at once, a
/// certificate is signed and delivered while they hammer. With the TLS key gone from the
/// token, each handshake fails at once: the token is opened again with a growing wait, not
/// once per connection, the log is not flooded, and the signing key (its own session) signs on.
#[test]
fn strangers_hammering_the_tls_key_in_the_token_do_not_stall_the_node() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    let ru_dir = init_hsm_node(
        tmp.path(),
        &hsm,
        "pkcs11:token=KP;object=kp-signing",
        Some("pkcs11:token=KP;object=kp-tls"),
    );
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    let mut ru = ProcessNode::start(&ru_dir);
    let mut inn = ProcessNode::start(&in_dir);
    enrol_cli(&ru_dir, &in_dir);
    let ru_api = ru.api();
    let first = ru_api.submit(&certificate_json("RU", "IN", None, 1));
    wait_status(&ru_api, &first, "delivered");
    let peer_addr = ru_dir.config().unwrap().network.peer_listen;

    // 48 strangers, each opening TLS connections one after another for `secs` seconds.
    let hammer = |secs: u64| {
        std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let until = tokio::time::Instant::now() + Duration::from_secs(secs);
                let tasks: Vec<_> = (0..48)
                    .map(|_| {
                        tokio::spawn(async move {
                            let (mut tried, mut signed) = (0u32, 0u32);
                            let connector =
                                tokio_rustls::TlsConnector::from(kp_tests::raw::stranger_config());
                            while tokio::time::Instant::now() < until {
                                let Ok(tcp) = tokio::net::TcpStream::connect(peer_addr).await else {
                                    continue;
                                };
                                tried += 1;
                                let name = rustls::pki_types::ServerName::try_from("kpnode").unwrap();
                                let hs = tokio::time::timeout(
                                    Duration::from_secs(5),
                                    connector.connect(name, tcp),
                                );
                                // The client's side completes once it has the server's signature.
                                if let Ok(Ok(_)) = hs.await {
                                    signed += 1;
                                }
                            }
                            (tried, signed)
                        })
                    })
                    .collect();
                let (mut tried, mut signed) = (0, 0);
                for t in tasks {
                    let (a, b) = t.await.unwrap();
                    tried += a;
                    signed += b;
                }
                (tried, signed)
            })
        })
    };
    // A node whose API waited on the token's retries (250 ms doubling to 8 s) would hold
    // requests for seconds; a busy 2-core machine may delay one of them for a moment. So:
    // none over 3 s, and nearly all (19 in 20) under 1 s.
    let api_stays_quick = |secs: u64| {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        let mut took = Vec::new();
        while std::time::Instant::now() < until {
            let t = std::time::Instant::now();
            let (st, _) = ru_api.get("/v1/status");
            assert_eq!(st, 200);
            took.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        let slow = took.iter().filter(|t| **t >= Duration::from_secs(1)).count();
        let slowest = took.iter().max().copied().unwrap_or_default();
        assert!(
            slowest < Duration::from_secs(3) && slow * 20 <= took.len(),
            "the API took up to {slowest:?} ({slow} of {} requests over 1 s) while strangers \
             hammered the TLS key",
            took.len()
        );
    };

    // The token works: strangers get signatures, and the node goes on issuing.
    let strangers = hammer(4);
    let during = ru_api.submit(&certificate_json("RU", "IN", None, 2));
    api_stays_quick(3);
    let (tried, signed) = strangers.join().unwrap();
    assert!(tried > 48 && signed > 0, "{tried} connections, {signed} signed handshakes");
    wait_status(&ru_api, &during, "delivered");

    // The TLS key goes from the token (its service lost it, someone deleted it).
    let out = Command::new("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", "KP", "--login", "--pin", PIN])
        .args(["--delete-object", "--type", "privkey", "--label", "kp-tls"])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "pkcs11-tool: {}", String::from_utf8_lossy(&out.stderr));
    let log_before = std::fs::read_to_string(&ru.log).unwrap_or_default();
    let strangers = hammer(4);
    let (st, v) = ru_api.post("/v1/certificates", &certificate_json("RU", "IN", None, 3));
    assert_eq!(st, 201, "the signing key signs on: {v}");
    api_stays_quick(3);
    let (tried, signed) = strangers.join().unwrap();
    assert!(tried > 48 && signed == 0, "{tried} connections, {signed} signed without the key");
    let log = std::fs::read_to_string(&ru.log).unwrap_or_default();
    let new = &log[log_before.len().min(log.len())..];
    let reopened = new.matches("PKCS#11 token failed").count();
    let warned = new.matches("the TLS handshake could not be signed").count();
    assert!(
        (1..=12).contains(&reopened),
        "the token was opened again {reopened} times for {tried} handshakes"
    );
    // One warning per 10 s (the first hammering may have had it already), the rest at debug.
    assert!(
        log.contains("the TLS handshake could not be signed") && warned <= 2,
        "{warned} warnings for {tried} failed handshakes"
    );
    ru.stop();
    inn.stop();
}

/// A PIN the token refuses (here: changed by its administrator while the node runs) is tried
/// once, not at every signature: a PKCS#11 spy module between the node and SoftHSM2 counts the
/// node's logins. Many submissions later the PIN is not locked: put back, and the node
/// restarted, it signs.
#[test]
fn a_refused_pin_is_tried_once_and_never_retried_until_a_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    let spy = ["/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so", "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(spy) = spy else {
        skip_part("the PIN retry test", "pkcs11-spy.so (Debian: opensc-pkcs11) is missing", None);
        return;
    };
    let ru_dir = init_hsm_node(tmp.path(), &hsm, "pkcs11:token=KP;object=kp-signing", None);
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    enrol_cli(&ru_dir, &in_dir);
    // The node loads the spy, which loads SoftHSM2 and logs every call.
    let toml = std::fs::read_to_string(ru_dir.config_path()).unwrap().replace(MODULE, spy);
    std::fs::write(ru_dir.config_path(), toml).unwrap();
    let spy_log = tmp.path().join("spy.log");
    // SAFETY of the environment: the tests of this file run one at a time (ONE_AT_A_TIME).
    std::env::set_var("PKCS11SPY", MODULE);
    std::env::set_var("PKCS11SPY_OUTPUT", &spy_log);
    let mut ru = ProcessNode::start(&ru_dir);
    let api = ru.api();
    let refused = |n: u64| {
        let (st, v) = api.post("/v1/certificates", &certificate_json("RU", "IN", None, n));
        assert_eq!(st, 503, "{v}");
        v["message"].as_str().unwrap_or_default().to_owned()
    };
    let pkcs11_tool = |args: &[&str]| {
        let out = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", "KP"])
            .args(args)
            .env("SOFTHSM2_CONF", &hsm.conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "pkcs11-tool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // The token goes away (the node drops its session), its PIN is changed, it comes back.
    let away = tmp.path().join("tokens.away");
    std::fs::rename(&hsm.tokens, &away).unwrap();
    refused(1);
    std::fs::rename(&away, &hsm.tokens).unwrap();
    pkcs11_tool(&["--login", "--pin", PIN, "--change-pin", "--new-pin", "9999"]);

    // The node waits a little before it opens the token again (not once per signature):
    // until then it answers with the last failure.
    let mut n = 1;
    let mut first = String::new();
    wait_until(Duration::from_secs(20), "the node tries the token again", || {
        n += 1;
        first = refused(n);
        !first.contains("no longer found")
    });
    assert!(first.contains("wrong PIN") && first.contains("restart"), "{first}");
    for n in n + 1..40 {
        let later = refused(n);
        assert!(later.contains("refused the PIN earlier") && later.contains("restart the node"), "{later}");
    }
    let log = std::fs::read_to_string(&spy_log).unwrap();
    assert!(log.matches("C_Login").count() >= 2, "the spy saw the node's logins: {log}");
    assert_eq!(log.matches("CKR_PIN_INCORRECT").count(), 1, "one wrong login, not one per signature");
    // The PIN put back is refused until a restart; then the node signs: it never locked.
    pkcs11_tool(&["--login", "--pin", "9999", "--change-pin", "--new-pin", PIN]);
    assert!(refused(40).contains("restart the node"));
    ru.stop();
    let mut ru = ProcessNode::start(&ru_dir);
    let (st, v) = ru.api().post("/v1/certificates", &certificate_json("RU", "IN", None, 41));
    assert!(st == 201 || st == 200, "{st} {v}");
    ru.stop();
    std::env::remove_var("PKCS11SPY");
    std::env::remove_var("PKCS11SPY_OUTPUT");
}

/// Two handles on one token in one process (an offline command opens the keys more than
/// once): dropping one does not finalize the module under the other, whose next signature
/// works at once.
#[test]
fn a_second_handle_on_the_token_does_not_close_the_first() {
    use kp_keys::SigningBackend;
    use kp_node::hsm::{pin, Pkcs11Token, TokenSettings};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    init_hsm_node(tmp.path(), &hsm, "pkcs11:token=KP;object=kp-signing", None);
    let settings = || TokenSettings {
        module: MODULE.into(),
        uri: "pkcs11:token=KP;object=kp-signing".parse().unwrap(),
        pin: pin::read(Some(&hsm.pin_file)).unwrap(),
    };
    let uri: kp_keys::pkcs11uri::Pkcs11Uri = "pkcs11:token=KP;object=kp-signing".parse().unwrap();
    let first = Pkcs11Token::open(settings()).unwrap().existing(&uri).unwrap().expect("the key init made");
    first.sign_message(b"before").unwrap();
    let second = Pkcs11Token::open(settings()).unwrap().existing(&uri).unwrap().expect("the same key");
    second.sign_message(b"second").unwrap();
    drop(second);
    first.sign_message(b"after the second handle is gone").expect("the first handle still signs");
}

/// A key pair made in the token by another tool, with a private key the token would let out,
/// is refused naming the attribute; nothing is written.
#[test]
fn an_extractable_key_in_the_token_is_refused() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    let out = Command::new("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", "KP", "--login", "--pin", PIN, "--keypairgen"])
        .args(["--key-type", "EC:edwards25519", "--label", "loose", "--usage-sign", "--extractable"])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "pkcs11-tool: {}", String::from_utf8_lossy(&out.stderr));
    let (_, err) = init_fails(
        tmp.path(),
        "x",
        &[
            "--signing-key",
            "pkcs11:token=KP;object=loose",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-pin-file",
            s(&hsm.pin_file),
        ],
    );
    assert!(err.contains("CKA_EXTRACTABLE is true") && err.contains("not protected"), "{err}");
}

/// A key pair made by another tool whose private key is usable without the PIN
/// (`CKA_PRIVATE` false) or may not sign is refused as the TLS key (or the signing key),
/// naming the attribute; nothing is written.
#[test]
fn an_adopted_key_that_is_not_private_or_may_not_sign_is_refused() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    // Made in a process of its own: a module is initialized once per process, and this
    // one's other tests keep theirs.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "make_unfit_key_pairs", "--ignored", "--nocapture"])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env("KP_TEST_MAKE_UNFIT_KEYS", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("1 passed"), "{said}");
    for (n, label, attribute) in [(0, "public", "CKA_PRIVATE is false"), (1, "nosign", "CKA_SIGN is false")] {
        let tls = format!("pkcs11:token=KP;object={label}");
        let (_, err) = init_fails(
            tmp.path(),
            &format!("p{n}"),
            &[
                "--signing-key",
                "pkcs11:token=KP;object=kp-signing",
                "--tls-key",
                &tls,
                "--pkcs11-module",
                MODULE,
                "--pkcs11-pin-file",
                s(&hsm.pin_file),
            ],
        );
        assert!(err.contains(attribute) && err.contains("not fit") && err.contains(&tls), "{err}");
    }
}

/// Makes the unfit key pairs of the test above, run by it in a process of its own.
#[test]
#[ignore = "run by an_adopted_key_that_is_not_private_or_may_not_sign_is_refused in a process of its own"]
fn make_unfit_key_pairs() {
    use cryptoki::context::{CInitializeArgs, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    if std::env::var_os("KP_TEST_MAKE_UNFIT_KEYS").is_none() {
        return;
    }
    let pkcs11 = Pkcs11::new(MODULE).unwrap();
    pkcs11.initialize(CInitializeArgs::OsThreads).unwrap();
    let slot = pkcs11.get_slots_with_token().unwrap()[0];
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&AuthPin::new(PIN.into()))).unwrap();
    for (label, private, sign) in [("public", false, true), ("nosign", true, false)] {
        let public = [
            Attribute::Token(true),
            Attribute::EcParams(vec![0x06, 0x03, 0x2b, 0x65, 0x70]),
            Attribute::Label(label.into()),
            Attribute::Id(label.into()),
        ];
        let secret = [
            Attribute::Token(true),
            Attribute::Private(private),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(sign),
            Attribute::Label(label.into()),
            Attribute::Id(label.into()),
        ];
        session.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &secret).unwrap();
    }
}

/// Two tokens with the URI's label: neither is picked silently.
#[test]
fn two_tokens_matching_the_uri_are_refused_as_ambiguous() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(tmp.path(), "ALL") else { return };
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "KP", "--so-pin", "87654321", "--pin", PIN])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
    let (_, err) = init_fails(
        tmp.path(),
        "x",
        &[
            "--signing-key",
            "pkcs11:token=KP;object=kp-signing",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-pin-file",
            s(&hsm.pin_file),
        ],
    );
    assert!(err.contains("2 tokens match") && err.contains("serial="), "{err}");
}
