//! The node's store: the exchange's [`Storage`] on sled 0.34.7, with the node's own lock
//! file and the workaround for sled's crash-during-snapshot bug. The only module that knows
//! the data sits in sled; everything else about storage (the key layout, the records) is
//! [`kp_exchange::storage`], re-exported here.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use kp_exchange::storage::*;

/// A sled failure, with its I/O kind for the operator's hint.
fn backend(e: sled::Error) -> StoreError {
    let io = match &e {
        sled::Error::Io(io) => Some(io.kind()),
        _ => None,
    };
    StoreError::Backend { source: Box::new(e), io }
}

/// The sled store of a node. Cheap to clone; every clone shares the lock and the database.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// The one sled tree that holds every logical tree, each under a one-byte prefix (see
    /// [`prefix`]): a group commit is then a single sled batch, atomic across a crash,
    /// without sled's multi-tree transactions (which cost about as much again as the writes).
    tree: sled::Tree,
    /// The console's accounts ([`AccountTable`]): a sled tree of its own, beside the
    /// exchange's, because accounts are the node's business, not the exchange's (they never
    /// enter a log entry, a group commit or a snapshot of the engine).
    accounts: sled::Tree,
    path: PathBuf,
    /// Held for as long as the store is open: no other kpnode (and so no other sled) can
    /// touch these files meanwhile.
    _lock: File,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

/// What opening the store had to do, for the caller to log.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Partial snapshot files from an interrupted sled snapshot, removed before opening.
    pub removed_partial_snapshots: Vec<PathBuf>,
    /// The store was in an older format, and was migrated to today's.
    pub migrated: Option<Migrated>,
    /// The index of certificates by date of issue was built (for this many certificates):
    /// the store was written by a kpnode that did not keep it (see [`index`]).
    pub indexed: Option<u64>,
    /// The index of certificates received was built (for this many certificates), for the
    /// same reason.
    pub indexed_imports: Option<u64>,
    /// Certificate records the indexes left out because they could not be read, each named
    /// with its damage.
    pub index_skipped: Vec<String>,
}

impl OpenReport {
    /// The line the operator reads about the indexes built on open, if any was.
    pub fn indexed_line(&self) -> Option<String> {
        let built: Vec<String> = [
            self.indexed.map(|n| format!("the index of certificates by date of issue ({n} certificates)")),
            self.indexed_imports.map(|n| format!("the index of certificates received ({n} certificates)")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if built.is_empty() {
            return None;
        }
        let mut line = format!(
            "built {}: the store was last written by a kpnode that does not keep {}",
            built.join(" and "),
            if built.len() == 1 { "it" } else { "them" }
        );
        if let Some(first) = self.index_skipped.first() {
            line.push_str(&format!(
                "; left out {} damaged certificate record(s), which answer every request with the damage (first: {first}); restore them from a backup",
                self.index_skipped.len()
            ));
        }
        Some(line)
    }
}

/// A migration done on open: from which format, and where the copy of the store as it was
/// before is kept (next to the store, never removed by kpnode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub from: String,
    pub to: &'static str,
    pub backup: PathBuf,
}

impl Migrated {
    /// The line the operator reads (the daemon's log, an offline command's stderr).
    pub fn line(&self) -> String {
        format!(
            "migrated the store from format {} to {}; the store as it was is kept in {} (a copy to go back to the \
older kpnode with; remove it once the node runs well)",
            self.from,
            self.to,
            self.backup.display()
        )
    }
}

/// A point of a migration, told to the observer of [`SledStore::open_observed`] before the
/// migration goes on from it. An error from the observer stops the migration there.
#[derive(Debug)]
pub enum MigrationStep<'a> {
    /// The copy of the old store is complete and durable; nothing in the store is changed yet.
    BackedUp { from: &'a str, backup: &'a Path },
}

