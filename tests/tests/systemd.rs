//! Running under systemd: `kpnode run` speaks the notify protocol to a real `$NOTIFY_SOCKET`
//! (READY=1 only once both listeners accept connections, WATCHDOG=1 again and again while the
//! watchdog is on, STOPPING=1 on SIGTERM), and the unit file in `packaging/systemd/` is one
//! systemd accepts.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kp_tests::{free_port, init_dir, kpnode_bin, skip_part, unsafe_kill, Api, ProcessNode};

/// The next notification, or `None` once `deadline` has passed.
fn next_message(socket: &UnixDatagram, deadline: Instant) -> Option<String> {
    let left = deadline.checked_duration_since(Instant::now())?;
    socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
        Err(e) => panic!("reading the notify socket: {e}"),
    }
}

/// Waits for a notification with the line `line`; returns it and every one before it.
fn wait_for(socket: &UnixDatagram, line: &str, timeout: Duration, log: &Path) -> (String, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut before = Vec::new();
    while let Some(m) = next_message(socket, deadline) {
        if m.lines().any(|l| l == line) {
            return (m, before);
        }
        before.push(m);
    }
    panic!(
        "no {line} within {timeout:?}; got {before:?}; the node logged:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// `kpnode run` on `dir` telling `socket_path` (systemd's notify socket), its log in `log`;
/// `watchdog_usec` sets `WATCHDOG_USEC` (or leaves it unset).
fn run_command(dir: &Path, socket_path: &Path, log: &Path, watchdog_usec: Option<&str>) -> Command {
    let mut cmd = Command::new(kpnode_bin());
    cmd.args(["run", "--dir"])
        .arg(dir)
        .env("NOTIFY_SOCKET", socket_path)
        .env("KPNODE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    match watchdog_usec {
        Some(usec) => cmd.env("WATCHDOG_USEC", usec),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    cmd
}

#[test]
fn kpnode_run_notifies_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    let peer_port = free_port();
    let dir = init_dir(tmp.path(), "RU", peer_port);
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let log = tmp.path().join("run.log");
    // The watchdog's timeout: kpnode pings every half of it, 200 ms.
    let child = run_command(dir.root(), &socket_path, &log, Some("400000")).spawn().expect("kpnode runs");
    let mut node = ProcessNode { dir: dir.clone(), child: Some(child), log: log.clone() };
    let pid = node.pid();

    // READY=1, and at that moment both listeners already accept connections.
    let (ready, before) = wait_for(&socket, "READY=1", Duration::from_secs(30), &log);
    assert!(!before.iter().any(|m| m.contains("WATCHDOG=1")), "no watchdog ping before READY=1: {before:?}");
    let daemon: kp_node::node::DaemonFile = serde_json::from_slice(
        &std::fs::read(kp_node::node::daemon_file_path(&dir)).expect("daemon.json at READY"),
    )
    .unwrap();
    assert_eq!(daemon.pid, pid, "daemon.json is this process's");
    assert_eq!(daemon.peers.port(), peer_port);
    std::net::TcpStream::connect(daemon.peers).expect("the peer listener accepts at READY=1");
    let api = Api::new(daemon.api, &dir.token().unwrap());
    assert_eq!(api.get("/healthz").0, 200, "the API answers at READY=1");
    let status = ready.lines().find_map(|l| l.strip_prefix("STATUS=")).expect("a STATUS with READY");
    assert!(
        status.contains(&daemon.peers.to_string()) && status.contains(&daemon.api.to_string()),
        "the status names both addresses: {status}"
    );

    // WATCHDOG=1 again and again: five pings within a few seconds (one every 200 ms). The
    // pings sent while the checks above ran wait in the socket: read them first, so that the
    // pace is timed on pings sent from now on, however long the checks took.
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        let m = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(m, "WATCHDOG=1", "only watchdog pings while serving");
    }
    socket.set_nonblocking(false).unwrap();
    let started = Instant::now();
    for i in 0..5 {
        let (m, other) = wait_for(&socket, "WATCHDOG=1", Duration::from_secs(5), &log);
        assert_eq!(m, "WATCHDOG=1");
        assert!(other.is_empty(), "only watchdog pings while serving (ping {i}): {other:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "pings are paced, not a burst");

    // SIGTERM: STOPPING=1, then a clean exit.
    assert_eq!(unsafe_kill(pid as i32, libc::SIGTERM), 0);
    let (stopping, _) = wait_for(&socket, "STOPPING=1", Duration::from_secs(10), &log);
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
    let status = node.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "kpnode run exited with {status}");
    // Nothing more after the exit (a late ping would mean a task outlived the node).
    assert_eq!(next_message(&socket, Instant::now() + Duration::from_millis(300)), None);
}

#[test]
fn kpnode_run_without_a_watchdog_sends_no_pings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "IN", 0);
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let log = tmp.path().join("run.log");
    let child = run_command(dir.root(), &socket_path, &log, None).spawn().expect("kpnode runs");
    let mut node = ProcessNode { dir: dir.clone(), child: Some(child), log: log.clone() };
    wait_for(&socket, "READY=1", Duration::from_secs(30), &log);
    assert_eq!(unsafe_kill(node.pid() as i32, libc::SIGTERM), 0);
    let (_, between) = wait_for(&socket, "STOPPING=1", Duration::from_secs(10), &log);
    assert!(!between.iter().any(|m| m.contains("WATCHDOG")), "no WATCHDOG_USEC, no pings: {between:?}");
    assert!(node.child.take().unwrap().wait().unwrap().success());
}

