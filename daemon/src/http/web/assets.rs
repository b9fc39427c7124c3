//! The dashboard's pages, scripts and styles, built into the binary from `daemon/web/`: no
//! network, no build step. The page is one document whose script draws each view from the
//! API; the login page is the only one served without a session.

use axum::extract::Path;
use axum::response::Response;

use super::typed;

const INDEX: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const APP_CSS: &str = include_str!("../../../web/app.css");
const LOGIN: &str = include_str!("../../../web/login.html");
const LOGIN_JS: &str = include_str!("../../../web/login.js");
const UPLOT_JS: &str = include_str!("../../../web/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../../web/vendor/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../../web/vendor/uPlot.LICENSE");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every asset the page loads, by name under `/assets/`, with its content type.
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, APP_JS),
    ("app.css", CSS, APP_CSS),
    ("uPlot.iife.min.js", JS, UPLOT_JS),
    ("uPlot.min.css", CSS, UPLOT_CSS),
    ("uPlot.LICENSE", TEXT, UPLOT_LICENSE),
];

/// The dashboard's page.
pub async fn index() -> Response {
    typed(HTML, INDEX)
}

/// The login page: it reads the token from the address's fragment and trades it.
pub async fn login_page() -> Response {
    typed(HTML, LOGIN)
}

/// The login page's script.
pub async fn login_script() -> Response {
    typed(JS, LOGIN_JS)
}

/// The login page's style (the dashboard's own).
pub async fn login_style() -> Response {
    typed(CSS, APP_CSS)
}

/// One asset of the page, for a session.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(known, _, _)| *known == name) {
        Some((_, content_type, body)) => typed(content_type, *body),
        None => super::api::not_found().await,
    }
}
