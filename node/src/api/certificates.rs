//! The `certificates` tag: issue, list, show, confirm, void and resolve certificates; their
//! seals and portable `.kpc` files.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kp_protocol::problem::Arg;
use kp_protocol::{
    Carats, Certificate, CertificateNumber, Date, ImportConfirmation, LongText, ParticipantCode, Problem,
    Text, Void,
};
use serde::{Deserialize, Serialize};

use super::{invalid, parse_body, ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody, JsonBody};
use crate::queries::{self, cert_view, CertFilter};
use crate::service::issuing::Submitted;
use crate::service::NodeText;
use crate::state::Shared;
use crate::store::{get_record, CertRecord, CertStatus, Direction, Officer, Tree};
use kp_exchange::engine::{document_of, Command, Idempotency, Outcome};

/// The request header that makes a submission safe to retry.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The `Idempotency-Key` of a request, if it has one, with the SHA-256 of its body.
pub(super) fn idempotency(headers: &axum::http::HeaderMap, body: &[u8]) -> ApiResult<Option<Idempotency>> {
    let mut values = headers.get_all(IDEMPOTENCY_HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let bad = |why: &str| invalid("invalid_request", IDEMPOTENCY_HEADER, why.to_owned());
    if values.next().is_some() {
        return Err(bad("is given more than once; send one key per request"));
    }
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            bad(&format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters without spaces, e.g. a UUID or the SHA-256 of the body in hex"
            ))
        })?;
    Ok(Some(Idempotency { key: key.to_owned(), content: kp_protocol::Digest::of(body) }))
}

#[utoipa::path(post, path = "/v1/certificates", tag = "certificates",
    description = "Validates, numbers (if the JSON has no `number`), signs, stores durably and queues a certificate.

