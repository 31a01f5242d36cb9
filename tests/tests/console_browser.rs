//! The console in a real browser: two `kpnode run` daemons, accounts made through the API,
//! and `tests/console/browser.py` (Playwright for Python driving Debian's headless Chromium)
//! as the clerk at the exporter (who issues the certificate through the console's form, one
//! mistake shown at its field and fixed; whose void is refused 403, as is a form without its CSRF token,
//! and whose account five wrong passwords lock), the customs officer at the importer, and a
//! Russian-speaking supervisor, whose dashboard is in Russian. Every page is
//! screenshot into `<target>/console-screenshots/` and checked by axe-core, which must find no
//! serious or critical violation.
//!
//! Needs `/usr/bin/chromium` (or `KPNODE_CHROMIUM`), `python3` with the `playwright` module,
//! and axe-core's `axe.min.js` (`KPNODE_AXE_JS`, or `<target>/axe-core/package/axe.min.js`,
//! where `.ci/run` unpacks `npm pack axe-core`). Without them the test says it is skipped;
//! under CI it fails.

use std::path::PathBuf;
use std::process::Command;

use kp_tests::*;

/// `target/` (or `CARGO_TARGET_DIR`): the test executable is `<target>/debug/deps/<test>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("<target>/<profile>/deps/<test>").to_path_buf()
}

/// What the browser suite needs, or why it cannot run here.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium =
        std::env::var_os("KPNODE_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.exists() {
        return Err(format!("{} is missing (apt-get install chromium)", chromium.display()));
    }
    let playwright = Command::new("python3").args(["-c", "import playwright.sync_api"]).output();
    if !playwright.is_ok_and(|o| o.status.success()) {
        return Err("python module playwright is missing (pip install playwright; the browser is Debian's chromium, never `playwright install`)".into());
    }
    let axe = std::env::var_os("KPNODE_AXE_JS")
        .map_or_else(|| target_dir().join("axe-core/package/axe.min.js"), PathBuf::from);
    if !axe.exists() {
        return Err(format!(
            "{} is missing (cd {} && npm pack axe-core@4 && tar xzf axe-core-*.tgz, or set KPNODE_AXE_JS)",
            axe.display(),
            axe.parent().and_then(|p| p.parent()).unwrap_or(&axe).display()
        ));
    }
    Ok((chromium, axe))
}

#[test]
fn the_console_in_a_real_browser_with_axe_core() {
    let (chromium, axe) = match tools() {
        Ok(t) => t,
        Err(why) => {
            return skip_part("the console's browser suite", &why, Some("KPNODE_REQUIRE_PYTHON_TOOLS"))
        }
    };
    let pair = enrolled_processes();
    let (ru, inn) = (pair.ru.api(), pair.inn.api());
    wait_linked(&ru, "IN".parse().unwrap());
    let password = "a long enough passphrase";
    for (api, name, role, language) in [
        (&ru, "clara", "clerk", "en"),
        (&inn, "cora", "customs", "en"),
        (&inn, "sam", "supervisor", "en"),
        (&ru, "ada", "auditor", "en"),
        (&ru, "rita", "supervisor", "ru"),
    ] {
        let body =
            format!(r#"{{"name":"{name}","role":"{role}","language":"{language}","password":"{password}"}}"#);
        let (status, v) = api.post("/v1/users", &body);
        assert_eq!(status, 201, "{v}");
    }
    // A suspended participant: the issue form's picker marks it and the server refuses it.
    let (status, v) =
        ru.post("/v1/participants/ZW", r#"{"status":"suspended","reason":"Plenary decision 2026/9"}"#);
    assert_eq!(status, 200, "{v}");
    let expires_on = kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date().add_days(30).unwrap();
    let out = target_dir().join("console-screenshots");
    let _ = std::fs::remove_dir_all(&out);
    let today = kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date();
    let config = serde_json::json!({
        "ru": ru.base, "in": inn.base, "password": password, "expires_on": expires_on.to_string(),
        "today": today.to_string(), "out": out, "axe": axe, "chromium": chromium,
        "kpnode": kpnode_bin(), "ru_dir": pair.ru_dir.root(), "ru_bundle": pair.ru_dir.root().join("self.bundle"),
    });
    let config_path = pair.tmp.path().join("browser.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console/browser.py");
    let run = Command::new("python3").arg(&script).arg(&config_path).output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser suite failed ({}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON report");
    let pages = report["pages"].as_array().unwrap();
    assert!(pages.len() >= 22, "every page was visited: {pages:?}");
    for p in pages {
        let shot = out.join(format!("{}.png", p.as_str().unwrap()));
        assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "{} was written", shot.display());
    }
    assert_eq!(report["violations"], serde_json::json!([]), "axe-core found serious or critical violations");
    // What the browser did is what the nodes hold: the clerk's form issued this certificate,
    // with the parcels typed into it, and its import was confirmed with a discrepancy.
    let number = report["issued"].as_str().expect("the number the form issued").to_owned();
    let issued = ru.certificate(&number);
    assert_eq!(issued["carats"], "1830.35", "{issued}");
    assert_eq!(issued["parcels"], 2, "{issued}");
    assert_eq!(issued["certificate"]["exporter"]["name"], "ALROSA PJSC", "{issued}");
    assert_eq!(
        issued["certificate"]["shipment"],
        serde_json::json!({"port_of_entry": "INBOM", "transport_mode": "air", "container_seals": ["SEAL-0045117", "SEAL-0045118"]}),
        "the inputs found by their labels are the certificate's: {issued}"
    );
    assert_eq!(inn.certificate(&number)["status"], "import_discrepancy");
    assert_eq!(ru.certificate(&number)["status"], "import_discrepancy");
    // The supervisor's status change from the console is the importer's registry now; the
    // wrong fingerprint enrolled nothing (RU stays the one partner, with its own fingerprint).
    let (_, zw) = inn.get("/v1/participants/ZW");
    assert_eq!(zw["participant"]["status"], "suspended", "{zw}");
    let (_, peers) = inn.get("/v1/peers");
    assert_eq!(peers.as_array().map(Vec::len), Some(1), "{peers}");
}
