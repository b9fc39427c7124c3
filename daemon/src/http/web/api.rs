//! The dashboard's JSON API (`docs/DASHBOARD.md`, "API"): the socket's reads over HTTP, each
//! checked and run by the same `read::Command` as the socket's, answered with the protocol's
//! own types as JSON and entries as export lines. Errors are
//! `{"error": {"code": …, "message": …}}` with a status that says what kind.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use witness_protocol::query::{CostQuery, EntriesQuery, Filter, GroupBy, TraceQuery, TracesQuery};
use witness_protocol::{ErrorCode, ErrorReply, VerifyReport};

use super::session::{self, Session};
use super::{State, origin_matches};
use crate::read::{self, Command, ExportLine};

/// Rows a page of entries holds when the request does not say.
const DEFAULT_LIMIT: u32 = 100;

/// Rows a page of entries holds at most.
pub const MAX_ENTRIES: u32 = 1000;

/// An error answer: a status, a short code a script can match, and a sentence.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, Json(body)).into_response()
}

/// The status and answer for a refusal of the read layer.
fn refused(reply: &ErrorReply) -> Response {
    let status = match reply.code {
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Busy => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Storage => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, &format!("{:?}", reply.code), &reply.message)
}

/// A query string that does not parse.
fn bad_query(rejection: &QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &rejection.body_text(),
    )
}

/// Any route that is not one.
pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such page or API route",
    )
}

/// What `POST /api/login` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The one-time token from `witness web`'s link.
    pub token: String,
}

/// Trades a one-time token for a session cookie. Only JSON is taken, which a form on
/// another site cannot send without a preflight that is never answered.
pub async fn login(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Response {
    if let Err(reason) = origin_matches(&headers) {
        return error(StatusCode::FORBIDDEN, "csrf", reason);
    }
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return error(rejection.status(), "BadRequest", &rejection.body_text());
        }
    };
    let Some((id, session)) = state.context.web.sessions.redeem(&body.token) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "this login link is used, expired or unknown: run `witness web` for a new one",
        );
    };
    tracing::info!(uid = session.peer.uid_text(), "dashboard login");
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        session::COOKIE,
        session::SESSION_LIFETIME.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Json(session_view(&session))).into_response()
}

/// What the page learns of its session.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// The user the session reads as.
    pub uid: Option<u32>,
    /// The secret every `POST` repeats in `X-CSRF-Token`.
    pub csrf: String,
    /// When the session ends, in nanoseconds since the Unix epoch.
    pub expires_ns: i64,
}

fn session_view(session: &Session) -> SessionView {
    SessionView {
        uid: session.peer.uid,
        csrf: session.csrf.clone(),
        expires_ns: session.expires_ns,
    }
}

/// `GET /api/session`: whose session this is, and its CSRF secret.
pub async fn session(Extension(session): Extension<Session>) -> Response {
    Json(session_view(&session)).into_response()
}

/// `POST /api/logout`: ends the session and clears its cookie.
pub async fn logout(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    if let Some(id) = super::session_cookie(&headers) {
        state.context.web.sessions.end(id);
    }
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        session::COOKIE
    );
    ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response()
}

/// Runs a read command as the socket would and answers with its JSON.
async fn run(state: &State, command: Command) -> Response {
    if let Err(reply) = command.check() {
        return refused(&reply);
    }
    let context = state.context.web.read.clone();
    let answer = state
        .context
        .web
        .reads
        .run(move |connection| command.run(connection, &context))
        .await;
    use witness_protocol::Response as R;
    match answer {
        Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, "Storage", &message),
        Ok(R::Error(reply)) => refused(&reply),
        Ok(R::Traces(page)) => Json(page).into_response(),
        Ok(R::Cost(report)) => Json(report).into_response(),
        Ok(R::Checkpoint(report)) => Json(report).into_response(),
        Ok(R::Verified(report)) => Json(report).into_response(),
        Ok(R::Trace(report)) => {
            let entries: Vec<ExportLine<'_>> = report.entries.iter().map(ExportLine::new).collect();
            Json(serde_json::json!({
                "summary": report.summary,
                "entries": entries,
                "next_after": report.next_after,
            }))
            .into_response()
        }
        Ok(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Storage",
            &format!("unexpected answer {other:?}"),
        ),
    }
}

