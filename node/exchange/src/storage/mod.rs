//! Storage: the interface the exchange rules store through, the key layout and every stored
//! record.
//!
//! The exchange rules (`engine`) speak to a [`Storage`]: logical trees, point reads, range
//! reads, an atomic commit across trees and a flush that makes every commit so far durable.
//! The node implements it on sled 0.34.7 (`kp_node::store::SledStore`: one sled tree,
//! `kpnode.v1`, each logical tree a key prefix); [`MemStorage`] implements it in memory with
//! an explicit "lose everything not flushed" crash, for the deterministic simulation.
//!
//! # Keys
//! | tree | key | value |
//! |---|---|---|
//! | `log.v1` | seq (u64 BE) | [`LogRecord`]: the [`LogEntry`] (with its [`Officer`]), and the receipt given for it |
//! | `certs.v1` | certificate number | [`CertRecord`] |
//! | `outbox.v1` | peer (2 bytes) ‖ oseq (u64 BE) | [`OutboxEntry`] |
//! | `messages.v1` | `i` ‖ peer ‖ message id | seq of a peer's key rotation statement in the log |
//! | `peers.v1` | participant code | [`PeerRecord`] |
//! | `meta.v1` | name | log head, counters, number sequences, remembered idempotency keys, the officer of each document sent |
//! | `registry.v1` | participant code | the participant's recorded registry changes |
//! | `issued.v1` | date of issue (days since 1970, sign bit flipped, u32 BE) ‖ certificate number | nothing: the certificates by date of issue ([`index`]) |
//! | `imported.v1` | `d` ‖ date of import (as above) ‖ number, or `w` ‖ number | nothing: the certificates received, confirmed here by date of import (`d`) or waiting for this node's confirmation (`w`) ([`index`]) |
//!
//! Every record written for each certificate has a sequential key (log and outbox
//! sequences, certificate numbers): sled 0.34 takes about three times as long to write a
//! large record under a random key (measured: 12 µs against 42 µs for 1 KB). Duplicates are
//! recognised through the content instead (a certificate's record holds its message id).

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use kp_protocol::{codec, MessageId, ParticipantCode};

pub mod index;
mod mem;
pub mod records;

pub use mem::MemStorage;
pub use records::*;

/// The trees of the store. Names carry the format version.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Tree {
    Log,
    Certs,
    Outbox,
    Messages,
    Peers,
    Meta,
    Registry,
    /// Identities a peer had before an identity change (`peer add --replace-identity`), kept
    /// so the log entries signed under them still verify.
    PeerArchive,
    /// The certificates by date of issue: an index of `certs.v1` ([`index`]).
    Issued,
    /// The certificates received, by date of import or waiting to be confirmed: an index of
    /// `certs.v1` ([`index`]).
    Imported,
}

impl Tree {
    pub const ALL: [Tree; 10] = [
        Tree::Log,
        Tree::Certs,
        Tree::Outbox,
        Tree::Messages,
        Tree::Peers,
        Tree::Meta,
        Tree::Registry,
        Tree::PeerArchive,
        Tree::Issued,
        Tree::Imported,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Tree::Log => "log.v1",
            Tree::Certs => "certs.v1",
            Tree::Outbox => "outbox.v1",
            Tree::Messages => "messages.v1",
            Tree::Peers => "peers.v1",
            Tree::Meta => "meta.v1",
            Tree::Registry => "registry.v1",
            Tree::PeerArchive => "peer_archive.v1",
            Tree::Issued => "issued.v1",
            Tree::Imported => "imported.v1",
        }
    }
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Writes to apply atomically: `None` removes the key.
pub type Writes = BTreeMap<(Tree, Vec<u8>), Option<Vec<u8>>>;

/// What an operator can do about an I/O error on the store.
fn io_hint(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind as K;
    match kind {
        K::ReadOnlyFilesystem => {
            "; the disk holding the store is read-only: remount it read-write (the kernel log says why it \
went read-only)"
        }
        K::StorageFull | K::QuotaExceeded => "; free space on the disk holding the store",
        K::FileTooLarge => {
            "; a file-size limit was reached (`ulimit -f` of the process, or the filesystem's largest file): \
lift the limit or move the store"
        }
        K::PermissionDenied => "; run kpnode as the user that owns the node directory",
        _ => "",
    }
}

impl StoreError {
    /// An I/O failure (full or read-only disk, a file-size limit), after which the store
    /// (sled) refuses every write until it is reopened.
    pub fn is_io(&self) -> bool {
        matches!(self, StoreError::Io { .. } | StoreError::Backend { io: Some(_), .. })
    }
}

