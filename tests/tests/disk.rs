//! A full disk. The daemon runs with a file-size limit (RLIMIT_FSIZE), so that its store's
//! writes fail part way, as they would on a full disk (EFBIG here, ENOSPC there; sled treats
//! both as I/O errors). Submissions then fail with a clear error, nothing is acknowledged
//! that was not stored, and once the limit is lifted the node restarts its store by itself
//! and carries on.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kp_tests::*;

/// Sets the file-size limit of process `pid`.
#[allow(unsafe_code)]
fn set_file_size_limit(pid: i32, bytes: u64) {
    let lim = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: prlimit reads the one struct we pass and writes nothing (null old-limit).
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit failed: {}", std::io::Error::last_os_error());
}

/// `kpnode run`, logging to `log`, with a file-size limit of `limit` bytes (if any) from its
/// first instruction.
fn start(dir: &kp_node::home::NodeDir, log: &std::path::Path, limit: Option<u64>) -> Child {
    let mut cmd = Command::new(kpnode_bin());
    cmd.args(["run", "--dir"])
        .arg(dir.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let Some(bytes) = limit else { return cmd.spawn().expect("kpnode runs") };
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, on a struct on its own stack.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("kpnode runs")
}

/// Kills the daemon if the test ends early (before the tmpfs under it is unmounted).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon_api(dir: &kp_node::home::NodeDir, pid: u32) -> Option<Api> {
    let bytes = std::fs::read(kp_node::node::daemon_file_path(dir)).ok()?;
    let d: kp_node::node::DaemonFile = serde_json::from_slice(&bytes).ok()?;
    let token = dir.token().ok()?;
    (d.pid == pid).then(|| Api::new(d.api, &token))
}

