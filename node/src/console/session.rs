//! Console sessions, in memory: a node restart signs everyone out. (The sign-in throttle is
//! [`crate::state::throttle`], shared with the API's unlock.)
//!
//! A session is named by 256 random bits in an HttpOnly, SameSite=Strict cookie, and carries
//! its own CSRF token (256 random bits), which every form of the session must send back.
//! Sessions end after [`IDLE`] without a request, [`LIFETIME`] after sign-in, at sign-out,
//! when the account is disabled, or when its password is set again by anyone (each session
//! keeps the account's password generation from its sign-in, and every request compares it
//! with the stored one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// A session not used for this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most: beyond that, a sign-in first drops ended sessions, then is refused.
pub const MAX_SESSIONS: usize = 10_000;

/// 256 random bits, as 64 hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets without an early exit.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signed-in user's session.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    /// The account's password generation when this session began: a password set since
    /// (by the user elsewhere, or `users passwd`) ends the session.
    pub generation: u64,
    started: Instant,
    last_seen: Instant,
}

/// Every open session, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session for `user`; its id, or `None` when [`MAX_SESSIONS`] are open.
    pub fn open(&self, user: &str, generation: u64, now: Instant) -> Option<(String, Session)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| alive(s, now));
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let id = random_token();
        let session =
            Session { user: user.to_owned(), csrf: random_token(), generation, started: now, last_seen: now };
        map.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The live session `id`, marked as used now; an ended one is dropped.
    pub fn touch(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let session = map.get_mut(id)?;
        if !alive(session, now) {
            map.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// The session `id` goes on under the account's new password generation (the user's own
    /// change of password, made from it).
    pub fn set_generation(&self, id: &str, generation: u64) {
        if let Some(s) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            s.generation = generation;
        }
    }

    pub fn close(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Ends every session of `user` (a disabled account, a changed password) but `keep`.
    pub fn close_user(&self, user: &str, keep: Option<&str>) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, s| s.user != user || Some(id.as_str()) == keep);
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE && now.duration_since(s.started) < LIFETIME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_closed() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, session) = s.open("anna", 0, t0).unwrap();
        assert_eq!(session.csrf.len(), 64);
        assert!(s.touch(&id, t0 + IDLE / 2).is_some());
        assert!(s.touch(&id, t0 + IDLE / 2 + IDLE).is_none());
        let (id, _) = s.open("anna", 0, t0).unwrap();
        s.close_user("anna", None);
        assert!(s.touch(&id, t0).is_none());
    }
}
