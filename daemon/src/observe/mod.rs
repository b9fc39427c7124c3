//! What the daemon tells the world about its health: the stats report (`metrics`), its
//! Prometheus form (`prometheus`, served by the HTTP layer), and systemd's readiness, status
//! and watchdog (`service`).

pub mod metrics;
pub mod prometheus;
pub mod service;
