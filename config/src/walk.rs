//! Reading a TOML table key by key: every key taken is checked, every key left over is
//! reported as unknown, and all problems are collected.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use crate::ConfigProblem;

#[derive(Default)]
pub(crate) struct Walker {
    problems: Vec<ConfigProblem>,
}

/// A table being read; keys are removed as they are taken.
pub(crate) struct Section {
    prefix: String,
    table: toml::Table,
}

impl Walker {
    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem { key: key.to_owned(), message: message.into() });
    }

    pub(crate) fn root(&mut self, table: &toml::Table) -> Section {
        Section { prefix: String::new(), table: table.clone() }
    }

    pub(crate) fn section(&mut self, parent: &mut Section, name: &str) -> Option<Section> {
        let key = parent.key(name);
        match parent.table.remove(name)? {
            toml::Value::Table(table) => Some(Section { prefix: key, table }),
            other => {
                self.problem(&key, format!("must be a section ([{key}]), not {}", other.type_str()));
                None
            }
        }
    }

    pub(crate) fn finish(&mut self, section: Section) {
        for key in section.table.keys() {
            self.problem(
                &section.key(key),
                "unknown key; see the commented defaults written by `kpnode init`",
            );
        }
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, Vec<ConfigProblem>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }

    fn string(&mut self, s: &mut Section, name: &str) -> Option<(String, String)> {
        let key = s.key(name);
        match s.table.remove(name)? {
            toml::Value::String(v) => Some((key, v)),
            other => {
                self.problem(&key, format!("must be a string, not {}", other.type_str()));
                None
            }
        }
    }

    pub(crate) fn required_parsed<T: FromStr>(&mut self, s: &mut Section, name: &str, what: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        let key = s.key(name);
        if !s.table.contains_key(name) {
            self.problem(&key, format!("is required: {what}"));
            return None;
        }
        let (key, v) = self.string(s, name)?;
        match v.parse() {
            Ok(t) => Some(t),
            Err(e) => {
                // A PKCS#11 URI may carry a PIN (refused): never echo it.
                self.problem(&key, format!("{:?} {e}", kp_keys::pkcs11uri::redact(&v)));
                None
            }
        }
    }

    /// An optional string setting parsed into `out`.
    pub(crate) fn parsed<T: FromStr>(&mut self, s: &mut Section, name: &str, out: &mut T)
    where
        T::Err: std::fmt::Display,
    {
        if let Some((key, v)) = self.string(s, name) {
            match v.parse() {
                Ok(t) => *out = t,
                Err(e) => self.problem(&key, format!("{:?} {e}", kp_keys::pkcs11uri::redact(&v))),
            }
        }
    }

    /// An optional string setting parsed into `Some(out)`.
    pub(crate) fn parsed_option<T: FromStr>(&mut self, s: &mut Section, name: &str, out: &mut Option<T>)
    where
        T::Err: std::fmt::Display,
    {
        if let Some((key, v)) = self.string(s, name) {
            match v.parse() {
                Ok(t) => *out = Some(t),
                Err(e) => self.problem(&key, format!("{:?} {e}", kp_keys::pkcs11uri::redact(&v))),
            }
        }
    }

    pub(crate) fn addr(&mut self, s: &mut Section, name: &str, out: &mut SocketAddr) {
        if let Some((key, v)) = self.string(s, name) {
            match v.parse() {
                Ok(a) => *out = a,
                Err(_) => self
                    .problem(&key, format!("{v:?} is not an IP address and port such as \"127.0.0.1:7700\"")),
            }
        }
    }

    pub(crate) fn endpoints(&mut self, s: &mut Section, name: &str, out: &mut Vec<String>) {
        let key = s.key(name);
        let Some(value) = s.table.remove(name) else {
            return;
        };
        let toml::Value::Array(items) = value else {
            self.problem(&key, "must be a list of \"host:port\" strings");
            return;
        };
        let mut list = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let ok = item.as_str().filter(|e| {
                e.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
                    && e.bytes().all(|b| b.is_ascii_graphic())
            });
            match ok {
                Some(e) => list.push(e.to_owned()),
                None => self.problem(
                    &format!("{key}[{i}]"),
                    "must be a \"host:port\" string with a port from 1 to 65535",
                ),
            }
        }
        *out = list;
    }

    /// A list of IP addresses (no ports, no networks): each bad item is named by its index.
    pub(crate) fn ip_list(&mut self, s: &mut Section, name: &str, out: &mut Vec<IpAddr>) {
        let key = s.key(name);
        let Some(value) = s.table.remove(name) else {
            return;
        };
        let toml::Value::Array(items) = value else {
            self.problem(&key, "must be a list of IP addresses such as [\"127.0.0.1\", \"::1\"]");
            return;
        };
        if items.len() > 64 {
            self.problem(&key, format!("lists {} addresses; list at most 64 proxies", items.len()));
            return;
        }
        let mut list = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match item.as_str().map(str::parse::<IpAddr>) {
                Some(Ok(a)) if !list.contains(&a) => list.push(a),
                Some(Ok(_)) => {}
                Some(Err(_)) => self.problem(
                    &format!("{key}[{i}]"),
                    format!(
                        "{:?} is not an IP address such as \"127.0.0.1\" or \"::1\" (one address: no port, no network)",
                        item.as_str().unwrap_or_default().chars().take(60).collect::<String>()
                    ),
                ),
                None => self.problem(
                    &format!("{key}[{i}]"),
                    format!("must be a string such as \"127.0.0.1\", not {}", item.type_str()),
                ),
            }
        }
        *out = list;
    }

    pub(crate) fn int(&mut self, s: &mut Section, name: &str, range: RangeInclusive<u32>, out: &mut u32) {
        let key = s.key(name);
        let Some(value) = s.table.remove(name) else {
            return;
        };
        match value {
            toml::Value::Integer(i) if (i64::from(*range.start())..=i64::from(*range.end())).contains(&i) => {
                *out = i as u32
            }
            toml::Value::Integer(i) => {
                self.problem(&key, format!("{i} is out of range; use {} to {}", range.start(), range.end()))
            }
            other => self.problem(&key, format!("must be a whole number, not {}", other.type_str())),
        }
    }

    pub(crate) fn duration(
        &mut self,
        s: &mut Section,
        name: &str,
        range: RangeInclusive<Duration>,
        out: &mut Duration,
    ) {
        let Some((key, v)) = self.string(s, name) else {
            return;
        };
        match humantime::parse_duration(&v) {
            Ok(d) if range.contains(&d) => *out = d,
            Ok(_) => self.problem(
                &key,
                format!(
                    "{v:?} is out of range; use {} to {}",
                    crate::format_duration(*range.start()),
                    crate::format_duration(*range.end())
                ),
            ),
            Err(e) => self.problem(&key, format!("{v:?} is not a duration such as \"10s\" or \"7d\" ({e})")),
        }
    }
}

impl Section {
    pub(crate) fn has(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    /// Removes `name` without reading it (it was reported).
    pub(crate) fn take(&mut self, name: &str) {
        self.table.remove(name);
    }

    pub(crate) fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}