/// A failed store (a full disk, here a file-size limit) is not a hang: `systemctl status` says
/// what failed, and the watchdog keeps being told the node is alive while it answers 503 and
/// reopens its store, so systemd does not kill a node that is doing what it should.
#[test]
fn a_failed_store_shows_in_the_status_and_the_watchdog_keeps_pinging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let log = tmp.path().join("run.log");
    let limit: u64 = 2 << 20;
    let mut cmd = run_command(dir.root(), &socket_path, &log, Some("400000"));
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, on a struct on its own stack.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut node =
        ProcessNode { dir: dir.clone(), child: Some(cmd.spawn().expect("kpnode runs")), log: log.clone() };
    wait_for(&socket, "READY=1", Duration::from_secs(30), &log);
    let api = node.api();
    let mut refused = false;
    for i in 0..50_000u64 {
        match api.try_post("/v1/certificates", &kp_tests::certificate_json("RU", "IN", None, i)) {
            Some((201, _)) => {}
            Some((503, _)) => {
                refused = true;
                break;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(refused, "the file-size limit was never reached");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let m = next_message(&socket, deadline).expect("a STATUS naming the failed store");
        if let Some(s) = m.lines().find_map(|l| l.strip_prefix("STATUS=")) {
            break s.to_owned();
        }
    };
    assert!(failed.contains("the store failed") && failed.contains("503"), "{failed}");
    for _ in 0..5 {
        wait_for(&socket, "WATCHDOG=1", Duration::from_secs(5), &log);
    }
    assert_eq!(unsafe_kill(node.pid() as i32, libc::SIGTERM), 0);
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10), &log);
    assert!(node.child.take().unwrap().wait().unwrap().success());
}

fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/kpnode.service")
}

/// The unit file as sections of (key, value) lines.
fn parse_unit(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let (key, value) =
            line.split_once('=').unwrap_or_else(|| panic!("line {}: not KEY=value: {line}", n + 1));
        let section = current.clone().unwrap_or_else(|| panic!("line {}: a key before any section", n + 1));
        sections.entry(section).or_default().push((key.trim().to_owned(), value.trim().to_owned()));
    }
    sections
}