/// Why the store failed. The node reports these; it never "repairs" by deleting data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the store at {path} is in use by another kpnode process ({holder}); stop it first, or use the running daemon through its API")]
    Locked { path: String, holder: String },
    #[error("the store at {path} does not exist; run `kpnode init` first")]
    Missing { path: String },
    /// A failure of the storage backend (sled, in the node); `io` is the kind of an I/O
    /// failure under it, for the operator's hint.
    #[error("storage failure: {source}{}", io.map(io_hint).unwrap_or(""))]
    Backend { source: Box<dyn std::error::Error + Send + Sync>, io: Option<std::io::ErrorKind> },
    #[error("{path}: {source}{}", io_hint(source.kind()))]
    Io { path: String, source: std::io::Error },
    #[error("store record {tree}[{key}] is damaged: {detail}")]
    Corrupt { tree: &'static str, key: String, detail: String },
    /// The store is in another format than the one this kpnode reads: `newer` when a later
    /// kpnode wrote it (run that one: stores are never converted back), else an older or
    /// unknown format this kpnode has no migration from.
    #[error(
        "the store at {path} is in format {found}, {}",
        if *newer {
            format!("written by a newer kpnode; this kpnode reads {expected} and cannot use it: run the kpnode \
version that wrote it, or a newer one (a store is never converted back to an older format)")
        } else {
            format!("but this kpnode reads {expected} and has no migration from it; export its log with the kpnode \
that wrote it (`kpnode log export`) and initialise a new node directory")
        }
    )]
    Format { path: String, found: String, expected: String, newer: bool },
    /// A signature this batch needs (a receipt) could not be made: the signing key's token
    /// failed. Nothing of the batch is written; the sender resends it later.
    #[error("{0}; nothing in this batch was stored, it is taken again once the key signs")]
    Signing(#[from] kp_keys::SignError),
}

/// The interface the exchange rules use.
pub trait Storage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `start <= key < end`, in key order, at most `limit`.
    fn range(&self, tree: Tree, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError>;
    /// The entry with the greatest key below `end` and at or above `start`.
    fn last_before(&self, tree: Tree, start: &[u8], end: &[u8]) -> Result<Option<KeyValue>, StoreError>;
    /// Applies `writes` atomically: after a crash, all of them or none.
    fn commit(&self, writes: &Writes) -> Result<(), StoreError>;
    /// Makes every commit so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Decodes a record, naming the tree and key if it is damaged.
pub fn decode_record<T: Decode<()>>(tree: Tree, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|e| StoreError::Corrupt {
        tree: tree.name(),
        key: printable_key(key),
        detail: e.to_string(),
    })
}

pub fn encode_record<T: Encode>(value: &T) -> Vec<u8> {
    codec::encode(value)
}

fn printable_key(key: &[u8]) -> String {
    if key.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(key).into_owned()
    } else {
        kp_protocol::digest::hex(key)
    }
}

/// A typed read.
pub fn get_record<T: Decode<()>, S: Storage + ?Sized>(
    s: &S,
    tree: Tree,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match s.get(tree, key)? {
        Some(bytes) => decode_record(tree, key, &bytes).map(Some),
        None => Ok(None),
    }
}

pub fn log_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// A log record read back: the record, and its entry decoded.
pub fn decode_log(key: &[u8], bytes: &[u8]) -> Result<(LogEntry, LogRecord), StoreError> {
    let record: LogRecord = decode_record(Tree::Log, key, bytes)?;
    let entry = LogEntry::decode_stored(&record.entry).map_err(|e| StoreError::Corrupt {
        tree: Tree::Log.name(),
        key: printable_key(key),
        detail: e.to_string(),
    })?;
    Ok((entry, record))
}

/// The entry at `seq`, if there is one.
pub fn read_log<S: Storage + ?Sized>(s: &S, seq: u64) -> Result<Option<(LogEntry, LogRecord)>, StoreError> {
    match s.get(Tree::Log, &log_key(seq))? {
        Some(bytes) => decode_log(&log_key(seq), &bytes).map(Some),
        None => Ok(None),
    }
}

pub fn outbox_key(peer: ParticipantCode, oseq: u64) -> Vec<u8> {
    let mut k = peer.as_bytes().to_vec();
    k.extend_from_slice(&oseq.to_be_bytes());
    k
}

/// The range of one peer's outbox entries after `after`.
pub fn outbox_range(peer: ParticipantCode, after: u64) -> (Vec<u8>, Vec<u8>) {
    let start = outbox_key(peer, after.saturating_add(1));
    let mut end = peer.as_bytes().to_vec();
    end.extend_from_slice(&[0xff; 9]);
    (start, end)
}

pub fn in_message_key(peer: ParticipantCode, id: &MessageId) -> Vec<u8> {
    message_key(b'i', peer, id)
}

fn message_key(dir: u8, peer: ParticipantCode, id: &MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(35);
    k.push(dir);
    k.extend_from_slice(&peer.as_bytes());
    k.extend_from_slice(&id.0);
    k
}

/// Names of `meta` entries.
/// The `meta` key of a certificate's resolution.
pub fn resolution_key(number: &kp_protocol::CertificateNumber) -> Vec<u8> {
    format!("{}{number}", meta::RESOLUTION_PREFIX).into_bytes()
}

