//! The HTTP layer: every TCP listener of the daemon (the Prometheus endpoint, the OTLP
//! receiver, the dashboard), each an
//! axum router of small handlers, served beside the Unix socket and stopped by the same
//! signal. Who may do what is decided by `access::authorize`, as for the socket, from the
//! principal the listener establishes ([`Caller`]): its name, the peer's address and, for
//! listeners that take them, a token.

pub mod metrics;
pub mod otlp;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{self, Gate, HttpIdentity, Need, Principal};
use crate::observe::metrics::Metrics;

/// What kind of listener a bound TCP socket is, which decides its routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /metrics` in the Prometheus text format (`metrics_listen`).
    Metrics,
    /// `POST /v1/traces` and `/v1/logs`, OTLP/HTTP (`otlp_listen`).
    Otlp,
    /// The dashboard and its API (`web_listen`).
    Web,
}

impl Kind {
    /// The listener's name, in logs and in the principal of its callers.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Metrics => "metrics",
            Kind::Otlp => "otlp",
            Kind::Web => "web",
        }
    }

    /// Where a person finds what it serves.
    fn path(self) -> &'static str {
        match self {
            Kind::Metrics => "/metrics",
            Kind::Otlp => "/v1/traces",
            Kind::Web => "/ (log in with `witness web`)",
        }
    }
}

/// A bound TCP listener and what it serves.
#[derive(Debug)]
pub struct Listener {
    /// What it serves.
    pub kind: Kind,
    /// The socket, bound by whoever started the daemon (so that a bind error stops the start).
    pub socket: TcpListener,
}

/// What the handlers of every listener may use.
#[derive(Debug, Clone)]
pub struct Context {
    /// The figures of `witness stats`.
    pub metrics: Arc<Metrics>,
    /// Who may do what.
    pub gate: Arc<Gate>,
    /// Where appends are admitted.
    pub intake: Arc<crate::intake::Intake>,
    /// The OTLP receiver's settings, tokens and counters.
    pub otlp: Arc<OtlpContext>,
    /// The budgets and their spend, for the metrics.
    pub budgets: Arc<crate::observe::budgets::Budgets>,
    /// What the dashboard reads from.
    pub web: Arc<web::WebContext>,
}

/// What the OTLP receiver's handlers need besides the intake.
#[derive(Debug, Default)]
pub struct OtlpContext {
    /// Whether the daemon serves an OTLP listener (and the metrics show its counters).
    pub listening: bool,
    /// The largest body, counted after decompression.
    pub max_body: usize,
    /// The bearer tokens; empty: only loopback peers, without one.
    pub tokens: Arc<crate::otlp::tokens::Tokens>,
    /// Requests, items and refusals.
    pub stats: crate::stats::OtlpStats,
}

/// The state of one listener's router: the shared context and the listener's kind.
#[derive(Debug, Clone)]
pub struct State {
    /// The shared context.
    pub context: Context,
    /// The listener.
    pub kind: Kind,
}

/// Serves every listener on a task of `tasks` until `shutdown` is cancelled; requests under
/// way then finish (their waits are bounded by the daemon's own limits).
pub fn serve_all(
    listeners: Vec<Listener>,
    context: &Context,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    for Listener { kind, socket } in listeners {
        match socket.local_addr() {
            Ok(address) => {
                tracing::info!("serving {} at http://{address}{}", kind.name(), kind.path())
            }
            Err(error) => tracing::warn!(%error, "serving HTTP at an unknown address"),
        }
        let state = State {
            context: context.clone(),
            kind,
        };
        let router: Router = match kind {
            Kind::Metrics => metrics::routes(),
            Kind::Otlp => otlp::routes(),
            Kind::Web => web::routes(&state),
        }
        .with_state(state);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(
                socket,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
            if let Err(error) = served {
                tracing::error!(%error, listener = kind.name(), "HTTP listener failed");
            }
        });
    }
}

/// The caller of a request, as the listener knows it, once `access::authorize` has let it in
/// for what the handler declares it needs. Handlers take `Caller<NEED>` as an extractor, so
/// that no route can forget to ask.
#[derive(Debug, Clone)]
pub struct Caller<const NEED: u8> {
    /// Who it is.
    pub principal: Principal,
}

/// `Caller` for the metrics: the daemon's counters.
pub const METRICS: u8 = 0;
/// `Caller` for reads of the log.
pub const READ: u8 = 1;
/// `Caller` for appends.
pub const WRITE: u8 = 2;

fn need(code: u8) -> Need {
    match code {
        METRICS => Need::Metrics,
        READ => Need::Read,
        _ => Need::Write,
    }
}

impl<const NEED: u8> FromRequestParts<State> for Caller<NEED> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| *address)
            .ok_or_else(|| {
                (StatusCode::INTERNAL_SERVER_ERROR, "no peer address").into_response()
            })?;
        let identity = match state.kind {
            Kind::Otlp => otlp::identify(
                state.kind.name(),
                peer,
                &parts.headers,
                &state.context.otlp.tokens,
            )
            .map_err(IntoResponse::into_response)?,
            // The dashboard's guard authorizes a session as its Unix user; a route of it that
            // asked for a `Caller` would be one the guard missed.
            Kind::Web => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "the dashboard authorizes by session\n",
                )
                    .into_response());
            }
            Kind::Metrics => HttpIdentity {
                listener: state.kind.name(),
                peer,
                token: None,
            },
        };
        let principal = Principal::Http(identity);
        match access::authorize(&state.context.gate.access(), &principal, need(NEED)) {
            Ok(()) => Ok(Caller { principal }),
            Err(reason) if state.kind == Kind::Otlp => Err(otlp::forbidden(&reason)),
            Err(reason) => Err((StatusCode::FORBIDDEN, format!("{reason}\n")).into_response()),
        }
    }
}
