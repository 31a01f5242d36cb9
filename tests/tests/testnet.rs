//! The local testnet script, end to end with three nodes: up (with a console user of each
//! role per node), demo, and every demo
//! certificate at its expected final status on both sides (read from `kpnode cert list
//! --json`); then down, leaving no kpnode process behind.

use std::path::Path;
use std::process::Command;

use kp_tests::*;

fn script(dir: &Path, port: u16, args: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(root.join("scripts/testnet.sh"))
        .args(args)
        .env("KPNODE_TESTNET_DIR", dir)
        .env("KPNODE_TESTNET_PORT", port.to_string())
        .env("KPNODE_BIN", kpnode_bin())
        .output()
        .expect("bash runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A base port whose peer and API ranges are free right now. All of them (base to base + 106)
/// lie between 10,000 and 30,102, below the kernel's ephemeral range (32,768 and up by
/// default): the script binds them seconds after this check, and a port in that range could
/// meanwhile be handed to an outgoing connection or a listener on port 0.
fn free_base() -> u16 {
    for _ in 0..50 {
        let base = 10_000 + (std::process::id() as u16 % 200) * 100 + (free_port() % 97);
        let free = (0..7).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + 100 + i)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port range")
}

/// Stops whatever the script started, even if the test fails half-way.
struct Down<'a>(&'a Path, u16);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = script(self.0, self.1, &["down", "--clean"]);
        }
    }
}

#[test]
fn three_nodes_up_demo_and_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testnet");
    let port = free_base();
    let _down = Down(&dir, port);

    let (ok, out) = script(&dir, port, &["up", "--nodes", "RU,IN,AE"]);
    assert!(ok, "up failed:\n{out}");
    assert!(out.contains("all 6 links") || out.contains("RU   ·"), "{out}");
    // One console user of each role per node, with the URL and credentials printed.
    let url = format!("http://127.0.0.1:{}/", port + 100);
    assert!(out.contains(&url) && out.contains("customs / ru-customs-demo-pass"), "{out}");
    let users = kpnode_ok(&["users", "list", "--json", "--dir", dir.join("IN").to_str().unwrap()]);
    let users: serde_json::Value = serde_json::from_str(&users).unwrap();
    let roles: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["auditor", "clerk", "customs", "supervisor"], "{users}");

    let (ok, out) = script(&dir, port, &["demo"]);
    assert!(ok, "demo failed:\n{out}");

    // The demo's plan, and each certificate's status as each node lists it.
    let plan = std::fs::read_to_string(dir.join("demo.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = plan.lines().map(|l| l.split('\t').collect()).collect();
    assert!(rows.len() >= 3, "{plan}");
    let listed = |code: &str| -> Vec<serde_json::Value> {
        let (c, stdout, err) = kpnode(&["cert", "list", "--json", "--dir", dir.join(code).to_str().unwrap()]);
        assert_eq!(c, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap().as_array().unwrap().clone()
    };
    let status_of = |code: &str, number: &str| -> String {
        listed(code)
            .iter()
            .find(|c| c["number"] == number)
            .map(|c| c["status"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{number} not listed at {code}"))
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in &rows {
        let (number, from, to, expected) = (r[0], r[1], r[2], r[3]);
        let at_importer = if expected == "delivered" { "received" } else { expected };
        assert_eq!(status_of(from, number), expected, "{number} at {from}");
        assert_eq!(status_of(to, number), at_importer, "{number} at {to}");
        seen.insert(expected);
    }
    // With RU, IN and AE: one confirmed, one voided, one with a discrepancy.
    for s in ["import_confirmed", "voided", "import_discrepancy"] {
        assert!(seen.contains(s), "no certificate ended {s}: {plan}");
    }

    // The first certificate printed, where the demo says.
    let first = rows[0][0];
    let pdf = dir.join("demo").join(format!("{first}.pdf"));
    assert!(
        out.contains(&format!("Printable certificate of {first}")) && out.contains(pdf.to_str().unwrap()),
        "{out}"
    );
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"), "{}", pdf.display());

    // up again on existing data resumes.
    let (ok, out) = script(&dir, port, &["up", "--nodes", "RU,IN,AE"]);
    assert!(ok && out.contains("resuming"), "{out}");

    let pids: Vec<i32> = ["RU", "IN", "AE"]
        .iter()
        .map(|c| std::fs::read_to_string(dir.join(c).join("kpnode.pid")).unwrap().trim().parse().unwrap())
        .collect();
    let (ok, out) = script(&dir, port, &["down"]);
    assert!(ok, "{out}");
    for pid in pids {
        assert_ne!(unsafe_kill(pid, 0), 0, "kpnode pid {pid} is still running after down");
    }
    assert!(dir.join("RU/node.toml").exists(), "down keeps the data");
    let (ok, _) = script(&dir, port, &["down", "--clean"]);
    assert!(ok && !dir.exists());
}

/// Without KPNODE_BIN the script takes the release binary from where cargo builds it:
/// CARGO_TARGET_DIR when set (relative to the repository root when relative, as cargo reads
/// it), not ./target. `status` looks the binary up before anything else, so a found binary
/// gets as far as the missing testnet, and a missing one is named with its full path.
#[test]
fn the_binary_is_looked_up_in_cargo_target_dir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let status = |target: &Path| -> String {
        let out = Command::new("bash")
            .arg(root.join("scripts/testnet.sh"))
            .arg("status")
            .env_remove("KPNODE_BIN")
            .env("CARGO_TARGET_DIR", target)
            .env("KPNODE_TESTNET_DIR", tmp.path().join("no-testnet"))
            .output()
            .expect("bash runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let empty = tmp.path().join("empty-target");
    std::fs::create_dir_all(&empty).unwrap();
    let err = status(&empty);
    assert!(err.contains(&format!("{}/release/kpnode is missing", empty.display())), "{err}");

    let target = tmp.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::os::unix::fs::symlink(kpnode_bin(), target.join("release/kpnode")).unwrap();
    let err = status(&target);
    assert!(err.contains("no testnet in") && !err.contains("is missing"), "{err}");

    // A relative CARGO_TARGET_DIR, from the repository root whatever the current directory.
    // (The test runs in tests/, so a path taken from the current directory would miss.)
    let relative = relative_path(&root, &target);
    let err = status(&relative);
    assert!(err.contains("no testnet in") && !err.contains("is missing"), "{relative:?}: {err}");
}

/// `to` as a path relative to `from` (both absolute): enough `..` to reach `/`, then `to`.
fn relative_path(from: &Path, to: &Path) -> std::path::PathBuf {
    let mut p = std::path::PathBuf::new();
    for _ in 1..from.components().count() {
        p.push("..");
    }
    p.join(to.strip_prefix("/").unwrap())
}
