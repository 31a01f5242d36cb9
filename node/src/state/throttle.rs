//! The console's sign-in throttle, in memory: a node restart forgets failed attempts (a
//! restart needs the machine's operator, who could reset passwords anyway). Held in
//! [`crate::state::Shared`] so that the console counts attempts and the API's
//! `POST /v1/users/{name}/unlock` (`kpnode users unlock`) clears them.
//!
//! Three limits, so that a stranger cannot lock the real user out of their own account:
//! - an account **from one address** (an IPv6 address counts by its /64) is locked after
//!   [`PAIR_FAILURES`] wrong passwords in a row, for [`LOCKOUT`]; the lock refuses even the right
//!   password, and other addresses are not affected;
//! - an **address** is locked after [`SOURCE_FAILURES`] wrong passwords over every account;
//! - an **account** that has had [`ACCOUNT_SLOWDOWN`] wrong passwords from anywhere is slowed
//!   down, not locked: from an address it never signed in from, one attempt per interval
//!   (doubling with every further failure, up to [`MAX_SLOWDOWN`]); from an address it signed
//!   in from before, no slowdown. Guesses spread over many addresses stay few, and the user at
//!   their own desk signs in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords in a row for one account from one address that lock that pair.
pub const PAIR_FAILURES: u32 = 5;
/// Wrong passwords from one address (over every account) that lock the address out.
pub const SOURCE_FAILURES: u32 = 20;
/// Wrong passwords for one account (from every address) from which it is slowed down.
pub const ACCOUNT_SLOWDOWN: u32 = 10;
/// The first interval between attempts on a slowed-down account from a new address.
pub const FIRST_SLOWDOWN: Duration = Duration::from_secs(2);
/// The longest interval between attempts on a slowed-down account from a new address.
pub const MAX_SLOWDOWN: Duration = Duration::from_secs(60);
/// How long a lock-out lasts; failures older than this are forgotten.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Entries tracked per table at most, so a flood of made-up names cannot fill memory.
pub const MAX_TRACKED: usize = 10_000;
/// Addresses remembered per account as ones it signed in from.
const KNOWN_PER_ACCOUNT: usize = 8;

/// The address the throttle counts for `ip`: an IPv6 address by its /64 (one subscriber's
/// network: a host picks any address in it), an IPv4-mapped one as IPv4.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::from(s)
            }
        },
    }
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    fn bump(&mut self, now: Instant) {
        if now.duration_since(self.last) >= LOCKOUT {
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.last = now;
    }

    /// The lock-out left, if `limit` failures were reached within [`LOCKOUT`].
    fn locked(&self, limit: u32, now: Instant) -> Option<Duration> {
        (self.count >= limit && now.duration_since(self.last) < LOCKOUT)
            .then(|| LOCKOUT.saturating_sub(now.duration_since(self.last)))
    }
}

/// An account's failures from everywhere, and when a new address may next try.
#[derive(Clone, Copy, Debug)]
struct AccountFailures {
    failures: Failures,
    next_allowed: Instant,
}

/// Failed sign-ins per (account, address), per address and per account.
#[derive(Debug, Default)]
pub struct Throttle {
    inner: Mutex<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    pairs: HashMap<(String, IpAddr), Failures>,
    sources: HashMap<IpAddr, Failures>,
    accounts: HashMap<String, AccountFailures>,
    /// Addresses each account signed in from (in memory, so since the node started).
    known: HashMap<String, Vec<IpAddr>>,
    /// Every pair, address or account not in its full table, counted as one: a flood fails
    /// closed (the shared entry locks) instead of going uncounted.
    pairs_overflow: Option<Failures>,
    sources_overflow: Option<Failures>,
    accounts_overflow: Option<AccountFailures>,
}

/// Why an attempt was refused before its password was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many wrong passwords for this account from this address.
    AccountFromAddress,
    /// Too many wrong passwords from this address, over every account.
    Address,
    /// Many wrong passwords for this account from elsewhere: from a new address, one attempt
    /// per interval.
    SlowedDown,
}

/// A refused attempt: try again in `remaining`.
#[derive(Debug, PartialEq, Eq)]
pub struct LockedOut {
    pub why: Refusal,
    pub remaining: Duration,
}

