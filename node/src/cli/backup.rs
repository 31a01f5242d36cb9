//! `kpnode backup` and `kpnode restore`: a node in one file, and back (see [`crate::backup`]
//! for the file and its checks).

use std::io::Seek;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::peer::{access, Access};
use super::{CliResult, DirArg, Failure};
use crate::backup::{self, BackupError, Manifest, Source};
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;
use crate::store::{get_record, meta, LogHead, Storage, Tree};

pub const BACKUP_LONG_ABOUT: &str = "Write the node into one file: a consistent snapshot of \
its store (the log, certificates, queues, peers, registry), node.toml and, with \
--include-keys, its private keys; a manifest (format, participant, fingerprint, log head, \
time, each file's size and SHA-256) and a checksum of the whole file.\n\n\
With the daemon running, the snapshot is taken by the daemon through its API, between two \
writes (writes wait while the store is read); with it stopped, from the store directly, \
holding its lock. Either way the node keeps its data; nothing is changed.\n\n\
Keys: without --include-keys the file holds no private key, and restoring it needs a copy of \
the node's keys/ directory kept apart (`kpnode restore --keys DIR`). With --include-keys the \
signing and TLS keys are in the file unencrypted, exactly as they are in keys/: keep such a \
file as you keep the keys (offline media, a safe), never on a shared drive. The file is \
created with mode 0600 either way: it holds every certificate the node exchanged.\n\n\
An existing FILE is never overwritten. The file is written under FILE.partial and linked to \
FILE when complete (which fails if FILE exists). A FILE.partial left by a backup that was \
killed is refused, naming it: remove it once no backup is running.";

pub const RESTORE_LONG_ABOUT: &str = "Restore a backup file into a new node directory. \
Refuses a DIR that is not empty (a node is never overwritten). Checks the file before using \
it: its format, the manifest's checksum, every file's size and SHA-256 against the manifest \
(a damaged file is named), and the checksum of the whole file; names are limited to those of \
a node directory. The checksums detect a damaged file, not a deliberate change (anyone who \
can write the file can recompute them). Then it checks that the keys belong to the node of the backup, that the \
restored log ends where the manifest says, and verifies the whole log as `kpnode log verify` \
does: the log's entries are bound to the signatures in them, the other records are not. \
The restore is built in a side directory inside DIR (so only DIR needs to be writable) and \
moved up only when every check passes; otherwise nothing is left in DIR (and DIR is removed \
if restore created it). DIR must not be a symbolic link or a regular file.\n\n\
A backup taken without --include-keys needs --keys DIR: the node's keys/ directory, kept \
apart. A new API token is written (the old one is not in the backup).\n\n\
After restoring an older backup, the node lacks what happened since: see docs/operations.md \
(\"Restore\") for what partners resend by themselves and what is lost.";

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The backup file to write (must not exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Put the private signing and TLS keys in the file, unencrypted (see the long help).
    #[arg(long)]
    pub include_keys: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The directory to restore into: must not exist, or be empty.
    #[arg(long, value_name = "DIR", required_unless_present = "list")]
    pub dir: Option<PathBuf>,
    /// The node's keys/ directory kept apart, for a backup taken without --include-keys.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Only print the manifest (after checking the format and the manifest's checksum); the
    /// rest of the file is not read or checked. Restore nothing.
    #[arg(long, conflicts_with = "keys")]
    pub list: bool,
}

impl From<BackupError> for Failure {
    fn from(e: BackupError) -> Failure {
        let code = match &e {
            BackupError::Refused { .. } | BackupError::Invalid(_) => 2,
            BackupError::Store(s) => return Failure::store(s),
            _ => 1,
        };
        Failure { code, lines: e.to_string().lines().map(str::to_owned).collect() }
    }
}

/// A file created empty beside `out` and unlinked at once: only its descriptor reaches it,
/// so an interrupted backup leaves nothing behind.
fn scratch_file(out: &Path) -> Result<std::fs::File, Failure> {
    let path = with_suffix(out, ".dump.tmp");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Failure::runtime(format!("{}: cannot create: {e}", path.display())))?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn backup(a: BackupArgs) -> CliResult {
    let home = NodeDir::new(&a.dir.dir);
    let config = home.config()?;
    if a.out.exists() {
        return Err(Failure::input(format!(
            "{}: already exists; a backup never overwrites a file, name a new one",
            a.out.display()
        )));
    }
    let partial = with_suffix(&a.out, ".partial");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::input(format!(
                    "{}: already exists: left by a backup that was interrupted, or one running now; once no backup is running, remove it and run this again",
                    partial.display()
                ))
            } else {
                Failure::runtime(format!("{}: cannot create: {e}", partial.display()))
            }
        })?;
    let result = write_backup(&home, &config, file, &a).and_then(|m| publish(&partial, &a.out).map(|()| m));
    match result {
        Ok(m) => {
            let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
            println!(
                "Backup of {} written to {} ({size} bytes, taken {}): {} store records, log up to entry {} ({}), keys {}",
                m.participant,
                a.out.display(),
                m.taken,
                m.store_records,
                m.log_seq,
                &m.log_hash[..16.min(m.log_hash.len())],
                if m.keys_included { "INCLUDED, unencrypted: keep this file as you keep the keys" } else { "not included (restore with --keys)" }
            );
            Ok(())
        }
        Err(f) => {
            let _ = std::fs::remove_file(&partial);
            Err(f)
        }
    }
}

