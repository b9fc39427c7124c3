//! The OTLP/HTTP receiver (`otlp_listen`, `docs/OTLP.md`): `POST /v1/traces` and
//! `POST /v1/logs`, in protobuf or JSON, gzipped or not. Every span or log record becomes an
//! entry through the intake, as a socket append does, and the answer is a 200 only once all
//! the accepted ones are committed with the configured durability: an exporter's success
//! means what a receipt means. Under backpressure the answer is 429 or 503 with
//! `Retry-After`, within a bound; what an exporter sends again is stored once (`Job::keys`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tokio_util::sync::CancellationToken;
use witness_protocol::limits::MAX_ENTRIES_PER_APPEND;
use witness_protocol::{Ack, Append, ErrorCode, ErrorReply, OnFull};

use super::{Caller, State, WRITE};
use crate::access::{HttpIdentity, Principal};
use crate::intake::{self, Refusal, Submission};
use crate::otlp::map::{self, Mapped, Source};
use crate::otlp::{self, BodyError, Encoding, RpcStatus};
use crate::store::job::Reply;

/// How long an export may wait for room in the writer's queue before it is told to retry.
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// How long an export waits for its commit before it is told to retry (what was committed
/// meanwhile is recognised when it comes again).
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// `google.rpc.Code` values the answers use.
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// The routes of an OTLP listener.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/v1/traces", post(traces).fallback(not_allowed))
        .route("/v1/logs", post(logs).fallback(not_allowed))
        .route("/v1/metrics", any(metrics))
        .fallback(not_found)
}

/// Which signal a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Traces,
    Logs,
}

/// A finished answer that is not a success: its status and `google.rpc.Status`.
struct Failure {
    status: StatusCode,
    code: i32,
    message: String,
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry(mut self, seconds: u64) -> Failure {
        self.retry_after = Some(seconds);
        self
    }

    fn into_response(self, encoding: Encoding) -> Response {
        let status = RpcStatus {
            code: self.code,
            message: self.message,
        };
        let body = match encoding {
            Encoding::Protobuf => prost::Message::encode_to_vec(&status),
            Encoding::Json => serde_json::to_vec(&status).unwrap_or_default(),
        };
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, encoding.content_type())],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// What the daemon's refusal of an append means to an exporter.
fn failure_of(reply: &ErrorReply) -> Failure {
    match reply.code {
        ErrorCode::Busy if reply.message.contains("limit") => Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::RESOURCE_EXHAUSTED,
            reply.message.clone(),
        )
        .retry(1),
        ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::TimedOut => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            reply.message.clone(),
        )
        .retry(1),
        // A full disk or a failed writer: nothing was recorded, and it may pass.
        ErrorCode::Storage => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            reply.message.clone(),
        )
        .retry(5),
        ErrorCode::Forbidden => Failure::new(
            StatusCode::FORBIDDEN,
            code::PERMISSION_DENIED,
            reply.message.clone(),
        ),
        ErrorCode::InvalidEntry | ErrorCode::BadRequest => Failure::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_ARGUMENT,
            reply.message.clone(),
        ),
        _ => Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            reply.message.clone(),
        ),
    }
}

async fn traces(
    caller: Caller<WRITE>,
    state: Extract<State>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    export(Signal::Traces, caller, state, headers, body).await
}

async fn logs(
    caller: Caller<WRITE>,
    state: Extract<State>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    export(Signal::Logs, caller, state, headers, body).await
}

/// One export, from its body to its answer.
async fn export(
    signal: Signal,
    caller: Caller<WRITE>,
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let stats = &state.context.otlp.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let encoding = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(Encoding::of_content_type);
    let answer = match encoding {
        None => Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_ARGUMENT,
            "send application/x-protobuf or application/json",
        )),
        Some(encoding) => {
            receive(signal, &caller.principal, &state, &headers, body, encoding).await
        }
    };
    let encoding = encoding.unwrap_or(Encoding::Json);
    match answer {
        Ok(response) => response,
        Err(failure) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            failure.into_response(encoding)
        }
    }
}

