//! What the daemon tells the world about its health: the stats report (`metrics`), its
//! Prometheus form (`prometheus`, served by the HTTP layer), systemd's readiness, status
//! and watchdog (`service`), and the budgets watched against the spend (`budgets`).

pub mod budgets;
pub mod metrics;
pub mod prometheus;
pub mod service;
