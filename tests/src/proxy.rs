//! A fault-injecting TCP proxy for loopback tests: placed between two nodes, it forwards
//! bytes both ways and, as a seeded generator decides, cuts connections at random points,
//! delays and stalls chunks, and truncates them (forwarding part of a chunk, then closing).
//! TLS makes any corruption a cut, so the proxy works at the level that matters: the
//! connection dies at an arbitrary byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often each fault strikes, per forwarded chunk.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Close both directions at once.
    pub cut: f64,
    /// Forward a prefix of the chunk, then close.
    pub truncate: f64,
    /// Hold the chunk for `stall_ms` (long enough for timeouts to notice).
    pub stall: f64,
    pub stall_ms: u64,
    /// Every chunk waits up to this long.
    pub max_delay_ms: u64,
}

impl Faults {
    pub const NONE: Faults = Faults { cut: 0.0, truncate: 0.0, stall: 0.0, stall_ms: 0, max_delay_ms: 0 };
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub bytes: AtomicU64,
    pub cuts: AtomicU64,
    pub truncations: AtomicU64,
    pub stalls: AtomicU64,
}

impl ProxyStats {
    pub fn faults(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
            + self.truncations.load(Ordering::SeqCst)
            + self.stalls.load(Ordering::SeqCst)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} connections, {} bytes, {} cuts, {} truncations, {} stalls",
            self.connections.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
            self.cuts.load(Ordering::SeqCst),
            self.truncations.load(Ordering::SeqCst),
            self.stalls.load(Ordering::SeqCst)
        )
    }
}

/// A running proxy: `addr` forwards to the upstream given at start.
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub stats: Arc<ProxyStats>,
    /// While false, faults are off (the proxy forwards faithfully).
    pub active: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
}

impl FaultProxy {
    /// Starts on `127.0.0.1:0` in `rt`, forwarding to `upstream`.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        upstream: SocketAddr,
        faults: Faults,
        seed: u64,
    ) -> FaultProxy {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let stats = Arc::new(ProxyStats::default());
        let active = Arc::new(AtomicBool::new(true));
        let stop = tokio_util::sync::CancellationToken::new();
        let (s, a, st) = (stats.clone(), active.clone(), stop.clone());
        rt.spawn(async move {
            let mut n = 0u64;
            loop {
                let client = tokio::select! {
                    _ = st.cancelled() => return,
                    c = listener.accept() => match c { Ok((c, _)) => c, Err(_) => continue },
                };
                n += 1;
                s.connections.fetch_add(1, Ordering::SeqCst);
                let (s, a, st) = (s.clone(), a.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let dead = tokio_util::sync::CancellationToken::new();
                    let up = pump(
                        cr,
                        sw,
                        faults,
                        StdRng::seed_from_u64(seed ^ (n << 1)),
                        s.clone(),
                        a.clone(),
                        dead.clone(),
                    );
                    let down =
                        pump(sr, cw, faults, StdRng::seed_from_u64(seed ^ (n << 1 | 1)), s, a, dead.clone());
                    tokio::select! {
                        _ = st.cancelled() => {}
                        _ = async { tokio::join!(up, down) } => {}
                    }
                });
            }
        });
        FaultProxy { addr, stats, active, stop }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    f: Faults,
    mut rng: StdRng,
    stats: Arc<ProxyStats>,
    active: Arc<AtomicBool>,
    dead: tokio_util::sync::CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            _ = dead.cancelled() => return,
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => { dead.cancel(); return } Ok(n) => n },
        };
        let on = active.load(Ordering::SeqCst);
        if on && f.max_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=f.max_delay_ms))).await;
        }
        if on && rng.gen_bool(f.stall) {
            stats.stalls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(f.stall_ms)).await;
        }
        if on && rng.gen_bool(f.cut) {
            stats.cuts.fetch_add(1, Ordering::SeqCst);
            dead.cancel();
            return;
        }
        if on && rng.gen_bool(f.truncate) {
            stats.truncations.fetch_add(1, Ordering::SeqCst);
            let keep = rng.gen_range(0..n);
            let _ = to.write_all(&buf[..keep]).await;
            dead.cancel();
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            dead.cancel();
            return;
        }
        stats.bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
}
