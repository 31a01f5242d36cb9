//! `kpnode backup` and `kpnode restore`, as an operator runs them: a backup of a running node
//! taken while certificates keep being submitted, and one of a stopped node; each restored
//! into a new directory, where the log verifies and holds exactly what the node held when
//! the snapshot was taken; the restored node runs. Refused, with nothing written: a directory
//! that is not empty, a backup without keys and no `--keys`, a flipped byte (naming the file
//! it is in), a file cut short, and hostile files (a name leaving the directory, lengths beyond
//! their bounds) whose checksums were made to match.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kp_tests::*;
use serde_json::Value;
use sha2::Digest as _;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The log of a node directory as `kpnode log export --json` prints it: one entry a line.
fn log_lines(dir: &Path) -> Vec<String> {
    kpnode_ok(&["log", "export", "--json", "--dir", s(dir)]).lines().map(str::to_owned).collect()
}

fn manifest(file: &Path) -> Value {
    serde_json::from_str(&kpnode_ok(&["restore", s(file), "--list"])).unwrap()
}

/// Where each part of a backup file starts: (name, offset of its first byte, size).
fn layout(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let len = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let m: Value = serde_json::from_slice(&bytes[20..20 + len]).unwrap();
    let mut at = 20 + len + 32;
    let mut out = vec![("manifest".to_owned(), 20, len)];
    for f in m["files"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap().to_owned();
        let size = f["size"].as_u64().unwrap() as usize;
        at += 2 + name.len() + 8;
        out.push((name, at, size));
        at += size;
    }
    assert_eq!(at + 32, bytes.len(), "the layout covers the file");
    out
}

/// Restores `file` into `dir`, which must fail with exit status 2; returns stderr. Nothing
/// may be left at `dir` or beside it.
fn refused(file: &Path, dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["restore", s(file), "--dir", s(dir)];
    args.extend_from_slice(extra);
    let (code, out, err) = kpnode(&args);
    assert_eq!(code, 2, "restore of {} was not refused: {out}{err}", file.display());
    assert!(!dir.exists(), "a refused restore left {}", dir.display());
    let parent = dir.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".restoring-"))
        .collect();
    assert!(leftovers.is_empty(), "a refused restore left {leftovers:?}");
    err
}

/// A backup file written by hand: `manifest` (its `files` made to match `files`), the files,
/// and every checksum right, so only what is inside is hostile.
fn craft(manifest: &Value, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut m = manifest.clone();
    m["files"] = files
        .iter()
        .map(|(name, b)| {
            serde_json::json!({"name": name, "size": b.len(), "sha256": kp_protocol::digest::hex(&sha2::Sha256::digest(b))})
        })
        .collect();
    let json = serde_json::to_vec(&m).unwrap();
    let mut out = b"kpnode-backup/1\n".to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&sha2::Sha256::digest(&json));
    for (name, b) in files {
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(b.len() as u64).to_be_bytes());
        out.extend_from_slice(b);
    }
    let total = sha2::Sha256::digest(&out);
    out.extend_from_slice(&total);
    out
}

