//! An in-memory [`Storage`] that models durability exactly: commits land in a volatile
//! layer, `flush` makes them durable, and `crash` throws away everything not flushed. The
//! deterministic simulation uses it to check that nothing acknowledged is ever lost.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use super::{Storage, StoreError, Tree, Writes};

type Map = BTreeMap<(Tree, Vec<u8>), Vec<u8>>;

/// See the module documentation.
#[derive(Default)]
pub struct MemStorage {
    durable: RefCell<Map>,
    /// Committed but not flushed, in commit order (a crash loses all of it).
    pending: RefCell<Vec<Writes>>,
    /// If set, the next `flush` fails (a full disk).
    fail_next_flush: RefCell<bool>,
}

impl fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStorage")
            .field("durable_keys", &self.durable.borrow().len())
            .field("pending_commits", &self.pending.borrow().len())
            .finish()
    }
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Loses every commit not yet flushed, as a power cut would.
    pub fn crash(&self) {
        self.pending.borrow_mut().clear();
    }

    /// Makes the next flush fail.
    pub fn fail_next_flush(&self) {
        *self.fail_next_flush.borrow_mut() = true;
    }

    fn view(&self) -> Map {
        let mut m = self.durable.borrow().clone();
        for w in self.pending.borrow().iter() {
            apply(&mut m, w);
        }
        m
    }
}

fn apply(m: &mut Map, writes: &Writes) {
    for ((tree, key), value) in writes {
        match value {
            Some(v) => {
                m.insert((*tree, key.clone()), v.clone());
            }
            None => {
                m.remove(&(*tree, key.clone()));
            }
        }
    }
}

impl Storage for MemStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        for w in self.pending.borrow().iter().rev() {
            if let Some(v) = w.get(&(tree, key.to_vec())) {
                return Ok(v.clone());
            }
        }
        Ok(self.durable.borrow().get(&(tree, key.to_vec())).cloned())
    }

    fn range(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<super::KeyValue>, StoreError> {
        let view = self.view();
        Ok(view
            .range((tree, start.to_vec())..(tree, end.to_vec()))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last_before(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<super::KeyValue>, StoreError> {
        let view = self.view();
        Ok(view
            .range((tree, start.to_vec())..(tree, end.to_vec()))
            .next_back()
            .map(|((_, k), v)| (k.clone(), v.clone())))
    }

    fn commit(&self, writes: &Writes) -> Result<(), StoreError> {
        self.pending.borrow_mut().push(writes.clone());
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        if std::mem::take(&mut *self.fail_next_flush.borrow_mut()) {
            return Err(StoreError::Io {
                path: "memory".into(),
                source: std::io::Error::other("simulated full disk"),
            });
        }
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let mut durable = self.durable.borrow_mut();
        for w in &pending {
            apply(&mut durable, w);
        }
        Ok(())
    }
}
