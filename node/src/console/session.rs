//! Console sessions and the sign-in throttle, both in memory: a node restart signs everyone
//! out and forgets failed attempts (a restart needs the machine's operator, who could reset
//! passwords anyway).
//!
//! A session is named by 256 random bits in an HttpOnly, SameSite=Strict cookie, and carries
//! its own CSRF token (256 random bits), which every form of the session must send back.
//! Sessions end after [`IDLE`] without a request, [`LIFETIME`] after sign-in, at sign-out,
//! or when the account is disabled (checked on every request).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// A session not used for this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most: beyond that, a sign-in first drops ended sessions, then is refused.
pub const MAX_SESSIONS: usize = 10_000;

/// Wrong passwords in a row that lock an account, and for how long.
pub const ACCOUNT_FAILURES: u32 = 5;
/// Wrong passwords from one address (over every account) that lock the address out.
pub const SOURCE_FAILURES: u32 = 20;
/// How long a lock-out lasts; failures older than this are forgotten.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Accounts and addresses tracked at most, so a flood of made-up names cannot fill memory.
const MAX_TRACKED: usize = 10_000;

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
    pub fn open(&self, user: &str, now: Instant) -> Option<(String, Session)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| alive(s, now));
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let id = random_token();
        let session = Session { user: user.to_owned(), csrf: random_token(), started: now, last_seen: now };
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

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failed sign-ins per account and per source address.
#[derive(Debug, Default)]
pub struct Throttle {
    inner: Mutex<ThrottleMaps>,
}

#[derive(Debug, Default)]
struct ThrottleMaps {
    accounts: HashMap<String, Failures>,
    sources: HashMap<IpAddr, Failures>,
    /// Every account not in a full `accounts` table, counted as one: a flood of names fails
    /// closed (it locks them all) instead of going uncounted.
    accounts_overflow: Option<Failures>,
    /// Every address not in a full `sources` table, counted as one.
    sources_overflow: Option<Failures>,
}

/// A refused attempt: locked out until `until` from now.
#[derive(Debug, PartialEq, Eq)]
pub struct LockedOut {
    pub remaining: Duration,
}

/// The entry counting `key`: its own, or the shared overflow one when the table is full (of
/// entries younger than the lock-out) and `key` is not in it.
fn entry<'a, K: std::hash::Hash + Eq + Clone>(
    table: &'a mut HashMap<K, Failures>,
    overflow: &'a mut Option<Failures>,
    key: &K,
    now: Instant,
) -> &'a mut Failures {
    let fresh = Failures { count: 0, last: now };
    if table.len() >= MAX_TRACKED && !table.contains_key(key) {
        table.retain(|_, f| now.duration_since(f.last) < LOCKOUT);
    }
    if table.len() < MAX_TRACKED || table.contains_key(key) {
        table.entry(key.clone()).or_insert(fresh)
    } else {
        overflow.get_or_insert(fresh)
    }
}

impl Throttle {
    /// Counts a sign-in attempt as a wrong password (until [`Throttle::succeeded`] says it was
    /// right), or refuses it when `account` or `source` is locked out. Counted before the
    /// password is checked and under one lock, so parallel guesses are all counted; a
    /// locked-out account cannot be probed further (not even with the right password).
    pub fn check(&self, account: &str, source: IpAddr, now: Instant) -> Result<(), LockedOut> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let maps = &mut *guard;
        let locked = |f: &Failures, limit: u32| {
            (f.count >= limit && now.duration_since(f.last) < LOCKOUT)
                .then(|| LOCKOUT.saturating_sub(now.duration_since(f.last)))
        };
        let a = entry(&mut maps.accounts, &mut maps.accounts_overflow, &account.to_owned(), now);
        let a_locked = locked(a, ACCOUNT_FAILURES);
        let s = entry(&mut maps.sources, &mut maps.sources_overflow, &source, now);
        let s_locked = locked(s, SOURCE_FAILURES);
        if let Some(remaining) = a_locked.into_iter().chain(s_locked).max() {
            return Err(LockedOut { remaining });
        }
        let bump = |f: &mut Failures| {
            if now.duration_since(f.last) >= LOCKOUT {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
        };
        bump(entry(&mut maps.accounts, &mut maps.accounts_overflow, &account.to_owned(), now));
        bump(entry(&mut maps.sources, &mut maps.sources_overflow, &source, now));
        Ok(())
    }

    /// A right password: the account's count is cleared, and the address's attempt, counted
    /// by [`Throttle::check`], is taken back.
    pub fn succeeded(&self, account: &str, source: IpAddr) {
        let mut maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        maps.accounts.remove(account);
        if let Some(f) = maps.sources.get_mut(&source) {
            f.count = f.count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_wrong_passwords_lock_the_account_for_the_lockout() {
        let t = Throttle::default();
        let (ip, t0) = (IpAddr::from([127, 0, 0, 1]), Instant::now());
        for _ in 0..ACCOUNT_FAILURES {
            assert!(t.check("anna", ip, t0).is_ok());
        }
        assert!(t.check("anna", ip, t0).is_err());
        assert!(t.check("olga", ip, t0).is_ok(), "another account from the same address is not locked yet");
        assert!(t.check("anna", ip, t0 + LOCKOUT).is_ok(), "the lock-out ends");
    }

    #[test]
    fn an_attempt_counts_from_the_check_so_parallel_guesses_are_all_counted() {
        // Before, `check` only looked and the failure was counted after Argon2: any number of
        // parallel guesses passed the check. Now the sixth check, with five unsettled, refuses.
        let t = Throttle::default();
        let (ip, t0) = (IpAddr::from([10, 0, 0, 9]), Instant::now());
        let passed = (0..100).filter(|_| t.check("anna", ip, t0).is_ok()).count();
        assert_eq!(passed, ACCOUNT_FAILURES as usize);
        // A right password settles: the account is clear again.
        t.succeeded("anna", ip);
        assert!(t.check("anna", ip, t0).is_ok());
    }

    #[test]
    fn a_full_table_fails_closed() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let ip = |i: usize| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        for i in 0..MAX_TRACKED {
            assert!(t.check(&format!("user{i}"), ip(i), t0).is_ok());
        }
        // New names from new addresses share one entry each, which locks like any other.
        let passed =
            (0..100).filter(|j| t.check(&format!("new{j}"), ip(MAX_TRACKED + j), t0).is_ok()).count();
        assert_eq!(passed, ACCOUNT_FAILURES as usize, "the overflow bucket locks");
    }

    #[test]
    fn many_accounts_from_one_address_lock_the_address() {
        let t = Throttle::default();
        let (ip, t0) = (IpAddr::from([10, 0, 0, 7]), Instant::now());
        for i in 0..SOURCE_FAILURES {
            assert!(t.check(&format!("user{i}"), ip, t0).is_ok());
        }
        assert!(t.check("fresh", ip, t0).is_err());
        assert!(t.check("fresh", IpAddr::from([10, 0, 0, 8]), t0).is_ok());
    }

    #[test]
    fn sessions_end_when_idle_or_closed() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, session) = s.open("anna", t0).unwrap();
        assert_eq!(session.csrf.len(), 64);
        assert!(s.touch(&id, t0 + IDLE / 2).is_some());
        assert!(s.touch(&id, t0 + IDLE / 2 + IDLE).is_none());
        let (id, _) = s.open("anna", t0).unwrap();
        s.close_user("anna", None);
        assert!(s.touch(&id, t0).is_none());
    }
}
