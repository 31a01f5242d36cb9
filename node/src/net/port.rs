//! Picking a loopback port before the process that will listen on it starts: for nodes that
//! must be told each other's addresses in advance (the bench's two daemons, the tests' nodes
//! that keep their address across restarts). Everything else binds port 0.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A loopback port that was free a moment ago.
///
/// The port is taken from below the kernel's ephemeral range. A port the kernel handed out
/// for port 0 and that was then released is the very one it may hand out again, to another
/// listener bound to port 0 a moment later (the node's API, say), whose bind then makes this
/// one's fail with "address in use". Ports below the range are never handed out that way.
/// Each call in a process (any thread) takes the next candidate after the last one's, from a
/// start chosen once per process, so two calls in one process never get the same port.
pub fn free_loopback_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    let (low, high) = (10_000u32, ephemeral_low().clamp(10_001, 65_535));
    if high - low < 1_000 {
        // An unusual ephemeral range: fall back to the kernel's choice.
        return TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
    }
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::process::id().wrapping_mul(7_919).wrapping_add(nanos)
    });
    let span = high - low;
    for _ in 0..span {
        let next = u64::from(start) + u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
        // Below 65,536: low + (next % span) < high ≤ 65,535.
        let port = (u64::from(low) + next % u64::from(span)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free loopback port between {low} and {high}"),
    ))
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse().ok()))
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_differ_call_to_call() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..20).map(|_| free_loopback_port().unwrap()).collect();
        for p in &ports {
            assert!((10_000..low).contains(&u32::from(*p)), "{p} not in 10000..{low}");
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
    }
}