#[test]
fn a_full_disk_refuses_writes_clearly_loses_nothing_acknowledged_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", free_port());
    let log = tmp.path().join("run.log");
    let mut child = start(&dir, &log, Some(2 << 20));
    let pid = child.id();
    let mut api = None;
    wait_until(Duration::from_secs(30), "the daemon answers", || {
        api = daemon_api(&dir, pid).filter(|a| a.get("/healthz").0 == 200);
        api.is_some()
    });
    let api = api.unwrap();

    // Submit until the disk is "full".
    let mut acknowledged = BTreeSet::new();
    let mut refusal = None;
    for i in 0..50_000u64 {
        let Some((s, v)) = api.try_post("/v1/certificates", &certificate_json("RU", "IN", None, i)) else {
            panic!(
                "the API went away before any submission was refused: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        };
        match s {
            201 => {
                acknowledged.insert(v["number"].as_str().unwrap().to_owned());
            }
            503 => {
                refusal = Some(v);
                break;
            }
            other => panic!("unexpected answer {other}: {v}"),
        }
    }
    let refusal = refusal.expect("the file-size limit was never reached");
    let message = refusal["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("the store could not write"), "{message}");
    assert!(message.contains("File too large") || message.contains("No space"), "{message}");
    assert!(message.contains("a file-size limit was reached"), "the cause and its fix are named: {message}");
    assert!(message.contains("reopens its store by itself"), "{message}");
    assert!(message.contains("\"number\": \"RU-"), "the number given out is named: {message}");
    assert!(acknowledged.len() > 100, "only {} fitted", acknowledged.len());
    // While the disk stays full, every submission fails the same clear way.
    wait_until(Duration::from_secs(10), "the failure is logged", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("the store failed; the node answers 503")
    });

    // Space returns: the node restarts its store by itself and takes certificates again.
    set_file_size_limit(pid as i32, libc::RLIM_INFINITY);
    let mut after = None;
    wait_until(Duration::from_secs(60), "the node takes certificates again", || {
        let Some(api) = daemon_api(&dir, pid) else { return false };
        let Some((s, v)) =
            api.try_post("/v1/certificates", &certificate_json("RU", "IN", Some("RU-2026-999999"), 1))
        else {
            return false;
        };
        if s == 201 || s == 200 {
            after = Some((api, v));
            true
        } else {
            false
        }
    });
    let (api, _) = after.unwrap();
    assert!(std::fs::read_to_string(&log).unwrap_or_default().contains("the store accepts writes again"));

    // Everything acknowledged before the disk filled is there.
    let stored: BTreeSet<String> =
        api.certificates("out").iter().map(|c| c["number"].as_str().unwrap().to_owned()).collect();
    let missing: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(stored.contains("RU-2026-999999"));

    // A clean stop, and the log verifies.
    assert_eq!(unsafe_kill(pid as i32, libc::SIGTERM), 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let report = audit(&dir);
    assert_eq!(report.entries, 0, "nothing was delivered, so nothing is logged yet");
}

/// Unmounts its directory when dropped (after the node in it has been killed).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A really full filesystem: the node directory on a small tmpfs, so that sled's writes fail
/// with ENOSPC and the node's own handling of it runs (`store::io_hint`), not a stand-in.
/// The real daemon (`kpnode run`): its API stays up while the store is failed, answering
/// every submission with the same clear 503 and /healthz with 503, on the same address, and
/// once space returns it reopens its store by itself. Needs the right to mount (root here and
/// in CI; elsewhere a visible skip).
#[test]
fn a_really_full_filesystem_fails_every_submission_the_same_clear_way() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"]).arg(&mnt).output();
    match &mounted {
        Ok(o) if o.status.success() => {}
        other => {
            skip_part(
                "the full-filesystem test",
                &format!("a tmpfs cannot be mounted here: {other:?}"),
                None,
            );
            return;
        }
    }
    let _unmount = Unmount(mnt.clone());
    let dir = init_dir(&mnt, "RU", 0);
    // The log stays off the small filesystem.
    let log = tmp.path().join("run.log");
    let mut child = Daemon(start(&dir, &log, None));
    let pid = child.0.id();
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut api = None;
    wait_until(Duration::from_secs(30), "the daemon answers", || {
        api = daemon_api(&dir, pid).filter(|a| a.get("/healthz").0 == 200);
        api.is_some()
    });
    // One client throughout: the API must answer on the address it announced at start.
    let api = api.unwrap();
    let healthz = || Api::new(api.base.trim_start_matches("http://").parse().unwrap(), "").get("/healthz");

    // Submit until the filesystem is full.
    let mut acknowledged = BTreeSet::new();
    let mut first = None;
    for i in 0..50_000u64 {
        let (s, v) = api.post("/v1/certificates", &certificate_json("RU", "IN", None, i));
        match s {
            201 => {
                acknowledged.insert(v["number"].as_str().unwrap().to_owned());
            }
            503 => {
                first = Some(v);
                break;
            }
            other => panic!("unexpected answer {other}: {v}"),
        }
    }
    let first = first.expect("the tmpfs never filled");
    assert!(acknowledged.len() > 10, "only {} fitted", acknowledged.len());
    let clear = |v: &serde_json::Value| {
        let m = v["message"].as_str().unwrap_or_default();
        m.contains("No space left on device")
            && m.contains("free space on the disk holding the store")
            && m.contains("reopens its store by itself")
    };
    assert!(clear(&first), "the cause and its fix are named: {first}");
    wait_until(Duration::from_secs(10), "the failure is logged", || logged().contains("the store failed;"));
    // While the filesystem stays full, every submission fails the same clear way, and
    // /healthz says the store has failed: across several of the daemon's probes of the disk.
    let mut i = 0u64;
    wait_until(Duration::from_secs(20), "the daemon probes the full disk twice", || {
        i += 1;
        let Some((s, v)) = api.try_post("/v1/certificates", &certificate_json("RU", "IN", None, 100_000 + i))
        else {
            panic!("submission {i} on a full disk: the API is gone (connection refused):\n{}", logged())
        };
        assert_eq!(s, 503, "submission {i} on a full disk: {v}");
        assert_eq!(v["error"], first["error"], "{v}");
        assert!(clear(&v), "submission {i} on a full disk: {v}");
        let (s, v) = healthz();
        assert_eq!(s, 503, "/healthz while the store is failed: {v}");
        assert!(v["message"].as_str().unwrap_or_default().contains("No space left on device"), "{v}");
        logged().matches("the store's disk still refuses writes").count() >= 2
    });
    // Reads answer meanwhile: the certificate, or, when sled would have to write to read it
    // (it splits and merges its tree's nodes as it reads, and refuses those writes after an
    // I/O error), a 503 naming the failure and the fix; never a 500.
    for some in [acknowledged.first().unwrap(), acknowledged.last().unwrap()] {
        let (s, v) = api.get(&format!("/v1/certificates/{some}"));
        match s {
            200 => assert_eq!(v["number"], some.as_str(), "{v}"),
            503 => {
                assert_eq!(v["error"], "unavailable", "{v}");
                assert!(clear(&v), "reading {some} while the store is failed: {v}");
            }
            other => panic!("reading {some} while the store is failed: {other} {v}"),
        }
    }
    assert!(child.0.try_wait().unwrap().is_none(), "the daemon exited:\n{}", logged());

    // Space returns, but the node cannot start again yet (here: its node.toml is moved away,
    // which a full disk allows): the daemon answers 503 on the same socket meanwhile, naming
    // both the store's failure and why it is not back yet.
    let config = dir.config_path();
    let aside = mnt.join("node.toml.aside");
    std::fs::rename(&config, &aside).unwrap();
    let grown = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&mnt).status().unwrap();
    assert!(grown.success());
    wait_until(Duration::from_secs(20), "the daemon tries to start again", || {
        logged().contains("the node could not start again yet")
    });
    let (s, v) = api.post("/v1/certificates", &certificate_json("RU", "IN", None, 150_000));
    assert_eq!(s, 503, "while the node cannot start again: {v}");
    let m = v["message"].as_str().unwrap_or_default();
    assert!(clear(&v) && m.contains("could not reopen it yet") && m.contains("node.toml"), "{v}");
    assert_eq!(healthz().0, 503);

    // With node.toml back, the daemon reopens its store by itself, on the same address, and
    // every answer meanwhile is a 503 or the certificate stored.
    std::fs::rename(&aside, &config).unwrap();
    let mut n = 0u64;
    wait_until(Duration::from_secs(60), "the daemon takes certificates again", || {
        n += 1;
        let (s, v) = api.post("/v1/certificates", &certificate_json("RU", "IN", None, 200_000 + n));
        match s {
            201 => true,
            503 => false,
            other => panic!("while the store is reopened: {other} {v}"),
        }
    });
    assert!(logged().contains("the store accepts writes again"), "{}", logged());
    assert_eq!(healthz().0, 200);
    let stored: BTreeSet<String> =
        api.certificates("out").iter().map(|c| c["number"].as_str().unwrap().to_owned()).collect();
    let missing: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");

    // A clean stop.
    assert_eq!(unsafe_kill(pid as i32, libc::SIGTERM), 0);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}: {}", logged());
}

