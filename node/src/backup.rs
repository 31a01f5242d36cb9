//! Backup files (`kpnode backup`, `kpnode restore`): a node's store, configuration and,
//! if asked, its keys, in one file with a manifest and checksums.
//!
//! ```text
//! "kpnode-backup/1\n"                      16 bytes, the format
//! manifest length (u32, big-endian)        at most MAX_MANIFEST_BYTES
//! manifest                                 JSON (Manifest)
//! SHA-256 of the manifest                  32 bytes
//! for each file named in the manifest, in its order:
//!   name length (u16), name, size (u64)    as in the manifest
//!   the file's bytes
//! SHA-256 of everything above              32 bytes
//! ```
//!
//! The store travels as a [`dump`](crate::store::dump) (`store.kpdump`), a logical copy that
//! does not depend on sled's files; it is the only file whose size is not bounded, and it is
//! streamed both ways, never held in memory. Reading refuses, before anything else is written
//! and naming the file at fault: another format, a manifest whose checksum or fields do not
//! hold, a name outside the few a node directory has (no path can leave the restored
//! directory), a length beyond its bound, a file whose SHA-256 differs from the manifest's,
//! and a file cut short or followed by anything.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::home::NodeDir;
use crate::store::{SledStore, Storage, StoreError};

/// The format this code writes and reads.
pub const FORMAT: &str = "kpnode-backup/1";
const MAGIC: &[u8; 16] = b"kpnode-backup/1\n";
/// The manifest's bound: a few dozen files' names and digests need a few KiB.
pub const MAX_MANIFEST_BYTES: u32 = 1 << 20;
/// At most this many files.
pub const MAX_FILES: usize = 32;
/// Every file but the store is small: `node.toml`, key files.
pub const MAX_SMALL_FILE_BYTES: u64 = 16 << 20;
/// The store's dump, in the file.
pub const STORE_FILE: &str = "store.kpdump";
/// The configuration.
pub const CONFIG_FILE: &str = "node.toml";
/// The key files a node directory may hold (see kp_keys::keydir), under `keys/`.
pub const KEY_FILES: [&str; 6] = [
    "signing.key.pem",
    "tls.key.pem",
    "tls.cert.pem",
    "history.bin",
    "tls.previous.key.pem",
    "tls.previous.cert.pem",
];
/// Key files a node cannot run without (the `tls.previous.*` pair exists only after a TLS
/// rotation).
const REQUIRED_KEY_FILES: [&str; 4] = ["signing.key.pem", "tls.key.pem", "tls.cert.pem", "history.bin"];
/// Key files holding a private key or the history (written 0600 on restore).
fn private_key_file(name: &str) -> bool {
    !name.ends_with(".cert.pem")
}