Retrying is safe with an `Idempotency-Key` header: the node stores the key with the certificate, in the same durable write, and remembers it for 30 days. A request with a key already used and the same body gets the first answer again (200, `already_stored`: the same number, no second certificate), even if the node crashed before it could answer the first one; the same key with a different body is refused with 409 naming the first certificate's number. Without a key, a certificate without a `number` is numbered anew on every request: a retried request issues a second certificate. `kpnode cert submit` sends the SHA-256 of the file as the key.",
    params(("Idempotency-Key" = Option<String>, Header, description = "Any string of 1 to 128 printable ASCII characters (no spaces) that identifies this submission, e.g. a UUID or the SHA-256 of the body in hex; remembered for 30 days")),
    request_body(content = kp_protocol::CertificateDraft, description = "Certificate JSON; `number` is optional"),
    responses(
        (status = 201, description = "Signed, stored durably and queued for the importer", body = Submitted),
        (status = 200, description = "Already stored: this exact certificate, or the certificate of a request with the same Idempotency-Key and body", body = Submitted),
        (status = 409, description = "The number is taken by a certificate with other content, or the Idempotency-Key was used with another body (the message names the certificate it produced)", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "Every problem, by field", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn submit(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Submitted>)> {
    let idem = idempotency(&headers, &body)?;
    let outcome = crate::service::issuing::submit(&shared, &body, idem, &shared.token_officer()).await?;
    let status = if outcome.already_stored { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(outcome)))
}

#[utoipa::path(post, path = "/v1/certificates/{number}/replace", tag = "certificates",
    description = "Issues a replacement of an outbound certificate (a correction: a wrong address, weight or value, a new expiry date). The body is the new certificate's JSON, as `POST /v1/certificates` takes it; its `replaces` may be left out (it is set to `{number}`) or must be `{number}`. In the same durable write as the new certificate, the old one becomes `replaced` here; the importer's node marks it `replaced` when the new one arrives, and statistics count only the new one. Only a certificate that is queued or delivered can be replaced, by one to the same importer: not one confirmed, voided, refused or already replaced. If the importer's node refuses the replacement (it confirmed the old one meanwhile), the old one stands again. `Idempotency-Key` works as on `POST /v1/certificates`.",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "The outbound certificate to replace"),
           ("Idempotency-Key" = Option<String>, Header, description = "As on POST /v1/certificates")),
    request_body(content = kp_protocol::CertificateDraft, description = "The replacement's certificate JSON"),
    responses(
        (status = 201, description = "The replacement is signed, stored and queued; the old certificate is `replaced`", body = Submitted),
        (status = 200, description = "Already stored", body = Submitted),
        (status = 404, description = "No such certificate", body = ErrorBody),
        (status = 409, description = "The certificate cannot be replaced (confirmed, voided, refused, already replaced, inbound, or to another importer)", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "Every problem, by field", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn replace(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Submitted>)> {
    let old: CertificateNumber = number
        .parse()
        .map_err(|e: kp_protocol::ValueError| invalid("invalid_request", "number", e.to_string()))?;
    // The key is bound to the route and the certificate replaced, not only to the body: the
    // same JSON submitted, or sent to replace another certificate, is another request.
    let idem = idempotency(&headers, &body)?.map(|mut i| {
        i.content =
            kp_protocol::Digest::of_parts(&[b"kpnode/replace\0", old.as_str().as_bytes(), b"\0", &body]);
        i
    });
    let outcome =
        crate::service::issuing::submit_replacement(&shared, &old, &body, idem, &shared.token_officer())
            .await?;
    let status = if outcome.already_stored { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(outcome)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchQuery {
    atomic: Option<bool>,
    idempotency: Option<String>,
}

/// The answer to a bulk submission: one item per certificate sent, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchAnswer {
    /// Items issued and stored by this request (201).
    pub stored: usize,
    /// Items already stored before (200): the same certificate, or the same idempotency key and JSON.
    pub already_stored: usize,
    /// Items refused, or not stored (every item not 200 or 201).
    pub refused: usize,
    pub items: Vec<BatchItemAnswer>,
}

/// One certificate's answer in a batch: what `POST /v1/certificates` would have answered it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItemAnswer {
    /// Its place in the array sent, counting from 0.
    pub index: usize,
    /// The HTTP status `POST /v1/certificates` would have answered it with: 201 stored, 200
    /// already stored, 409, 413, 422, 424 (not attempted: an atomic batch with refused items),
    /// 503…
    pub code: u16,
    /// On 200 and 201: the certificate's number, status and message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Submitted>,
    /// Otherwise: the error, in the shape of the single route's error body (for invalid JSON,
    /// every problem by field, the field paths relative to the item).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[utoipa::path(post, path = "/v1/certificates/batch", tag = "certificates",
    description = "Bulk submission: a JSON array of up to 1000 certificates, each the JSON `POST /v1/certificates` takes, answered one by one, in order, as that route would have answered it alone (`items[i].code` is its HTTP status; `certificate` its number, status and message id, or `error` its problems by field). The valid ones are stored together, in commits of at most `store.max_batch` certificates (64 by default) that group commit makes durable with shared flushes, before the answer. A node that stops before answering may have stored part of the batch: retry it as below. A store that fails partway (a disk error) answers the items stored before it 201 and the rest with the error.

The batch is not all-or-nothing: valid items are stored even if others are refused. With `atomic=true`, nothing is stored if any item is refused before storing (invalid, too large, or its idempotency key reused with another body): those items get their problems and every other item 424 `not_attempted`. A refusal only the store can make (a number given in the JSON that another certificate took) still refuses that item alone.

Limits: at most 1000 items (more is refused whole, 413, storing nothing); the body at most 16 × `api.max_body_bytes` (16 MiB by default), each item at most `api.max_body_bytes` (a larger one is answered 413 on its own). A body that is not a JSON array is refused whole (422).

Retrying: with an `Idempotency-Key` header, item i is submitted with the key `<key>/<i>` and remembered for 30 days like a single submission's: the same batch sent again with the same key gets the first answers again (200, `already_stored`), even after a crash; an item whose JSON changed is refused 409 `idempotency_key_reused`. With `idempotency=content`, each item's key is the SHA-256 (hex) of its text as sent between the array's delimiters (`[`, `,`, `]`, whitespace included), so the same JSON is stored once however the batches are cut, and an array made by joining files verbatim keys each file as `kpnode cert submit FILE` keys it alone (to issue two certificates for identical JSON, give them numbers). `kpnode cert submit` with several files sends `idempotency=content`. Without either, a retried batch issues its certificates without a `number` again: make it safe by giving every certificate its number (a number already stored with the same content is answered 200, `already_stored`).",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 printable ASCII characters (no spaces) identifying this batch; item i is remembered as `<key>/<i>` for 30 days"),
        ("atomic" = Option<bool>, Query, description = "true: store nothing if any item is refused before storing (default false: store every valid item)"),
        ("idempotency" = Option<String>, Query, description = "`content`: each item's idempotency key is the SHA-256 of its JSON (not with an Idempotency-Key header)")),
    request_body(content = Vec<kp_protocol::CertificateDraft>, description = "An array of up to 1000 certificates, each as `POST /v1/certificates` takes it"),
    responses(
        (status = 200, description = "Every item answered, in order; `stored`, `already_stored` and `refused` count them", body = BatchAnswer),
        (status = 413, description = "More than 1000 items, or a body over 16 × api.max_body_bytes: nothing stored", body = ErrorBody),
        (status = 422, description = "The body is not a JSON array, or the query or the Idempotency-Key is invalid: nothing stored", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn submit_batch(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<BatchQuery>,
    body: Result<JsonBody, ApiError>,
) -> ApiResult<Json<BatchAnswer>> {
    use crate::service::issuing::{BatchItem, BATCH_BODY_FACTOR, MAX_BATCH_ITEMS};
    let item_limit = shared.config.api.max_body_bytes as usize;
    let JsonBody(body) = body.map_err(|e| match e {
        ApiError::TooLarge(_) => ApiError::TooLarge(format!(
            "the batch is larger than {} bytes ({BATCH_BODY_FACTOR} × api.max_body_bytes); send fewer certificates per batch",
            item_limit.saturating_mul(BATCH_BODY_FACTOR)
        )),
        other => other,
    })?;
    let by_content = match q.idempotency.as_deref() {
        None => false,
        Some("content") => true,
        Some(other) => {
            return Err(invalid(
                "invalid_query",
                "idempotency",
                format!("{other:?} is not a mode; the one mode is content"),
            ))
        }
    };
    // The header's own checks; the key it gives is extended per item below.
    let batch_key = idempotency(&headers, b"")?.map(|i| i.key);
    if by_content && batch_key.is_some() {
        return Err(invalid(
            "invalid_request",
            IDEMPOTENCY_HEADER,
            "is not used with idempotency=content (each item's key is then its SHA-256); send one or the other",
        ));
    }
    // Parsed once without keeping anything, to refuse a body that is not an array (or holds
    // too many items) whole before any item is looked at.
    let count = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body)
        .map_err(|e| {
            invalid("invalid_request", "", format!("the body must be a JSON array of certificates: {e}"))
        })?
        .len();
    if count > MAX_BATCH_ITEMS {
        return Err(ApiError::TooLarge(format!(
            "the batch holds {count} certificates; at most {MAX_BATCH_ITEMS} are taken in one request: send them in several"
        )));
    }
    let slices = array_elements(&body);
    if slices.len() != count {
        return Err(ApiError::Internal(format!("split the batch into {} items, not {count}", slices.len())));
    }
    let atomic = q.atomic.unwrap_or(false);
    let too_large: Vec<usize> = (0..count).filter(|&i| slices[i].len() > item_limit).collect();
    let mut answers: Vec<Option<Result<Submitted, ApiError>>> = (0..count)
        .map(|i| {
            (slices[i].len() > item_limit).then(|| {
                Err(ApiError::TooLarge(format!(
                    "this certificate's JSON is {} bytes, larger than the {item_limit} bytes api.max_body_bytes allows",
                    slices[i].len()
                )))
            })
        })
        .collect();
    let items: Vec<(usize, BatchItem)> = (0..count)
        .filter(|i| answers[*i].is_none())
        .map(|i| {
            let content = kp_protocol::Digest::of(slices[i]);
            let key = match (&batch_key, by_content) {
                (Some(k), _) => Some(format!("{k}/{i}")),
                (None, true) => Some(content.to_hex()),
                (None, false) => None,
            };
            (
                i,
                BatchItem {
                    body: slices[i].to_vec(),
                    idempotency: key.map(|key| Idempotency { key, content }),
                },
            )
        })
        .collect();
    if atomic && !too_large.is_empty() {
        let e = crate::service::issuing::IssueError::NotAttempted(too_large);
        for (i, _) in &items {
            answers[*i] = Some(Err(ApiError::NotAttempted(e.to_string())));
        }
    } else {
        let (places, items): (Vec<usize>, Vec<BatchItem>) = items.into_iter().unzip();
        let results =
            crate::service::issuing::submit_batch(&shared, items, atomic, shared.token_officer()).await;
        for (i, r) in places.into_iter().zip(results) {
            answers[i] = Some(r.map_err(ApiError::from));
        }
    }
    let mut answer =
        BatchAnswer { stored: 0, already_stored: 0, refused: 0, items: Vec::with_capacity(count) };
    for (index, a) in answers.into_iter().enumerate() {
        let a = a.unwrap_or_else(|| Err(ApiError::Internal("no answer for this item".into())));
        answer.items.push(match a {
            Ok(s) => {
                let code = if s.already_stored { StatusCode::OK } else { StatusCode::CREATED };
                if s.already_stored {
                    answer.already_stored += 1;
                } else {
                    answer.stored += 1;
                }
                BatchItemAnswer { index, code: code.as_u16(), certificate: Some(s), error: None }
            }
            Err(e) => {
                answer.refused += 1;
                let (code, body) = e.parts();
                BatchItemAnswer { index, code: code.as_u16(), certificate: None, error: Some(body) }
            }
        });
    }
    Ok(Json(answer))
}

/// The text of each element of `body`, a JSON array already parsed as valid: the exact bytes
/// the client sent between the delimiters (`[`, `,`, `]`), whitespace included. Their SHA-256
/// is the item's idempotency content, so an array made by joining files verbatim keys each
/// item as `POST /v1/certificates` keys that file sent alone.
fn array_elements(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut start = 0;
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 {
                    start = i + 1;
                }
            }
            b',' if depth == 1 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            b']' | b'}' => {
                if depth == 1 {
                    let last = &body[start..i];
                    // Only the empty array has an item of whitespace alone.
                    if !last.iter().all(u8::is_ascii_whitespace) {
                        out.push(last);
                    }
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    out
}

/// Which certificates to list, as the API's query and the console's filter form give it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub direction: Option<String>,
    pub status: Option<String>,
    pub peer: Option<String>,
    pub after: Option<String>,
    /// Only certificates issued on or after this day (YYYY-MM-DD).
    pub issued_from: Option<String>,
    /// Only certificates issued on or before this day (YYYY-MM-DD).
    pub issued_to: Option<String>,
    pub limit: Option<usize>,
}

/// The certificates `GET /v1/certificates` answers when the request gives no `limit`.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// The most certificates one page of `GET /v1/certificates` holds.
pub const MAX_LIST_LIMIT: usize = 1000;
/// The most certificate records one page looks through: a filter few certificates match
/// answers in bounded time on a large store, with a short (even empty) page and a cursor.
pub const MAX_LIST_SCANNED: usize = 10_000;
/// The response header holding the next page's cursor (also in `Link`, `rel="next"`).
pub const NEXT_CURSOR_HEADER: &str = "X-Next-Cursor";

/// The query of `GET /v1/certificates`: a [`ListQuery`] and the cursor of the page to give.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListRouteQuery {
    direction: Option<String>,
    status: Option<String>,
    peer: Option<String>,
    after: Option<String>,
    issued_from: Option<String>,
    issued_to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/certificates", tag = "certificates",
    description = "Certificates in number order, a page at a time. The body is the page's array; when there may be more, the response carries the next page's cursor in the `X-Next-Cursor` header and the next page's URL in `Link: <…>; rel=\"next\"`. Follow them until neither is given: a page may be shorter than `limit`, even empty, and still have a next one (a page looks through at most 10,000 certificates, so that a filter few certificates match answers in bounded time on a large store). The cursor is opaque and bound to the filters it was made for: pass it with the same filters (`limit` may change).",
    params(
        ("direction" = Option<String>, Query, description = "in or out"),
        ("status" = Option<CertStatus>, Query, description = "only this status"),
        ("peer" = Option<String>, Query, description = "only certificates exchanged with this participant"),
        ("after" = Option<String>, Query, description = "numbers after this one (not with cursor)"),
        ("issued_from" = Option<String>, Query, description = "only certificates issued on or after this day (YYYY-MM-DD)"),
        ("issued_to" = Option<String>, Query, description = "only certificates issued on or before this day (YYYY-MM-DD)"),
        ("limit" = Option<usize>, Query, description = "at most this many certificates in the page: 1 to 1000, default 100"),
        ("cursor" = Option<String>, Query, description = "the `X-Next-Cursor` of the previous page, with the same filters")),
    responses(
        (status = 200, body = Vec<queries::CertView>, headers(
            ("X-Next-Cursor" = String, description = "the cursor of the next page; absent on the last page"),
            ("Link" = String, description = "`</v1/certificates?…&cursor=…>; rel=\"next\"`: the next page's URL, with the same filters and limit; absent on the last page"))),
        (status = 422, description = "A filter, `limit` (not 1 to 1000) or `cursor` (not one this node gave for these filters) is invalid, by parameter", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ListRouteQuery>,
) -> ApiResult<Response> {
    let (views, next) = list_page(&shared, q)?;
    let mut response = Json(views).into_response();
    if let Some(NextPage { cursor, link }) = next {
        let headers = response.headers_mut();
        for (name, value) in [(NEXT_CURSOR_HEADER, cursor), (header::LINK.as_str(), link)] {
            let value = header::HeaderValue::from_str(&value)
                .map_err(|e| ApiError::Internal(format!("the {name} header: {e}")))?;
            headers.insert(name, value);
        }
    }
    Ok(response)
}

/// The next page of a list: its cursor, and the `Link` header's value.
struct NextPage {
    cursor: String,
    link: String,
}

/// One page of `GET /v1/certificates`, and where the next one is if there may be more.
fn list_page(
    shared: &Shared,
    q: ListRouteQuery,
) -> Result<(Vec<queries::CertView>, Option<NextPage>), ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(invalid(
            "invalid_query",
            "limit",
            format!("{limit} is not between 1 and {MAX_LIST_LIMIT}; ask for at most {MAX_LIST_LIMIT} certificates a page and follow the next page's cursor"),
        ));
    }
    let query = ListQuery {
        direction: q.direction,
        status: q.status,
        peer: q.peer,
        after: q.after,
        issued_from: q.issued_from,
        issued_to: q.issued_to,
        limit: Some(limit),
    };
    let mut filter = list_filter(&query)?;
    if let Some(cursor) = &q.cursor {
        if filter.after.is_some() {
            return Err(invalid("invalid_query", "cursor", "is given with after; give one or the other"));
        }
        let after = queries::cursor::decode(&filter, cursor)
            .map_err(|why| invalid("invalid_query", "cursor", why))?;
        filter.after = Some(after);
    }
    let today = shared.now().date();
    let (records, next) = queries::list_certs_page(&shared.store, &filter, today, MAX_LIST_SCANNED)?;
    let views =
        records.iter().map(|r| cert_view(&shared.store, r, today, true)).collect::<Result<Vec<_>, _>>()?;
    let next = next.map(|after| {
        let cursor = queries::cursor::encode(&CertFilter { after: None, ..filter.clone() }, &after);
        // The filters as parsed, in their canonical spelling: every one is URL-safe as it is
        // (letters, digits, `-` and `_`).
        let mut params: Vec<String> = [
            ("direction", filter.direction.map(|d| d.as_str().to_owned())),
            ("status", filter.status.map(|s| s.as_str().to_owned())),
            ("peer", filter.peer.map(|p| p.to_string())),
            ("issued_from", filter.issued_from.map(|d| d.to_string())),
            ("issued_to", filter.issued_to.map(|d| d.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
        params.push(format!("limit={limit}"));
        params.push(format!("cursor={cursor}"));
        let link = format!("</v1/certificates?{}>; rel=\"next\"", params.join("&"));
        NextPage { cursor, link }
    });
    Ok((views, next))
}

/// The certificates a [`ListQuery`] selects, each problem with the query naming its
/// parameter; with the signed certificates if `with_certificates`.
pub fn list_views(
    shared: &Shared,
    q: ListQuery,
    with_certificates: bool,
) -> Result<Vec<queries::CertView>, ApiError> {
    Ok(list_views_bounded(shared, q, with_certificates, usize::MAX)?.0)
}

/// [`list_views`], looking at no more than `max_scanned` certificates (see
/// [`queries::list_certs_bounded`]): with the number to list on after if that stopped it.
pub fn list_views_bounded(
    shared: &Shared,
    q: ListQuery,
    with_certificates: bool,
    max_scanned: usize,
) -> Result<(Vec<queries::CertView>, Option<String>), ApiError> {
    let filter = list_filter(&q)?;
    let today = shared.now().date();
    let (records, resume) = queries::list_certs_bounded(&shared.store, &filter, today, max_scanned)?;
    let views = records
        .iter()
        .map(|r| cert_view(&shared.store, r, today, with_certificates))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((views, resume))
}

/// The filter a [`ListQuery`] gives, each problem naming its parameter.
fn list_filter(q: &ListQuery) -> Result<CertFilter, ApiError> {
    let mut problems = Vec::new();
    let direction = match q.direction.as_deref() {
        None => None,
        Some("in") => Some(Direction::In),
        Some("out") => Some(Direction::Out),
        Some(other) => {
            problems.push(Problem::new("direction", format!("{other:?} is not in or out")));
            None
        }
    };
    let status = q
        .status
        .as_deref()
        .and_then(|s| s.parse::<CertStatus>().map_err(|e| problems.push(Problem::new("status", e))).ok());
    let peer = q.peer.as_deref().and_then(|p| {
        p.parse::<ParticipantCode>()
            .map_err(|e| problems.push(Problem::new("peer", format!("{p:?} {e}"))))
            .ok()
    });
    let mut day = |name: &str, value: Option<&str>| {
        value.and_then(|d| {
            d.parse::<Date>().map_err(|e| problems.push(Problem::new(name, format!("{d:?} {e}")))).ok()
        })
    };
    let issued_from = day("issued_from", q.issued_from.as_deref());
    let issued_to = day("issued_to", q.issued_to.as_deref());
    if let (Some(from), Some(to)) = (issued_from, issued_to) {
        if from > to {
            problems.push(Problem::new("issued_to", format!("{to} is before issued_from ({from})")));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Invalid { error: "invalid_query", problems });
    }
    let filter = CertFilter {
        direction,
        status,
        peer,
        after: q.after.clone(),
        issued_from,
        issued_to,
        limit: q.limit.unwrap_or(100_000).min(100_000),
    };
    Ok(filter)
}

/// One certificate's view, with the signed certificate; 404 if this node has none so numbered.
pub fn show_view(shared: &Shared, number: &str) -> Result<queries::CertView, ApiError> {
    let rec = record(shared, number)?;
    let view = cert_view(&shared.store, &rec, shared.now().date(), true)?;
    if view.certificate.is_some() {
        return Ok(view);
    }
    // The record and the document are read from two trees, not one snapshot: a receipt applied
    // between the two reads moves the document from the outbox to the log. Read both again.
    let rec = record(shared, number)?;
    Ok(cert_view(&shared.store, &rec, shared.now().date(), true)?)
}

/// Why a certificate cannot be voided now, if it cannot: the rule [`void_certificate`]
/// applies, for pages that offer the action only when it can succeed.
pub fn void_refusal(shared: &Shared, number: &str) -> Result<Option<String>, ApiError> {
    Ok(kp_exchange::engine::voidable(&record(shared, number)?))
}

/// The signed certificate as a `.kpc` file's text.
pub fn kpc_text(shared: &Shared, number: &str) -> Result<String, ApiError> {
    let rec = record(shared, number)?;
    Ok(crate::report::seal::portable(&shared.store, &rec)?)
}

pub(super) fn record(shared: &Shared, number: &str) -> ApiResult<CertRecord> {
    let n: CertificateNumber = number.parse().map_err(|e: kp_protocol::ValueError| ApiError::Invalid {
        error: "invalid_request",
        // The API's message as before; the console's names the value cut short.
        problems: vec![Problem {
            message: format!("{number:?} {e}"),
            ..Problem::value("number", number, &e)
        }],
    })?;
    get_record::<CertRecord, _>(&shared.store, Tree::Certs, n.as_str().as_bytes())?.ok_or_else(|| {
        ApiError::NotFound(format!("there is no certificate {n} on this node"))
            .coded(NodeText::CertificateNotFound { number: Arg::text(&n) })
    })
}

#[utoipa::path(get, path = "/v1/certificates/{number}", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "The certificate number")),
    responses((status = 200, body = queries::CertView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, description = "The store has failed (a full or read-only disk) and this read needs it reopened", body = ErrorBody)))]
pub(super) async fn show(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
) -> ApiResult<Json<queries::CertView>> {
    show_view(&shared, &number).map(Json)
}

/// A certificate's seal, for a QR code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SealView {
    /// The QR code's text: `KP1:` and the base45 of the signed seal.
    pub qr_text: String,
    #[schema(value_type = Object)]
    pub seal: kp_protocol::seal::CertificateSeal,
    pub signed_at: kp_protocol::Timestamp,
    pub key_id: String,
}

#[utoipa::path(get, path = "/v1/certificates/{number}/kpc", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "The certificate number (issued here or received)")),
    responses((status = 200, description = "The portable signed certificate (.kpc, ASCII armor) as its issuer signed it; `kpnode verify` checks it against the issuer's bundle", body = String, content_type = "application/x-kpc"),
        (status = 404, body = ErrorBody), (status = 409, description = "Voided: no .kpc is handed out", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, description = "The store has failed (a full or read-only disk)", body = ErrorBody)))]
