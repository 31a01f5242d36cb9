//! Frames over a byte stream. The reader owns a buffer and tells "frame incomplete" (read
//! more) from "frame invalid" (close the link); its buffer grows only with bytes that
//! actually arrived, and never past one maximum frame plus one read. The writer batches
//! frames into one buffer and writes it with a single call.

use std::time::Duration;

use kp_protocol::frame::{decode_frame_with_id, encode_frame, FrameError};
use kp_protocol::Frame;
use kp_protocol::MessageId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the peer sent an invalid frame: {0}")]
    Frame(#[from] FrameError),
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error("timed out after {0:?} {1}")]
    Timeout(Duration, &'static str),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// What the link's state machine refused (see [`kp_exchange::link::LinkError`]).
    #[error(transparent)]
    Exchange(#[from] kp_exchange::link::LinkError),
    /// Re-judged after a change of trust: the link's TLS key is no longer trusted.
    #[error("closed: {0}")]
    Untrusted(kp_exchange::trust::Distrust),
    /// The store did not take what the link handed it (nothing of it is acknowledged).
    #[error(transparent)]
    Store(#[from] crate::actor::ActorError),
    #[error("the peer closed the connection")]
    PeerClosed,
    #[error("the node is shutting down")]
    Stopping,
    /// The connection's writer task ended (its socket failed).
    #[error("the connection's writer stopped")]
    WriterStopped,
    #[error("a task of the link failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LinkError {
    /// Whether the peer broke the protocol (counted, and logged as a warning), rather than
    /// the connection or this node failing. Another protocol version is not a fault: it is
    /// what a rolling upgrade looks like.
    pub fn is_peer_fault(&self) -> bool {
        use kp_exchange::link::LinkError as X;
        matches!(self, LinkError::Protocol(_) | LinkError::Frame(_) | LinkError::Exchange(X::Protocol(_)))
    }
}

/// Reads frames from `R`. `read_frame` is cancel-safe: the buffer changes only after a read
/// completes, so a `select!` that drops the future loses nothing.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    chunk: Box<[u8]>,
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset are consumed.
    start: usize,
    max_frame: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: u32) -> FrameReader<R> {
        FrameReader {
            inner,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            buf: Vec::new(),
            start: 0,
            max_frame,
        }
    }

    /// The next frame already in the buffer, if a whole one is there.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        Ok(self.buffered_frame_with_id()?.map(|(f, _)| f))
    }

    /// As `buffered_frame`; for a `Deliver`, also the actual id of its document.
    pub fn buffered_frame_with_id(&mut self) -> Result<Option<(Frame, Option<MessageId>)>, LinkError> {
        match decode_frame_with_id(&self.buf[self.start..], self.max_frame)? {
            Some((frame, used, id)) => {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Ok(Some((frame, id)))
            }
            None => Ok(None),
        }
    }

    /// The next frame; `None` when the peer closed the connection between frames. An
    /// oversized length prefix is refused as soon as its four bytes are in, before any of the
    /// body is read.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        Ok(self.read_frame_with_id().await?.map(|(f, _)| f))
    }

    /// As `read_frame`; for a `Deliver`, also the actual id of its document.
    pub async fn read_frame_with_id(&mut self) -> Result<Option<(Frame, Option<MessageId>)>, LinkError> {
        loop {
            if let Some(frame) = self.buffered_frame_with_id()? {
                return Ok(Some(frame));
            }
            // Compact before reading so the buffer never holds more than one partial frame
            // plus one chunk.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let n = self.inner.read(&mut self.chunk).await?;
            self.buf.extend_from_slice(&self.chunk[..n]);
            if n == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(LinkError::Truncated) };
            }
        }
    }

    /// Reads a frame, failing after `limit`.
    pub async fn read_frame_within(
        &mut self,
        limit: Duration,
        what: &'static str,
    ) -> Result<Option<Frame>, LinkError> {
        Ok(self.read_frame_with_id_within(limit, what).await?.map(|(f, _)| f))
    }

    /// As `read_frame_within`, with the actual id of a `Deliver`'s document.
    pub async fn read_frame_with_id_within(
        &mut self,
        limit: Duration,
        what: &'static str,
    ) -> Result<Option<(Frame, Option<MessageId>)>, LinkError> {
        match tokio::time::timeout(limit, self.read_frame_with_id()).await {
            Ok(r) => r,
            Err(_) => Err(LinkError::Timeout(limit, what)),
        }
    }
}

/// Writes frames to `W`.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
    max_frame: u32,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, max_frame: u32) -> FrameWriter<W> {
        FrameWriter { inner, buf: Vec::with_capacity(READ_CHUNK), max_frame }
    }

    /// Adds a frame to the pending buffer.
    pub fn queue(&mut self, frame: &Frame) -> Result<(), LinkError> {
        encode_frame(frame, self.max_frame, &mut self.buf)?;
        Ok(())
    }

    /// The underlying writer, for writing bytes that are not frames (tests of hostile input).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything pending.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.inner.flush().await?;
        Ok(())
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        self.queue(frame)?;
        self.flush().await
    }

    pub async fn shutdown(&mut self) {
        let _ = self.inner.shutdown().await;
    }
}
