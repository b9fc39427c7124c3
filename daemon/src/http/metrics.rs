//! The Prometheus endpoint (`metrics_listen`): `GET /metrics` answers the same figures as
//! `witness stats --prometheus`.

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::{Caller, METRICS, State};
use crate::observe::prometheus::prometheus;

/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

const PLAIN: &str = "text/plain; charset=utf-8";

/// The routes of a metrics listener. Only GET (and HEAD) are served; other paths are 404.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/metrics", get(metrics).fallback(not_allowed))
        .route("/", get(index).fallback(not_allowed))
        .fallback(not_found)
}

async fn metrics(_: Caller<METRICS>, Extract(state): Extract<State>) -> impl IntoResponse {
    let mut text = prometheus(&state.context.metrics.report());
    if state.context.otlp.listening {
        text.push_str(&crate::observe::prometheus::otlp(&state.context.otlp.stats));
    }
    text.push_str(&crate::observe::prometheus::spend(
        &state.context.metrics.spend(),
    ));
    text.push_str(&crate::observe::prometheus::budgets(
        &state.context.budgets.reports(),
    ));
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text)
}

async fn index(_: Caller<METRICS>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PLAIN)],
        "witnessd: metrics are at /metrics\n",
    )
}

async fn not_allowed() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, PLAIN)],
        "only GET is served here\n",
    )
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, PLAIN)],
        "not found: metrics are at /metrics\n",
    )
}