/// What a backup file holds, written before the files themselves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When the backup was taken (RFC 3339, UTC).
    pub created_at: String,
    /// The kpnode that took it.
    pub kpnode_version: String,
    pub participant: String,
    /// The node's fingerprint (of its first signing key), as `kpnode peer export` prints it.
    pub fingerprint: String,
    /// The store format of the dump (its `meta/format` record).
    pub store_format: String,
    /// The log's last entry when the store was dumped: its seq (0: none yet) and hash.
    pub log_seq: u64,
    pub log_hash: String,
    /// `online` (taken by the running daemon's store actor) or `offline` (holding the store's
    /// lock).
    pub taken: String,
    pub store_records: u64,
    /// Whether the private keys are in the file (`kpnode backup --include-keys`).
    pub keys_included: bool,
    pub files: Vec<FileEntry>,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path in the node directory: `node.toml`, `store.kpdump`, `keys/<name>`.
    pub name: String,
    pub size: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The file is not a backup this kpnode reads, or is damaged: nothing was restored.
    #[error("{file}: {detail}; nothing was restored")]
    Refused { file: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What the backup holds does not make a node (its keys do not match it, its log does
    /// not verify): nothing was restored.
    #[error("{0}; nothing was restored")]
    Invalid(String),
}

fn io(path: &Path, source: std::io::Error) -> BackupError {
    BackupError::Io { path: path.display().to_string(), source }
}

fn refused(file: impl Into<String>, detail: impl Into<String>) -> BackupError {
    BackupError::Refused { file: file.into(), detail: detail.into() }
}

/// Whether `name` is one a backup may hold: `node.toml`, `store.kpdump` or `keys/<key file>`
/// from a fixed list, so no name can reach outside the directory restored into.
pub fn allowed_name(name: &str) -> bool {
    name == CONFIG_FILE
        || name == STORE_FILE
        || name.strip_prefix("keys/").is_some_and(|k| KEY_FILES.contains(&k))
}

/// Counts and hashes what passes through to `inner`.
struct HashWriter<W> {
    inner: W,
    sha: sha2::Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read through it.
struct HashReader<R> {
    inner: R,
    sha: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    kp_protocol::digest::hex(bytes)
}

/// A file to put into a backup: its bytes in memory (small files) or a reader of the store's
/// dump whose size and SHA-256 are known beforehand.
#[derive(Debug)]
pub enum Source<R> {
    Bytes(Vec<u8>),
    Dump { reader: R, size: u64, sha256: [u8; 32] },
}

/// Writes a backup to `out`: `manifest` (its `files` filled in here from `files`, in their
/// order), then every file. The dump is streamed and hashed again on the way: if it is not
/// exactly what was announced (its size and SHA-256), writing fails.
pub fn write<R: Read, W: Write>(
    out: W,
    mut manifest: Manifest,
    files: Vec<(String, Source<R>)>,
) -> Result<(), BackupError> {
    let out_err = |e: std::io::Error| BackupError::Io { path: "the backup file".into(), source: e };
    manifest.files = files
        .iter()
        .map(|(name, s)| match s {
            Source::Bytes(b) => {
                FileEntry { name: name.clone(), size: b.len() as u64, sha256: hex(&sha2::Sha256::digest(b)) }
            }
            Source::Dump { size, sha256, .. } => {
                FileEntry { name: name.clone(), size: *size, sha256: hex(sha256) }
            }
        })
        .collect();
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| refused("manifest", e.to_string()))?;
    let mut w =
        HashWriter { inner: std::io::BufWriter::with_capacity(1 << 16, out), sha: sha2::Sha256::new() };
    w.write_all(MAGIC).map_err(out_err)?;
    w.write_all(&(json.len() as u32).to_be_bytes()).map_err(out_err)?;
    w.write_all(&json).map_err(out_err)?;
    w.write_all(&sha2::Sha256::digest(&json)).map_err(out_err)?;
    for (name, source) in files {
        w.write_all(&(name.len() as u16).to_be_bytes()).map_err(out_err)?;
        w.write_all(name.as_bytes()).map_err(out_err)?;
        match source {
            Source::Bytes(b) => {
                w.write_all(&(b.len() as u64).to_be_bytes()).map_err(out_err)?;
                w.write_all(&b).map_err(out_err)?;
            }
            Source::Dump { reader, size, sha256 } => {
                w.write_all(&size.to_be_bytes()).map_err(out_err)?;
                let mut r = HashReader { inner: reader.take(size), sha: sha2::Sha256::new(), bytes: 0 };
                std::io::copy(&mut r, &mut w).map_err(out_err)?;
                let got: [u8; 32] = r.sha.finalize().into();
                if r.bytes != size || got != sha256 {
                    return Err(BackupError::Invalid(format!(
                        "the store snapshot changed while it was copied ({} of {size} bytes, SHA-256 {}); take the backup again",
                        r.bytes,
                        hex(&got)
                    )));
                }
            }
        }
    }
    let total: [u8; 32] = w.sha.clone().finalize().into();
    w.inner.write_all(&total).map_err(out_err)?;
    w.inner.flush().map_err(out_err)?;
    Ok(())
}

/// Reads exactly `buf.len()` bytes of `what`, or refuses the file as cut short.
fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), BackupError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => refused(what, "the backup file ends here: it was cut short"),
        _ => BackupError::Io { path: "the backup file".into(), source: e },
    })
}

