//! The workloads of a run: what is measured, by how many processes, at what rate.

use super::*;

/// One thing measured.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) processes: usize,
    pub(crate) entries_per_process: u64,
    pub(crate) batch: usize,
    pub(crate) rate_per_process: f64,
    /// Run a flooding `Spool` process beside the measured ones, for the whole workload.
    pub(crate) beside_flooder: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ceiling,
    Direct,
    /// The round trip to a server that only answers; `true`: after a group `fdatasync`.
    RoundTrip(bool),
    Witness(Mode),
}

pub(crate) fn workloads(quick: bool) -> Vec<Workload> {
    let scale = |full: u64| if quick { full / 10 } else { full };
    let witness = |name: &str, mode, processes: usize, total: u64, batch| Workload {
        name: name.to_owned(),
        kind: Kind::Witness(mode),
        processes,
        entries_per_process: (scale(total) / processes as u64).max(1),
        batch,
        rate_per_process: 0.0,
        beside_flooder: false,
    };
    // Eight processes each offering 5,000 entries a second, below saturation.
    let offered = |name: &str, mode| Workload {
        rate_per_process: 5_000.0,
        ..witness(name, mode, 8, 400_000, 1)
    };
    let open = |name: &str, processes: usize, rate: f64| Workload {
        name: name.to_owned(),
        kind: Kind::Witness(Mode::Open),
        processes,
        entries_per_process: if rate > 0.0 {
            (rate / processes as f64 * if quick { 2.0 } else { 5.0 }) as u64
        } else {
            0
        },
        batch: 1,
        rate_per_process: if rate > 0.0 {
            rate / processes as f64
        } else {
            rate
        },
        beside_flooder: false,
    };
    let direct = |processes: usize, total: u64| Workload {
        name: format!(
            "direct, {processes} process{}",
            if processes == 1 { "" } else { "es" }
        ),
        kind: Kind::Direct,
        processes,
        entries_per_process: scale(total) / processes as u64,
        batch: 1,
        rate_per_process: 0.0,
        beside_flooder: false,
    };
    let round_trip = |durable: bool, processes: usize, total: u64| Workload {
        name: format!(
            "round trip, {processes} process{}, {}",
            if processes == 1 { "" } else { "es" },
            if durable {
                "after a group fdatasync"
            } else {
                "answered at once"
            }
        ),
        kind: Kind::RoundTrip(durable),
        ..witness("", Mode::RoundTrip, processes, total, 1)
    };
    let mut list = vec![
        Workload {
            name: "ceiling: 1 thread, rusqlite, 1000/txn".into(),
            kind: Kind::Ceiling,
            processes: 1,
            entries_per_process: scale(800_000),
            batch: 1000,
            rate_per_process: 0.0,
            beside_flooder: false,
        },
        direct(8, 20_000),
    ];
    if !quick {
        list.push(direct(1, 5_000));
    }
    list.extend([
        witness("send, 1 process", Mode::Send, 1, 600_000, 1),
        witness("send, 8 processes", Mode::Send, 8, 800_000, 1),
        witness("send, 64 processes", Mode::Send, 64, 800_000, 1),
        offered("send at 40000/s offered, 8 processes", Mode::Send),
        witness("spool send, 1 process", Mode::Spool, 1, 600_000, 1),
        witness("spool send, 8 processes", Mode::Spool, 8, 800_000, 1),
        offered("spool send at 40000/s offered, 8 processes", Mode::Spool),
        witness("log_batch 10, 8 processes", Mode::Batch, 8, 200_000, 10),
        witness("log_batch 100, 8 processes", Mode::Batch, 8, 600_000, 100),
        witness("log_batch 1000, 8 processes", Mode::Batch, 8, 800_000, 1000),
        // What any design is bounded by for callers that wait: a server that only answers,
        // at once or after syncing a small record for each group of waiting calls.
        round_trip(false, 8, 400_000),
        round_trip(true, 1, 10_000),
        round_trip(true, 8, 80_000),
        round_trip(true, 64, 160_000),
        witness("log, 1 process", Mode::Log, 1, 10_000, 1),
        witness("log, 8 processes", Mode::Log, 8, 80_000, 1),
        witness("log, 64 processes", Mode::Log, 64, 160_000, 1),
        open("log at 20000/s offered, 8 processes", 8, 20_000.0),
        open("log at 50% of saturation, 8 processes", 8, -0.5),
        open("log at 90% of saturation, 8 processes", 8, -0.9),
        // Fairness: the same four well-behaved processes alone, then beside one process
        // that floods through a Spool as fast as it can.
        witness("log, 4 processes", Mode::Log, 4, 20_000, 1),
        Workload {
            name: "log, 4 processes, beside a spool flooder".into(),
            beside_flooder: true,
            ..witness("log, 4 processes", Mode::Log, 4, 20_000, 1)
        },
    ]);
    if !quick {
        list.push(open("log at 5000/s offered, 8 processes", 8, 5_000.0));
        // Many streams: 500 connections, each calling `log` at a steady rate (their
        // schedules spread over the interval), at rising total rates, to find the highest
        // this machine sustains with a p99 under 5 ms.
        for rate in [1_000u32, 2_000, 3_000, 4_000, 5_000, 6_000] {
            list.push(open(
                &format!("log at {rate}/s offered, 500 processes"),
                500,
                f64::from(rate),
            ));
        }
    }
    list
}