async fn receive(
    signal: Signal,
    principal: &Principal,
    state: &State,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<Response, Failure> {
    let otlp = &state.context.otlp;
    let limit = otlp.max_body;
    let too_large = |limit| {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_ARGUMENT,
            BodyError::TooLarge { limit }.to_string(),
        )
    };
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("(not text)"));
    let bytes = otlp::inflate(&raw, content_encoding, limit).map_err(|error| match error {
        BodyError::TooLarge { limit } => too_large(limit),
        BodyError::Encoding(_) => Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_ARGUMENT,
            error.to_string(),
        ),
        other => Failure::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_ARGUMENT,
            other.to_string(),
        ),
    })?;
    let Principal::Http(identity) = principal else {
        unreachable!("an HTTP listener's callers are HTTP principals");
    };
    let source = Source {
        listener: identity.listener,
        peer: identity.peer.to_string(),
        token: identity.token.clone(),
    };
    let bad = |error: BodyError| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_ARGUMENT,
            error.to_string(),
        )
    };
    let items = match signal {
        Signal::Traces => map::spans(
            &otlp::decode_traces(&bytes, encoding).map_err(bad)?,
            &source,
        ),
        Signal::Logs => map::logs(&otlp::decode_logs(&bytes, encoding).map_err(bad)?, &source),
    };
    let received = items.len();
    let (accepted, rejected, first_reason) = screen(items);
    otlp.stats
        .items
        .fetch_add(received as u64, Ordering::Relaxed);
    otlp.stats
        .rejected
        .fetch_add(rejected as u64, Ordering::Relaxed);
    store(principal, state, accepted, raw.len()).await?;
    Ok(success(signal, encoding, rejected, first_reason))
}

/// Splits the items into those the intake will take and the count (and first reason) of
/// those it would refuse, so that one bad item does not cost the export the others.
fn screen(items: Vec<Mapped>) -> (Vec<Mapped>, usize, Option<String>) {
    let mut accepted = Vec::with_capacity(items.len());
    let mut rejected = 0;
    let mut first = None;
    for item in items {
        let alone = append_of(vec![item.entry]);
        match intake::check_append(&alone) {
            Ok(()) => accepted.push(Mapped {
                entry: alone.entries.into_iter().next().expect("one entry"),
                key: item.key,
                provider: item.provider,
            }),
            Err(reply) => {
                rejected += 1;
                first.get_or_insert(reply.message);
            }
        }
    }
    (accepted, rejected, first)
}

/// An append of OTLP items: answered once durable, waiting for room (within a bound), and
/// with no producer numbers (the items' keys do their work).
fn append_of(entries: Vec<witness_protocol::Entry>) -> Append {
    Append {
        ack: Ack::Durable,
        on_full: OnFull::Wait,
        producer: None,
        entries,
    }
}

/// Admits the entries in appends of at most `MAX_ENTRIES_PER_APPEND` and waits, within
/// bounds, until every one is committed.
async fn store(
    principal: &Principal,
    state: &State,
    items: Vec<Mapped>,
    n_bytes: usize,
) -> Result<(), Failure> {
    if items.is_empty() {
        return Ok(());
    }
    let intake = &state.context.intake;
    let lane = intake.lane();
    let n_items = items.len();
    let mut answers = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let chunk: Vec<Mapped> = items.by_ref().take(MAX_ENTRIES_PER_APPEND).collect();
        let share = n_bytes * chunk.len() / n_items;
        let mut entries = Vec::with_capacity(chunk.len());
        let mut keys = Vec::with_capacity(chunk.len());
        let mut providers = Vec::with_capacity(chunk.len());
        for item in chunk {
            entries.push(item.entry);
            keys.push(item.key);
            providers.push(item.provider);
        }
        let append = append_of(entries);
        let mut submission = Submission::now(append, share);
        submission.keys = keys;
        submission.providers = providers;
        // Every item passed `check_append` in `screen`.
        intake
            .charge(principal, &submission)
            .map_err(|reply| failure_of(&reply))?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        // A wait for room ends after `ROOM_WAIT`: the exporter is told to come back.
        let abandon = CancellationToken::new();
        let timer = {
            let abandon = abandon.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ROOM_WAIT).await;
                abandon.cancel();
            })
        };
        let admitted = intake
            .admit(principal, &lane, submission, Reply::Once(answer), &abandon)
            .await;
        timer.abort();
        match admitted {
            Ok(()) => answers.push(answered),
            Err(Refusal::Refused(reply)) => return Err(failure_of(&reply)),
            Err(Refusal::Abandoned) => {
                return Err(Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::UNAVAILABLE,
                    format!(
                        "the writer's queue had no room within {} s; retry",
                        ROOM_WAIT.as_secs()
                    ),
                )
                .retry(1));
            }
        }
    }
    for answered in answers {
        match tokio::time::timeout(COMMIT_WAIT, answered).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(reply))) => return Err(failure_of(&reply)),
            Ok(Err(_)) => {
                return Err(Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::UNAVAILABLE,
                    "the writer stopped before it answered; retry",
                )
                .retry(1));
            }
            Err(_) => {
                return Err(Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::UNAVAILABLE,
                    format!(
                        "not committed within {} s; retry (what was committed is not stored twice)",
                        COMMIT_WAIT.as_secs()
                    ),
                )
                .retry(1));
            }
        }
    }
    Ok(())
}