/// Reads a backup's format and manifest, checking the manifest's checksum and fields.
fn read_manifest(r: &mut dyn Read) -> Result<Manifest, BackupError> {
    let mut magic = [0u8; 16];
    read_exact(r, &mut magic, "header")?;
    if &magic != MAGIC {
        let newer = magic.starts_with(b"kpnode-backup/") && magic != *MAGIC;
        return Err(refused(
            "header",
            if newer {
                format!(
                    "this backup is in format {:?}, which this kpnode does not read (it reads {FORMAT}); restore it with the kpnode that wrote it, or a newer one",
                    String::from_utf8_lossy(&magic).trim_end()
                )
            } else {
                "not a kpnode backup file (it does not start with \"kpnode-backup/\")".into()
            },
        ));
    }
    let mut len = [0u8; 4];
    read_exact(r, &mut len, "manifest")?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MANIFEST_BYTES {
        return Err(refused(
            "manifest",
            format!("said to be {len} bytes long, more than the {MAX_MANIFEST_BYTES} allowed"),
        ));
    }
    let mut json = Vec::new();
    let got =
        r.take(u64::from(len)).read_to_end(&mut json).map_err(|e| io(Path::new("the backup file"), e))?;
    if got != len as usize {
        return Err(refused("manifest", "the backup file ends here: it was cut short"));
    }
    let mut sum = [0u8; 32];
    read_exact(r, &mut sum, "manifest")?;
    if sha2::Sha256::digest(&json)[..] != sum[..] {
        return Err(refused("manifest", "its SHA-256 does not match: the backup file is damaged"));
    }
    let m: Manifest =
        serde_json::from_slice(&json).map_err(|e| refused("manifest", format!("does not parse: {e}")))?;
    if m.format != FORMAT {
        return Err(refused("manifest", format!("format {:?}, expected {FORMAT:?}", m.format)));
    }
    if m.files.len() > MAX_FILES {
        return Err(refused(
            "manifest",
            format!("lists {} files, more than the {MAX_FILES} a backup holds", m.files.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &m.files {
        if !allowed_name(&f.name) {
            return Err(refused(
                "manifest",
                format!("lists {:?}, which is not a file of a node directory (only node.toml, store.kpdump and keys/<key file>)", f.name),
            ));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(refused("manifest", format!("lists {:?} twice", f.name)));
        }
        if f.name != STORE_FILE && f.size > MAX_SMALL_FILE_BYTES {
            return Err(refused(
                &f.name,
                format!("said to be {} bytes, more than the {MAX_SMALL_FILE_BYTES} allowed", f.size),
            ));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused(&f.name, "its SHA-256 in the manifest is not 64 hex digits"));
        }
    }
    for required in [CONFIG_FILE, STORE_FILE] {
        if !seen.contains(required) {
            return Err(refused("manifest", format!("lists no {required}")));
        }
    }
    let keys = m.files.iter().filter(|f| f.name.starts_with("keys/")).count();
    if m.keys_included != (keys > 0) {
        return Err(refused("manifest", "says keys_included but lists no key files, or the other way round"));
    }
    if m.keys_included {
        for k in REQUIRED_KEY_FILES {
            if !seen.contains(format!("keys/{k}").as_str()) {
                return Err(refused("manifest", format!("holds keys but not keys/{k}")));
            }
        }
    }
    Ok(m)
}

/// Reads only the manifest of the backup at `path` (`kpnode restore --list`).
pub fn manifest_of(path: &Path) -> Result<Manifest, BackupError> {
    let f = fs::File::open(path).map_err(|e| io(path, e))?;
    read_manifest(&mut std::io::BufReader::new(f))
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub audit: kp_exchange::audit::AuditReport,
}

/// Restores the backup at `file` into `dir`, which must be a new path (its parent existing)
/// or an empty directory. Everything is written into a side directory *inside* `dir` first
/// (so a user who may write only `dir`, such as the `kpnode` user with the package's
/// `/var/lib/kpnode`, can restore, and an existing `dir` keeps its owner and mode) and
/// checked there; only a restore that passed every check (checksums, keys matching the
/// node, the log head the manifest names, the whole log verifying as `kpnode log verify`
/// does) has its entries moved up into `dir`. On any failure the side directory and
/// anything moved are removed, and a `dir` this call created is removed too. `keys_from`:
/// the node's `keys/` directory kept apart, for a backup taken without `--include-keys` (it
/// takes precedence over keys in the backup). A new API token is written.
pub fn restore(file: &Path, dir: &Path, keys_from: Option<&Path>) -> Result<Restored, BackupError> {
    let created = match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(BackupError::Invalid(format!(
                "{} is a symbolic link; give --dir the real directory it points to (or a new path)",
                dir.display()
            )));
        }
        Ok(m) if !m.is_dir() => {
            return Err(BackupError::Invalid(format!(
                "{} exists and is not a directory; give --dir a new path or an empty directory",
                dir.display()
            )));
        }
        Ok(_) => {
            let mut entries = fs::read_dir(dir).map_err(|e| io(dir, e))?;
            if entries.next().is_some() {
                return Err(BackupError::Invalid(format!(
                    "{} is not empty; restore into a new directory (a node is never overwritten), or move what is there away first",
                    dir.display()
                )));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().mode(0o700).create(dir).map_err(|e| {
                BackupError::Invalid(format!(
                    "{}: cannot create it: {e}; its parent directory must exist and be writable by this user (or create {} empty, owned by the user that runs kpnode)",
                    dir.display(),
                    dir.display()
                ))
            })?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
            true
        }
        Err(e) => return Err(io(dir, e)),
    };
    let mut tag = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tag);
    let stage = dir.join(format!(".restoring-{}", hex(&tag)));
    let made = std::fs::DirBuilder::new().mode(0o700).create(&stage).map_err(|e| {
        BackupError::Invalid(format!(
            "{}: cannot create the directory the restore is checked in: {e}; {} must be writable by this user",
            stage.display(),
            dir.display()
        ))
    });
    let mut moved: Vec<PathBuf> = Vec::new();
    let result = made.and_then(|()| {
        let r = restore_into(file, &stage, keys_from)?;
        move_up(&stage, dir, &mut moved)?;
        fs::remove_dir(&stage).map_err(|e| io(&stage, e))?;
        sync_dir(dir)?;
        if created {
            sync_dir(&parent_of(dir))?;
        }
        Ok(r)
    });
    if result.is_err() {
        // Nothing is left behind: the side directory, whatever was moved up, and `dir`
        // itself when this call created it.
        let _ = fs::remove_dir_all(&stage);
        for p in &moved {
            let _ = if p.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
        }
        if created {
            let _ = fs::remove_dir(dir);
        }
    }
    result
}

/// Moves every entry of `stage` into `dir` (its parent), recording each one moved.
fn move_up(stage: &Path, dir: &Path, moved: &mut Vec<PathBuf>) -> Result<(), BackupError> {
    for entry in fs::read_dir(stage).map_err(|e| io(stage, e))? {
        let entry = entry.map_err(|e| io(stage, e))?;
        let to = dir.join(entry.file_name());
        if fs::symlink_metadata(&to).is_ok() {
            return Err(BackupError::Invalid(format!(
                "{}: appeared while the restore ran; nothing was moved over it",
                to.display()
            )));
        }
        fs::rename(entry.path(), &to).map_err(|e| io(&to, e))?;
        moved.push(to);
    }
    Ok(())
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Makes the entries of `dir` (created, renamed) survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| io(dir, e))
}