impl SledStore {
    /// Creates a new, empty store at `path` (which must not exist yet).
    pub fn create(path: &Path, cache_capacity_mb: u32) -> Result<SledStore, StoreError> {
        if path.exists() {
            return Err(StoreError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
            });
        }
        fs::create_dir_all(path).map_err(|e| io(path, e))?;
        let (store, _) = Self::open_inner(path, cache_capacity_mb, None)?;
        store.commit(&Writes::from([(
            (Tree::Meta, meta::FORMAT.to_vec()),
            Some(meta::FORMAT_VERSION.as_bytes().to_vec()),
        )]))?;
        store.flush()?;
        Ok(store)
    }

    /// Opens an existing store, migrating it first if it is in an older format this kpnode
    /// migrates from ([`meta::MIGRATES_FROM`]; see [`SledStore::open_observed`]).
    pub fn open(path: &Path, cache_capacity_mb: u32) -> Result<(SledStore, OpenReport), StoreError> {
        Self::open_observed(path, cache_capacity_mb, &mut |_| Ok(()))
    }

    /// [`SledStore::open`], telling `observe` each step of a migration. A migration holds the
    /// store's lock throughout: it closes sled, copies the store directory next to it (named
    /// after the old format and the time, every file and directory fsync'd, complete only
    /// once renamed from `.partial`), logs where the copy is, reopens sled and rewrites the
    /// format record in one atomic commit. Until that commit the store is the old format,
    /// unchanged: a migration stopped anywhere before it (a crash, a full disk, `observe`
    /// failing) leaves a store the older kpnode still opens, and the next open migrates again.
    pub fn open_observed(
        path: &Path,
        cache_capacity_mb: u32,
        observe: &mut dyn FnMut(&MigrationStep<'_>) -> Result<(), StoreError>,
    ) -> Result<(SledStore, OpenReport), StoreError> {
        if !path.join("db").exists() {
            return Err(StoreError::Missing { path: path.display().to_string() });
        }
        let (store, mut report) = Self::open_inner(path, cache_capacity_mb, None)?;
        let found = match store.get(Tree::Meta, meta::FORMAT)? {
            Some(v) if v == meta::FORMAT_VERSION.as_bytes() => {
                store.ensure_indexes(&mut report)?;
                return Ok((store, report));
            }
            Some(v) if meta::MIGRATES_FROM.iter().any(|old| v == old.as_bytes()) => {
                let from = String::from_utf8_lossy(&v).into_owned();
                let (store, migrated) = store.migrate(&from, cache_capacity_mb, observe)?;
                report.migrated = Some(migrated);
                store.ensure_indexes(&mut report)?;
                return Ok((store, report));
            }
            // Shown in the refusal: kept short whatever the record holds.
            Some(v) => {
                let text = String::from_utf8_lossy(&v);
                match text.char_indices().nth(64) {
                    Some((at, _)) => format!("{:?}…", &text[..at]),
                    None if text.chars().any(char::is_control) => format!("{text:?}"),
                    None => text.into_owned(),
                }
            }
            // kpnode-store/1 kept one sled tree per logical tree.
            // (Looked for without open_tree, which would create the tree.)
            None if store.inner.db.tree_names().iter().any(|n| n.as_ref() == b"meta.v1") => {
                let old = store
                    .inner
                    .db
                    .open_tree("meta.v1")
                    .map_err(backend)?
                    .get(meta::FORMAT)
                    .map_err(backend)?;
                let old = old.map_or_else(|| "unset".into(), |v| String::from_utf8_lossy(&v).into_owned());
                format!("{old} (one sled tree per kind of record)")
            }
            None => "unset".into(),
        };
        // Only a well-formed name with a higher number is a newer kpnode's: anything else (a
        // lower number, no record, garbage) is one this kpnode cannot migrate.
        let newer = matches!(
            (meta::format_number(&found), meta::format_number(meta::FORMAT_VERSION)),
            (Some(f), Some(ours)) if f > ours
        );
        Err(StoreError::Format {
            path: path.display().to_string(),
            found,
            expected: meta::FORMAT_VERSION.into(),
            newer,
        })
    }

    /// Opens sled at `path`, taking the store's lock first (or keeping `lock`, already taken).
    fn open_inner(
        path: &Path,
        cache_capacity_mb: u32,
        lock: Option<File>,
    ) -> Result<(SledStore, OpenReport), StoreError> {
        let lock = match lock {
            Some(l) => l,
            None => take_lock(path)?,
        };
        // Only now, holding the lock (so no live sled can be writing a snapshot), is it safe
        // to remove what an interrupted snapshot left behind.
        let removed = remove_partial_snapshots(path)?;
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(u64::from(cache_capacity_mb) * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            // Every batch is flushed explicitly; sled's own periodic flusher would only compete.
            .flush_every_ms(None);
        // sled locks its own file too. This process holds the store's lock, so a sled lock
        // held elsewhere can only be this process's: a sled just closed (a migration closes
        // and reopens it) whose background work still holds the file for a moment, or a child
        // forked at that instant holding the descriptor until its exec. Both let go soon, so
        // the open is tried again for a bounded time instead of failing.
        let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(backend)?,
            }
        };
        let tree = db.open_tree(TREE_NAME).map_err(backend)?;
        let accounts = db.open_tree(ACCOUNTS_TREE).map_err(backend)?;
        let store =
            SledStore { inner: Arc::new(Inner { db, tree, accounts, path: path.to_owned(), _lock: lock }) };
        Ok((store, OpenReport { removed_partial_snapshots: removed, ..OpenReport::default() }))
    }

    /// Migrates this store, in format `from`, to today's (see [`SledStore::open_observed`]).
    fn migrate(
        self,
        from: &str,
        cache_capacity_mb: u32,
        observe: &mut dyn FnMut(&MigrationStep<'_>) -> Result<(), StoreError>,
    ) -> Result<(SledStore, Migrated), StoreError> {
        let path = self.inner.path.clone();
        // Close sled (everything it holds on disk), keeping the lock.
        self.flush()?;
        let Inner { db, tree, accounts, _lock: lock, .. } =
            Arc::into_inner(self.inner).ok_or_else(|| StoreError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other("the store is still in use while it is migrated"),
            })?;
        drop((tree, accounts, db));
        let backup = copy_store(&path, from)?;
        tracing::warn!(
            from,
            to = meta::FORMAT_VERSION,
            backup = %backup.display(),
            "migrating the store from format {from} to {}; the store as it was is copied to {}",
            meta::FORMAT_VERSION,
            backup.display()
        );
        observe(&MigrationStep::BackedUp { from, backup: &backup })?;
        let (store, _) = Self::open_inner(&path, cache_capacity_mb, Some(lock))?;
        // Format 2 → 3: the log entry gained the officer. Entries already written keep their
        // bytes (their hashes, and the receipts partners signed over them, stay valid); the
        // store records where format-3 entries begin, in the same commit as the new format.
        let head = get_record::<LogHead, _>(&store, Tree::Meta, meta::LOG_HEAD)?
            .unwrap_or(LogHead { next_seq: 1, last_hash: kp_protocol::Digest::ZERO });
        store.commit(&Writes::from([
            ((Tree::Meta, meta::FORMAT.to_vec()), Some(meta::FORMAT_VERSION.as_bytes().to_vec())),
            ((Tree::Meta, meta::LOG_FORMAT3_FROM.to_vec()), Some(encode_record(&head.next_seq))),
        ]))?;
        store.flush()?;
        Ok((store, Migrated { from: from.to_owned(), to: meta::FORMAT_VERSION, backup }))
    }

    /// Builds the indexes (by date of issue; of the certificates received) that the store was
    /// last written without (see [`index`]): once, after an upgrade, about 20 seconds per
    /// million certificates each on a 2-core machine, so the operator is told before it
    /// starts. Says in `report` what it built.
    fn ensure_indexes(&self, report: &mut OpenReport) -> Result<(), StoreError> {
        if !index::issued_is_complete(self)? {
            tracing::info!(
                "building the index of certificates by date of issue (once, after an upgrade: about 20 seconds per million certificates) …"
            );
        }
        if let Some(built) = index::ensure_issued(self)? {
            report.indexed = Some(built.certificates);
            report.index_skipped = built.damaged;
        }
        if !index::imported_is_complete(self)? {
            tracing::info!(
                "building the index of certificates received (once, after an upgrade: about 20 seconds per million certificates) …"
            );
        }
        if let Some(built) = index::ensure_imported(self)? {
            report.indexed_imports = Some(built.certificates);
            if report.index_skipped.is_empty() {
                report.index_skipped = built.damaged;
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The console's accounts.
    pub fn accounts(&self) -> AccountTable<'_> {
        AccountTable { store: self }
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
}

/// How long an open waits for sled's own file lock, held by this process's sled just closed.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The sled tree holding the store, named after its format.
const TREE_NAME: &str = "kpnode.v1";

/// The sled tree of the console's accounts: account name → the account record (its bytes are
/// the accounts service's business).
const ACCOUNTS_TREE: &str = "accounts.v1";

/// The console's accounts, by name. Every write is flushed before it returns: an account
/// change (a disabled account, a new password) must survive a crash the moment it is
/// reported done.
#[derive(Debug)]
pub struct AccountTable<'a> {
    store: &'a SledStore,
}

impl AccountTable<'_> {
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.store.inner.accounts.get(name.as_bytes()).map_err(backend)?.map(|v| v.to_vec()))
    }

    /// Stores `value` under `name` only if no account has that name; false if one has.
    pub fn insert_new(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let swapped = self
            .store
            .inner
            .accounts
            .compare_and_swap(name.as_bytes(), None::<&[u8]>, Some(value))
            .map_err(backend)?;
        self.store.flush()?;
        Ok(swapped.is_ok())
    }

    /// Replaces the account `name` if it still holds `old`; false if it changed meanwhile.
    pub fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let swapped = self
            .store
            .inner
            .accounts
            .compare_and_swap(name.as_bytes(), Some(old), Some(new))
            .map_err(backend)?;
        self.store.flush()?;
        Ok(swapped.is_ok())
    }

    /// Every account, in name order.
    pub fn all(&self) -> Result<Vec<KeyValue>, StoreError> {
        self.store
            .inner
            .accounts
            .iter()
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }
}