/// The 200 of an export, with `partial_success` when some items were refused.
fn success(
    signal: Signal,
    encoding: Encoding,
    rejected: usize,
    first_reason: Option<String>,
) -> Response {
    let message = first_reason.unwrap_or_default();
    let body = match (signal, encoding) {
        // OTLP/JSON spells a 64-bit integer as a string, and leaves out an absent message.
        (_, Encoding::Json) => {
            let field = match signal {
                Signal::Traces => "rejectedSpans",
                Signal::Logs => "rejectedLogRecords",
            };
            let document = if rejected > 0 {
                serde_json::json!({"partialSuccess": {field: rejected.to_string(), "errorMessage": message}})
            } else {
                serde_json::json!({})
            };
            document.to_string().into_bytes()
        }
        (Signal::Traces, Encoding::Protobuf) => {
            prost::Message::encode_to_vec(&ExportTraceServiceResponse {
                partial_success: (rejected > 0).then_some(ExportTracePartialSuccess {
                    rejected_spans: rejected as i64,
                    error_message: message,
                }),
            })
        }
        (Signal::Logs, Encoding::Protobuf) => {
            prost::Message::encode_to_vec(&ExportLogsServiceResponse {
                partial_success: (rejected > 0).then_some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected as i64,
                    error_message: message,
                }),
            })
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

/// Metrics are refused, saying why: witness records events, and a metric's points are not
/// events. 404 is not retried by exporters, so the refusal costs them one request a period.
async fn metrics(headers: HeaderMap) -> Response {
    let encoding = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(Encoding::of_content_type)
        .unwrap_or(Encoding::Json);
    Failure::new(
        StatusCode::NOT_FOUND,
        code::UNIMPLEMENTED,
        "witness records traces and logs, not metrics: set OTEL_METRICS_EXPORTER=none, or \
         send metrics to a metrics store",
    )
    .into_response(encoding)
}

async fn not_allowed() -> Response {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::INVALID_ARGUMENT,
        "only POST is served here",
    )
    .into_response(Encoding::Json)
}

async fn not_found() -> Response {
    Failure::new(
        StatusCode::NOT_FOUND,
        code::UNIMPLEMENTED,
        "not found: OTLP/HTTP is served at /v1/traces and /v1/logs",
    )
    .into_response(Encoding::Json)
}

/// A peer that may not send: a 403 with its `google.rpc.Status`.
pub fn forbidden(reason: &crate::access::Denied) -> Response {
    Failure::new(
        StatusCode::FORBIDDEN,
        code::PERMISSION_DENIED,
        reason.to_string(),
    )
    .into_response(Encoding::Json)
}

/// A request refused for its token: a 401, saying what is missing.
#[derive(Debug)]
pub struct Unauthenticated(&'static str);

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        Failure::new(StatusCode::UNAUTHORIZED, code::UNAUTHENTICATED, self.0)
            .into_response(Encoding::Json)
    }
}

/// The identity of an OTLP caller: its bearer token's name, when the listener has a tokens
/// file. `Err` is the answer for a token that is missing (where one is needed) or unknown.
pub fn identify(
    listener: &'static str,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    tokens: &Arc<otlp::tokens::Tokens>,
) -> Result<HttpIdentity, Unauthenticated> {
    let unauthenticated = Unauthenticated;
    let shown = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    let token = match (tokens.is_empty(), shown) {
        (true, _) => None,
        (false, None) => {
            return Err(unauthenticated(
                "this listener needs a bearer token (OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer …\")",
            ));
        }
        (false, Some(shown)) => match tokens.name_of(shown) {
            Some(name) => Some(name.to_owned()),
            None => {
                return Err(unauthenticated(
                    "the bearer token is not one of this listener's",
                ));
            }
        },
    };
    Ok(HttpIdentity {
        listener,
        peer,
        token,
    })
}