#[test]
fn online_backup_under_load_restores_to_a_verifying_node_and_damage_is_refused() {
    let mut pair = enrolled_processes();
    let tmp = pair.tmp.path().to_owned();
    let ru_api = pair.ru.api();
    wait_linked(&ru_api, "IN".parse().unwrap());
    let before: Vec<String> = (0..5).map(|i| ru_api.submit(&certificate_json("RU", "IN", None, i))).collect();
    for n in &before {
        wait_until(Duration::from_secs(20), &format!("{n} delivered"), || {
            ru_api.certificate(n)["status"] == "delivered"
        });
    }

    // Backups while a thread keeps submitting: each is one consistent snapshot.
    let with_keys = tmp.join("ru-keys.kpbackup");
    let without_keys = tmp.join("ru.kpbackup");
    let submitted = std::thread::scope(|scope| {
        let api = ru_api.clone();
        let load = scope.spawn(move || {
            (100..140).map(|i| api.submit(&certificate_json("RU", "IN", None, i))).collect::<Vec<_>>()
        });
        let out =
            kpnode_ok(&["backup", "--dir", s(pair.ru_dir.root()), "--out", s(&with_keys), "--include-keys"]);
        assert!(out.contains("taken online") && out.contains("INCLUDED"), "{out}");
        let out = kpnode_ok(&["backup", "--dir", s(pair.ru_dir.root()), "--out", s(&without_keys)]);
        assert!(out.contains("taken online") && out.contains("not included"), "{out}");
        load.join().unwrap()
    });
    assert_eq!(submitted.len(), 40);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&with_keys).unwrap().permissions().mode() & 0o777, 0o600);

    let m = manifest(&with_keys);
    assert_eq!(m["format"], "kpnode-backup/1");
    assert_eq!(m["participant"], "RU");
    assert_eq!(m["taken"], "online");
    assert_eq!(m["keys_included"], true);
    let names: Vec<&str> =
        m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"node.toml")
            && names.contains(&"store.kpdump")
            && names.contains(&"keys/signing.key.pem"),
        "{names:?}"
    );
    let m2 = manifest(&without_keys);
    assert!(
        !m2["files"].as_array().unwrap().iter().any(|f| f["name"].as_str().unwrap().starts_with("keys/")),
        "{m2}"
    );

    // An existing file is never overwritten.
    let (code, _, err) = kpnode(&["backup", "--dir", s(pair.ru_dir.root()), "--out", s(&with_keys)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already exists"), "{err}");

    // Restore: the log verifies and is exactly the node's log up to the manifest's head.
    let restored = tmp.join("restored");
    let out = kpnode_ok(&["restore", s(&with_keys), "--dir", s(&restored)]);
    assert!(out.contains("The log verifies: "), "{out}");
    let seq = m["log_seq"].as_u64().unwrap() as usize;
    assert!(seq >= 5, "{m}");
    let restored_log = log_lines(&restored);
    let live_log = log_lines(pair.ru_dir.root());
    assert_eq!(restored_log.len(), seq);
    assert_eq!(restored_log[..], live_log[..seq], "the restored log is the node's log up to the snapshot");
    let (code, out, err) = kpnode(&["log", "verify", "--dir", s(&restored)]);
    assert_eq!(code, 0, "{out}{err}");
    let certs: Vec<Value> =
        serde_json::from_str(&kpnode_ok(&["cert", "list", "--json", "--dir", s(&restored)])).unwrap();
    for n in &before {
        assert!(
            certs.iter().any(|c| c["number"] == n.as_str() && c["status"] == "delivered"),
            "{n} in {certs:?}"
        );
    }
    assert_eq!(
        std::fs::metadata(restored.join("keys/signing.key.pem")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_ne!(
        std::fs::read_to_string(restored.join("api.token")).unwrap(),
        std::fs::read_to_string(pair.ru_dir.root().join("api.token")).unwrap(),
        "a restore writes a new API token"
    );

    // Never over a node, nor into anything not empty.
    let err = {
        let (code, _, err) = kpnode(&["restore", s(&with_keys), "--dir", s(&restored)]);
        assert_eq!(code, 2, "{err}");
        err
    };
    assert!(err.contains("is not empty"), "{err}");
    assert!(log_lines(&restored) == restored_log, "the refused restore changed nothing");

    // Without keys in the file: --keys is needed, and must be this node's.
    let err = refused(&without_keys, &tmp.join("r2"), &[]);
    assert!(err.contains("--keys"), "{err}");
    let err = refused(&without_keys, &tmp.join("r2"), &["--keys", s(&pair.in_dir.keys_dir())]);
    assert!(err.contains("(--keys) are those of IN") && err.contains("the backup is of RU"), "{err}");
    let out = kpnode_ok(&[
        "restore",
        s(&without_keys),
        "--dir",
        s(&tmp.join("r2")),
        "--keys",
        s(&pair.ru_dir.keys_dir()),
    ]);
    assert!(out.contains("The log verifies: "), "{out}");

    // A flipped byte anywhere is refused, naming where it is.
    let bytes = std::fs::read(&with_keys).unwrap();
    for (name, start, size) in layout(&bytes) {
        let mut damaged = bytes.clone();
        damaged[start + size / 2] ^= 0x01;
        let file = tmp.join("damaged.kpbackup");
        std::fs::write(&file, &damaged).unwrap();
        let err = refused(&file, &tmp.join("r3"), &[]);
        assert!(err.contains(&format!("{name}: ")) && err.contains("nothing was restored"), "{name}: {err}");
    }
    // The closing checksum, and a file cut short.
    let mut damaged = bytes.clone();
    *damaged.last_mut().unwrap() ^= 0x80;
    std::fs::write(tmp.join("damaged.kpbackup"), &damaged).unwrap();
    let err = refused(&tmp.join("damaged.kpbackup"), &tmp.join("r3"), &[]);
    assert!(err.contains("checksum"), "{err}");
    std::fs::write(tmp.join("short.kpbackup"), &bytes[..bytes.len() - 100]).unwrap();
    let err = refused(&tmp.join("short.kpbackup"), &tmp.join("r3"), &[]);
    assert!(err.contains("cut short"), "{err}");

    // The restored node runs in RU's place and links to IN.
    pair.ru.stop();
    let restored_dir = kp_node::home::NodeDir::new(&restored);
    let node = ProcessNode::start(&restored_dir);
    let api = node.api();
    wait_linked(&api, "IN".parse().unwrap());
    assert_eq!(api.certificate(&before[0])["status"], "delivered");
}

#[test]
fn offline_backup_of_a_stopped_node_restores_its_whole_log() {
    let mut pair = enrolled_processes();
    let tmp = pair.tmp.path().to_owned();
    let ru_api = pair.ru.api();
    wait_linked(&ru_api, "IN".parse().unwrap());
    let n = ru_api.submit(&certificate_json("RU", "IN", None, 7));
    wait_until(Duration::from_secs(20), "delivered", || ru_api.certificate(&n)["status"] == "delivered");
    pair.ru.stop();

    let file = tmp.join("ru-offline.kpbackup");
    let out = kpnode_ok(&["backup", "--dir", s(pair.ru_dir.root()), "--out", s(&file), "--include-keys"]);
    assert!(out.contains("taken offline"), "{out}");
    assert!(!PathBuf::from(format!("{}.partial", file.display())).exists());
    let restored = tmp.join("restored");
    let out = kpnode_ok(&["restore", s(&file), "--dir", s(&restored)]);
    assert!(out.contains("The log verifies: "), "{out}");
    assert_eq!(log_lines(&restored), log_lines(pair.ru_dir.root()), "the whole log of the stopped node");
    assert_eq!(manifest(&file)["log_seq"].as_u64().unwrap() as usize, log_lines(&restored).len());
}

#[test]
fn hostile_backup_files_are_refused_without_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    let file = tmp.path().join("ru.kpbackup");
    kpnode_ok(&["backup", "--dir", s(dir.root()), "--out", s(&file), "--include-keys"]);
    let m = manifest(&file);
    let bytes = std::fs::read(&file).unwrap();
    let parts = layout(&bytes);
    let part = |name: &str| -> Vec<u8> {
        let (_, at, size) = parts.iter().find(|p| p.0 == name).unwrap().clone();
        bytes[at..at + size].to_vec()
    };
    let target = tmp.path().join("target");
    let write = |name: &str, b: Vec<u8>| -> PathBuf {
        let p = tmp.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };

    // The honest file, rebuilt by craft(), restores: the crafted ones differ only in what is named.
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, _, _) in &parts[1..] {
        files.push((name.as_str(), part(name)));
    }
    let honest = write("honest.kpbackup", craft(&m, &files));
    kpnode_ok(&["restore", s(&honest), "--dir", s(&tmp.path().join("honest"))]);

    // A name that would leave the directory.
    let mut evil = files.clone();
    evil.push(("../evil.toml", b"x".to_vec()));
    let err = refused(&write("traversal.kpbackup", craft(&m, &evil)), &target, &[]);
    assert!(err.contains("../evil.toml") && err.contains("not a file of a node directory"), "{err}");
    assert!(!tmp.path().join("evil.toml").exists());

    // A store record claiming 4 GiB.
    let mut huge = files.clone();
    let store = huge.iter_mut().find(|f| f.0 == "store.kpdump").unwrap();
    let mut dump = store.1.clone();
    dump.extend_from_slice(&[0, 0, 0, 2, b'X', b'a', 0xff, 0xff, 0xff, 0xff]);
    store.1 = dump;
    let err = refused(&write("huge.kpbackup", craft(&m, &huge)), &target, &[]);
    assert!(err.contains("store.kpdump") && err.contains("more than"), "{err}");

    // A key outside every part of the store.
    let mut alien = files.clone();
    let store = alien.iter_mut().find(|f| f.0 == "store.kpdump").unwrap();
    store.1.extend_from_slice(&[0, 0, 0, 1, b'?', 0, 0, 0, 0]);
    let err = refused(&write("alien.kpbackup", craft(&m, &alien)), &target, &[]);
    assert!(err.contains("store.kpdump") && err.contains("does not belong"), "{err}");

    // A manifest said to be larger than its bound; another format; not a backup at all.
    let mut big = b"kpnode-backup/1\n".to_vec();
    big.extend_from_slice(&u32::MAX.to_be_bytes());
    let err = refused(&write("big.kpbackup", big), &target, &[]);
    assert!(err.contains("manifest") && err.contains("more than"), "{err}");
    let err = refused(&write("v9.kpbackup", b"kpnode-backup/9\nrest".to_vec()), &target, &[]);
    assert!(err.contains("kpnode-backup/9") && err.contains("kpnode-backup/1"), "{err}");
    let err = refused(&write("zeros.kpbackup", vec![0; 64]), &target, &[]);
    assert!(err.contains("not a kpnode backup"), "{err}");

    // Keys of another node in place of this one's.
    let other = init_dir(tmp.path(), "IN", 0);
    let mut swapped = files.clone();
    for f in swapped.iter_mut().filter(|f| f.0.starts_with("keys/")) {
        f.1 = std::fs::read(other.root().join(f.0)).unwrap();
    }
    let err = refused(&write("swapped.kpbackup", craft(&m, &swapped)), &target, &[]);
    assert!(err.contains("the keys in the backup are those of IN"), "{err}");
}

#[test]
fn restore_builds_inside_the_target_and_refuses_what_is_not_a_directory() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    let file = tmp.path().join("ru.kpbackup");

    // A FILE.partial left by a killed backup is refused, naming the fix.
    let partial = tmp.path().join("ru.kpbackup.partial");
    std::fs::write(&partial, b"half").unwrap();
    let (code, out, err) = kpnode(&["backup", "--dir", s(dir.root()), "--out", s(&file), "--include-keys"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("ru.kpbackup.partial") && err.contains("remove it"), "{err}");
    assert!(!file.exists());
    assert_eq!(std::fs::read(&partial).unwrap(), b"half", "the leftover is not touched");
    std::fs::remove_file(&partial).unwrap();
    kpnode_ok(&["backup", "--dir", s(dir.root()), "--out", s(&file), "--include-keys"]);
    assert!(!partial.exists());

    // The package's layout: an empty node directory the user owns, in a parent it may not
    // write (as root the mode does not stop anything, but nothing may appear there either).
    let parent = tmp.path().join("varlib");
    let target = parent.join("kpnode");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o750)).unwrap();
    let inode = std::fs::metadata(&target).unwrap().ino();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o555)).unwrap();
    let result = kpnode(&["restore", s(&file), "--dir", s(&target)]);
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = result;
    assert_eq!(code, 0, "{out}{err}");
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.ino(), inode, "the existing directory is kept, not replaced");
    assert_eq!(meta.mode() & 0o777, 0o750, "and keeps its mode");
    let names: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("kpnode")], "nothing beside the target");
    let mut inside: Vec<_> =
        std::fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    inside.sort();
    assert!(inside.iter().all(|n| !n.contains("restoring")), "{inside:?}");
    assert!(inside.contains(&"store".to_owned()) && inside.contains(&"node.toml".to_owned()), "{inside:?}");
    assert_eq!(log_lines(&target), log_lines(dir.root()));

    // A regular file or a symbolic link as --dir is refused, naming the problem.
    let plain = tmp.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    let (code, _, err) = kpnode(&["restore", s(&file), "--dir", s(&plain)]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a directory"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    let (code, _, err) = kpnode(&["restore", s(&file), "--dir", s(&link)]);
    assert_eq!(code, 2);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing written through the link");

    // A refused restore into an existing empty directory leaves it empty (no side directory).
    let other = init_dir(tmp.path(), "IN", 0);
    let (code, _, err) =
        kpnode(&["restore", s(&file), "--dir", s(&empty), "--keys", s(&other.root().join("keys"))]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "a refused restore left something in the target"
    );
}
