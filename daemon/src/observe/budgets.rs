//! Budgets watched: every few seconds, each `[[budget]]`'s spend in its current period is
//! read from the log, and a threshold crossed for the first time this period is recorded as
//! one `witness.budget` entry (and one log line). Whether a threshold was already recorded is
//! read from the log itself, so a restart neither repeats a warning nor loses one. A budget
//! never refuses entries: the log records what happened.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use witness_protocol::admin::BudgetReport;
use witness_protocol::{Ack, Entry};

use crate::config::Budget;
use crate::format::row::{Origin, now_ns};
use crate::read::{BUDGET_EVENT, ReadPool};
use crate::store::job::{Job, Reply};
use crate::store::queue::JobQueue;

/// How often budgets are looked at: a crossing is recorded within this long.
pub const BUDGET_INTERVAL: Duration = Duration::from_secs(5);

/// How long the watcher waits for a warning to commit before it tries again next time.
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// The lane of the daemon's own warnings in the writer's queue (the producers' lanes start
/// at 1).
const BUDGET_LANE: u64 = 0;

/// The budgets in force and what the watcher last found: what `witness budgets` and the
/// metrics show.
#[derive(Debug, Default)]
pub struct Budgets {
    budgets: RwLock<Vec<Budget>>,
    reports: Mutex<Vec<BudgetReport>>,
}

impl Budgets {
    /// Budgets to watch.
    pub fn new(budgets: Vec<Budget>) -> Budgets {
        Budgets {
            budgets: RwLock::new(budgets),
            reports: Mutex::default(),
        }
    }

    /// Puts `budgets` in force (a reload); the next look reports on them.
    pub fn replace(&self, budgets: Vec<Budget>) {
        *self
            .budgets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = budgets;
    }

    /// What the last look found, in the configuration's order.
    pub fn reports(&self) -> Vec<BudgetReport> {
        self.reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn current(&self) -> Vec<Budget> {
        self.budgets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Watches `budgets` until `stop`: reads their spend through `reads` and records crossings
/// through the writer's `queue`.
pub async fn watch(
    budgets: Arc<Budgets>,
    reads: Arc<ReadPool>,
    queue: Arc<JobQueue>,
    stop: CancellationToken,
) {
    loop {
        let watched = budgets.current();
        if watched.is_empty() {
            budgets
                .reports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        } else {
            match look(&watched, &reads).await {
                Ok(looked) => {
                    let mut reports = Vec::with_capacity(looked.len());
                    for (budget, mut report, said) in looked {
                        for &threshold in &budget.warn_at {
                            let crossed = report.spent_micro_usd as f64
                                >= threshold * budget.limit_micro_usd as f64;
                            if crossed && !said.iter().any(|&s| same(s, threshold)) {
                                if warn(&budget, &report, threshold, &queue).await {
                                    report.crossed.push(threshold);
                                }
                            } else if crossed {
                                report.crossed.push(threshold);
                            }
                        }
                        reports.push(report);
                    }
                    *budgets.reports.lock().unwrap_or_else(|p| p.into_inner()) = reports;
                }
                Err(error) => tracing::warn!(%error, "budgets not looked at"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(BUDGET_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Each budget's report for its current period, and the thresholds already recorded in it.
async fn look(
    budgets: &[Budget],
    reads: &Arc<ReadPool>,
) -> Result<Vec<(Budget, BudgetReport, Vec<f64>)>, String> {
    let budgets = budgets.to_vec();
    reads
        .run(move |connection| {
            let now = now_ns();
            let mut out = Vec::with_capacity(budgets.len());
            let earliest = budgets
                .iter()
                .map(|budget| budget.period_at(now).0)
                .min()
                .unwrap_or(now);
            let warnings: Vec<serde_json::Value> =
                crate::read::budget_warnings(connection, earliest)?
                    .iter()
                    .filter_map(|payload| serde_json::from_str(payload).ok())
                    .collect();
            for budget in budgets {
                let (start, end) = budget.period_at(now);
                let (spent, unpriced) = crate::read::spend_since(
                    connection,
                    start,
                    budget.component.as_deref(),
                    budget.model.as_deref(),
                    budget.trace_prefix.as_deref(),
                )?;
                let said: Vec<f64> = warnings
                    .iter()
                    .filter(|warning| {
                        warning["budget"] == budget.name.as_str()
                            && warning["period_start_ns"] == start
                    })
                    .filter_map(|warning| warning["threshold"].as_f64())
                    .collect();
                let elapsed = (now - start).max(1) as f64;
                let projected = spent as f64 * (end - start) as f64 / elapsed;
                let report = BudgetReport {
                    name: budget.name.clone(),
                    period: budget.period.name().to_owned(),
                    time_zone: budget.zone_name.clone(),
                    period_start: start,
                    period_end: end,
                    limit_micro_usd: budget.limit_micro_usd,
                    spent_micro_usd: spent,
                    unpriced,
                    ratio: spent as f64 / budget.limit_micro_usd as f64,
                    projected_micro_usd: projected.min(u64::MAX as f64) as u64,
                    warn_at: budget.warn_at.clone(),
                    crossed: Vec::new(),
                };
                out.push((budget, report, said));
            }
            Ok(out)
        })
        .await
}

/// Records one crossing as a `witness.budget` entry and a log line; says whether it was
/// committed (if not, the next look tries again).
async fn warn(budget: &Budget, report: &BudgetReport, threshold: f64, queue: &JobQueue) -> bool {
    let usd = |micro: u64| micro as f64 / 1e6;
    let payload = json!({
        "budget": budget.name,
        "period": budget.period.name(),
        "time_zone": budget.zone_name,
        "period_start_ns": report.period_start,
        "period_end_ns": report.period_end,
        "threshold": threshold,
        "spent_micro_usd": report.spent_micro_usd,
        "limit_micro_usd": report.limit_micro_usd,
        "spent_usd": usd(report.spent_micro_usd),
        "limit_usd": usd(report.limit_micro_usd),
        "unpriced": report.unpriced,
    });
    let entry = Entry::new(BUDGET_EVENT, "witnessd").payload(payload);
    let (answer, answered) = tokio::sync::oneshot::channel();
    let mut job = Job::internal(vec![entry], Origin::daemon());
    job.ack = Ack::Committed;
    job.reply = Reply::Once(answer);
    if queue.push(BUDGET_LANE, Box::new(job)).is_err() {
        return false;
    }
    match tokio::time::timeout(COMMIT_WAIT, answered).await {
        Ok(Ok(Ok(_))) => {
            tracing::warn!(
                budget = %budget.name,
                period = budget.period.name(),
                threshold,
                spent_usd = usd(report.spent_micro_usd),
                limit_usd = usd(report.limit_micro_usd),
                "budget threshold crossed"
            );
            true
        }
        other => {
            tracing::error!(budget = %budget.name, threshold, ?other, "budget warning not recorded; trying again");
            false
        }
    }
}
