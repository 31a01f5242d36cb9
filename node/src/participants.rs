//! The list of Kimberley Process participants this node knows, shipped as data
//! (`node/data/participants.toml`) and parsed once.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kp_protocol::{ParticipantCode, ParticipantDirectory};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantInfo {
    pub code: ParticipantCode,
    pub name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    participant: Vec<ParticipantInfo>,
}

const SHIPPED: &str = include_str!("../data/participants.toml");

/// The shipped participant list, by code.
pub fn shipped() -> &'static BTreeMap<ParticipantCode, ParticipantInfo> {
    static LIST: OnceLock<BTreeMap<ParticipantCode, ParticipantInfo>> = OnceLock::new();
    LIST.get_or_init(|| {
        // Invariant: the shipped file is checked by a unit test below, so it always parses.
        let file: File = toml::from_str(SHIPPED).expect("the shipped participant list parses");
        file.participant.into_iter().map(|p| (p.code, p)).collect()
    })
}

/// Known participants: the shipped list plus any extra codes (enrolled peers).
#[derive(Debug, Clone, Default)]
pub struct Directory {
    extra: Vec<ParticipantCode>,
}

impl Directory {
    pub fn with_extra(extra: impl IntoIterator<Item = ParticipantCode>) -> Directory {
        Directory { extra: extra.into_iter().collect() }
    }

    pub fn name(&self, code: ParticipantCode) -> Option<&'static str> {
        shipped().get(&code).map(|p| p.name.as_str())
    }
}

impl ParticipantDirectory for Directory {
    fn is_participant(&self, code: ParticipantCode) -> bool {
        shipped().contains_key(&code) || self.extra.contains(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_parses_and_holds_the_seed_network() {
        let list = shipped();
        assert!(list.len() >= 55, "{}", list.len());
        for code in ["RU", "BY", "KZ", "AM", "KG", "IN", "AE", "EU", "QA", "MZ", "UZ", "CF"] {
            assert!(list.contains_key(&code.parse().unwrap()), "{code}");
        }
        assert!(!Directory::default().is_participant("XX".parse().unwrap()));
    }
}
