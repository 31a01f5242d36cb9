//! The HTTP client of the local API, used by the client commands ([`crate::cli`]) and by
//! `kpnode bench` ([`crate::bench`]): finds the daemon of a node directory (its
//! `daemon.json`, else `node.toml`'s `api_listen`) and turns API errors into
//! [`ClientError`]s, one line per problem.

use std::time::Duration;

use serde_json::Value;

use crate::home::{HomeError, NodeDir};
use crate::node::{daemon_file_path, DaemonFile};

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node directory could not be read (its `node.toml` or `api.token`).
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The daemon could not be reached, or its answer could not be read.
    #[error("{0}")]
    Transport(String),
    /// The daemon answered with an error: one line per problem. `invalid` if only changing
    /// the request can help (400, 413, 422, and a conflict of the request's own content).
    #[error("{}", lines.join("; "))]
    Refused { status: u16, invalid: bool, lines: Vec<String> },
}

impl ClientError {
    /// The error as lines, one per problem.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ClientError::Refused { lines, .. } => lines.clone(),
            other => other.to_string().lines().map(str::to_owned).collect(),
        }
    }
}

/// A client of one node's API.
#[derive(Debug)]
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
    dir: String,
}

impl Client {
    pub fn for_dir(dir: &NodeDir) -> Result<Client, ClientError> {
        let config = dir.config()?;
        let token = dir.token()?;
        let addr = match std::fs::read(daemon_file_path(dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<DaemonFile>(&b).ok())
        {
            Some(d) => d.api,
            None => config.network.api_listen,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Client { base: format!("http://{addr}"), token, agent, dir: dir.root().display().to_string() })
    }

    fn handle(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Value), ClientError> {
        let mut resp = result.map_err(|e| {
            ClientError::Transport(format!(
                "cannot reach the kpnode daemon of {} at {} ({e}); is it running? Start it with `kpnode run --dir {}`",
                self.dir, self.base, self.dir
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| ClientError::Transport(format!("reading the daemon's answer: {e}")))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok((status, value));
        }
        Err(api_failure(status, &value))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        let r =
            self.agent.get(&self.url(path)).header("Authorization", &format!("Bearer {}", self.token)).call();
        self.handle(r).map(|(_, v)| v)
    }

    /// Like `get`, with the value of the answer's header `name`, if it has one.
    pub fn get_with_header(&self, path: &str, name: &str) -> Result<(Value, Option<String>), ClientError> {
        let r =
            self.agent.get(&self.url(path)).header("Authorization", &format!("Bearer {}", self.token)).call();
        let header = r
            .as_ref()
            .ok()
            .and_then(|resp| resp.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.handle(r).map(|(_, v)| (v, header))
    }

    /// Like `get`, but `None` if the daemon answers 404 (the thing asked for is not there).
    pub fn get_optional(&self, path: &str) -> Result<Option<Value>, ClientError> {
        let r =
            self.agent.get(&self.url(path)).header("Authorization", &format!("Bearer {}", self.token)).call();
        if let Ok(resp) = &r {
            if resp.status().as_u16() == 404 {
                return Ok(None);
            }
        }
        self.handle(r).map(|(_, v)| Some(v))
    }

    /// A GET whose answer is a file (the printed certificate), not JSON: its bytes, up to
    /// `limit`. An error answer is JSON, read as any other.
    pub fn get_bytes(&self, path: &str, limit: u64) -> Result<Vec<u8>, ClientError> {
        let r =
            self.agent.get(&self.url(path)).header("Authorization", &format!("Bearer {}", self.token)).call();
        let mut resp = match r {
            Ok(resp) if (200..300).contains(&resp.status().as_u16()) => resp,
            other => {
                return Err(self
                    .handle(other)
                    .err()
                    .unwrap_or_else(|| ClientError::Transport("no answer".into())))
            }
        };
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| ClientError::Transport(format!("reading the daemon's answer: {e}")))
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Result<(u16, Value), ClientError> {
        self.post_with(path, body, &[])
    }

    /// A POST with extra request headers.
    pub fn post_with(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value), ClientError> {
        let mut request = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.handle(request.send(body))
    }

    /// `POST /v1/backup/snapshot`: the store's dump, streamed (see [`crate::api`]'s backup
    /// route), with what its headers say about it. No overall timeout: a large store takes
    /// as long as it takes; connecting does have one.
    pub fn snapshot(&self) -> Result<SnapshotStream, ClientError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        let resp = agent
            .post(&self.url("/v1/backup/snapshot"))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_empty();
        let resp = match resp {
            Ok(r) if r.status().as_u16() == 200 => r,
            other => {
                return Err(self.handle(other).err().unwrap_or_else(|| {
                    ClientError::Transport("the daemon answered the snapshot request without a dump".into())
                }))
            }
        };
        let header = |name: &str| -> Result<String, ClientError> {
            resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or_else(|| {
                ClientError::Transport(format!("the daemon's snapshot answer lacks the {name} header"))
            })
        };
        let number = |name: &str| -> Result<u64, ClientError> {
            header(name)?
                .parse()
                .map_err(|_| ClientError::Transport(format!("the daemon's {name} header is not a number")))
        };
        let sha = header("x-kpnode-dump-sha256")?;
        let sha256 = kp_protocol::digest::parse_hex::<32>(&sha).map_err(|_| {
            ClientError::Transport("the daemon's x-kpnode-dump-sha256 header is not a SHA-256".into())
        })?;
        Ok(SnapshotStream {
            bytes: number("content-length")?,
            records: number("x-kpnode-dump-records")?,
            sha256,
            log_seq: number("x-kpnode-log-seq")?,
            log_hash: header("x-kpnode-log-hash")?,
            store_format: header("x-kpnode-store-format")?,
            body: Box::new(resp.into_body().into_with_config().limit(u64::MAX).reader()),
        })
    }

    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let r = self
            .agent
            .delete(&self.url(path))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        self.handle(r).map(|(_, v)| v)
    }
}

/// The store's dump from a running daemon, read as it arrives.
pub struct SnapshotStream {
    pub bytes: u64,
    pub records: u64,
    pub sha256: [u8; 32],
    pub log_seq: u64,
    pub log_hash: String,
    pub store_format: String,
    pub body: Box<dyn std::io::Read + Send>,
}

impl std::fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStream")
            .field("bytes", &self.bytes)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

/// One line per problem; whether the request itself was at fault. (Also for one item of a
/// batch's answer: its `code` and `error`.)
pub fn api_failure(status: u16, body: &Value) -> ClientError {
    let mut lines = Vec::new();
    if let Some(problems) = body.get("problems").and_then(Value::as_array) {
        for p in problems {
            let field = p.get("field").and_then(Value::as_str).unwrap_or("");
            let message = p.get("message").and_then(Value::as_str).unwrap_or("");
            lines.push(if field.is_empty() { message.to_owned() } else { format!("{field}: {message}") });
        }
    }
    if lines.is_empty() {
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        lines.push(message);
    }
    // A conflict of the request's own content (a number taken, an idempotency key reused, a
    // rotation beyond the bounds) is invalid input too: only changing the request (or waiting,
    // for a rotation) helps.
    let taken = status == 409
        && matches!(
            body.get("error").and_then(Value::as_str),
            Some("number_taken" | "idempotency_key_reused" | "rotation_refused")
        );
    let invalid = matches!(status, 400 | 413 | 422) || taken;
    ClientError::Refused { status, invalid, lines }
}

/// Percent-encodes a path segment (certificate numbers and codes are already safe, but an
/// operator's typo should not become another path).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Client {
    /// A POST whose answer may take long (`POST /v1/recover/{code}`: a partner's whole
    /// history, page by page): no overall timeout, only one for connecting. The daemon
    /// aborts the work if the client goes away, and the work is safe to repeat.
    pub fn post_long(&self, path: &str) -> Result<(u16, Value), ClientError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        let request = agent
            .post(&self.url(path))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json");
        self.handle(request.send_empty())
    }
}