pub(super) async fn kpc(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
) -> ApiResult<Response> {
    let text = kpc_text(&shared, &number)?;
    Ok(([(header::CONTENT_TYPE, "application/x-kpc")], text).into_response())
}

#[utoipa::path(get, path = "/v1/certificates/{number}/pdf", tag = "certificates",
    description = "The printable certificate: an A4 PDF laid out as KPCS Annex I asks (title, the statement that the diamonds were handled in accordance with the KPCS, number, issuing authority, exporter and importer, dates, the parcels with HS code, origin, carats and US$ and their totals, the number of parcels, the shipment's references, declarations, remarks, and when given the certificate it replaces, the importing member state, the parties' licences, the port of entry, mode of transport, transport document and container seals; the validating authority and the signed certificate's message id), labelled in English and the issuing participant's language, with the certificate's QR seal, signed now, which `kpnode verify --qr` checks offline on a scan of the page. A voided certificate prints without a seal, marked VOID with the date and reason. `kpnode cert pdf` writes it to a file.",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "An outbound certificate's number")),
    responses((status = 200, description = "The PDF (binary)", body = String, content_type = "application/pdf"),
        (status = 404, body = ErrorBody), (status = 409, description = "Not issued by this node", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, description = "The store has failed (a full or read-only disk)", body = ErrorBody)))]
