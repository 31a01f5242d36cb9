//! The store's format version, across kpnode versions. Today's code writes format
//! `kpnode-store/3` and reads a store written in it (a committed fixture); it opens a store
//! written in format `kpnode-store/2` (a committed fixture) by migrating it, after copying it
//! beside itself, and a migration stopped after that copy leaves the old store as it was. A
//! store written by a newer kpnode is refused, naming both versions, with exit status 2 and
//! nothing changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kp_node::home::NodeDir;
use kp_node::store::{meta, MigrationStep, SledStore, Storage, StoreError, Tree, Writes};
use kp_tests::{init_dir, kpnode, set_setting, ProcessNode};

/// The node directory `tests/fixtures/<fixture>/RU` (see the README beside it), copied: opening
/// a store writes to it.
fn fixture_copy(fixture: &str, into: &Path) -> NodeDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(fixture).join("RU");
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

/// Every record of the store at `store` (a store directory), read with sled itself, not
/// through SledStore::open, which would migrate or refuse it.
///
/// sled locks its file with `flock`, which belongs to the open file: a `kpnode` child another
/// test is forking at the moment the store was last closed holds a copy of that descriptor
/// until its `exec` closes it. Only sled's "could not acquire lock" is waited out (5 s at most).
fn raw_records(store: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let db = loop {
        match sled::open(store) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => break other.unwrap(),
        }
    };
    let tree = db.open_tree("kpnode.v1").unwrap();
    tree.iter().map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut key = vec![b'X'];
    key.extend_from_slice(name);
    key
}

/// Takes the index of certificates by date of issue out of `records` (its records, prefix
/// `I`, and the copy of the counters it was last complete for), checking that it holds one
/// record per certificate and is complete for the store's counters: what opening a store
/// written before the index adds to it.
fn take_issued_index(records: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    let index: Vec<Vec<u8>> = records.keys().filter(|k| k.first() == Some(&b'I')).cloned().collect();
    let certificates = records.keys().filter(|k| k.first() == Some(&b'C')).count();
    assert_eq!(index.len(), certificates, "one index record per certificate");
    for k in &index {
        let number = &k[5..];
        let mut cert_key = vec![b'C'];
        cert_key.extend_from_slice(number);
        assert!(records.contains_key(&cert_key), "the index names a stored certificate: {k:?}");
        records.remove(k);
    }
    let at = records.remove(&meta_key(meta::ISSUED_INDEX_AT)).expect("the index says it is complete");
    assert_eq!(Some(&at), records.get(&meta_key(meta::COUNTS)), "complete for the store's counters");
}

/// Takes the index of certificates received out of `records` (its records, prefix `J`: a kind,
/// a day, a certificate number; and the copy of the counters it was last complete for),
/// checking that each names a stored certificate and that it is complete for the store's
/// counters: what opening a store written before the index adds to it.
fn take_imported_index(records: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    let index: Vec<Vec<u8>> = records.keys().filter(|k| k.first() == Some(&b'J')).cloned().collect();
    for k in &index {
        assert!(matches!(k.get(1), Some(b'd' | b'w')), "a confirmed or a waiting import: {k:?}");
        let mut cert_key = vec![b'C'];
        cert_key.extend_from_slice(&k[6..]);
        assert!(records.contains_key(&cert_key), "the index names a stored certificate: {k:?}");
        records.remove(k);
    }
    let at = records.remove(&meta_key(meta::IMPORTED_INDEX_AT)).expect("the index says it is complete");
    assert_eq!(Some(&at), records.get(&meta_key(meta::COUNTS)), "complete for the store's counters");
}

fn format_in(store: &Path) -> String {
    String::from_utf8(raw_records(store).remove(&meta_key(meta::FORMAT)).expect("a format")).unwrap()
}

fn stored_format(dir: &NodeDir) -> String {
    format_in(&dir.store_dir())
}

/// The copies of the store a migration left beside it (complete ones: not `.partial`).
fn migration_backups(dir: &NodeDir, from: &str) -> Vec<PathBuf> {
    let prefix = format!("store.{}.", from.replace('/', "-"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&prefix) && !name.ends_with(".partial")
        })
        .collect();
    found.sort();
    found
}

