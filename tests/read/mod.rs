//! The read side against real daemons: every answer checked against the same figure computed
//! independently with SQL on the database file, streams that follow commits, followers that
//! stall, export and import, bad filters, and the query plans; one file for each, and here
//! the data set they share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use witness_client::query::{
    CostQuery, EndReason, EntriesQuery, Filter, GroupBy, StoredEntry, TraceQuery, TracesQuery,
};
use witness_client::{Cost, Entry, Error};
use witness_protocol::{ErrorCode, Request, Response};

use crate::harness::{TestDaemon, Witnessd, read_db, witness};

mod cli;
mod plans;
mod queries;
mod streams;
mod upgrades;

const COMPONENTS: [&str; 4] = ["planner", "billing", "search", "agent.exec"];
const EVENTS: [&str; 3] = ["llm_call", "tool_call", "user_login"];
const MODELS: [Option<&str>; 3] = [Some("small-model"), Some("big-model"), None];

/// The `index`-th entry of a known, varied data set: 4 components, 3 events, traces of about
/// ten entries, a cost with or without a model on every third.
fn known_entry(index: usize) -> Entry {
    let mut entry = Entry::new(EVENTS[index * 7 % 3], COMPONENTS[index % 4])
        .payload(json!({"i": index, "text": "a few words"}));
    if !index.is_multiple_of(11) {
        entry = entry.trace(format!("req-{}", index / 10));
    }
    if index.is_multiple_of(3) {
        let mut cost = Cost::new(
            100 + index as u64 % 7,
            20 + index as u64 % 5,
            1000 + index as u64,
        );
        if let Some(model) = MODELS[index / 3 % 3] {
            cost = cost.model(model);
        }
        entry = entry.cost(cost);
    }
    entry
}

fn feed(daemon: &TestDaemon, n: usize) {
    let mut client = daemon.client();
    for index in 0..n {
        client.send(known_entry(index)).unwrap();
    }
    client.flush().unwrap();
}

fn sql_i64(db: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> i64 {
    db.query_row(sql, params, |row| row.get(0)).unwrap()
}

fn collect(stream: impl Iterator<Item = Result<StoredEntry, Error>>) -> Vec<StoredEntry> {
    stream.map(Result::unwrap).collect()
}