/// Whatever systemd is installed or not, the unit file is well formed, every key is one
/// systemd knows (a misspelt hardening key is ignored by systemd with a mere warning), and it
/// says what the node needs.
#[test]
fn the_unit_file_is_well_formed_and_hardened() {
    let text = std::fs::read_to_string(unit_file()).unwrap();
    let sections = parse_unit(&text);
    let known: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("Unit", &["Description", "Documentation", "Wants", "After", "Requires"][..]),
        (
            "Service",
            &[
                "Type",
                "NotifyAccess",
                "ExecStart",
                "User",
                "Group",
                "StateDirectory",
                "StateDirectoryMode",
                "UMask",
                "WorkingDirectory",
                "TimeoutStartSec",
                "TimeoutStopSec",
                "WatchdogSec",
                "Restart",
                "RestartSec",
                "RestartPreventExitStatus",
                "LimitNOFILE",
                "NoNewPrivileges",
                "ProtectSystem",
                "ProtectHome",
                "PrivateTmp",
                "PrivateDevices",
                "PrivateUsers",
                "PrivateIPC",
                "PrivateMounts",
                "ProtectKernelTunables",
                "ProtectKernelModules",
                "ProtectKernelLogs",
                "ProtectControlGroups",
                "ProtectClock",
                "ProtectHostname",
                "ProtectProc",
                "RestrictAddressFamilies",
                "RestrictNamespaces",
                "RestrictRealtime",
                "RestrictSUIDSGID",
                "LockPersonality",
                "MemoryDenyWriteExecute",
                "RemoveIPC",
                "KeyringMode",
                "DevicePolicy",
                "CapabilityBoundingSet",
                "AmbientCapabilities",
                "SystemCallArchitectures",
                "SystemCallFilter",
                "SystemCallErrorNumber",
            ][..],
        ),
        ("Install", &["WantedBy"][..]),
    ]);
    for (section, keys) in &sections {
        let allowed = known.get(section.as_str()).unwrap_or_else(|| panic!("unknown section [{section}]"));
        for (k, _) in keys {
            assert!(allowed.contains(&k.as_str()), "unknown key {k} in [{section}]");
        }
    }
    let service: BTreeMap<&str, Vec<&str>> =
        sections["Service"].iter().fold(BTreeMap::new(), |mut m, (k, v)| {
            m.entry(k.as_str()).or_default().push(v.as_str());
            m
        });
    let one = |k: &str| -> &str {
        match service.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("[Service] {k}= must be set once: {other:?}"),
        }
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("User"), "kpnode");
    assert_eq!(one("StateDirectory"), "kpnode");
    assert_eq!(one("ExecStart"), "/usr/bin/kpnode run --dir /var/lib/kpnode");
    assert!(one("WatchdogSec").ends_with('s'));
    for k in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
    ] {
        assert_eq!(one(k), "yes", "{k}");
    }
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(one("CapabilityBoundingSet"), "", "no capabilities");
    assert!(service["SystemCallFilter"].contains(&"@system-service"));
    // The node's own need, with default node.toml limits, is under 600 descriptors.
    let nofile: u64 = one("LimitNOFILE").parse().expect("LimitNOFILE is a number");
    assert!((1024..=65_536).contains(&nofile), "LimitNOFILE={nofile}");
}

/// The real `systemd-analyze verify` accepts the unit (with ExecStart pointing at this
/// build's binary, which it checks exists) without a single warning.
#[test]
fn systemd_analyze_verify_accepts_the_unit_file() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        return skip_part("systemd-analyze verify", "systemd-analyze is not installed", None);
    };
    assert!(out.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit_file()).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/kpnode "));
    let unit = tmp.path().join("kpnode.service");
    std::fs::write(
        &unit,
        text.replace("ExecStart=/usr/bin/kpnode ", &format!("ExecStart={} ", kpnode_bin().display())),
    )
    .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {stderr}");
    assert!(stderr.trim().is_empty(), "systemd-analyze verify warns: {stderr}");

    // And a unit with a misspelt key is caught by the same check (it only warns).
    std::fs::write(&unit, std::fs::read_to_string(&unit).unwrap().replace("ProtectHome=", "ProtectHomes="))
        .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key 'ProtectHomes'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