/// The `meta` key of the [`ReplacementRecord`] of certificate `number`.
pub fn replacement_key(number: &kp_protocol::CertificateNumber) -> Vec<u8> {
    format!("{}{number}", meta::REPLACED_PREFIX).into_bytes()
}

pub mod meta {
    pub const FORMAT: &[u8] = b"format";
    pub const PARTICIPANT: &[u8] = b"participant";
    pub const LOG_HEAD: &[u8] = b"log_head";
    pub const COUNTS: &[u8] = b"counts";
    /// The sequence of the last own key rotation queued for the peers.
    pub const ROTATIONS_ANNOUNCED: &[u8] = b"rotations_announced";
    /// `number/<year>`: the last certificate sequence assigned that year.
    pub const NUMBER_PREFIX: &str = "number/";
    /// `queued/<CC>`: messages waiting for a peer.
    pub const QUEUED_PREFIX: &str = "queued/";
    /// `idempotency/<key>`: an [`IdempotencyRecord`](super::IdempotencyRecord).
    pub const IDEMPOTENCY_PREFIX: &str = "idempotency/";
    /// `idempotency-at/<ms since 1970, u64 BE><key>`: the same keys in the order they were
    /// stored, so expired ones are found (and removed) without a scan.
    pub const IDEMPOTENCY_AT_PREFIX: &str = "idempotency-at/";
    /// `resolution/<certificate number>`: a [`ResolutionRecord`](super::ResolutionRecord),
    /// kept beside the certificate's record so certificate records written before
    /// resolutions existed keep their encoding.
    pub const RESOLUTION_PREFIX: &str = "resolution/";
    /// `replaced/<certificate number>`: a [`ReplacementRecord`](super::ReplacementRecord),
    /// kept beside the certificate's record for the same reason.
    pub const REPLACED_PREFIX: &str = "replaced/";
    /// `signed/<CC>/<key id>`: the latest `signed_at` of anything stored from a peer (a
    /// delivered document, a receipt) signed with one of its keys. A rotation of that key
    /// must take effect after it, or it would disown what this node already holds.
    pub const SIGNED_PREFIX: &str = "signed/";

    /// The `signed/<CC>/<key id>` entry of `peer`'s key `key_id`.
    pub fn signed_with(peer: kp_protocol::ParticipantCode, key_id: kp_protocol::KeyId) -> Vec<u8> {
        format!("{SIGNED_PREFIX}{peer}/{key_id}").into_bytes()
    }
    /// `officer/<message id, hex>`: the [`Officer`](super::Officer) who had this node sign
    /// and send the document with that id, written when it is queued, so the log entry made
    /// when the partner's receipt arrives names them, and so views show them meanwhile.
    pub const OFFICER_PREFIX: &str = "officer/";
    /// The `officer/<id>` entry of the document `id`.
    pub fn officer_key(id: &kp_protocol::MessageId) -> Vec<u8> {
        format!("{OFFICER_PREFIX}{}", kp_protocol::digest::hex(&id.0)).into_bytes()
    }
    /// The seq of the first log entry written in format 3, in a store migrated from format 2
    /// (entries before it are in the format-2 layout, with no officer). Absent in a store
    /// created in format 3. `log verify` checks every entry's layout against it.
    pub const LOG_FORMAT3_FROM: &[u8] = b"log_format3_from";
    /// A copy of `counts` as they were when the index of certificates by date of issue
    /// (`issued.v1`) was last known complete (see [`super::index`]).
    pub const ISSUED_INDEX_AT: &[u8] = b"index/issued";
    /// The same for the index of certificates received (`imported.v1`), kept apart because a
    /// kpnode that keeps the first index but not this one copies the counters to the first.
    pub const IMPORTED_INDEX_AT: &[u8] = b"index/imported";

    /// The store format this code reads and writes, in `format`. A change to the key layout
    /// or to a record's encoding that older code would misread takes the next number, with a
    /// migration from every earlier one this code still opens (see the README's "Upgrades").
    /// Format 3 added the officer to the log entry (format 2 is migrated, see
    /// `kp_node::store`).
    pub const FORMAT_VERSION: &str = "kpnode-store/3";
    /// The older formats this code migrates on open.
    pub const MIGRATES_FROM: &[&str] = &["kpnode-store/2"];

    /// The number of a format name `kpnode-store/<n>`, to tell an older store from a newer.
    pub fn format_number(name: &str) -> Option<u32> {
        let n = name.strip_prefix("kpnode-store/")?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::meta::{format_number, FORMAT_VERSION};

    #[test]
    fn format_names_have_numbers_to_compare() {
        assert_eq!(format_number(FORMAT_VERSION), Some(3));
        assert_eq!(format_number("kpnode-store/10"), Some(10));
        for not_a_format in [
            "kpnode-store/",
            "kpnode-store/+3",
            "kpnode-store/3 ",
            "kpnode-store/1 (one sled tree per kind of record)",
            "unset",
            "other/3",
        ] {
            assert_eq!(format_number(not_a_format), None, "{not_a_format}");
        }
    }
}