#[test]
fn todays_kpnode_migrates_a_store_written_in_format_2_after_copying_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy("store-kpnode-store-2", tmp.path());
    assert_eq!(stored_format(&dir), "kpnode-store/2", "the fixture is in format 2");
    let before = raw_records(&dir.store_dir());

    // The first command that opens it migrates it, and says so naming both formats and the copy.
    let (code, out, err) = kpnode(&["log", "verify", "--dir", dir.root().to_str().unwrap()]);
    assert_eq!(code, 0, "log verify on the format-2 fixture: {err}");
    assert!(out.starts_with("The log verifies: "), "{out}");
    assert!(err.contains("migrated the store from format kpnode-store/2 to kpnode-store/3"), "{err}");
    let backups = migration_backups(&dir, "kpnode-store/2");
    assert_eq!(backups.len(), 1, "one copy of the old store: {backups:?}");
    assert!(err.contains(&backups[0].display().to_string()), "the line names the copy: {err}");
    assert_eq!(stored_format(&dir), meta::FORMAT_VERSION);

    // The copy is the old store, record for record (the older kpnode opens it); the migrated
    // store changed its format record and added where format-3 entries begin, nothing else.
    assert_eq!(raw_records(&backups[0]), before, "the copy is the store as it was");
    let mut after = raw_records(&dir.store_dir());
    assert!(after.remove(&meta_key(meta::LOG_FORMAT3_FROM)).is_some());
    take_issued_index(&mut after);
    take_imported_index(&mut after);
    after.insert(meta_key(meta::FORMAT), b"kpnode-store/2".to_vec());
    assert_eq!(after, before, "no entry was rewritten: their hashes and partners' receipts hold");
    let report = kp_tests::audit(&dir);
    assert!(report.entries >= 4, "two certificates, their receipts, a confirmation, a rotation: {report:?}");

    // Opened again: nothing more to migrate, no second copy.
    let (code, out, err) = kpnode(&["cert", "list", "--json", "--dir", dir.root().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("migrated"), "{err}");
    assert_eq!(migration_backups(&dir, "kpnode-store/2").len(), 1);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let numbers: Vec<&str> = list.iter().filter_map(|c| c["number"].as_str()).collect();
    assert_eq!(numbers, ["RU-2026-000001", "RU-2026-000002"]);
    {
        let (store, report) = open_store(&dir).expect("today's kpnode opens the migrated store");
        assert!(report.migrated.is_none());
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

    // `kpnode run` serves it (on free ports: the fixture's are the testnet's); what is done
    // now is logged in format 3, naming its officer, after the format-2 entries, and the
    // whole chain verifies.
    set_setting(&dir, "network", "peer_listen", "\"127.0.0.1:0\"");
    set_setting(&dir, "network", "api_listen", "\"127.0.0.1:0\"");
    // A format-2 node.toml has no api.token_name (its default then applies); name it here.
    let toml = std::fs::read_to_string(dir.config_path()).unwrap();
    assert!(!toml.contains("token_name"));
    let toml = toml.replace("[api]\n", "[api]\ntoken_name = \"ru-customs-gateway\"\n");
    std::fs::write(dir.config_path(), toml).unwrap();
    let mut node = ProcessNode::start(&dir);
    let api = node.api();
    let cert = api.certificate("RU-2026-000001");
    assert_eq!(cert["status"], "import_discrepancy");
    assert!(cert.get("officers").is_none(), "recorded before format 3: no officer: {cert}");
    let (status, v) =
        api.post("/v1/participants/CF", r#"{"status": "suspended", "reason": "plenary decision"}"#);
    assert_eq!(status, 200, "{v}");
    let (status, v) = api.get("/v1/log/verify");
    assert_eq!(status, 200);
    assert_eq!(v["verified"], true, "{v}");
    let (status, log) = api.get("/v1/log");
    assert_eq!(status, 200);
    let log = log.as_array().unwrap();
    let (last, old) = log.split_last().unwrap();
    assert_eq!(last["officer"], "ru-customs-gateway", "{last}");
    assert!(old.iter().all(|e| e["officer"].is_null()), "format-2 entries name no officer");
    node.stop();
}

#[test]
fn a_migration_stopped_after_its_copy_leaves_the_old_store_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy("store-kpnode-store-2", tmp.path());
    let before = raw_records(&dir.store_dir());

    // The copy is made, then the migration fails (as a crash or a full disk would stop it).
    let mut seen = Vec::new();
    let e = SledStore::open_observed(&dir.store_dir(), 16, &mut |step| {
        let MigrationStep::BackedUp { from, backup } = step;
        seen.push((from.to_string(), backup.to_path_buf()));
        Err(StoreError::Io {
            path: backup.display().to_string(),
            source: std::io::Error::other("simulated failure after the copy"),
        })
    })
    .expect_err("the migration stops");
    assert!(e.to_string().contains("simulated failure"), "{e}");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "kpnode-store/2");
    assert!(seen[0].1.is_dir(), "the copy exists when the migration goes on");

    // Nothing of the store changed: the older kpnode opens it as before.
    assert_eq!(raw_records(&dir.store_dir()), before);
    assert_eq!(stored_format(&dir), "kpnode-store/2");
    assert_eq!(raw_records(&seen[0].1), before);

    // And today's kpnode migrates it on the next open, with a copy of its own.
    let (store, report) = open_store(&dir).expect("migrated on the next open");
    let migrated = report.migrated.expect("a migration");
    assert_eq!((migrated.from.as_str(), migrated.to), ("kpnode-store/2", meta::FORMAT_VERSION));
    assert_ne!(migrated.backup, seen[0].1);
    drop(store);
    assert_eq!(migration_backups(&dir, "kpnode-store/2").len(), 2);
    kp_tests::audit(&dir);
}