/// `GET /api/entries`'s parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesParams {
    component: Option<String>,
    event: Option<String>,
    trace: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    after: Option<u64>,
    to: Option<u64>,
    newest: Option<u32>,
    limit: Option<u32>,
}

impl EntriesParams {
    /// The filter these parameters make.
    pub fn filter(&self) -> Filter {
        Filter {
            component: self.component.clone(),
            event: self.event.clone(),
            trace_id: self.trace.clone(),
            since: self.since,
            until: self.until,
            after_seq: self.after,
            to_seq: self.to,
        }
    }
}

/// `GET /api/entries`: a page of entries in `seq` order, as export lines, with the cursor to
/// go on from (`tail` and `export`).
pub async fn entries(
    Extract(state): Extract<State>,
    params: Result<Query<EntriesParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return bad_query(&rejection),
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_ENTRIES {
        let message = format!("limit must be between 1 and {MAX_ENTRIES}");
        return error(StatusCode::BAD_REQUEST, "BadRequest", &message);
    }
    let mut filter = params.filter();
    let head = *state.context.web.committed.borrow();
    filter.to_seq = Some(filter.to_seq.map_or(head, |to| to.min(head)));
    let query = EntriesQuery {
        filter: filter.clone(),
        newest: params.newest,
        limit: Some(u64::from(limit)),
        follow: false,
    };
    if let Err(reply) = read::check_entries(&query) {
        return refused(&reply);
    }
    let newest = params.newest;
    let page = state
        .context
        .web
        .reads
        .run(move |connection| {
            if let Some(newest) = newest
                && let Some(cursor) = read::newest_cursor(connection, &filter, newest)?
            {
                filter.after_seq = Some(filter.after_seq.unwrap_or(0).max(cursor));
            }
            read::entries_page(connection, &filter, limit)
        })
        .await;
    match page {
        Ok((page, cut_short)) => {
            let more = cut_short || page.len() == limit as usize;
            let next_after = page.last().map(|entry| entry.seq).filter(|_| more);
            let lines: Vec<ExportLine<'_>> = page.iter().map(ExportLine::new).collect();
            Json(serde_json::json!({ "entries": lines, "next_after": next_after, "head": head }))
                .into_response()
        }
        Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, "Storage", &message),
    }
}

/// `GET /api/traces`'s parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesParams {
    since: Option<i64>,
    until: Option<i64>,
    component: Option<String>,
    before: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/traces`: traces by last activity, paged (`witness traces`).
pub async fn traces(
    Extract(state): Extract<State>,
    params: Result<Query<TracesParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return bad_query(&rejection),
    };
    let query = TracesQuery {
        since: params.since,
        until: params.until,
        component: params.component,
        before_seq: params.before,
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
    };
    run(&state, Command::Traces(query)).await
}

/// `GET /api/trace`'s parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceParams {
    id: String,
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/trace?id=…`: one trace summed up and a page of its entries (`witness trace`).
pub async fn trace(
    Extract(state): Extract<State>,
    params: Result<Query<TraceParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return bad_query(&rejection),
    };
    let query = TraceQuery {
        trace_id: params.id,
        after_seq: params.after,
        limit: params.limit.unwrap_or(MAX_ENTRIES),
    };
    run(&state, Command::Trace(query)).await
}

