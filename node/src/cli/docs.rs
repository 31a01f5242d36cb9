//! `kpnode completions SHELL` and `kpnode man --out DIR`: shell completions and man pages,
//! generated from the same clap definitions that parse the command line, so they cannot
//! drift from it. The Debian package ships both (see packaging/debian).

use std::path::PathBuf;

use clap::CommandFactory;

use super::{CliResult, Failure};

/// A shell `kpnode completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub const COMPLETIONS_LONG_ABOUT: &str = "Write the completion script for SHELL to standard \
output, generated from kpnode's own argument definitions.\n\n\
bash:  kpnode completions bash > /usr/share/bash-completion/completions/kpnode\n\
zsh:   kpnode completions zsh > /usr/share/zsh/vendor-completions/_kpnode\n\
fish:  kpnode completions fish > /usr/share/fish/vendor_completions.d/kpnode.fish\n\n\
The Debian package installs all three.";

pub const MAN_LONG_ABOUT: &str = "Write the man pages, one per command and subcommand \
(kpnode.1, kpnode-peer.1, kpnode-peer-add.1, …), into DIR, creating it if needed. They are \
generated from the same definitions as --help, long help included.\n\n\
Read one without installing: man -l DIR/kpnode-backup.1";

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing; pages in it are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn completions(a: CompletionsArgs) -> CliResult {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kpnode", &mut out);
    use std::io::Write;
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| Failure::runtime(format!("cannot write to standard output: {e}")))
}

pub fn man(a: ManArgs) -> CliResult {
    std::fs::create_dir_all(&a.out)
        .map_err(|e| Failure::runtime(format!("{}: cannot create: {e}", a.out.display())))?;
    // generate_to builds the command itself, with the help subcommand disabled: building it
    // here first would add a page per `help` pseudo-subcommand.
    clap_mangen::generate_to(super::Cli::command(), &a.out)
        .map_err(|e| Failure::runtime(format!("{}: cannot write the man pages: {e}", a.out.display())))?;
    let mut pages = 0usize;
    if let Ok(entries) = std::fs::read_dir(&a.out) {
        pages = entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("kpnode") && name.ends_with(".1")
            })
            .count();
    }
    println!("Wrote {pages} man pages to {}", a.out.display());
    Ok(())
}
