//! kp-config: `node.toml`, the node's configuration.
//!
//! Only `participant` and `authority` are required; every other key has a documented
//! default ([`NodeConfig::render`] writes them all out, commented, at `kpnode init`). Loading
//! reports every problem at once, one per line, each naming the file and the key
//! (`node.toml: delivery.max_in_flight: …`). Unknown keys are errors: a misspelt setting that
//! silently does nothing is worse than a refusal to start.
//!
//! # Layout
//! - [`NodeConfig`] and its sections; [`load`](NodeConfig::load) and
//!   [`render`](NodeConfig::render) below.
//! - `walk`: reading a TOML table key by key, collecting problems.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kp_protocol::{ParticipantCode, Text};

mod walk;

use walk::Walker;

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The participant this node speaks for (ISO 3166-1 alpha-2, or EU).
    pub participant: ParticipantCode,
    /// The issuing authority's name, as printed on certificates.
    pub authority: Text,
    pub network: Network,
    pub delivery: Delivery,
    pub certificates: Certificates,
    pub keys: Keys,
    pub store: Store,
    pub api: Api,
    /// The signing key in a PKCS#11 token (a hardware security module), if it is not the
    /// default file `keys/signing.key.pem`.
    pub pkcs11: Option<Pkcs11>,
}

/// `[pkcs11]`: where the signing key lives when it is in a token. The PIN is never here: it
/// comes from `pin_file` (mode 0600) or the environment variable `KPNODE_PKCS11_PIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11 {
    /// The vendor's PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// A file holding the user PIN, mode 0600; `None`: `KPNODE_PKCS11_PIN`.
    pub pin_file: Option<PathBuf>,
    /// The signing key pair's label in the token, as an RFC 7512 URI. A rotation makes the
    /// new key under the same label; the key history says which of them is current.
    pub signing_key: kp_keys::pkcs11uri::Pkcs11Uri,
    /// The TLS key pair's label in a token, if the TLS key is in one (`None`: the file
    /// `keys/tls.key.pem`). Same module and PIN as the signing key; its own object label.
    pub tls_key: Option<kp_keys::pkcs11uri::Pkcs11Uri>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub peer_listen: SocketAddr,
    /// What partners dial, as written into the enrolment bundle. Empty: `peer_listen`.
    pub advertise: Vec<String>,
    pub api_listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub max_in_flight: u32,
    pub max_frame_bytes: u32,
    pub handshake_timeout: Duration,
    pub ack_timeout: Duration,
    pub ping_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_inbound_connections: u32,
    pub max_pending_handshakes: u32,
    pub clock_tolerance: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificates {
    pub max_validity_days: u32,
    /// What to do with a certificate whose `issuing_authority` is not this node's `authority`.
    pub authority_mismatch: AuthorityMismatch,
}

/// What a node does with a certificate to issue whose `issuing_authority` differs from its own
/// `authority` (a typo, or another ministry's name on this authority's signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityMismatch {
    /// Refuse it as invalid input, naming both names.
    Refuse,
    /// Issue it, with a warning in the answer.
    Warn,
    /// Issue it silently.
    Allow,
}

impl AuthorityMismatch {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthorityMismatch::Refuse => "refuse",
            AuthorityMismatch::Warn => "warn",
            AuthorityMismatch::Allow => "allow",
        }
    }
}

