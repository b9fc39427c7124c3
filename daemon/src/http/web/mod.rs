//! The dashboard (`web_listen`, `docs/DASHBOARD.md`): pages and their assets, built into the
//! binary; a JSON API under `/api/` that mirrors the socket's reads; and a live feed of
//! entries as server-sent events.
//!
//! Every route but the login page and the login itself goes through `guard`, which finds
//! the session from its cookie and authorizes the user it belongs to with the same rule as
//! the socket (`access::authorize`, `Need::Read`), so a reload that takes away a user's
//! reading takes away their dashboard too. A `POST` also repeats the session's CSRF secret
//! in a header, which no other site can read or set. Nothing is served cross-origin.

pub mod api;
pub mod assets;
pub mod feed;
pub mod session;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as Extract};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::State;
use crate::access::{self, Need, Principal};
use crate::read::ReadPool;
pub use session::{Session, Sessions};

/// What the dashboard's handlers read from, besides the shared context.
#[derive(Debug)]
pub struct WebContext {
    /// Tokens and sessions.
    pub sessions: Arc<Sessions>,
    /// The read pool the socket's reads use too.
    pub reads: Arc<ReadPool>,
    /// The last committed `seq`, bumped by the writer after each commit.
    pub committed: watch::Receiver<u64>,
    /// What read commands need besides the database.
    pub read: crate::read::Context,
    /// How long the live feed waits for a browser that takes nothing before cutting it off.
    pub stall_timeout: Duration,
    /// Cancelled when the daemon stops; the live feeds end there.
    pub shutdown: CancellationToken,
    /// The verification started from the page, if any.
    pub verify: Mutex<api::VerifyState>,
    /// Live feeds open at once.
    pub feeds: Arc<tokio::sync::Semaphore>,
}

/// The dashboard's routes.
pub fn routes(state: &State) -> Router<State> {
    let guarded = Router::new()
        .route("/", get(assets::index))
        .route("/api/session", get(api::session))
        .route("/api/logout", post(api::logout))
        .route("/api/entries", get(api::entries))
        .route("/api/traces", get(api::traces))
        .route("/api/trace", get(api::trace))
        .route("/api/cost", get(api::cost))
        .route("/api/stats", get(api::stats))
        .route("/api/checkpoint", get(api::checkpoint))
        .route("/api/budgets", get(api::budgets))
        .route(
            "/api/verify",
            get(api::verify_state).post(api::verify_start),
        )
        .route("/api/feed", get(feed::feed))
        .route("/assets/{name}", get(assets::asset))
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/login", get(assets::login_page))
        .route("/login.js", get(assets::login_script))
        .route("/login.css", get(assets::login_style))
        .route("/api/login", post(api::login))
        .merge(guarded)
        .layer(middleware::from_fn_with_state(state.clone(), host_check))
        .layer(middleware::map_response(secure_headers))
}

/// Headers every answer carries: nothing but this origin's own scripts and styles may run
/// (an entry's text can never become markup that loads or runs anything), no framing, no
/// referrer, no sniffing, and nothing cached.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Refuses a request whose `Host` is not this listener's loopback name when it listens on
/// loopback: a page elsewhere that rebinds its own name to 127.0.0.1 reaches nothing.
async fn host_check(Extract(state): Extract<State>, request: Request, next: Next) -> Response {
    let Some(address) = state.context.web.sessions.address() else {
        return next.run(request).await;
    };
    if !address.ip().is_loopback() {
        return next.run(request).await;
    }
    let port = address.port();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("");
    let allowed = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        address.to_string(),
    ];
    if allowed.iter().any(|name| name.eq_ignore_ascii_case(host)) {
        next.run(request).await
    } else {
        api::error(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            &format!("this dashboard answers to {} only", allowed[0]),
        )
    }
}

/// The value of the session cookie a request carries, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == session::COOKIE)
        .map(|(_, value)| value)
}

/// Whether a request that changes something comes from this dashboard's own page: the
/// session's CSRF secret in `X-CSRF-Token`, and no `Origin` of another site.
fn same_origin_post(headers: &HeaderMap, session: &Session) -> Result<(), &'static str> {
    let token = headers
        .get("x-csrf-token")
        .and_then(|value| value.to_str().ok())
        .ok_or("a POST needs the session's X-CSRF-Token header")?;
    if !session::same_secret(token, &session.csrf) {
        return Err("the X-CSRF-Token header is not this session's");
    }
    origin_matches(headers)
}

/// Whether the `Origin`, when a browser sends one, names the host the request was sent to.
pub fn origin_matches(headers: &HeaderMap) -> Result<(), &'static str> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("");
    match origin.to_str() {
        Ok(origin) if origin.strip_prefix("http://") == Some(host) => Ok(()),
        _ => Err("the request comes from another site"),
    }
}

/// Lets a request through only with a live session of a user who may read the log now.
/// Pages without one get the login page; the API and the feed get 401.
async fn guard(Extract(state): Extract<State>, mut request: Request, next: Next) -> Response {
    let wants_page =
        !request.uri().path().starts_with("/api/") && !request.uri().path().starts_with("/assets/");
    let session =
        session_cookie(request.headers()).and_then(|id| state.context.web.sessions.session(id));
    let Some(session) = session else {
        if wants_page && request.method() == Method::GET {
            let mut page = assets::login_page().await.into_response();
            *page.status_mut() = StatusCode::UNAUTHORIZED;
            return page;
        }
        return api::error(
            StatusCode::UNAUTHORIZED,
            "no_session",
            "log in first: run `witness web` and open the link it prints",
        );
    };
    let principal = Principal::Unix(session.peer.clone());
    if let Err(denied) = access::authorize(&state.context.gate.access(), &principal, Need::Read) {
        return api::error(StatusCode::FORBIDDEN, "forbidden", &denied.to_string());
    }
    if request.method() != Method::GET
        && request.method() != Method::HEAD
        && let Err(reason) = same_origin_post(request.headers(), &session)
    {
        return api::error(StatusCode::FORBIDDEN, "csrf", reason);
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// A body from a static string, with its content type.
fn typed(content_type: &'static str, body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}