pub(super) async fn pdf(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
) -> ApiResult<Response> {
    let rec = record(&shared, &number)?;
    let bytes = crate::report::pdf::print(&shared.store, &rec, &shared.signer)?;
    let disposition = format!("inline; filename=\"{}.pdf\"", rec.number);
    Ok((
        [(header::CONTENT_TYPE, "application/pdf".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        bytes,
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/certificates/{number}/seal", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "An outbound certificate's number")),
    responses((status = 200, description = "A seal signed now with the current key", body = SealView),
        (status = 404, body = ErrorBody), (status = 409, description = "Not issued by this node", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, description = "The store has failed (a full or read-only disk)", body = ErrorBody)))]
pub(super) async fn seal(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
) -> ApiResult<Json<SealView>> {
    let rec = record(&shared, &number)?;
    let (doc, seal) = crate::report::seal::make(&shared.store, &rec, &shared.signer)?;
    Ok(Json(SealView {
        qr_text: crate::report::seal::text(&doc),
        seal,
        signed_at: doc.signed_at,
        key_id: doc.key_id.to_string(),
    }))
}

/// An importing node's confirmation of receipt.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct ConfirmRequest {
    /// YYYY-MM-DD.
    pub received_on: String,
    pub parcels: u32,
    pub carats: String,
    pub remarks: Option<String>,
}

#[utoipa::path(post, path = "/v1/certificates/{number}/confirm", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "An inbound certificate's number")),
    request_body = ConfirmRequest,
    responses(
        (status = 200, description = "Signed and queued for the exporter", body = queries::CertView),
        (status = 404, body = ErrorBody), (status = 409, description = "Voided, already confirmed, or not inbound", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn confirm(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<queries::CertView>> {
    let req: ConfirmRequest = parse_body(&body)?;
    confirm_certificate(&shared, &number, req, &shared.token_officer()).await.map(Json)
}

/// Confirms the import of an inbound certificate (with a discrepancy if what arrived differs):
/// signs the confirmation and queues it for the exporter. The one way to confirm, for the API
/// and the console alike; every problem with the request names its field.
/// `officer`: who does it (the log entry names them).
pub async fn confirm_certificate(
    shared: &Arc<Shared>,
    number: &str,
    req: ConfirmRequest,
    officer: &Officer,
) -> Result<queries::CertView, ApiError> {
    let rec = record(shared, number)?;
    let mut problems = Vec::new();
    let received_on = req
        .received_on
        .parse::<Date>()
        .map_err(|e| {
            problems.push(
                Problem::new("received_on", format!("{:?} {e}", req.received_on))
                    .coded(e.coded(&req.received_on)),
            )
        })
        .ok();
    let carats = req
        .carats
        .parse::<Carats>()
        .map_err(|e| {
            problems.push(Problem::new("carats", format!("{:?} {e}", req.carats)).coded(e.coded(&req.carats)))
        })
        .ok();
    let remarks = match req.remarks.as_deref() {
        None => None,
        Some(r) => r
            .parse::<LongText>()
            .map_err(|e| problems.push(Problem::new("remarks", e.to_string()).coded(e.coded(r))))
            .ok(),
    };
    let today = shared.now().date();
    if let Some(d) = received_on {
        if d.days_after(today) > kp_protocol::certificate::ISSUE_DATE_TOLERANCE_DAYS {
            problems.push(
                Problem::new("received_on", format!("{d} lies in the future (today is {today})"))
                    .coded(NodeText::ReceivedInFuture { received: d.into(), today: today.into() }),
            );
        }
        if d < rec.issued_on {
            problems.push(
                Problem::new(
                    "received_on",
                    format!("{d} is before the certificate was issued ({})", rec.issued_on),
                )
                .coded(NodeText::ReceivedBeforeIssue { received: d.into(), issued: rec.issued_on.into() }),
            );
        }
    }
    if req.parcels == 0 {
        problems.push(Problem::new("parcels", "must be at least 1").coded(NodeText::ParcelsAtLeastOne));
    }
    let (Some(received_on), Some(carats)) = (received_on, carats) else {
        return Err(ApiError::Invalid { error: "invalid_request", problems });
    };
    if !problems.is_empty() {
        return Err(ApiError::Invalid { error: "invalid_request", problems });
    }
    let Json(view) = settle(shared, &rec, kp_exchange::engine::confirmable, |rec| {
        let cert = certificate_of(shared, rec)?;
        let confirmation = ImportConfirmation {
            certificate: rec.number.clone(),
            certificate_id: rec.message_id,
            exporting_participant: cert.content.exporting_participant,
            importing_participant: shared.me,
            exporter: cert.content.exporter.named(),
            importer: cert.content.importer.named(),
            received_on,
            parcels: req.parcels,
            carats,
            confirming_authority: shared.config.authority.clone(),
            remarks,
        };
        let document = shared.signer.sign(&confirmation)?;
        Ok(Command::Confirm {
            document,
            confirmation: Box::new(confirmation),
            officer: Some(officer.clone()),
        })
    })
    .await?;
    Ok(view)
}

/// Why an inbound certificate cannot be confirmed now, if it cannot (the rule
/// [`confirm_certificate`] applies).
pub fn confirm_refusal(shared: &Shared, number: &str) -> Result<Option<String>, ApiError> {
    Ok(kp_exchange::engine::confirmable(&record(shared, number)?))
}

/// The one path of confirm and void once the request is valid: refused (409) if the
/// certificate's state does not allow the action (`refusal` says why); else the command
/// `make` builds (signed) is stored and queued, and the certificate is shown as it is now.
async fn settle(
    shared: &Arc<Shared>,
    rec: &CertRecord,
    refusal: fn(&CertRecord) -> Option<String>,
    make: impl FnOnce(&CertRecord) -> ApiResult<Command>,
) -> ApiResult<Json<queries::CertView>> {
    if let Some(why) = refusal(rec) {
        let status = queries::effective_status(rec, shared.now().date()).as_str();
        return Err(ApiError::Conflict(format!("certificate {} is {status}: {why}", rec.number)).coded(
            NodeText::CertificateWrongState { number: Arg::text(&rec.number), status: status.into() },
        ));
    }
    updated(shared, make(rec)?).await
}

pub(super) fn certificate_of(shared: &Shared, rec: &CertRecord) -> ApiResult<Certificate> {
    document_of(|t, k| crate::store::Storage::get(&shared.store, t, k), rec)?
        .and_then(|d| d.body::<Certificate>().ok())
        .ok_or_else(|| {
            ApiError::Internal(format!("the signed certificate {} is missing from the store", rec.number))
        })
}

pub(super) async fn updated(shared: &Arc<Shared>, command: Command) -> ApiResult<Json<queries::CertView>> {
    match shared.actor.call(command).await? {
        Outcome::Updated(rec) => Ok(Json(cert_view(&shared.store, &rec, shared.now().date(), true)?)),
        Outcome::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

/// An exporting node's voiding of a certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct VoidRequest {
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/certificates/{number}/void", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "An outbound certificate's number")),
    request_body = VoidRequest,
    responses(
        (status = 200, description = "Signed and queued for the importer", body = queries::CertView),
        (status = 404, body = ErrorBody), (status = 409, description = "Already voided, confirmed, or not outbound", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn void(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<queries::CertView>> {
    let req: VoidRequest = parse_body(&body)?;
    void_certificate(&shared, &number, &req.reason, &shared.token_officer()).await.map(Json)
}

/// Voids an outbound certificate: signs the void and queues it for the importer. The one way
/// to void, for the API and the console alike; `officer` is who voids it.
pub async fn void_certificate(
    shared: &Arc<Shared>,
    number: &str,
    reason: &str,
    officer: &Officer,
) -> Result<queries::CertView, ApiError> {
    let reason: Text = reason.parse().map_err(|e: kp_protocol::ValueError| ApiError::Invalid {
        error: "invalid_request",
        // The API's message as before; the console's names the reason cut short.
        problems: vec![Problem { message: e.to_string(), ..Problem::value("reason", reason, &e) }],
    })?;
    let rec = record(shared, number)?;
    let Json(view) = settle(shared, &rec, kp_exchange::engine::voidable, |rec| {
        let void = Void { certificate: rec.number.clone(), certificate_id: rec.message_id, reason };
        let document = shared.signer.sign(&void)?;
        Ok(Command::Void { document, void, officer: Some(officer.clone()) })
    })
    .await?;
    Ok(view)
}

/// Either participant's settlement of a certificate's import discrepancy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct ResolveRequest {
    /// What was found and how it was settled.
    pub note: String,
    /// Who resolved it; default: this node's authority.
    #[serde(default)]
    pub resolved_by: Option<String>,
}

#[utoipa::path(post, path = "/v1/certificates/{number}/resolve", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "A certificate in import_discrepancy, inbound or outbound")),
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "Signed, stored, and queued for the partner; `reconcile` no longer counts the discrepancy", body = queries::CertView),
        (status = 404, body = ErrorBody), (status = 409, description = "Not in import_discrepancy, or already resolved", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn resolve(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<queries::CertView>> {
    let req: ResolveRequest = parse_body(&body)?;
    let note: kp_protocol::LongText =
        req.note.parse().map_err(|e| invalid("invalid_request", "note", format!("{e}")))?;
    let resolved_by: Text = match &req.resolved_by {
        Some(by) => by.parse().map_err(|e| invalid("invalid_request", "resolved_by", format!("{e}")))?,
        None => shared.config.authority.clone(),
    };
    let rec = record(&shared, &number)?;
    let existing: Option<crate::store::ResolutionRecord> = crate::store::get_record(
        &shared.store,
        crate::store::Tree::Meta,
        &crate::store::resolution_key(&rec.number),
    )?;
    if let Some(why) = kp_exchange::engine::resolvable(&rec, existing.as_ref()) {
        return Err(ApiError::Conflict(format!(
            "certificate {} is {}: {why}",
            rec.number,
            rec.status.as_str()
        )));
    }
    let resolution = kp_protocol::Resolution {
        certificate: rec.number.clone(),
        certificate_id: rec.message_id,
        note,
        resolved_by,
    };
    let document = shared.signer.sign(&resolution)?;
    let officer = Some(shared.token_officer());
    updated(&shared, Command::Resolve { document, resolution: Box::new(resolution), officer }).await
}

#[cfg(test)]
mod tests {
    use super::array_elements;

    #[test]
    fn a_batch_splits_into_the_exact_text_of_each_item() {
        let body = br#" [ {"a": "x,]}\"{"} , [1, {"b": 2}],"s",  7 ,{}
]"#;
        let items: Vec<&str> =
            array_elements(body).into_iter().map(|s| std::str::from_utf8(s).unwrap()).collect();
        assert_eq!(items, vec![r#" {"a": "x,]}\"{"} "#, r#" [1, {"b": 2}]"#, r#""s""#, "  7 ", "{}\n"]);
        assert!(array_elements(b"[]").is_empty());
        assert!(array_elements(b" [ ] ").is_empty());
        assert_eq!(array_elements(b"[\n{}\n]"), vec![b"\n{}\n"]);
    }
}