/// The key prefix of each logical tree.
fn prefix(t: Tree) -> u8 {
    match t {
        Tree::Log => b'L',
        Tree::Certs => b'C',
        Tree::Outbox => b'O',
        Tree::Messages => b'M',
        Tree::Peers => b'P',
        Tree::Meta => b'X',
        Tree::Registry => b'R',
        Tree::PeerArchive => b'A',
        Tree::Issued => b'I',
        Tree::Imported => b'J',
    }
}

fn full_key(t: Tree, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix(t));
    k.extend_from_slice(key);
    k
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

/// Copies the store directory `path` (closed, its lock held) to a new directory beside it,
/// `<name>.<format, '/' as '-'>.<UTC time>`: through `<that>.partial`, every file and
/// directory fsync'd, then renamed and the parent fsync'd, so a copy under its final name is
/// complete. The lock file is not copied. Returns the copy's path.
fn copy_store(path: &Path, format: &str) -> Result<PathBuf, StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    let now = kp_protocol::Timestamp::from_unix_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    );
    // 2026-12-07T09:55:00.123Z → 20261207T095500Z
    let stamp: String = now.to_string().chars().filter(|c| *c != '-' && *c != ':').collect();
    let stamp = match stamp.split_once('.') {
        Some((s, _)) => format!("{s}Z"),
        None => stamp,
    };
    let base = format!("{name}.{}.{stamp}", format.replace('/', "-"));
    let mut target = parent.join(&base);
    let mut n = 1;
    while target.exists() || target.with_extension("partial").exists() {
        n += 1;
        target = parent.join(format!("{base}-{n}"));
    }
    let partial =
        parent.join(format!("{}.partial", target.file_name().unwrap_or_default().to_string_lossy()));
    copy_tree(path, &partial)?;
    fs::rename(&partial, &target).map_err(|e| io(&target, e))?;
    sync_dir(parent)?;
    Ok(target)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(to).map_err(|e| io(to, e))?;
    for entry in fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(|e| io(&src, e))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() && entry.file_name() != "kpnode.lock" {
            fs::copy(&src, &dst).map_err(|e| io(&dst, e))?;
            File::open(&dst).and_then(|f| f.sync_all()).map_err(|e| io(&dst, e))?;
        }
    }
    sync_dir(to)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Takes the store's lock file, writing our pid into it; says who holds it if taken.