/// `GET /api/cost`'s parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostParams {
    by: String,
    since: Option<i64>,
    until: Option<i64>,
    component: Option<String>,
    event: Option<String>,
    model: Option<String>,
    offset: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/cost?by=…`: money and tokens per group (`witness cost`).
pub async fn cost(
    Extract(state): Extract<State>,
    params: Result<Query<CostParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return bad_query(&rejection),
    };
    let by = match params.by.as_str() {
        "component" => GroupBy::Component,
        "model" => GroupBy::Model,
        "event" => GroupBy::Event,
        "trace" => GroupBy::Trace,
        "day" => GroupBy::Day,
        "hour" => GroupBy::Hour,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "by must be one of component, model, event, trace, day, hour",
            );
        }
    };
    let query = CostQuery {
        by,
        since: params.since,
        until: params.until,
        component: params.component,
        event: params.event,
        model: params.model,
        offset: params.offset.unwrap_or(0),
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
    };
    run(&state, Command::Cost(query)).await
}

/// `GET /api/stats`: the daemon's health and load (`witness stats`).
pub async fn stats(Extract(state): Extract<State>) -> Response {
    Json(state.context.metrics.report()).into_response()
}

/// `GET /api/checkpoint`: the latest signed checkpoint and its key (`witness checkpoint`).
pub async fn checkpoint(Extract(state): Extract<State>) -> Response {
    run(&state, Command::Checkpoint).await
}

/// `GET /api/budgets`: each budget and its spend this period (`witness budgets`).
pub async fn budgets(Extract(state): Extract<State>) -> Response {
    Json(state.context.budgets.reports()).into_response()
}

/// A verification started from the page: one at a time, on the read pool, so that it
/// never holds up ingest and never runs twice at once.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyState {
    /// `idle`, `running`, `done` or `failed`.
    pub state: &'static str,
    /// When it started, in nanoseconds since the Unix epoch.
    pub started_ns: Option<i64>,
    /// When it ended.
    pub finished_ns: Option<i64>,
    /// What it found, once done.
    pub report: Option<VerifyReport>,
    /// Why it could not run.
    pub error: Option<String>,
}

fn verify_snapshot(state: &State) -> VerifyState {
    let mut snapshot = state
        .context
        .web
        .verify
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    if snapshot.state.is_empty() {
        snapshot.state = "idle";
    }
    snapshot
}

/// `GET /api/verify`: the state of the last verification started from the page.
pub async fn verify_state(Extract(state): Extract<State>) -> Response {
    Json(verify_snapshot(&state)).into_response()
}

/// `POST /api/verify`: starts verifying the whole log in the background (202), unless one
/// runs already (409).
pub async fn verify_start(Extract(state): Extract<State>) -> Response {
    {
        let mut current = state
            .context
            .web
            .verify
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.state == "running" {
            return error(
                StatusCode::CONFLICT,
                "running",
                "a verification is already running",
            );
        }
        *current = VerifyState {
            state: "running",
            started_ns: Some(crate::format::row::now_ns()),
            ..VerifyState::default()
        };
    }
    let web = Arc::clone(&state.context.web);
    tokio::spawn(async move {
        let context = web.read.clone();
        let range = witness_protocol::VerifyRange {
            from: None,
            to: None,
        };
        let answer = web
            .reads
            .run(move |connection| Command::Verify(range).run(connection, &context))
            .await;
        let mut current = web
            .verify
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.finished_ns = Some(crate::format::row::now_ns());
        match answer {
            Ok(witness_protocol::Response::Verified(report)) => {
                current.state = "done";
                current.report = Some(report);
            }
            Ok(witness_protocol::Response::Error(reply)) => {
                current.state = "failed";
                current.error = Some(reply.message);
            }
            Ok(other) => {
                current.state = "failed";
                current.error = Some(format!("unexpected answer {other:?}"));
            }
            Err(message) => {
                current.state = "failed";
                current.error = Some(message);
            }
        }
    });
    (StatusCode::ACCEPTED, Json(verify_snapshot(&state))).into_response()
}
