//! The systemd notify protocol (`sd_notify(3)`), spoken directly: one Unix datagram per
//! message to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract socket when it
//! starts with `@`). No library: the protocol is a datagram of `KEY=value` lines.
//!
//! `kpnode run` sends `READY=1` once the store is open and both listeners are bound,
//! `STOPPING=1` when shutdown begins, `STATUS=…` as the node's state changes, and
//! `WATCHDOG=1` every half of `$WATCHDOG_USEC` while the node is healthy (see
//! `cli::run`). Without `$NOTIFY_SOCKET` (not started by systemd with `Type=notify`)
//! every call is a silent no-op.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where the notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for the log line when sending fails.
    name: String,
}

/// Why `$NOTIFY_SOCKET` or `$WATCHDOG_USEC` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is not a socket path or @abstract name: {1}")]
    Socket(String, #[source] std::io::Error),
    #[error("WATCHDOG_USEC={0:?} is not a positive whole number of microseconds")]
    WatchdogUsec(String),
}

impl Notifier {
    /// Nothing to notify.
    pub fn none() -> Notifier {
        Notifier { target: None, watchdog: None }
    }

    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` and removes them from the
    /// environment, so no child process (none today, but a hook or a shell-out one day)
    /// inherits them and talks to systemd as if it were the service. Call it before any
    /// other thread starts (it changes the process environment). The errors are for the log:
    /// the notifier then does what it still can.
    pub fn from_env() -> (Notifier, Vec<NotifyError>) {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var_os("WATCHDOG_USEC");
        let pid = std::env::var_os("WATCHDOG_PID");
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(name);
        }
        Notifier::from_vars(socket, usec, pid, std::process::id())
    }

    /// The notifier the variables describe, for process `me`. `$WATCHDOG_PID`, when set,
    /// names the process the watchdog is meant for: another one's is ignored.
    pub fn from_vars(
        socket: Option<OsString>,
        usec: Option<OsString>,
        pid: Option<OsString>,
        me: u32,
    ) -> (Notifier, Vec<NotifyError>) {
        let mut errors = Vec::new();
        let target = match socket {
            Some(name) if !name.is_empty() => match Target::connect(&name.to_string_lossy()) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            _ => None,
        };
        let for_me = pid.is_none_or(|p| p.to_str().and_then(|p| p.parse::<u32>().ok()) == Some(me));
        let watchdog = match usec {
            Some(v) if for_me && target.is_some() => {
                match v.to_str().and_then(|v| v.parse::<u64>().ok()).filter(|&u| u > 0) {
                    Some(u) => Some(Duration::from_micros(u)),
                    None => {
                        errors.push(NotifyError::WatchdogUsec(v.to_string_lossy().into_owned()));
                        None
                    }
                }
            }
            _ => None,
        };
        (Notifier { target, watchdog }, errors)
    }

    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
    /// advises, so one late ping does not get the service killed. `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| (w / 2).max(Duration::from_millis(1)))
    }

    /// `READY=1` with a status line: the service is up.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a status line: shutdown has begun.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=…`: shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the service is alive. Send it only after checking that it is.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    fn send(&self, message: &str) {
        if let Some(t) = &self.target {
            if let Err(e) = t.socket.send_to_addr(message.as_bytes(), &t.addr) {
                tracing::warn!(error = %e, socket = %t.name, "cannot notify systemd");
            }
        }
    }
}

impl Target {
    fn connect(name: &str) -> Result<Target, NotifyError> {
        let fail = |e| NotifyError::Socket(name.to_owned(), e);
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).map_err(fail)?
            }
            None if name.starts_with('/') => {
                std::os::unix::net::SocketAddr::from_pathname(name).map_err(fail)?
            }
            None => {
                return Err(fail(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "neither an absolute path nor @abstract",
                )))
            }
        };
        let socket = UnixDatagram::unbound().map_err(fail)?;
        Ok(Target { socket, addr, name: name.to_owned() })
    }
}

/// A status must stay one line: a newline would start another `KEY=value` assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let (n, errors) =
            Notifier::from_vars(Some(path.clone().into_os_string()), Some("3000000".into()), None, 7);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(1500)));
        n.ready("serving\nSTOPPING=1");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=serving STOPPING=1");
        n.watchdog();
        assert_eq!(recv(&listener), "WATCHDOG=1");
        n.stopping("stopping");
        assert_eq!(recv(&listener), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kpnode-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let (n, errors) = Notifier::from_vars(Some(format!("@{name}").into()), None, None, 7);
        assert!(errors.is_empty(), "{errors:?}");
        n.ready("up");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=up");
        // No WATCHDOG_USEC: no watchdog, and watchdog() sends nothing.
        assert_eq!(n.watchdog_interval(), None);
        n.watchdog();
        n.status("still up");
        assert_eq!(recv(&listener), "STATUS=still up");
    }

    #[test]
    fn the_watchdog_of_another_process_or_a_bad_value_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _listener = UnixDatagram::bind(&path).unwrap();
        let socket = Some(path.into_os_string());
        let (n, errors) = Notifier::from_vars(socket.clone(), Some("1000000".into()), Some("8".into()), 7);
        assert!(errors.is_empty());
        assert_eq!(n.watchdog_interval(), None, "WATCHDOG_PID names another process");
        let (n, errors) = Notifier::from_vars(socket.clone(), Some("1000000".into()), Some("7".into()), 7);
        assert!(errors.is_empty());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(500)));
        let (n, errors) = Notifier::from_vars(socket, Some("soon".into()), None, 7);
        assert_eq!(n.watchdog_interval(), None);
        assert!(
            matches!(&errors[..], [NotifyError::WatchdogUsec(v)] if v == "soon"),
            "a bad WATCHDOG_USEC is reported: {errors:?}"
        );
    }

    #[test]
    fn a_bad_socket_name_is_reported_and_nothing_is_sent() {
        let (n, errors) = Notifier::from_vars(Some("relative/path".into()), Some("1000".into()), None, 7);
        assert!(
            errors.iter().any(|e| e.to_string().contains("NOTIFY_SOCKET=\"relative/path\"")),
            "{errors:?}"
        );
        assert_eq!(n.watchdog_interval(), None);
        n.ready("nowhere");
        let (n, errors) = Notifier::from_vars(None, Some("1000".into()), None, 7);
        assert!(errors.is_empty());
        assert_eq!(n.watchdog_interval(), None, "no socket, no watchdog");
    }
}