fn restore_into(file: &Path, stage: &Path, keys_from: Option<&Path>) -> Result<Restored, BackupError> {
    let f = fs::File::open(file).map_err(|e| io(file, e))?;
    let mut r = HashReader {
        inner: std::io::BufReader::with_capacity(1 << 16, f),
        sha: sha2::Sha256::new(),
        bytes: 0,
    };
    let manifest = read_manifest(&mut r)?;
    if !manifest.keys_included && keys_from.is_none() {
        return Err(BackupError::Invalid(
            "this backup holds no private keys (it was taken without --include-keys); pass --keys DIR with the copy of the node's keys/ directory kept apart".into(),
        ));
    }
    let home = NodeDir::new(stage);
    let store_dir = home.store_dir();
    let mut store: Option<SledStore> = None;
    for entry in &manifest.files {
        let mut len = [0u8; 2];
        read_exact(&mut r, &mut len, &entry.name)?;
        let name_len = u16::from_be_bytes(len) as usize;
        if name_len != entry.name.len() {
            return Err(refused(&entry.name, "its header in the file does not match the manifest"));
        }
        let mut name = vec![0u8; name_len];
        read_exact(&mut r, &mut name, &entry.name)?;
        let mut size = [0u8; 8];
        read_exact(&mut r, &mut size, &entry.name)?;
        if name != entry.name.as_bytes() || u64::from_be_bytes(size) != entry.size {
            return Err(refused(
                &entry.name,
                "its header in the file does not match the manifest (name or size)",
            ));
        }
        let mut part = HashReader { inner: (&mut r).take(entry.size), sha: sha2::Sha256::new(), bytes: 0 };
        if entry.name == STORE_FILE {
            let s = SledStore::create(&store_dir, 64)?;
            if let Err(e) = s.load_dump(&mut part) {
                // A damaged dump: say so naming the file, after reading it to its end so a
                // checksum mismatch (the likelier cause) is what is reported.
                let _ = std::io::copy(&mut part, &mut std::io::sink());
                if part.bytes == entry.size && hex(&part.sha.clone().finalize()) != entry.sha256 {
                    return Err(refused(
                        STORE_FILE,
                        "its SHA-256 does not match the manifest: the backup file is damaged",
                    ));
                }
                return Err(refused(STORE_FILE, format!("does not load: {e}")));
            }
            store = Some(s);
        } else {
            let mut bytes = zeroize::Zeroizing::new(Vec::new());
            part.read_to_end(&mut bytes).map_err(|e| io(file, e))?;
            let target = stage.join(&entry.name);
            if entry.name.starts_with("keys/") && keys_from.is_some() {
                // The keys given apart are used instead; these are only checked.
            } else {
                if let Some(p) = target.parent() {
                    kp_keys::files::ensure_private_dir(p).map_err(|e| BackupError::Invalid(e.to_string()))?;
                }
                let mode = if entry.name.starts_with("keys/") && private_key_file(&entry.name) {
                    0o600
                } else {
                    0o644
                };
                write_file(&target, &bytes, mode)?;
            }
        }
        if part.bytes != entry.size {
            return Err(refused(&entry.name, "the backup file ends inside it: it was cut short"));
        }
        if hex(&part.sha.finalize()) != entry.sha256 {
            return Err(refused(
                &entry.name,
                "its SHA-256 does not match the manifest: the backup file is damaged",
            ));
        }
    }
    let computed: [u8; 32] = r.sha.clone().finalize().into();
    let mut total = [0u8; 32];
    read_exact(&mut r.inner, &mut total, "checksum")?;
    if total != computed {
        return Err(refused(
            "checksum",
            "the SHA-256 of the whole file does not match: the backup file is damaged",
        ));
    }
    let mut more = [0u8; 1];
    if r.inner.read(&mut more).map_err(|e| io(file, e))? != 0 {
        return Err(refused("checksum", "bytes follow the end of the backup: the file is damaged"));
    }
    let store = store.ok_or_else(|| refused("manifest", "lists no store.kpdump"))?;

    if let Some(src) = keys_from {
        copy_keys(src, &home.keys_dir())?;
    }
    // A fresh API token: the old one is not in the backup.
    let mut token = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token);
    write_file(&home.token_path(), format!("{}\n", hex(&token)).as_bytes(), 0o600)?;

    let keys_source = match keys_from {
        Some(k) => format!("the keys in {} (--keys)", k.display()),
        None => "the keys in the backup".to_owned(),
    };
    let keys = kp_keys::keydir::NodeKeys::load(&home.keys_dir()).map_err(|e| {
        BackupError::Invalid(format!(
            "{keys_source} do not load: {}",
            e.to_string().replace(&format!("{}/", stage.display()), "")
        ))
    })?;
    if keys.participant().as_str() != manifest.participant
        || keys.fingerprint().to_string() != manifest.fingerprint
    {
        return Err(BackupError::Invalid(format!(
            "{keys_source} are those of {} (fingerprint {}), but the backup is of {} (fingerprint {}); give that node's keys",
            keys.participant(),
            keys.fingerprint(),
            manifest.participant,
            manifest.fingerprint
        )));
    }
    let config = home.config().map_err(|e| BackupError::Invalid(e.to_string()))?;
    let keys = home.keys(&config).map_err(|e| BackupError::Invalid(e.to_string()))?;
    if config.participant.as_str() != manifest.participant {
        return Err(BackupError::Invalid(format!(
            "node.toml names participant {}, the manifest {}",
            config.participant, manifest.participant
        )));
    }
    drop(store);
    // Opened as `kpnode run` would open it: a store format this kpnode does not read is
    // refused here, naming both versions.
    // A backup of an older store format is migrated here, as a start would; the copy the
    // migration keeps beside the store is not needed (the backup file is the old store).
    let (store, report) = SledStore::open(&store_dir, config.store.cache_capacity_mb)?;
    if let Some(m) = &report.migrated {
        fs::remove_dir_all(&m.backup).map_err(|e| io(&m.backup, e))?;
    }
    let head: crate::store::LogHead =
        crate::store::get_record(&store, crate::store::Tree::Meta, crate::store::meta::LOG_HEAD)?
            .unwrap_or_default();
    if head.next_seq.saturating_sub(1) != manifest.log_seq || head.last_hash.to_hex() != manifest.log_hash {
        return Err(BackupError::Invalid(format!(
            "the restored log ends at entry {} ({}), but the manifest says {} ({})",
            head.next_seq.saturating_sub(1),
            head.last_hash.to_hex(),
            manifest.log_seq,
            manifest.log_hash
        )));
    }
    let trust = crate::state::load_trust(&store)?;
    let audit = kp_exchange::audit::verify_log(&store, config.participant, &keys.history, &trust, |_| {})
        .map_err(|e| BackupError::Invalid(format!("the restored log does NOT verify: {e}")))?;
    // Where `kpnode recover` asks partners to resume from.
    crate::recover::record_base(&store)?;
    store.flush()?;
    Ok(Restored { manifest, audit })
}