///
/// A lock that names this very process is waited out (for [`SLED_LOCK_WAIT`] at most): it is a
/// store this process just closed whose last handle is still being dropped, or a child forked
/// at that instant that holds a copy of the descriptor until its `exec` closes it. Both let go
/// soon; failing would turn a moment's overlap into an error (seen in tests that reopen a
/// stopped node's store while other tests start `kpnode` processes).
fn take_lock(path: &Path) -> Result<File, StoreError> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    let me = format!("pid {}", std::process::id());
    loop {
        match try_take_lock(path) {
            Err(StoreError::Locked { holder, .. })
                if holder == me && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn try_take_lock(path: &Path) -> Result<File, StoreError> {
    let lock_path = path.join("kpnode.lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io(&lock_path, e))?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0).map_err(|e| io(&lock_path, e))?;
            f.rewind().map_err(|e| io(&lock_path, e))?;
            write!(f, "{}", std::process::id()).map_err(|e| io(&lock_path, e))?;
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            Err(StoreError::Locked {
                path: path.display().to_string(),
                holder: if holder.trim().is_empty() {
                    "unknown pid".into()
                } else {
                    format!("pid {}", holder.trim())
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(&lock_path, e)),
    }
}

/// sled 0.34.7 writes a snapshot to `snap.<lsn>.generating`, fsyncs, then renames it. Its
/// list of snapshot files does not leave out `.generating`, and it reads the highest-named
/// one; a process killed between create and rename leaves a partial file that sorts last,
/// after which every open fails with `Corruption { at: None }` (upstream issue #1533). Such a
/// file is never a complete snapshot, so removing it loses nothing.
fn remove_partial_snapshots(path: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io(path, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(path, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

impl Storage for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.tree.get(full_key(tree, key)).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn range(&self, tree: Tree, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.tree.range(full_key(tree, start)..full_key(tree, end)).take(limit) {
            let (k, v) = item.map_err(backend)?;
            out.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last_before(&self, tree: Tree, start: &[u8], end: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match self.inner.tree.range(full_key(tree, start)..full_key(tree, end)).next_back() {
            Some(item) => {
                let (k, v) = item.map_err(backend)?;
                Ok(Some((k[1..].to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn commit(&self, writes: &Writes) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for ((tree, key), value) in writes {
            match value {
                Some(v) => batch.insert(full_key(*tree, key), v.as_slice()),
                None => batch.remove(full_key(*tree, key)),
            }
        }
        self.inner.tree.apply_batch(batch).map_err(backend)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush().map_err(backend)?;
        Ok(())
    }
}

/// A store dump (what `kpnode backup` puts in its file): every record of the store, a logical
/// copy that does not depend on sled's files. Each record is its key (a logical tree's
/// one-byte prefix, then the key in that tree) and value, each after its length as a u32,
/// big-endian. Loaded into a new store by [`SledStore::load_dump`].
pub mod dump {
    /// The longest key a dump may hold: the store's keys are a few dozen bytes.
    pub const MAX_KEY_BYTES: u32 = 64 * 1024;
    /// The longest value: twice what a record may decode to.
    pub const MAX_VALUE_BYTES: u32 = 2 * kp_protocol::codec::DECODE_LIMIT as u32;
    /// Records written to the new store per batch while loading.
    pub(super) const LOAD_BATCH_BYTES: usize = 4 << 20;

    /// What a dump held.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Summary {
        pub records: u64,
        pub bytes: u64,
        pub sha256: [u8; 32],
    }

    /// Why a dump could not be loaded.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum LoadError {
        #[error("reading the dump: {0}")]
        Io(#[from] std::io::Error),
        #[error("record {record}: {detail}")]
        Malformed { record: u64, detail: String },
        #[error(transparent)]
        Store(#[from] super::StoreError),
    }
}

/// Counts and hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    sha: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl SledStore {
    /// Writes every record to `out` as a [`dump`], in key order, but the indexes (see
    /// [`index`]): they are derived from the certificate records, built again when the
    /// restored store is opened, and so a backup stays one that a kpnode keeping fewer
    /// indexes restores. A consistent copy only if nothing writes meanwhile: online the store
    /// actor's writer thread calls this between two batches; offline the caller holds the
    /// store's lock. Returns what was written.
    pub fn dump(&self, out: &mut dyn Write) -> Result<dump::Summary, StoreError> {
        use sha2::Digest as _;
        let mut w = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 16, out),
            sha: sha2::Sha256::new(),
            bytes: 0,
        };
        let write_err =
            |e: std::io::Error| StoreError::Io { path: "the backup being written".into(), source: e };
        let mut records = 0u64;
        let markers =
            [full_key(Tree::Meta, meta::ISSUED_INDEX_AT), full_key(Tree::Meta, meta::IMPORTED_INDEX_AT)];
        let indexes = [prefix(Tree::Issued), prefix(Tree::Imported)];
        for item in self.inner.tree.iter() {
            let (k, v) = item.map_err(backend)?;
            if k.first().is_some_and(|p| indexes.contains(p)) || markers.iter().any(|m| m[..] == k[..]) {
                continue;
            }
            for part in [&k[..], &v[..]] {
                let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
                w.write_all(&len.to_be_bytes()).map_err(write_err)?;
                w.write_all(part).map_err(write_err)?;
            }
            records += 1;
        }
        w.flush().map_err(write_err)?;
        Ok(dump::Summary { records, bytes: w.bytes, sha256: w.sha.finalize().into() })
    }

    /// Loads a [`dump`] read from `input` into this store (a new one: records it already
    /// holds, such as its format record, are replaced by the dump's), a batch at a time, then
    /// flushes. Every length is checked against its bound before anything is allocated for it,
    /// and every key must start with a logical tree's prefix; the first bad record stops the
    /// load, naming it.
    pub fn load_dump(&self, input: &mut dyn Read) -> Result<u64, dump::LoadError> {
        use dump::LoadError;
        let mut input = std::io::BufReader::with_capacity(1 << 16, input);
        let mut batch = sled::Batch::default();
        let mut batch_bytes = 0usize;
        let mut records = 0u64;
        let known: Vec<u8> = Tree::ALL.iter().map(|t| prefix(*t)).collect();
        loop {
            let mut len = [0u8; 4];
            // End of the dump: only between records.
            match read_full(&mut input, &mut len)? {
                0 => break,
                4 => {}
                _ => {
                    return Err(LoadError::Malformed {
                        record: records + 1,
                        detail: "cut short in its key length".into(),
                    })
                }
            }
            let key =
                read_part(&mut input, u32::from_be_bytes(len), dump::MAX_KEY_BYTES, records + 1, "key")?;
            if !key.first().is_some_and(|p| known.contains(p)) {
                return Err(LoadError::Malformed {
                    record: records + 1,
                    detail: "its key does not belong to any part of the store".into(),
                });
            }
            if read_full(&mut input, &mut len)? != 4 {
                return Err(LoadError::Malformed {
                    record: records + 1,
                    detail: "cut short in its value length".into(),
                });
            }
            let value =
                read_part(&mut input, u32::from_be_bytes(len), dump::MAX_VALUE_BYTES, records + 1, "value")?;
            batch_bytes += key.len() + value.len();
            batch.insert(key, value);
            records += 1;
            if batch_bytes >= dump::LOAD_BATCH_BYTES {
                self.inner.tree.apply_batch(std::mem::take(&mut batch)).map_err(backend)?;
                batch_bytes = 0;
            }
        }
        self.inner.tree.apply_batch(batch).map_err(backend)?;
        self.flush()?;
        Ok(records)
    }
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A key or value of `len` bytes (at most `max`), read without trusting `len` for more than
/// what arrives: the buffer grows as bytes come.
fn read_part(
    input: &mut dyn Read,
    len: u32,
    max: u32,
    record: u64,
    what: &str,
) -> Result<Vec<u8>, dump::LoadError> {
    if len > max {
        return Err(dump::LoadError::Malformed {
            record,
            detail: format!(
                "its {what} is said to be {len} bytes long, more than the {max} a store record may have"
            ),
        });
    }
    let mut out = Vec::new();
    let got = input.take(u64::from(len)).read_to_end(&mut out)?;
    if got != len as usize {
        return Err(dump::LoadError::Malformed { record, detail: format!("cut short in its {what}") });
    }
    Ok(out)
}