/// The entry counting `key`: its own, or the shared overflow one when the table is full (of
/// entries younger than the lock-out) and `key` is not in it.
fn entry<'a, K: std::hash::Hash + Eq + Clone, V>(
    table: &'a mut HashMap<K, V>,
    overflow: &'a mut Option<V>,
    key: &K,
    fresh: V,
    young: impl Fn(&V) -> bool,
) -> &'a mut V {
    if table.len() >= MAX_TRACKED && !table.contains_key(key) {
        table.retain(|_, v| young(v));
    }
    if table.len() < MAX_TRACKED || table.contains_key(key) {
        table.entry(key.clone()).or_insert(fresh)
    } else {
        overflow.get_or_insert(fresh)
    }
}

impl Throttle {
    /// Counts a sign-in attempt as a wrong password (until [`Throttle::succeeded`] says it was
    /// right), or refuses it. Counted before the password is checked and under one lock, so
    /// parallel guesses are all counted; a locked-out pair cannot be probed further (not even
    /// with the right password).
    pub fn check(&self, account: &str, source: IpAddr, now: Instant) -> Result<(), LockedOut> {
        let source = source_key(source);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let m = &mut *guard;
        let young = |f: &Failures| now.duration_since(f.last) < LOCKOUT;
        let fresh = Failures { count: 0, last: now };
        let pair_key = (account.to_owned(), source);
        let pair = *entry(&mut m.pairs, &mut m.pairs_overflow, &pair_key, fresh, young);
        if let Some(remaining) = pair.locked(PAIR_FAILURES, now) {
            return Err(LockedOut { why: Refusal::AccountFromAddress, remaining });
        }
        let src = *entry(&mut m.sources, &mut m.sources_overflow, &source, fresh, young);
        if let Some(remaining) = src.locked(SOURCE_FAILURES, now) {
            return Err(LockedOut { why: Refusal::Address, remaining });
        }
        let known = m.known.get(account).is_some_and(|k| k.contains(&source));
        let fresh_account = AccountFailures { failures: fresh, next_allowed: now };
        let acc = entry(&mut m.accounts, &mut m.accounts_overflow, &account.to_owned(), fresh_account, |a| {
            young(&a.failures)
        });
        if !known && acc.failures.locked(ACCOUNT_SLOWDOWN, now).is_some() {
            if now < acc.next_allowed {
                return Err(LockedOut { why: Refusal::SlowedDown, remaining: acc.next_allowed - now });
            }
            let beyond = acc.failures.count.saturating_sub(ACCOUNT_SLOWDOWN).min(16);
            acc.next_allowed = now + FIRST_SLOWDOWN.saturating_mul(1 << beyond).min(MAX_SLOWDOWN);
        }
        acc.failures.bump(now);
        entry(&mut m.pairs, &mut m.pairs_overflow, &pair_key, fresh, young).bump(now);
        entry(&mut m.sources, &mut m.sources_overflow, &source, fresh, young).bump(now);
        Ok(())
    }

    /// A right password: the pair's count is cleared, the attempt [`Throttle::check`] counted
    /// for the address and the account is taken back, and the address is remembered as one
    /// the account signs in from.
    pub fn succeeded(&self, account: &str, source: IpAddr) {
        let source = source_key(source);
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.pairs.remove(&(account.to_owned(), source));
        if let Some(f) = m.sources.get_mut(&source) {
            f.count = f.count.saturating_sub(1);
        }
        if let Some(a) = m.accounts.get_mut(account) {
            a.failures.count = a.failures.count.saturating_sub(1);
        }
        if m.known.len() < MAX_TRACKED || m.known.contains_key(account) {
            let known = m.known.entry(account.to_owned()).or_default();
            if !known.contains(&source) {
                if known.len() >= KNOWN_PER_ACCOUNT {
                    known.remove(0);
                }
                known.push(source);
            }
        }
    }

    /// Clears every lock and slowdown of `account` (`kpnode users unlock`), and the shared
    /// overflow entries a flood may have locked it in. Whether anything was locked.
    pub fn unlock(&self, account: &str, now: Instant) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut was = false;
        m.pairs.retain(|(a, _), f| {
            let this = a == account;
            was |= this && f.locked(PAIR_FAILURES, now).is_some();
            !this
        });
        if let Some(a) = m.accounts.remove(account) {
            was |= a.failures.locked(ACCOUNT_SLOWDOWN, now).is_some();
        }
        was |= m.pairs_overflow.take().is_some_and(|f| f.locked(PAIR_FAILURES, now).is_some());
        was |= m.accounts_overflow.take().is_some_and(|a| a.failures.locked(ACCOUNT_SLOWDOWN, now).is_some());
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_wrong_passwords_lock_the_account_from_that_address_only() {
        let t = Throttle::default();
        let (ip, t0) = (IpAddr::from([10, 0, 0, 1]), Instant::now());
        for _ in 0..PAIR_FAILURES {
            assert!(t.check("anna", ip, t0).is_ok());
        }
        assert_eq!(t.check("anna", ip, t0).unwrap_err().why, Refusal::AccountFromAddress);
        assert!(t.check("olga", ip, t0).is_ok(), "another account from the same address is not locked");
        // The stranger's lock is not the real user's: from her own address anna signs in.
        let desk = IpAddr::from([10, 0, 0, 2]);
        assert!(t.check("anna", desk, t0).is_ok());
        t.succeeded("anna", desk);
        assert!(t.check("anna", ip, t0 + LOCKOUT).is_ok(), "the lock-out ends");
    }

