//! The age of the node's own keys: the warnings `status` shows and the daemon logs daily once
//! a key is older than `keys.max_key_age`. (Rotating them is the store actor's, through
//! `Rotator`, since the rotation is recorded and announced in one durable write.)

use std::time::Duration;

use kp_protocol::Timestamp;

use crate::state::Shared;

/// Warnings about keys older than `keys.max_key_age`, for `status` and the log.
pub fn key_age_warnings(shared: &Shared) -> Vec<String> {
    let keys = shared.keys.lock().unwrap_or_else(|p| p.into_inner());
    let now = shared.now();
    let max = shared.config.keys.max_key_age;
    let mut out = Vec::new();
    let mut check = |what: &str, since: Timestamp| {
        let age_ms = now.unix_millis().saturating_sub(since.unix_millis());
        if age_ms > max.as_millis() as i64 {
            out.push(format!(
                "the {what} key is {} days old (keys.max_key_age is {}); rotate it with `kpnode keys rotate`",
                age_ms / 86_400_000,
                humantime_days(max)
            ));
        }
    };
    check("signing", keys.history.current_signing().valid_from);
    check("TLS", keys.history.current_tls().valid_from);
    out
}

/// How old the current signing and TLS keys are, in seconds (for the metrics).
pub fn key_ages_seconds(shared: &Shared) -> (u64, u64) {
    let keys = shared.keys.lock().unwrap_or_else(|p| p.into_inner());
    let now = shared.now().unix_millis();
    let age = |since: Timestamp| (now.saturating_sub(since.unix_millis()).max(0) / 1000) as u64;
    (age(keys.history.current_signing().valid_from), age(keys.history.current_tls().valid_from))
}

fn humantime_days(d: Duration) -> String {
    format!("{} days", d.as_secs() / 86_400)
}