#[test]
fn todays_kpnode_reads_a_store_written_in_format_3_with_its_officers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy("store-kpnode-store-3", tmp.path());
    assert_eq!(stored_format(&dir), "kpnode-store/3", "the fixture is in format 3");
    let before = raw_records(&dir.store_dir());

    let root = dir.root().to_str().unwrap();
    let (code, out, err) = kpnode(&["log", "verify", "--dir", root]);
    assert_eq!(code, 0, "log verify on the format-3 fixture: {err}");
    assert!(out.starts_with("The log verifies: "), "{out}");
    assert!(!err.contains("migrated"), "{err}");
    assert!(migration_backups(&dir, "kpnode-store/3").is_empty());
    assert!(err.contains("built the index of certificates by date of issue ("), "{err}");
    assert!(err.contains("and the index of certificates received ("), "{err}");
    // Opening it added the indexes (the fixture was written before them) and changed nothing
    // else.
    let mut after = raw_records(&dir.store_dir());
    take_issued_index(&mut after);
    take_imported_index(&mut after);
    assert_eq!(after, before, "opening it changed nothing but the indexes");
    let (code, _, err) = kpnode(&["log", "verify", "--dir", root]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("built the index"), "built once: {err}");

    // What RU's operator did through the CLI names the API token; IN's confirmation, nobody.
    let (code, out, err) = kpnode(&["log", "export", "--json", "--dir", root]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(entries.len() >= 4, "{out}");
    for e in &entries {
        let expected =
            if e["direction"] == "out" { serde_json::json!("api-token") } else { serde_json::Value::Null };
        assert_eq!(e["officer"], expected, "{e}");
    }
    let (code, out, err) = kpnode(&["cert", "show", "RU-2026-000001", "--json", "--dir", root]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["officers"], serde_json::json!({"issued": "api-token"}), "{v}");
    let (code, out, err) = kpnode(&["cert", "show", "RU-2026-000001", "--dir", root]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("issued by     api-token (this node's officer)"), "{out}");
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

/// A store as a newer kpnode would leave it: today's layout, its format record saying 4.
fn store_from_the_future(root: &Path) -> NodeDir {
    let dir = init_dir(root, "RU", 0);
    let (store, _) = open_store(&dir).unwrap();
    store
        .commit(&Writes::from([((Tree::Meta, meta::FORMAT.to_vec()), Some(b"kpnode-store/4".to_vec()))]))
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
    for part in ["kpnode-store/4", meta::FORMAT_VERSION, "newer kpnode"] {
        assert!(message.contains(part), "the refusal names {part}: {message}");
    }

    // `kpnode run` and an offline command: exit status 2 (what a restart cannot fix: the unit
    // file does not restart on it), the same message on stderr.
    let root = dir.root().to_str().unwrap();
    for args in [&["run", "--dir", root][..], &["log", "verify", "--dir", root][..]] {
        let (code, _, err) = kpnode(args);
        assert_eq!(code, 2, "kpnode {args:?}: {err}");
        assert!(
            err.contains("kpnode-store/4")
                && err.contains(meta::FORMAT_VERSION)
                && err.contains("newer kpnode"),
            "kpnode {args:?}: {err}"
        );
    }
    assert_eq!(stored_format(&dir), "kpnode-store/4", "a refusal changes nothing");
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
