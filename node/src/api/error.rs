//! The API's error answers: [`ApiError`], its JSON body, and the HTTP status each kind of
//! failure is answered with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kp_protocol::problem::{Arg, Coded};
use kp_protocol::Problem;
use serde::Serialize;

use crate::actor::{ActorError, RotationError};
use crate::report::seal::SealError;
use crate::service::issuing::IssueError;
use crate::service::NodeText;
use crate::store::StoreError;
use kp_exchange::engine::EngineError;

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    NotFound(String),
    Invalid {
        error: &'static str,
        problems: Vec<Problem>,
    },
    Conflict(String),
    /// A conflict caused by the request's own content (a number taken by another certificate,
    /// an idempotency key reused with another body, a key rotation beyond the bounds), with
    /// its error code: the caller must change the request (or, for a rotation, wait);
    /// retrying at once cannot help.
    Taken(&'static str, String),
    TooLarge(String),
    /// An item of an atomic batch not stored because others were refused (424).
    NotAttempted(String),
    Unavailable(String),
    Internal(String),
    /// A partner this node asked on the caller's behalf (recovery) could not be reached or
    /// broke the protocol (502).
    BadGateway(String),
    /// `error`, whose message is also said by message id and arguments, for the console to
    /// say in its user's language ([`ApiError::coded`]); answered exactly as `error` is.
    Coded {
        error: Box<ApiError>,
        text: Coded,
    },
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What kind of error: unauthorized, not_found, invalid_certificate, invalid_request,
    /// invalid_query, invalid_bundle, conflict, number_taken (409: the certificate number is
    /// taken by other content), idempotency_key_reused (409: the Idempotency-Key was used with
    /// another body), rotation_refused (409: the node's key history refuses another rotation
    /// now), too_large, not_attempted (424, in a batch's answer: an item of an atomic batch not
    /// stored because others were refused), unavailable, internal, request_timeout (408: the body did not arrive
    /// within `api.body_read_timeout`), partner_failed (502: a partner asked for recovery could
    /// not be reached or broke the protocol).
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For invalid input: every problem, each naming its field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<Problem>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        (status, Json(body)).into_response()
    }
}

impl ApiError {
    /// This error, its message said also by `text` (an id of the console's catalogues): the
    /// API answers as before, the console says it in its user's language.
    pub fn coded(self, text: impl Into<Coded>) -> ApiError {
        ApiError::Coded { error: Box::new(self), text: text.into() }
    }

    /// The message id and arguments of this error's message, if it has them.
    pub fn text(&self) -> Option<&Coded> {
        match self {
            ApiError::Coded { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The problems of invalid input, each naming its field; any other error as it is.
    pub fn into_problems(self) -> Result<Vec<Problem>, ApiError> {
        match self {
            ApiError::Invalid { problems, .. } => Ok(problems),
            ApiError::Coded { error, text } => error.into_problems().map_err(|e| e.coded(text)),
            other => Err(other),
        }
    }

    /// The status and the message for a person (the console shows API errors as pages).
    pub fn status_and_message(self) -> (StatusCode, String) {
        let (status, body) = self.parts();
        let mut lines: Vec<String> = body.message.into_iter().collect();
        for p in body.problems.unwrap_or_default() {
            lines.push(if p.field.is_empty() { p.message } else { format!("{}: {}", p.field, p.message) });
        }
        (status, lines.join("; "))
    }

    /// The status and body this error is answered with (alone, or as an item of a batch).
    pub(crate) fn parts(self) -> (StatusCode, ErrorBody) {
        let body = |error: &str, message: Option<String>, problems: Option<Vec<Problem>>| ErrorBody {
            error: error.to_owned(),
            message,
            problems,
        };
        let (status, body) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                body(
                    "unauthorized",
                    Some("missing or wrong bearer token (see api.token in the node directory)".into()),
                    None,
                ),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, body("not_found", Some(m), None)),
            ApiError::Invalid { error, problems } => {
                (StatusCode::UNPROCESSABLE_ENTITY, body(error, None, Some(problems)))
            }
            ApiError::Conflict(m) => (StatusCode::CONFLICT, body("conflict", Some(m), None)),
            ApiError::Taken(error, m) => (StatusCode::CONFLICT, body(error, Some(m), None)),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, body("too_large", Some(m), None)),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, body("unavailable", Some(m), None)),
            ApiError::NotAttempted(m) => {
                (StatusCode::FAILED_DEPENDENCY, body("not_attempted", Some(m), None))
            }
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, body("internal", Some(m), None)),
            ApiError::BadGateway(m) => (StatusCode::BAD_GATEWAY, body("partner_failed", Some(m), None)),
            ApiError::Coded { error, .. } => return error.parts(),
        };
        (status, body)
    }
}

