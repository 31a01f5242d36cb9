//! `POST /v1/backup/snapshot`: the store's dump for `kpnode backup` on a running node. The
//! store actor writes it between two batches (a consistent snapshot) into a file nobody else
//! can open (created 0600 in the node directory and unlinked at once, so a crash leaves
//! nothing behind); the answer streams that file, a chunk at a time. The node's keys never
//! pass through the API: `kpnode backup` reads them from the node directory itself.

use std::io::{Read, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::{ApiError, ApiResult, ErrorBody};
use crate::state::Shared;
use crate::store::{meta, Storage, Tree};

/// Response headers describing the dump in the body.
pub const DUMP_SHA256: &str = "x-kpnode-dump-sha256";
pub const DUMP_RECORDS: &str = "x-kpnode-dump-records";
pub const LOG_SEQ: &str = "x-kpnode-log-seq";
pub const LOG_HASH: &str = "x-kpnode-log-hash";
pub const STORE_FORMAT: &str = "x-kpnode-store-format";

/// How long a chunk of the answer may wait for the client to take it.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Marks a backup as running until dropped.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.backup_running.store(false, Ordering::Release);
    }
}

/// The body: chunks read from the snapshot file on a blocking thread.
struct Chunks(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[utoipa::path(post, path = "/v1/backup/snapshot", tag = "node",
    description = "A consistent dump of the whole store (every record, as `kpnode backup` puts it in a backup file), taken by the store actor between two batches after a flush. Writes wait while it is taken. One at a time: another request meanwhile is answered 409 until the first answer is sent or given up (a client that reads nothing for 60 s has its answer cut short). The body is the dump (see docs/operations.md, \"Backup file format\"); the headers give its SHA-256, record count, the log head it ends at and the store format. `kpnode backup` is the client: it adds node.toml (and the keys, read from the node directory, never through the API) and the manifest.",
    responses((status = 200, description = "The dump", content_type = "application/octet-stream", body = String,
            headers(("x-kpnode-dump-sha256" = String, description = "SHA-256 of the body, hex"),
                ("x-kpnode-dump-records" = u64, description = "Records in the dump"),
                ("x-kpnode-log-seq" = u64, description = "The log's last entry in the dump (0: none)"),
                ("x-kpnode-log-hash" = String, description = "That entry's hash, hex"),
                ("x-kpnode-store-format" = String, description = "The store format of the records"))),
        (status = 401, body = ErrorBody),
        (status = 409, description = "A backup is in progress (one at a time)", body = ErrorBody),
        (status = 503, description = "The store failed or the node is stopping", body = ErrorBody)))]
pub(super) async fn snapshot(State(shared): State<Arc<Shared>>) -> ApiResult<Response> {
    if shared.backup_running.swap(true, Ordering::AcqRel) {
        return Err(ApiError::Conflict(
            "a backup is in progress; retry when it is done (one snapshot is taken and sent at a time)"
                .into(),
        ));
    }
    let running = Running(shared.clone());
    static N: AtomicU64 = AtomicU64::new(0);
    let path = shared.dir.root().join(format!(
        ".backup-snapshot-{}-{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let internal =
        |what: &str, e: std::io::Error| ApiError::Internal(format!("{}: {what}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| internal("cannot create the snapshot file", e))?;
    // Unlinked at once: the descriptors keep it until the answer is sent.
    let _ = std::fs::remove_file(&path);
    let mut reader = file.try_clone().map_err(|e| internal("cannot open the snapshot file", e))?;
    let snap = shared.actor.snapshot(file).await?;
    let format = shared.store.get(Tree::Meta, meta::FORMAT)?.unwrap_or_default();
    let format = String::from_utf8_lossy(&format).into_owned();

    let (tx, rx) = mpsc::channel(4);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // Held until the file is closed: the next snapshot waits for this one's copy to go.
        let _running = running;
        // A chunk not taken within IDLE_TIMEOUT (the client stopped reading) ends the answer
        // cut short, closing the file: a client cannot hold a copy of the store on disk.
        let send = |item| match runtime.block_on(tx.send_timeout(item, IDLE_TIMEOUT)) {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::warn!(
                    "an online backup's client read nothing for {} s; its answer was cut short",
                    IDLE_TIMEOUT.as_secs()
                );
                false
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
        };
        if let Err(e) = reader.rewind() {
            send(Err(e));
            return;
        }
        loop {
            let mut buf = vec![0u8; 1 << 16];
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    // The client went away or stopped reading: stop.
                    if !send(Ok(Bytes::from(buf))) {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    send(Err(e));
                    return;
                }
            }
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, snap.dump.bytes.to_string()),
        (header::HeaderName::from_static(DUMP_SHA256), kp_protocol::digest::hex(&snap.dump.sha256)),
        (header::HeaderName::from_static(DUMP_RECORDS), snap.dump.records.to_string()),
        (header::HeaderName::from_static(LOG_SEQ), snap.log_seq.to_string()),
        (header::HeaderName::from_static(LOG_HASH), snap.log_hash.to_hex()),
        (
            header::HeaderName::from_static(STORE_FORMAT),
            format.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(128).collect(),
        ),
    ];
    Ok((headers, Body::from_stream(Chunks(rx))).into_response())
}