impl std::str::FromStr for AuthorityMismatch {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, &'static str> {
        match s {
            "refuse" => Ok(AuthorityMismatch::Refuse),
            "warn" => Ok(AuthorityMismatch::Warn),
            "allow" => Ok(AuthorityMismatch::Allow),
            _ => Err("is not one of \"refuse\", \"warn\", \"allow\""),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub tls_grace_period: Duration,
    pub max_key_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub cache_capacity_mb: u32,
    pub max_batch: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub max_body_bytes: u32,
    /// A client must have sent a request's whole header within this long of starting it (or
    /// of its connection going idle), or its connection is closed: a slow-loris client cannot
    /// hold a connection for ever.
    pub header_read_timeout: Duration,
    /// A client must have sent a request's whole body within this long of its header, or it
    /// is answered 408 and its connection closed: a client trickling a body (after a header
    /// sent in time) cannot hold a connection for ever either.
    pub body_read_timeout: Duration,
    /// API connections served at once; a further one is answered 503 at once and closed.
    pub max_connections: u32,
    /// The reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` the console
    /// believes: only a connection from one of these addresses says where a request came
    /// from and whether it came over TLS. Empty (the default): the connection's own address is
    /// the source, and no header is believed — any local user could otherwise pick a new
    /// source address for every password guess.
    pub trusted_proxies: Vec<IpAddr>,
    /// The name the bearer token acts under: every log entry of what was done through the API
    /// (and so through the CLI, which uses it) names it as the officer.
    pub token_name: TokenName,
}

/// The name of the API token (`api.token_name`): 1 to 64 characters, no control characters,
/// no space at either end, as a console account's name would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub const DEFAULT: &'static str = "api-token";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TokenName {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() || s.chars().count() > 64 {
            return Err("must be 1 to 64 characters long, such as \"customs-gateway\"");
        }
        if s.chars().any(char::is_control) || s.trim() != s {
            return Err("may hold no control characters and no space at either end");
        }
        Ok(TokenName(s.to_owned()))
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key (`delivery.max_in_flight`), or empty for the file as a whole.
    pub key: String,
    pub message: String,
}

