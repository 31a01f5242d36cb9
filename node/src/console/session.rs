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
/// Sessions one account holds at most: its next sign-in ends its oldest, so that one account
/// (or whoever has its password) cannot fill the table and lock everyone else out.
pub const MAX_SESSIONS_PER_USER: usize = 20;

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
    /// Opens a session for `user`; its id, or `None` when [`MAX_SESSIONS`] are open. The
    /// user's oldest sessions end so that it holds at most [`MAX_SESSIONS_PER_USER`].
    pub fn open(&self, user: &str, generation: u64, now: Instant) -> Option<(String, Session)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut own: Vec<(Instant, String)> =
            map.iter().filter(|(_, s)| s.user == user).map(|(id, s)| (s.started, id.clone())).collect();
        if own.len() >= MAX_SESSIONS_PER_USER {
            own.sort_unstable();
            for (_, id) in &own[..=own.len() - MAX_SESSIONS_PER_USER] {
                map.remove(id);
            }
        }
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

    /// After `user` changed the password from one of its sessions: every session of the user
    /// ends, that one included, and a new one (new id, new CSRF token, the new password generation)
    /// takes its place, so an id that leaked or was planted before the change is worth
    /// nothing after it. `None` when the table is full.
    pub fn renew(&self, user: &str, generation: u64, now: Instant) -> Option<(String, Session)> {
        self.close_user(user, None);
        self.open(user, generation, now)
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

    #[test]
    fn one_account_holds_at_most_its_share_and_its_oldest_session_ends() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let ids: Vec<String> = (0..MAX_SESSIONS_PER_USER + 5)
            .map(|i| s.open("anna", 0, t0 + Duration::from_millis(i as u64)).unwrap().0)
            .collect();
        let (other, _) = s.open("boris", 0, t0).unwrap();
        let now = t0 + Duration::from_secs(1);
        let live: Vec<bool> = ids.iter().map(|id| s.touch(id, now).is_some()).collect();
        assert_eq!(live.iter().filter(|l| **l).count(), MAX_SESSIONS_PER_USER, "{live:?}");
        assert!(live[..5].iter().all(|l| !l) && live[5..].iter().all(|l| *l), "the oldest ended: {live:?}");
        assert!(s.touch(&other, now).is_some(), "another account's session is untouched");
    }

    #[test]
    fn a_renewed_session_has_a_new_id_and_the_old_ones_end() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, before) = s.open("anna", 0, t0).unwrap();
        let (elsewhere, _) = s.open("anna", 0, t0).unwrap();
        let (renewed, after) = s.renew("anna", 1, t0).unwrap();
        assert_ne!(renewed, id);
        assert_ne!(after.csrf, before.csrf);
        assert_eq!(after.generation, 1);
        assert!(s.touch(&id, t0).is_none() && s.touch(&elsewhere, t0).is_none());
        assert!(s.touch(&renewed, t0).is_some());
    }
}