impl From<StoreError> for ApiError {
    /// An I/O failure of the store is `503`, naming the cause and the fix, for reads too:
    /// sled reorganises its tree (splits and merges nodes) as it reads, which writes to its
    /// log, and after an I/O error it refuses those writes, and so some reads, until the
    /// store is reopened. Anything else (a damaged record) is `500`.
    fn from(e: StoreError) -> ApiError {
        if let StoreError::Signing(s) = e {
            return s.into();
        }
        if e.is_io() {
            let text = NodeText::StoreFailed { error: Arg::text(&e) };
            ApiError::Unavailable(format!(
                "the store has failed ({e}) and cannot answer this until it is reopened (sled may write \
as it reads). Fix what the error names; `kpnode run` reopens its store by itself once a test write succeeds"
            ))
            .coded(text)
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

/// The signing key's token cannot sign now (absent, logged out, busy): `503`, naming the
/// key and the token's answer; nothing was made, and the same request succeeds once the
/// token is back.
impl From<kp_keys::SignError> for ApiError {
    fn from(e: kp_keys::SignError) -> ApiError {
        let text = NodeText::SigningUnavailable { detail: Arg::text(&e) };
        ApiError::Unavailable(e.to_string()).coded(text)
    }
}

/// A refused seal or `.kpc` is a conflict; a missing or unreadable document is damage (500);
/// a store that failed to read is [`StoreError`]'s.
impl From<SealError> for ApiError {
    fn from(e: SealError) -> ApiError {
        match e {
            SealError::Refused(m) => ApiError::Conflict(m),
            SealError::Damaged(m) => ApiError::Internal(m),
            SealError::Store(e) => e.into(),
        }
    }
}

impl From<crate::report::pdf::PrintError> for ApiError {
    fn from(e: crate::report::pdf::PrintError) -> ApiError {
        match e {
            crate::report::pdf::PrintError::Seal(e) => e.into(),
            crate::report::pdf::PrintError::Pdf(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> ApiError {
        match e {
            IssueError::Invalid(problems) => ApiError::Invalid { error: "invalid_certificate", problems },
            IssueError::Refused(e) => e.into(),
            IssueError::Store(e) => e.into(),
            IssueError::Actor(e) => e.into(),
            e @ IssueError::Uncertain { .. } => ApiError::Unavailable(e.to_string()),
            e @ IssueError::NoFreeNumber => ApiError::Conflict(e.to_string()),
            e @ IssueError::NotAttempted(_) => ApiError::NotAttempted(e.to_string()),
            e @ IssueError::Unexpected(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> ApiError {
        match e {
            ActorError::Storage(_) | ActorError::Stopped | ActorError::Signing(_) => {
                let text = NodeText::NodeUnavailable { detail: Arg::text(&e) };
                ApiError::Unavailable(e.to_string()).coded(text)
            }
            ActorError::Damaged(_) => ApiError::Internal(e.to_string()),
            ActorError::Rotation(RotationError::Target { field, detail }) => {
                invalid("invalid_request", field, detail)
            }
            ActorError::Rotation(RotationError::Refused(_)) => {
                ApiError::Taken("rotation_refused", e.to_string())
            }
            // The new keys could not be written (a full or read-only disk), or the signing key's
            // token could not make or sign them: unavailable until the operator frees the disk
            // or brings the token back, as a failed store is.
            ActorError::Rotation(RotationError::Keys(k))
                if matches!(
                    *k,
                    kp_keys::KeyError::Io { .. }
                        | kp_keys::KeyError::Token { .. }
                        | kp_keys::KeyError::Signing(_)
                ) =>
            {
                ApiError::Unavailable(k.to_string())
            }
            // The keys could not be made, or the announcement not recorded: a fault of this
            // node, named without the "key rotation failed" prefix the log gives it.
            ActorError::Rotation(r) => ApiError::Internal(r.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let message = e.to_string();
        match e {
            EngineError::NotFound(number) => {
                ApiError::NotFound(message).coded(NodeText::CertificateNotFound { number: Arg::text(number) })
            }
            EngineError::UnknownPeer(code) => {
                ApiError::NotFound(message).coded(NodeText::PeerNotEnrolled { code: code.into() })
            }
            EngineError::Conflict(number) => ApiError::Taken("number_taken", message)
                .coded(NodeText::CertificateNumberTaken { number: Arg::text(number) }),
            EngineError::WrongState { number, status, .. } => ApiError::Conflict(message)
                .coded(NodeText::CertificateWrongState { number: Arg::text(number), status: status.into() }),
            EngineError::Quarantined(code) => {
                ApiError::Conflict(message).coded(NodeText::PeerQuarantined { code: code.into() })
            }
            EngineError::Enrol(e) => ApiError::Conflict(message).coded(e.coded()),
            EngineError::IdempotencyConflict { .. } => {
                ApiError::Taken("idempotency_key_reused", e.to_string())
            }
            // The certificate's or the peer's state forbids it now.
            EngineError::OlderList(_) | EngineError::Untrusted { .. } | EngineError::RecoveryPending => {
                ApiError::Conflict(message)
            }
            // A kind added to the engine later: a fault until it is given its status here.
            _ => ApiError::Internal(message),
        }
    }
}

pub(super) fn invalid(error: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid { error, problems: vec![Problem::new(field, message)] }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// A refused account change is the request's to fix (422 naming its field, 404 for an unknown
/// name); a concurrent change is a conflict; the store's failures are [`StoreError`]'s.
impl From<crate::service::accounts::AccountError> for ApiError {
    fn from(e: crate::service::accounts::AccountError) -> ApiError {
        use crate::service::accounts::AccountError as A;
        match e {
            A::Store(e) => e.into(),
            A::NotFound(_) => ApiError::NotFound(e.to_string()),
            A::Conflict(_) | A::Exists(_) => ApiError::Conflict(e.to_string()),
            A::Corrupt { .. } => ApiError::Internal(e.to_string()),
            e => invalid("invalid_request", e.field(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: ApiError) -> (StatusCode, String) {
        let r = e.into_response();
        let status = r.status();
        let body = body_of(r);
        (status, body)
    }

    fn body_of(r: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// sled's I/O error on a read (after a full disk) is a 503 naming the cause and the fix,
    /// not a 500 "internal"; a damaged record stays a 500.
    #[test]
    fn a_failed_store_answers_503_naming_the_failure() {
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let (status, body) = answer(
            StoreError::Backend { source: Box::new(full), io: Some(std::io::ErrorKind::StorageFull) }.into(),
        );
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains(r#""error":"unavailable""#), "{body}");
        assert!(body.contains("No space left on device"), "{body}");
        assert!(body.contains("free space on the disk holding the store"), "{body}");
        assert!(body.contains("reopens its store by itself"), "{body}");

        let damaged =
            StoreError::Corrupt { tree: "certs", key: "RU-2026-000001".into(), detail: "bad".into() };
        let (status, body) = answer(damaged.into());
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(body.contains("is damaged"), "{body}");

        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let (status, body) = answer(ApiError::from(SealError::Store(StoreError::Backend {
            source: Box::new(full),
            io: Some(std::io::ErrorKind::StorageFull),
        })));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    /// Each kind of failure has its own status: a seal whose signed document is missing is
    /// damage (500), not a conflict (it was answered 409 before); a refused rotation is the
    /// caller's 409, a failed one the node's 500; a node stopping is 503.
    #[test]
    fn the_status_comes_from_the_kind_of_error() {
        let cases: Vec<(ApiError, StatusCode)> = vec![
            (
                SealError::Damaged("the signed certificate RU-2026-000001 is missing from the store".into())
                    .into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (SealError::Refused("voided".into()).into(), StatusCode::CONFLICT),
            (
                ActorError::Rotation(RotationError::Refused(kp_keys::HistoryError::BadRootKey)).into(),
                StatusCode::CONFLICT,
            ),
            (
                ActorError::Rotation(RotationError::Tls(rustls::Error::General("bad key".into()))).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (ActorError::Stopped.into(), StatusCode::SERVICE_UNAVAILABLE),
            (ActorError::Damaged("bad record".into()).into(), StatusCode::INTERNAL_SERVER_ERROR),
            (IssueError::NoFreeNumber.into(), StatusCode::CONFLICT),
            (
                IssueError::Invalid(vec![Problem::new("number", "bad")]).into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (error, expected) in cases {
            let (status, body) = answer(error);
            assert_eq!(status, expected, "{body}");
        }
        let (_, body) =
            answer(ActorError::Rotation(RotationError::Refused(kp_keys::HistoryError::BadRootKey)).into());
        assert!(body.contains(r#""error":"rotation_refused""#), "{body}");
    }

    /// A message id is for the console: the API answers a coded error exactly as the error
    /// without it, and the console still gets the error's problems from it.
    #[test]
    fn a_coded_error_is_answered_as_the_error_it_wraps() {
        let number: kp_protocol::CertificateNumber = "RU-2026-000001".parse().unwrap();
        let plain = || ApiError::from(EngineError::NotFound(number.clone()));
        let coded = plain();
        assert_eq!(coded.text().map(|c| c.id), Some("certificate-not-found"));
        let (status, body) = answer(coded);
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::NOT_FOUND,
                r#"{"error":"not_found","message":"there is no certificate RU-2026-000001 on this node"}"#
            )
        );
        let invalid = invalid("invalid_request", "reason", "is empty")
            .coded(NodeText::CertificateNotFound { number: Arg::text(&number) });
        let problems = invalid.into_problems().unwrap();
        assert_eq!((problems[0].field.as_str(), problems[0].message.as_str()), ("reason", "is empty"));
        let wrong = EngineError::WrongState { number, status: "voided", why: "it is already voided".into() };
        let (status, body) = answer(wrong.into());
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body.contains(r#""message":"certificate RU-2026-000001 is voided: it is already voided""#),
            "{body}"
        );
    }
}
