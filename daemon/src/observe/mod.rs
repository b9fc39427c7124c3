//! What the daemon tells the world about its health: the stats report (`metrics`), its
//! Prometheus form and endpoint (`prometheus`, `http`), and systemd's readiness, status and
//! watchdog (`service`).

pub mod http;
pub mod metrics;
pub mod prometheus;
pub mod service;