/// Why a configuration file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if p.key.is_empty() {
                write!(f, "{}: {}", self.file.display(), p.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file.display(), p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Documentation of each setting, rendered into `node.toml` at init.
struct Doc {
    section: &'static str,
    key: &'static str,
    text: &'static str,
}

const DOCS: &[Doc] = &[
    Doc {
        section: "network",
        key: "peer_listen",
        text: "Where partner nodes connect (mutual TLS 1.3, pinned keys).",
    },
    Doc {
        section: "network",
        key: "advertise",
        text: "The host:port partners dial, written into the enrolment bundle. Empty: peer_listen.",
    },
    Doc {
        section: "network",
        key: "api_listen",
        text: "The local HTTP API (bearer token in api.token). Keep it on loopback.",
    },
    Doc {
        section: "delivery",
        key: "max_in_flight",
        text: "Deliveries outstanding per peer before waiting for receipts.",
    },
    Doc {
        section: "delivery",
        key: "max_frame_bytes",
        text: "Largest frame accepted from or sent to a peer (at most 4 MiB).",
    },
    Doc {
        section: "delivery",
        key: "handshake_timeout",
        text: "A peer that has not finished the TLS handshake and Hello by then is dropped.",
    },
    Doc {
        section: "delivery",
        key: "ack_timeout",
        text: "A link whose oldest delivery has no receipt after this long is reconnected.",
    },
    Doc {
        section: "delivery",
        key: "ping_interval",
        text: "How often an idle link is checked; silence for three intervals closes it.",
    },
    Doc {
        section: "delivery",
        key: "backoff_initial",
        text: "First reconnect delay; it doubles, with jitter, up to backoff_max.",
    },
    Doc { section: "delivery", key: "backoff_max", text: "Longest reconnect delay." },
    Doc {
        section: "delivery",
        key: "max_inbound_connections",
        text: "Authenticated inbound peer connections served at once.",
    },
    Doc {
        section: "delivery",
        key: "max_pending_handshakes",
        text: "Inbound connections still in their TLS handshake; beyond it the oldest is dropped, so a flood cannot lock peers out.",
    },
    Doc {
        section: "delivery",
        key: "clock_tolerance",
        text: "How far in the future a peer's signing time may lie before it is refused.",
    },
    Doc {
        section: "certificates",
        key: "max_validity_days",
        text: "Longest validity of a certificate this node issues, in days (default 60, as US practice).",
    },
    Doc {
        section: "certificates",
        key: "authority_mismatch",
        text: "A certificate whose issuing_authority is not `authority` above: \"refuse\" it, issue it with a \"warn\"ing, or \"allow\" it.",
    },
    Doc {
        section: "keys",
        key: "tls_grace_period",
        text: "How long a peer's previous TLS key is still accepted after it rotates, and documents signed with its previous signing key are still accepted for delivery.",
    },
    Doc {
        section: "keys",
        key: "max_key_age",
        text: "Keys older than this are reported by `kpnode status` and logged as due for rotation.",
    },
    Doc { section: "store", key: "cache_capacity_mb", text: "sled page cache, in MB. The working set (queued messages, recent certificates) fits in the default; memory use grows with it." },
    Doc { section: "store", key: "max_batch", text: "Most commands (a certificate submitted, one frame of deliveries from a peer, a receipt) applied in one store commit. Waiting commands are gathered up to it, and a bulk submission larger than it is committed in parts; one flush makes several commits durable (group commit). Larger commits hold more memory until they end." },
    Doc {
        section: "api",
        key: "max_body_bytes",
        text: "Largest request body the local API accepts (413 above); also the largest certificate in a batch, whose whole body may be 16 times this (POST /v1/certificates/batch).",
    },
    Doc {
        section: "api",
        key: "header_read_timeout",
        text: "A request's headers must arrive within this long (idle keep-alive connections too), or the connection is closed.",
    },
    Doc {
        section: "api",
        key: "body_read_timeout",
        text: "A request's body must arrive within this long of its headers, or the request is answered 408 and the connection closed.",
    },
    Doc {
        section: "api",
        key: "token_name",
        text: "The name the bearer token in api.token acts under: the log names it as the officer of everything done through the API or the CLI (a console user is named by their account).",
    },
    Doc {
        section: "api",
        key: "max_connections",
        text: "API connections served at once; beyond it a new connection is answered 503 at once and closed.",
    },
    Doc {
        section: "api",
        key: "trusted_proxies",
        text: "IP addresses of the reverse proxies in front of the console, such as [\"127.0.0.1\"]: only a connection from one of them is believed about X-Forwarded-For (the user's address, for the sign-in throttle) and X-Forwarded-Proto (Secure cookies). Empty: no proxy is believed.",
    },
];

impl NodeConfig {
    /// A configuration with every default, for `kpnode init`.
    pub fn new(participant: ParticipantCode, authority: Text) -> NodeConfig {
        NodeConfig {
            participant,
            authority,
            network: Network {
                peer_listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
                advertise: Vec::new(),
                api_listen: SocketAddr::from(([127, 0, 0, 1], 7780)),
            },
            delivery: Delivery {
                max_in_flight: 256,
                max_frame_bytes: kp_protocol::frame::DEFAULT_MAX_FRAME_BYTES,
                handshake_timeout: Duration::from_secs(10),
                ack_timeout: Duration::from_secs(30),
                ping_interval: Duration::from_secs(15),
                backoff_initial: Duration::from_millis(200),
                backoff_max: Duration::from_secs(30),
                max_inbound_connections: 256,
                max_pending_handshakes: 64,
                clock_tolerance: Duration::from_secs(300),
            },
            certificates: Certificates {
                max_validity_days: kp_protocol::certificate::DEFAULT_MAX_VALIDITY_DAYS,
                authority_mismatch: AuthorityMismatch::Warn,
            },
            keys: Keys {
                tls_grace_period: Duration::from_secs(7 * 86_400),
                max_key_age: Duration::from_secs(365 * 86_400),
            },
            pkcs11: None,
            store: Store { cache_capacity_mb: 16, max_batch: 64 },
            api: Api {
                max_body_bytes: 1 << 20,
                header_read_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(30),
                max_connections: 128,
                trusted_proxies: Vec::new(),
                token_name: TokenName(TokenName::DEFAULT.to_owned()),
            },
        }
    }

    /// The endpoints to put in the enrolment bundle.
    pub fn endpoints(&self) -> Vec<String> {
        if self.network.advertise.is_empty() {
            vec![self.network.peer_listen.to_string()]
        } else {
            self.network.advertise.clone()
        }
    }

    /// Loads `path`, reporting every problem.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let fail = |message: String| ConfigError {
            file: path.to_owned(),
            problems: vec![ConfigProblem { key: String::new(), message }],
        };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| fail("is not UTF-8 text".into()))?;
        Self::parse(&text).map_err(|problems| ConfigError { file: path.to_owned(), problems })
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<NodeConfig, Vec<ConfigProblem>> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| format!("line {}: ", text[..s.start.min(text.len())].lines().count().max(1)))
                .unwrap_or_default();
            vec![ConfigProblem {
                key: String::new(),
                message: format!("{line}not valid TOML: {}", e.message().trim()),
            }]
        })?;
        let mut w = Walker::default();
        let mut root = w.root(&table);
        let participant = w.required_parsed(&mut root, "participant", "a participant code such as RU");
        let authority = w.required_parsed(&mut root, "authority", "the issuing authority's name");
        let mut c = NodeConfig::new(
            participant.unwrap_or(ParticipantCode::from_static("XX")),
            authority.clone().unwrap_or_else(|| "unset".parse().expect("valid text")),
        );

        if let Some(mut s) = w.section(&mut root, "network") {
            w.addr(&mut s, "peer_listen", &mut c.network.peer_listen);
            w.endpoints(&mut s, "advertise", &mut c.network.advertise);
            w.addr(&mut s, "api_listen", &mut c.network.api_listen);
            w.finish(s);
        }
        if let Some(mut s) = w.section(&mut root, "delivery") {
            let d = &mut c.delivery;
            w.int(&mut s, "max_in_flight", 1..=65_536, &mut d.max_in_flight);
            w.int(
                &mut s,
                "max_frame_bytes",
                4096..=kp_protocol::frame::MAX_FRAME_BYTES_LIMIT,
                &mut d.max_frame_bytes,
            );
            w.duration(
                &mut s,
                "handshake_timeout",
                Duration::from_millis(100)..=Duration::from_secs(300),
                &mut d.handshake_timeout,
            );
            w.duration(
                &mut s,
                "ack_timeout",
                Duration::from_millis(100)..=Duration::from_secs(3600),
                &mut d.ack_timeout,
            );
            w.duration(
                &mut s,
                "ping_interval",
                Duration::from_millis(100)..=Duration::from_secs(3600),
                &mut d.ping_interval,
            );
            w.duration(
                &mut s,
                "backoff_initial",
                Duration::from_millis(1)..=Duration::from_secs(600),
                &mut d.backoff_initial,
            );
            w.duration(
                &mut s,
                "backoff_max",
                Duration::from_millis(1)..=Duration::from_secs(3600),
                &mut d.backoff_max,
            );
            w.int(&mut s, "max_inbound_connections", 1..=100_000, &mut d.max_inbound_connections);
            w.int(&mut s, "max_pending_handshakes", 1..=100_000, &mut d.max_pending_handshakes);
            w.duration(
                &mut s,
                "clock_tolerance",
                Duration::ZERO..=Duration::from_secs(86_400),
                &mut d.clock_tolerance,
            );
            w.finish(s);
        }
        if c.delivery.backoff_max < c.delivery.backoff_initial {
            w.problem("delivery.backoff_max", "must not be shorter than delivery.backoff_initial");
        }
        if let Some(mut s) = w.section(&mut root, "certificates") {
            w.int(&mut s, "max_validity_days", 1..=3650, &mut c.certificates.max_validity_days);
            w.parsed(&mut s, "authority_mismatch", &mut c.certificates.authority_mismatch);
            w.finish(s);
        }
        if let Some(mut s) = w.section(&mut root, "keys") {
            w.duration(
                &mut s,
                "tls_grace_period",
                Duration::ZERO..=Duration::from_secs(365 * 86_400),
                &mut c.keys.tls_grace_period,
            );
            w.duration(
                &mut s,
                "max_key_age",
                Duration::from_secs(86_400)..=Duration::from_secs(20 * 365 * 86_400),
                &mut c.keys.max_key_age,
            );
            w.finish(s);
        }
        if let Some(mut s) = w.section(&mut root, "pkcs11") {
            let module =
                w.required_parsed::<PathBuf>(&mut s, "module", "the path of the token's PKCS#11 module");
            let signing_key = w.required_parsed::<kp_keys::pkcs11uri::Pkcs11Uri>(
                &mut s,
                "signing_key",
                "the signing key's PKCS#11 URI, such as \"pkcs11:token=KP;object=kp-signing\"",
            );
            let mut pin_file: Option<PathBuf> = None;
            w.parsed_option(&mut s, "pin_file", &mut pin_file);
            let mut tls_key: Option<kp_keys::pkcs11uri::Pkcs11Uri> = None;
            w.parsed_option(&mut s, "tls_key", &mut tls_key);
            if let (Some(t), Some(k)) = (&tls_key, &signing_key) {
                if t.token == k.token && t.serial == k.serial && t.object == k.object {
                    w.problem(
                        &s.key("tls_key"),
                        "names the same key pair as signing_key; the TLS key needs its own object= label (such as \"pkcs11:token=KP;object=kp-tls\")",
                    );
                }
            }
            if s.has("pin") || s.has("pin_value") {
                w.problem(
                    &s.key(if s.has("pin") { "pin" } else { "pin_value" }),
                    "the PIN is never written in node.toml: put it in a file of mode 0600 named by pkcs11.pin_file, or in KPNODE_PKCS11_PIN",
                );
                s.take("pin");
                s.take("pin_value");
            }
            w.finish(s);
            if let (Some(module), Some(signing_key)) = (module, signing_key) {
                c.pkcs11 = Some(Pkcs11 { module, pin_file, signing_key, tls_key });
            }
        }
        if let Some(mut s) = w.section(&mut root, "store") {
            w.int(&mut s, "cache_capacity_mb", 4..=65_536, &mut c.store.cache_capacity_mb);
            w.int(&mut s, "max_batch", 1..=65_536, &mut c.store.max_batch);
            w.finish(s);
        }
        if let Some(mut s) = w.section(&mut root, "api") {
            w.int(&mut s, "max_body_bytes", 1024..=(64 << 20), &mut c.api.max_body_bytes);
            w.duration(
                &mut s,
                "header_read_timeout",
                Duration::from_millis(100)..=Duration::from_secs(300),
                &mut c.api.header_read_timeout,
            );
            w.duration(
                &mut s,
                "body_read_timeout",
                Duration::from_millis(100)..=Duration::from_secs(3600),
                &mut c.api.body_read_timeout,
            );
            w.int(&mut s, "max_connections", 1..=100_000, &mut c.api.max_connections);
            w.ip_list(&mut s, "trusted_proxies", &mut c.api.trusted_proxies);
            w.parsed(&mut s, "token_name", &mut c.api.token_name);
            w.finish(s);
        }
        w.finish(root);
        w.into_result(c)
    }

    /// Why a certificate naming `issuing_authority` is not this node's to sign, if it is not:
    /// the names differ (ignoring case and spacing). What to do about it is
    /// `certificates.authority_mismatch`.
    pub fn authority_mismatch(&self, issuing_authority: &str) -> Option<String> {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        if norm(issuing_authority) == norm(self.authority.as_str()) {
            return None;
        }
        Some(format!(
            "is {issuing_authority:?}, but this node signs for {:?} (authority in node.toml); correct the \
certificate, or set certificates.authority_mismatch in node.toml (now {:?})",
            self.authority.as_str(),
            self.certificates.authority_mismatch.as_str()
        ))
    }

    /// The configuration as a commented `node.toml`, every setting written out.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# kpnode node configuration. Only `participant` and `authority` are required;\n\
             # every other value shown is the default. Durations are written like \"10s\", \"5m\", \"7d\".\n\
             # Unknown keys are refused, so a misspelt setting cannot silently do nothing.\n\n",
        );
        out.push_str("# The participant this node speaks for (ISO 3166-1 alpha-2, or EU).\n");
        out.push_str(&format!("participant = {}\n", quote(self.participant.as_str())));
        out.push_str("# The issuing authority, as printed on certificates.\n");
        out.push_str(&format!("authority = {}\n", quote(self.authority.as_str())));
        let d = &self.delivery;
        let values: Vec<(&str, &str, String)> = vec![
            ("network", "peer_listen", quote(&self.network.peer_listen.to_string())),
            (
                "network",
                "advertise",
                format!(
                    "[{}]",
                    self.network.advertise.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
                ),
            ),
            ("network", "api_listen", quote(&self.network.api_listen.to_string())),
            ("delivery", "max_in_flight", d.max_in_flight.to_string()),
            ("delivery", "max_frame_bytes", d.max_frame_bytes.to_string()),
            ("delivery", "handshake_timeout", dur(d.handshake_timeout)),
            ("delivery", "ack_timeout", dur(d.ack_timeout)),
            ("delivery", "ping_interval", dur(d.ping_interval)),
            ("delivery", "backoff_initial", dur(d.backoff_initial)),
            ("delivery", "backoff_max", dur(d.backoff_max)),
            ("delivery", "max_inbound_connections", d.max_inbound_connections.to_string()),
            ("delivery", "max_pending_handshakes", d.max_pending_handshakes.to_string()),
            ("delivery", "clock_tolerance", dur(d.clock_tolerance)),
            ("certificates", "max_validity_days", self.certificates.max_validity_days.to_string()),
            ("certificates", "authority_mismatch", quote(self.certificates.authority_mismatch.as_str())),
            ("keys", "tls_grace_period", dur(self.keys.tls_grace_period)),
            ("keys", "max_key_age", dur(self.keys.max_key_age)),
            ("store", "cache_capacity_mb", self.store.cache_capacity_mb.to_string()),
            ("store", "max_batch", self.store.max_batch.to_string()),
            ("api", "max_body_bytes", self.api.max_body_bytes.to_string()),
            ("api", "header_read_timeout", dur(self.api.header_read_timeout)),
            ("api", "body_read_timeout", dur(self.api.body_read_timeout)),
            ("api", "max_connections", self.api.max_connections.to_string()),
            (
                "api",
                "trusted_proxies",
                format!(
                    "[{}]",
                    self.api
                        .trusted_proxies
                        .iter()
                        .map(|a| quote(&a.to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            ("api", "token_name", quote(self.api.token_name.as_str())),
        ];
        let mut section = "";
        for (sec, key, value) in values {
            if sec != section {
                out.push_str(&format!("\n[{sec}]\n"));
                section = sec;
            }
            if let Some(doc) = DOCS.iter().find(|d| d.section == sec && d.key == key) {
                out.push_str(&format!("# {}\n", doc.text));
            }
            out.push_str(&format!("{key} = {value}\n"));
        }
        if let Some(p) = &self.pkcs11 {
            out.push_str("\n[pkcs11]\n");
            out.push_str("# The token's PKCS#11 module.\n");
            out.push_str(&format!("module = {}\n", quote(&p.module.display().to_string())));
            out.push_str(
                "# The signing key pair in the token (RFC 7512). Its private key never leaves the token.\n",
            );
            out.push_str(&format!("signing_key = {}\n", quote(p.signing_key.as_str())));
            match &p.tls_key {
                Some(t) => {
                    out.push_str("# The TLS key pair in the token (RFC 7512), for the mutual TLS with peers.\n");
                    out.push_str(&format!("tls_key = {}\n", quote(t.as_str())));
                }
                None => out.push_str(
                    "# The TLS key is the file keys/tls.key.pem (or add tls_key = \"pkcs11:…\" before init).\n",
                ),
            }
            match &p.pin_file {
                Some(f) => {
                    out.push_str("# The user PIN, in a file of mode 0600 (or KPNODE_PKCS11_PIN when this is left out).\n");
                    out.push_str(&format!("pin_file = {}\n", quote(&f.display().to_string())));
                }
                None => out.push_str(
                    "# The user PIN comes from KPNODE_PKCS11_PIN (or add pin_file = \"FILE\", mode 0600).\n",
                ),
            }
        }
        out
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn dur(d: Duration) -> String {
    quote(&format_duration(d))
}

/// A duration as `node.toml`'s header says they are written: one number and the largest unit
/// that divides it exactly ("7d", "365d", "30s", "200ms"), never humantime's calendar split
/// ("11months 30days 3h 50m 24s" for 365 days). Read back exactly by the parser.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests;