/// Runs `kpnode ARGS` with the node directory `dir` mounted read-only, in a private user and
/// mount namespace (`unshare`), so no privilege is needed and nothing outside changes.
/// `None` when this system does not allow unprivileged namespaces.
fn kpnode_on_read_only(dir: &std::path::Path, args: &[&str]) -> Option<std::process::Output> {
    let probe = Command::new("unshare").args(["-rm", "true"]).status();
    if !matches!(probe, Ok(s) if s.success()) {
        return None;
    }
    let script = r#"d="$1"; bin="$2"; shift 2
mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" || exit 97
exec "$bin" "$@""#;
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(dir)
        .arg(kpnode_bin())
        .args(args)
        .env_remove("KPNODE_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs");
    assert_ne!(out.status.code(), Some(97), "the read-only bind mount failed");
    Some(out)
}

#[test]
fn a_read_only_disk_stops_the_node_at_start_with_the_fix_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", free_port());
    let snapshot = |p: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        let mut stack = vec![p.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    files.push((e.path().display().to_string(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let before = snapshot(dir.root());
    let root = dir.root().display().to_string();

    let Some(out) = kpnode_on_read_only(dir.root(), &["run", "--dir", &root]) else {
        // CI's machine allows them: there, a skip would hide a test that no longer runs.
        skip_part(
            "the read-only disk test",
            "this system does not allow unprivileged user namespaces (unshare -rm)",
            None,
        );
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(stderr.contains(&format!("{root}/store")), "the path is named: {stderr}");
    assert!(stderr.contains("remount it read-write"), "the fix is named: {stderr}");

    // The same from a client command that writes the store with the daemon stopped.
    let bundle = tmp.path().join("IN.bundle");
    let other = init_dir(tmp.path(), "IN", free_port());
    let (code, out, err) = kpnode(&[
        "peer",
        "export",
        "--dir",
        &other.root().display().to_string(),
        "--out",
        &bundle.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let fingerprint =
        out.lines().find_map(|l| l.strip_prefix("fingerprint: ")).expect("a fingerprint").to_owned();
    let out = kpnode_on_read_only(
        dir.root(),
        &["peer", "add", &bundle.display().to_string(), "--fingerprint", &fingerprint, "--dir", &root],
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("remount it read-write"), "{stderr}");

    assert!(before == snapshot(dir.root()), "a refused start changed the node directory");
    // And once writable, the node starts.
    let mut node = ProcessNode::start(&dir);
    node.stop();
}
