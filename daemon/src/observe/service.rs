//! Talking to systemd while running: the `STATUS=` line and the watchdog.
//!
//! The watchdog ping is not a timer that fires regardless: it is sent only when the writer's
//! heartbeat has moved since the last ping, so a writer stuck in a commit (a dead disk, a
//! lock someone else holds) stops the pings and systemd restarts the service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::observe::metrics::Metrics;

/// How often the status line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The writer heartbeat that lets the watchdog see progress at half of `watchdog`: the
/// writer's idle loop must turn at least twice per ping interval.
pub fn writer_heartbeat(watchdog: Option<Duration>) -> Duration {
    let default = Duration::from_millis(250);
    watchdog.map_or(default, |interval| {
        (interval / 8).clamp(Duration::from_millis(1), default)
    })
}

/// Starts a thread that refreshes systemd's status line and, when `watchdog` is set (from
/// `WATCHDOG_USEC`), pings it at half that interval while the writer makes progress. It runs
/// until the process exits; without `NOTIFY_SOCKET` its messages go nowhere.
pub fn spawn_notifier(metrics: Arc<Metrics>, watchdog: Option<Duration>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("witness-notify".into())
        .spawn(move || {
            let ping_every = watchdog.map(|interval| interval / 2);
            let mut next_status = Instant::now() + STATUS_EVERY;
            let mut next_ping = ping_every.map(|every| Instant::now() + every);
            let mut last_heartbeat = metrics.writer_heartbeat();
            loop {
                let wake = next_ping.map_or(next_status, |ping| ping.min(next_status));
                std::thread::sleep(wake.saturating_duration_since(Instant::now()));
                let now = Instant::now();
                if let (Some(every), Some(ping)) = (ping_every, next_ping)
                    && now >= ping
                {
                    let heartbeat = metrics.writer_heartbeat();
                    if heartbeat != last_heartbeat {
                        let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                        last_heartbeat = heartbeat;
                    } else {
                        tracing::warn!(
                            "the writer made no progress; withholding the watchdog ping"
                        );
                    }
                    next_ping = Some(ping + every);
                }
                if now >= next_status {
                    let status = metrics.status_line();
                    let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
                    next_status = now + STATUS_EVERY;
                }
            }
        })
        .map(drop)
}