/// Gives the complete `partial` its name `out`: a hard link, which fails if `out` exists (so
/// a file that appeared meanwhile is never overwritten, unlike a rename), then the
/// `.partial` name is removed and the directory synced so both survive a crash.
fn publish(partial: &Path, out: &Path) -> Result<(), Failure> {
    match std::fs::hard_link(partial, out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Failure::input(format!(
                "{}: appeared while the backup was written; a backup never overwrites a file, name a new one",
                out.display()
            )));
        }
        // A file system without hard links (FAT on removable media): checked, then renamed.
        Err(_) if std::fs::symlink_metadata(out).is_err() => {
            return std::fs::rename(partial, out)
                .map_err(|e| Failure::runtime(format!("{}: cannot rename: {e}", out.display())))
                .and_then(|()| backup::sync_dir(parent_dir(out)).map_err(Failure::from));
        }
        Err(e) => return Err(Failure::runtime(format!("{}: cannot create: {e}", out.display()))),
    }
    if let Err(e) = std::fs::remove_file(partial) {
        let _ = std::fs::remove_file(out);
        return Err(Failure::runtime(format!("{}: cannot remove: {e}", partial.display())));
    }
    backup::sync_dir(parent_dir(out)).map_err(Failure::from)
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_backup(
    home: &NodeDir,
    config: &kp_config::NodeConfig,
    file: std::fs::File,
    a: &BackupArgs,
) -> Result<Manifest, Failure> {
    let keys = home.keys(config)?;
    let mut manifest = Manifest {
        format: backup::FORMAT.into(),
        created_at: SystemClock.now().to_string(),
        kpnode_version: env!("CARGO_PKG_VERSION").into(),
        participant: config.participant.to_string(),
        fingerprint: keys.fingerprint().to_string(),
        store_format: String::new(),
        log_seq: 0,
        log_hash: String::new(),
        taken: String::new(),
        store_records: 0,
        keys_included: a.include_keys,
        files: Vec::new(),
    };
    drop(keys);
    let dump: Source<Box<dyn std::io::Read + Send>> = match access(home)? {
        Access::Daemon(client) => {
            let s = client.snapshot()?;
            manifest.taken = "online".into();
            manifest.store_format = s.store_format;
            manifest.log_seq = s.log_seq;
            manifest.log_hash = s.log_hash;
            manifest.store_records = s.records;
            Source::Dump { reader: s.body, size: s.bytes, sha256: s.sha256 }
        }
        Access::Offline(store) => {
            let mut scratch = scratch_file(&a.out)?;
            let summary = store.dump(&mut scratch).map_err(|e| Failure::store(&e))?;
            let head: LogHead = get_record(&store, Tree::Meta, meta::LOG_HEAD)
                .map_err(|e| Failure::store(&e))?
                .unwrap_or_default();
            let format =
                store.get(Tree::Meta, meta::FORMAT).map_err(|e| Failure::store(&e))?.unwrap_or_default();
            drop(store);
            scratch.rewind().map_err(|e| Failure::runtime(format!("the store dump: {e}")))?;
            manifest.taken = "offline".into();
            manifest.store_format = String::from_utf8_lossy(&format).into_owned();
            manifest.log_seq = head.next_seq.saturating_sub(1);
            manifest.log_hash = head.last_hash.to_hex();
            manifest.store_records = summary.records;
            Source::Dump { reader: Box::new(scratch), size: summary.bytes, sha256: summary.sha256 }
        }
    };
    // Read after the snapshot: a key rotated meanwhile is then in the file too.
    let mut files: Vec<(String, Source<Box<dyn std::io::Read + Send>>)> =
        backup::node_files(home, a.include_keys)?
            .into_iter()
            .map(|(name, bytes)| (name, Source::Bytes(bytes)))
            .collect();
    files.push((backup::STORE_FILE.into(), dump));
    let mut out = file;
    backup::write(&mut out, manifest.clone(), files)?;
    out.sync_all().map_err(|e| Failure::runtime(format!("the backup file: {e}")))?;
    Ok(manifest)
}

pub fn restore(a: RestoreArgs) -> CliResult {
    if a.list {
        let m = backup::manifest_of(&a.file)?;
        println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        return Ok(());
    }
    let Some(dir) = a.dir else {
        return Err(Failure::input("name the directory to restore into with --dir DIR"));
    };
    let r = backup::restore(&a.file, &dir, a.keys.as_deref())?;
    let m = &r.manifest;
    println!(
        "Restored {} (fingerprint {}) into {} from a backup taken {} ({}): {} store records",
        m.participant,
        m.fingerprint,
        dir.display(),
        m.created_at,
        m.taken,
        m.store_records
    );
    println!(
        "The log verifies: {} entries ({} sent, {} received, {} recorded by this node), {} signatures checked; head {}",
        r.audit.entries,
        r.audit.sent,
        r.audit.received,
        r.audit.recorded,
        r.audit.signatures_checked,
        r.audit.head_hash.to_hex()
    );
    println!(
        "A new API token was written to {}. Start the node with `kpnode run --dir {}`.",
        dir.join("api.token").display(),
        dir.display()
    );
    Ok(())
}