    #[test]
    fn an_attempt_counts_from_the_check_so_parallel_guesses_are_all_counted() {
        // Before, `check` only looked and the failure was counted after Argon2: any number of
        // parallel guesses passed the check. Now the sixth check, with five unsettled, refuses.
        let t = Throttle::default();
        let (ip, t0) = (IpAddr::from([10, 0, 0, 9]), Instant::now());
        let passed = (0..100).filter(|_| t.check("anna", ip, t0).is_ok()).count();
        assert_eq!(passed, PAIR_FAILURES as usize);
        // An operator's unlock clears it.
        assert!(t.unlock("anna", t0));
        assert!(t.check("anna", ip, t0).is_ok());
        t.succeeded("anna", ip);
        assert!(!t.unlock("anna", t0), "nothing was locked");
    }

    #[test]
    fn guesses_from_many_addresses_slow_the_account_down_but_not_for_its_known_address() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let desk = IpAddr::from([192, 168, 1, 20]);
        assert!(t.check("anna", desk, t0).is_ok());
        t.succeeded("anna", desk);
        let stranger = |i: u32| IpAddr::from([172, 16, (i >> 8) as u8, i as u8]);
        let passed = (0..1000).filter(|&i| t.check("anna", stranger(i), t0).is_ok()).count();
        assert_eq!(passed, ACCOUNT_SLOWDOWN as usize + 1, "one more once slowed, then none at this instant");
        let refused = t.check("anna", stranger(5000), t0).unwrap_err();
        assert_eq!(refused.why, Refusal::SlowedDown);
        assert!(refused.remaining <= MAX_SLOWDOWN);
        assert!(t.check("anna", desk, t0).is_ok(), "the user's own address is not slowed down");
        t.succeeded("anna", desk);
        // Over an hour, the strangers get at most one guess a minute at worst pace.
        let mut guesses = 0;
        for s in 0..3600u64 {
            if t.check("anna", stranger(10_000 + s as u32), t0 + Duration::from_secs(s)).is_ok() {
                guesses += 1;
            }
        }
        assert!(guesses <= 70, "{guesses} guesses an hour");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let a = |host: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, host]);
        for i in 0..PAIR_FAILURES {
            assert!(t.check("anna", a(i as u16), t0).is_ok());
        }
        assert!(t.check("anna", a(999), t0).is_err(), "another host of the same /64 is the same source");
        assert!(t.check("anna", IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]), t0).is_ok());
        assert_eq!(source_key("::ffff:10.1.2.3".parse().unwrap()), IpAddr::from([10, 1, 2, 3]));
    }

    #[test]
    fn a_full_table_fails_closed() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let ip = |i: usize| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        for i in 0..MAX_TRACKED {
            assert!(t.check(&format!("user{i}"), ip(i), t0).is_ok());
        }
        // New pairs from new addresses share one entry each, which locks like any other.
        let passed =
            (0..100).filter(|j| t.check(&format!("new{j}"), ip(MAX_TRACKED + j), t0).is_ok()).count();
        assert_eq!(passed, PAIR_FAILURES as usize, "the overflow entry locks");
    }

    #[test]
    fn many_accounts_from_one_address_lock_the_address() {
        let t = Throttle::default();
        let (ip, t0) = (IpAddr::from([10, 0, 0, 7]), Instant::now());
        for i in 0..SOURCE_FAILURES {
            assert!(t.check(&format!("user{i}"), ip, t0).is_ok());
        }
        assert_eq!(t.check("fresh", ip, t0).unwrap_err().why, Refusal::Address);
        assert!(t.check("fresh", IpAddr::from([10, 0, 0, 8]), t0).is_ok());
    }
}
