//! The store's format version, across kpnode versions: today's code reads a store written in
//! format `kpnode-store/2` (a committed fixture), and a store written by a newer kpnode is
//! refused, naming both versions, with exit status 2 and nothing changed.

use std::path::Path;

use kp_node::home::NodeDir;
use kp_node::store::{meta, SledStore, Storage, StoreError, Tree, Writes};
use kp_tests::{init_dir, kpnode, set_setting, ProcessNode};

/// The node directory `tests/fixtures/store-kpnode-store-2/RU`: RU after
/// `scripts/testnet.sh up --nodes RU,IN && scripts/testnet.sh demo` (see the README beside
/// it). Opening a store writes to it, so tests use a copy.
fn fixture_copy(into: &Path) -> NodeDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store-kpnode-store-2/RU");
    let to = into.join("RU");
    copy_dir(&from, &to);
    // Git keeps no permissions: kpnode refuses private keys others can read.
    use std::os::unix::fs::PermissionsExt;
    for f in ["keys/signing.key.pem", "keys/tls.key.pem", "keys/history.bin", "api.token"] {
        std::fs::set_permissions(to.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for d in [to.clone(), to.join("keys")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    NodeDir::new(to)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn stored_format(dir: &NodeDir) -> String {
    // Read with sled itself, not through SledStore::open, which refuses other formats.
    let db = sled::open(dir.store_dir()).unwrap();
    let tree = db.open_tree("kpnode.v1").unwrap();
    let mut key = vec![b'X'];
    key.extend_from_slice(meta::FORMAT);
    String::from_utf8(tree.get(key).unwrap().expect("a format").to_vec()).unwrap()
}

#[test]
fn todays_kpnode_reads_a_store_written_in_format_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path());
    assert_eq!(stored_format(&dir), "kpnode-store/2", "the fixture is in format 2");

    // Offline: the log verifies, and the certificates are there with their statuses.
    let (code, out, err) = kpnode(&["log", "verify", "--dir", dir.root().to_str().unwrap()]);
    assert_eq!(code, 0, "log verify on the format-2 fixture: {err}");
    assert!(out.starts_with("The log verifies: "), "{out}");
    let report = kp_tests::audit(&dir);
    assert!(report.entries >= 4, "two certificates, their receipts, a confirmation, a rotation: {report:?}");

    let (code, out, err) = kpnode(&["cert", "list", "--json", "--dir", dir.root().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let numbers: Vec<&str> = list.iter().filter_map(|c| c["number"].as_str()).collect();
    assert_eq!(numbers, ["RU-2026-000001", "RU-2026-000002"]);
    {
        let (store, _) = open_store(&dir).expect("today's kpnode opens format 2");
        let status = |n: &str| {
            kp_node::store::get_record::<kp_node::store::CertRecord, _>(&store, Tree::Certs, n.as_bytes())
                .unwrap()
                .expect("the certificate's record")
                .status
        };
        use kp_node::store::CertStatus;
        assert_eq!(status("RU-2026-000001"), CertStatus::ImportDiscrepancy, "confirmed short by IN");
        assert_eq!(status("RU-2026-000002"), CertStatus::Delivered, "receipted by IN after the key rotation");
    }

    // And `kpnode run` serves it (on free ports: the fixture's are the testnet's).
    set_setting(&dir, "network", "peer_listen", "\"127.0.0.1:0\"");
    set_setting(&dir, "network", "api_listen", "\"127.0.0.1:0\"");
    let mut node = ProcessNode::start(&dir);
    let api = node.api();
    assert_eq!(api.certificate("RU-2026-000001")["status"], "import_discrepancy");
    let (status, v) = api.get("/v1/log/verify");
    assert_eq!(status, 200);
    assert_eq!(v["verified"], true, "{v}");
    node.stop();
}

/// Opens `dir`'s store in this process. The store's lock is a `flock` on a file this process
/// just closed; a `kpnode` child another test is forking at that moment holds a copy of the
/// descriptor until its `exec` closes it, so `Locked` naming this very process is waited out
/// (for 5 s at most); every other answer is returned as it is.
fn open_store(dir: &NodeDir) -> Result<(SledStore, kp_node::store::OpenReport), StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let me = format!("pid {}", std::process::id());
    loop {
        match SledStore::open(&dir.store_dir(), 16) {
            Err(StoreError::Locked { holder, .. })
                if holder == me && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

/// A store as a newer kpnode would leave it: today's layout, its format record saying 3.
fn store_from_the_future(root: &Path) -> NodeDir {
    let dir = init_dir(root, "RU", 0);
    let (store, _) = open_store(&dir).unwrap();
    store
        .commit(&Writes::from([((Tree::Meta, meta::FORMAT.to_vec()), Some(b"kpnode-store/3".to_vec()))]))
        .unwrap();
    store.flush().unwrap();
    dir
}

#[test]
fn an_older_kpnode_refuses_a_newer_store_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = store_from_the_future(tmp.path());

    let e = open_store(&dir).expect_err("a newer store is refused");
    assert!(matches!(e, StoreError::Format { .. }), "{e:?}");
    let message = e.to_string();
    for part in ["kpnode-store/3", meta::FORMAT_VERSION, "newer kpnode"] {
        assert!(message.contains(part), "the refusal names {part}: {message}");
    }

    // `kpnode run` and an offline command: exit status 2 (what a restart cannot fix: the unit
    // file does not restart on it), the same message on stderr.
    let root = dir.root().to_str().unwrap();
    for args in [&["run", "--dir", root][..], &["log", "verify", "--dir", root][..]] {
        let (code, _, err) = kpnode(args);
        assert_eq!(code, 2, "kpnode {args:?}: {err}");
        assert!(
            err.contains("kpnode-store/3")
                && err.contains(meta::FORMAT_VERSION)
                && err.contains("newer kpnode"),
            "kpnode {args:?}: {err}"
        );
    }
    assert_eq!(stored_format(&dir), "kpnode-store/3", "a refusal changes nothing");
}

#[test]
fn a_store_in_an_older_or_unknown_format_is_refused_with_the_way_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    {
        let (store, _) = open_store(&dir).unwrap();
        store
            .commit(&Writes::from([((Tree::Meta, meta::FORMAT.to_vec()), Some(b"kpnode-store/1".to_vec()))]))
            .unwrap();
        store.flush().unwrap();
    }
    let (code, _, err) = kpnode(&["log", "verify", "--dir", dir.root().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("kpnode-store/1")
            && err.contains(meta::FORMAT_VERSION)
            && err.contains("kpnode log export"),
        "{err}"
    );
}
