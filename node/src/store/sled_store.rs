//! [`Storage`] on sled 0.34.7, with the node's own lock file and the workaround for sled's
//! crash-during-snapshot bug (DESIGN.md, "The log").

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{meta, Storage, StoreError, Tree, Writes};

/// The sled store of a node. Cheap to clone; every clone shares the lock and the database.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Vec<sled::Tree>,
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
        let (store, _) = Self::open_inner(path, cache_capacity_mb)?;
        store.commit(&Writes::from([(
            (Tree::Meta, meta::FORMAT.to_vec()),
            Some(meta::FORMAT_VERSION.as_bytes().to_vec()),
        )]))?;
        store.flush()?;
        Ok(store)
    }

    /// Opens an existing store.
    pub fn open(path: &Path, cache_capacity_mb: u32) -> Result<(SledStore, OpenReport), StoreError> {
        if !path.join("db").exists() {
            return Err(StoreError::Missing { path: path.display().to_string() });
        }
        let (store, report) = Self::open_inner(path, cache_capacity_mb)?;
        match store.get(Tree::Meta, meta::FORMAT)? {
            Some(v) if v == meta::FORMAT_VERSION.as_bytes() => Ok((store, report)),
            other => Err(StoreError::Format {
                found: other
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|| "unset".into()),
                expected: meta::FORMAT_VERSION.into(),
            }),
        }
    }

    fn open_inner(path: &Path, cache_capacity_mb: u32) -> Result<(SledStore, OpenReport), StoreError> {
        let lock = take_lock(path)?;
        // Only now, holding the lock (so no live sled can be writing a snapshot), is it safe
        // to remove what an interrupted snapshot left behind.
        let removed = remove_partial_snapshots(path)?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(u64::from(cache_capacity_mb) * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let trees = Tree::ALL.iter().map(|t| db.open_tree(t.name())).collect::<Result<Vec<_>, _>>()?;
        let store = SledStore { inner: Arc::new(Inner { db, trees, path: path.to_owned(), _lock: lock }) };
        Ok((store, OpenReport { removed_partial_snapshots: removed }))
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        &self.inner.trees[t as usize]
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

/// Takes the store's lock file, writing our pid into it; says who holds it if taken.
fn take_lock(path: &Path) -> Result<File, StoreError> {
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
        Ok(self.tree(tree).get(key)?.map(|v| v.to_vec()))
    }

    fn range(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<super::KeyValue>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(tree).range(start..end).take(limit) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last_before(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<super::KeyValue>, StoreError> {
        match self.tree(tree).range(start..end).next_back() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn commit(&self, writes: &Writes) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        if writes.is_empty() {
            return Ok(());
        }
        let trees: &[sled::Tree] = &self.inner.trees;
        trees
            .transaction(|tx| {
                for ((tree, key), value) in writes {
                    let t = &tx[*tree as usize];
                    match value {
                        Some(v) => {
                            t.insert(key.as_slice(), v.as_slice())?;
                        }
                        None => {
                            t.remove(key.as_slice())?;
                        }
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => StoreError::Sled(sled::Error::ReportableBug(
                    "transaction aborted without a reason".into(),
                )),
            })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }
}
