//! `kpnode completions` and `kpnode man`: generated from the clap definitions the command
//! line is parsed with. The bash script is sourced by a real bash and completes subcommands
//! and options; every man page renders under groff (with preconv, as `man` runs it) without a warning. zsh and fish are not
//! installed here: their scripts are checked for the commands they must name. Without groff
//! (Debian's `groff-base`) the rendering part is skipped, and fails under `CI=true`.

use std::process::Command;

use kp_tests::*;

/// What bash completes for the words of a command line, as the shell's `complete` does.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        r#"source {script:?}
COMP_WORDS=({line})
COMP_CWORD={cword}
COMP_LINE="{line}"
COMP_POINT=${{#COMP_LINE}}
_kpnode kpnode "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        cword = words.len() - 1
    );
    let out = Command::new("bash").arg("-c").arg(&program).output().expect("bash runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn bash_completion_sources_and_completes_subcommands_and_options() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("kpnode.bash");
    std::fs::write(&script, kpnode_ok(&["completions", "bash"])).unwrap();

    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -e; source {script:?}; complete -p kpnode"))
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("_kpnode"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let top = bash_complete(&script, &["kpnode", ""]);
    for sub in ["init", "run", "peer", "cert", "log", "backup", "restore", "completions", "man"] {
        assert!(top.iter().any(|w| w == sub), "no {sub} in {top:?}");
    }
    let peer = bash_complete(&script, &["kpnode", "peer", ""]);
    for sub in ["add", "export", "list", "remove"] {
        assert!(peer.iter().any(|w| w == sub), "no {sub} in {peer:?}");
    }
    let init = bash_complete(&script, &["kpnode", "init", "--"]);
    for opt in ["--participant", "--authority", "--dir"] {
        assert!(init.iter().any(|w| w == opt), "no {opt} in {init:?}");
    }
}

#[test]
fn zsh_and_fish_scripts_name_every_command() {
    let zsh = kpnode_ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef kpnode"), "{}", &zsh[..zsh.len().min(200)]);
    let fish = kpnode_ok(&["completions", "fish"]);
    for sub in ["init", "backup", "restore", "peer", "log"] {
        assert!(zsh.contains(&format!("'{sub}:")), "zsh lacks {sub}");
        assert!(fish.contains(&format!("-a \"{sub}\"")), "fish lacks {sub}");
    }
    let (code, _, err) = kpnode(&["completions", "powershell"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bash") && err.contains("zsh") && err.contains("fish"), "{err}");
}

#[test]
fn man_pages_cover_every_command_and_render() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man");
    let out = kpnode_ok(&["man", "--out", dir.to_str().unwrap()]);
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert!(out.contains(&format!("Wrote {} man pages", pages.len())), "{out}");
    for page in
        ["kpnode.1", "kpnode-peer-add.1", "kpnode-backup.1", "kpnode-restore.1", "kpnode-log-verify.1"]
    {
        assert!(pages.iter().any(|p| p == page), "no {page} in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("-help")), "{pages:?}");
    // The long help is in the page: the same text as `kpnode backup --help`.
    let backup = std::fs::read_to_string(dir.join("kpnode-backup.1")).unwrap();
    assert!(backup.contains("\\-\\-include\\-keys") && backup.contains("unencrypted"), "{backup}");

    for page in &pages {
        let path = dir.join(page);
        match Command::new("groff").args(["-k", "-man", "-Tutf8", "-ww", "-z"]).arg(&path).output() {
            Err(e) => {
                skip_part(
                    "rendering the man pages",
                    &format!("groff does not run ({e}); install groff-base"),
                    None,
                );
                return;
            }
            Ok(r) => {
                let err = String::from_utf8_lossy(&r.stderr);
                assert!(r.status.success() && err.trim().is_empty(), "{page}: groff: {err}");
            }
        }
    }
    // And as a reader sees it.
    let r = Command::new("groff")
        .args(["-k", "-man", "-Tutf8"])
        .arg(dir.join("kpnode-restore.1"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("kpnode-restore") && text.contains("log verify"), "{text}");
}