/// Writes a new file with `mode`, synced.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BackupError> {
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Copies the key files of `src` (a node's `keys/` directory) into `dst`.
fn copy_keys(src: &Path, dst: &Path) -> Result<(), BackupError> {
    kp_keys::files::ensure_private_dir(dst).map_err(|e| BackupError::Invalid(e.to_string()))?;
    for name in KEY_FILES {
        let from = src.join(name);
        if !from.exists() {
            if REQUIRED_KEY_FILES.contains(&name) {
                return Err(BackupError::Invalid(format!(
                    "{}: missing; --keys names the node's keys/ directory (signing.key.pem, tls.key.pem, tls.cert.pem, history.bin)",
                    from.display()
                )));
            }
            continue;
        }
        let meta = fs::metadata(&from).map_err(|e| io(&from, e))?;
        if !meta.is_file() || meta.len() > MAX_SMALL_FILE_BYTES {
            return Err(BackupError::Invalid(format!("{}: not a key file", from.display())));
        }
        let bytes = zeroize::Zeroizing::new(fs::read(&from).map_err(|e| io(&from, e))?);
        write_file(&dst.join(name), &bytes, if private_key_file(name) { 0o600 } else { 0o644 })?;
    }
    Ok(())
}

/// The files of a node directory a backup holds besides the store: `node.toml` and, with
/// `include_keys`, the key files present.
pub fn node_files(home: &NodeDir, include_keys: bool) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    let mut out = Vec::new();
    let config = home.config_path();
    out.push((CONFIG_FILE.to_owned(), read_small(&config)?));
    if include_keys {
        for name in KEY_FILES {
            let path = home.keys_dir().join(name);
            if path.exists() || REQUIRED_KEY_FILES.contains(&name) {
                out.push((format!("keys/{name}"), read_small(&path)?));
            }
        }
    }
    Ok(out)
}

fn read_small(path: &Path) -> Result<Vec<u8>, BackupError> {
    let f = fs::File::open(path).map_err(|e| io(path, e))?;
    let mut out = Vec::new();
    f.take(MAX_SMALL_FILE_BYTES + 1).read_to_end(&mut out).map_err(|e| io(path, e))?;
    if out.len() as u64 > MAX_SMALL_FILE_BYTES {
        return Err(BackupError::Invalid(format!(
            "{}: larger than {MAX_SMALL_FILE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_files_of_a_node_directory_are_allowed() {
        for ok in ["node.toml", "store.kpdump", "keys/signing.key.pem", "keys/history.bin"] {
            assert!(allowed_name(ok), "{ok}");
        }
        for bad in [
            "../node.toml",
            "/etc/passwd",
            "keys/../../x",
            "keys/",
            "keys/other.pem",
            "keys//signing.key.pem",
            "store/db",
            "api.token",
            "",
        ] {
            assert!(!allowed_name(bad), "{bad}");
        }
    }
}
