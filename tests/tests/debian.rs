//! The Debian package script builds a package of this build's binary that holds what
//! docs/operations.md says it installs, with maintainer scripts that create the `kpnode` user
//! and its directory. Installing it needs root: `.ci/run` does that (`dpkg -i`, then `kpnode
//! init` as the `kpnode` user). Without dpkg-deb the test is skipped, and fails under `CI=true`.

use std::path::Path;
use std::process::Command;

use kp_tests::*;

#[test]
fn the_package_holds_the_binary_unit_man_pages_completions_and_creates_the_user() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        skip_part("building the Debian package", "dpkg-deb does not run; install dpkg", None);
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Built under a strict umask, as an operator's shell may have: the package's files must
    // still be readable by everyone.
    let out = Command::new("bash")
        .args(["-c", "umask 077 && exec bash \"$0\" \"$@\""])
        .arg(root.join("packaging/debian/build-deb.sh"))
        .args(["--binary", kpnode_bin().to_str().unwrap(), "--out", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{deb}");

    let listing = Command::new("dpkg-deb").args(["-c", &deb]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "./usr/bin/kpnode",
        "./usr/lib/systemd/system/kpnode.service",
        "./usr/share/man/man1/kpnode.1.gz",
        "./usr/share/man/man1/kpnode-backup.1.gz",
        "./usr/share/man/man1/kpnode-restore.1.gz",
        "./usr/share/bash-completion/completions/kpnode",
        "./usr/share/zsh/vendor-completions/_kpnode",
        "./usr/share/fish/vendor_completions.d/kpnode.fish",
        "./usr/share/kpnode/prometheus/kpnode-alerts.yml",
        "./usr/share/doc/kpnode/operations.md.gz",
        "./usr/share/doc/kpnode/copyright",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "the package lacks {path}:\n{listing}");
    }
    assert!(listing.lines().all(|l| l.contains(" root/root ")), "files owned by root:\n{listing}");
    for l in listing.lines() {
        let mode = l.split_whitespace().next().unwrap_or("");
        let ok = match mode.chars().next() {
            Some('d') => mode == "drwxr-xr-x",
            Some('-') if l.ends_with("./usr/bin/kpnode") => mode == "-rwxr-xr-x",
            Some('-') => mode == "-rw-r--r--",
            _ => true,
        };
        assert!(ok, "built under umask 077, yet not readable by all: {l}");
    }

    let field = |name: &str| {
        let o = Command::new("dpkg-deb").args(["-f", &deb, name]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), "kpnode");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert!(field("Depends").contains("adduser"));

    let control = tmp.path().join("control");
    let o = Command::new("dpkg-deb").args(["-e", &deb, control.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success());
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group --home /var/lib/kpnode"), "{postinst}");
    assert!(postinst.contains("chmod 0700 /var/lib/kpnode"), "{postinst}");
    // An existing kpnode group is used; an existing kpnode login that is a person's is refused.
    assert!(postinst.contains("adduser --system --ingroup kpnode"), "{postinst}");
    assert!(postinst.contains("is not a system account"), "{postinst}");
    let postrm = std::fs::read_to_string(control.join("postrm")).unwrap();
    assert!(
        !postrm.contains("rm -rf") && !postrm.contains("rm -r"),
        "purge never removes the node directory: {postrm}"
    );
    let sh = Command::new("sh").args(["-n"]).arg(control.join("postinst")).status().unwrap();
    assert!(sh.success(), "postinst is not valid sh");
}
