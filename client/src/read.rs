//! Reading the log back: traces, cost reports, and streams of entries (`tail`, `tail -f`,
//! `export`); and the operator's requests, stats and maintenance.
//!
//! A stream is not re-sent blindly on reconnect as appends are: it resumes from the last
//! entry it delivered, so a follower survives a daemon restart without a gap or a repeat.

use std::collections::VecDeque;

use witness_protocol::admin::{
    CheckpointReport, ConsistencyReport, MaintenanceReport, MaintenanceTask, StatsReport,
};
use witness_protocol::query::{
    CostQuery, CostReport, EndReason, EntriesQuery, StoredEntry, StreamEnd, TraceQuery,
    TraceReport, TracesPage, TracesQuery,
};
use witness_protocol::{Request, Response};

use crate::{Client, Error, Patience, unexpected};

impl Client {
    /// One trace: its summary and a page of its entries (see `TraceReport::next_after`).
    pub fn trace(&mut self, query: TraceQuery) -> Result<TraceReport, Error> {
        match self.call(Request::Trace(query))? {
            Response::Trace(report) => Ok(report),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of traces, the most recently active first.
    pub fn traces(&mut self, query: TracesQuery) -> Result<TracesPage, Error> {
        match self.call(Request::Traces(query))? {
            Response::Traces(page) => Ok(page),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// Money and tokens per group.
    pub fn cost(&mut self, query: CostQuery) -> Result<CostReport, Error> {
        match self.call(Request::Cost(query))? {
            Response::Cost(report) => Ok(report),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// The price the daemon would give a call of `query.model`: what matched, its rates and
    /// the date they hold from; `quote` is `None` when the model has no price.
    pub fn price(
        &mut self,
        query: witness_protocol::query::PriceQuery,
    ) -> Result<witness_protocol::query::PriceAnswer, Error> {
        match self.call(Request::Price(query))? {
            Response::Price(answer) => Ok(answer),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// The daemon's budgets and their spend this period, as it last looked.
    pub fn budgets(&mut self) -> Result<Vec<witness_protocol::admin::BudgetReport>, Error> {
        match self.call(Request::Budgets)? {
            Response::Budgets(reports) => Ok(reports),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// A one-time login link to the daemon's dashboard, for the user this client runs as.
    pub fn web_login(&mut self) -> Result<witness_protocol::admin::WebLogin, Error> {
        match self.call(Request::WebLogin)? {
            Response::WebLogin(login) => Ok(login),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// Where the daemon keeps the log, its key and its state files.
    pub fn paths(&mut self) -> Result<witness_protocol::admin::PathsReport, Error> {
        match self.call(Request::Paths)? {
            Response::Paths(paths) => Ok(paths),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// The daemon's health and load.
    pub fn stats(&mut self) -> Result<StatsReport, Error> {
        match self.call(Request::Stats)? {
            Response::Stats(report) => Ok(*report),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a maintenance task on the database and waits until it is done. Only the
    /// daemon's own user, or root, may ask.
    pub fn maintenance(&mut self, task: MaintenanceTask) -> Result<MaintenanceReport, Error> {
        match self.call(Request::Maintenance(task))? {
            Response::Maintained(report) => Ok(report),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// The latest checkpoint the daemon signed, and the key that checks it.
    pub fn checkpoint(&mut self) -> Result<CheckpointReport, Error> {
        match self.call(Request::Checkpoint)? {
            Response::Checkpoint(report) => Ok(report),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// The first signed checkpoint that covers everything committed so far, this client's
    /// `send`s included (they are flushed first): what a `send` or `Spool` user, who has no
    /// receipts, keeps as proof of what was recorded. Waits for the daemon to sign, at most
    /// `timeout`. A `Spool`'s entries are covered once `Spool::flush` has returned.
    pub fn covering_checkpoint(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<CheckpointReport, Error> {
        self.flush()?;
        let committed = self.stats()?.last_seq;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let report = self.checkpoint()?;
            let size = report.note.as_deref().and_then(|note| {
                witness_protocol::note::Note::parse(note)
                    .ok()
                    .and_then(|note| witness_protocol::note::Checkpoint::parse(&note.text).ok())
                    .map(|checkpoint| checkpoint.size)
            });
            if size.is_some_and(|size| size >= committed) {
                return Ok(report);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::TimedOut {
                    path: self.path.clone(),
                    waited: timeout,
                    what: "a checkpoint covering the committed entries",
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A proof bundle (C2SP `tlog-proof`) that entry `seq` is in the log, against the latest
    /// signed checkpoint; refused (`BadRequest`) for an entry no checkpoint covers yet.
    pub fn prove(&mut self, seq: u64) -> Result<String, Error> {
        match self.call(Request::Prove(seq))? {
            Response::Proof(bundle) => Ok(bundle),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// A consistency proof from the tree of `old` entries to that of the signed checkpoint of
    /// size `new` (the latest when `None`).
    pub fn consistency(&mut self, old: u64, new: Option<u64>) -> Result<ConsistencyReport, Error> {
        match self.call(Request::Consistency { old, new })? {
            Response::Consistency(report) => Ok(report),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// Streams the entries a query selects, in `seq` order. Sends what `send` buffered first.
    /// With `follow`, the stream does not end until the daemon stops or the stream is
    /// dropped; dropping an unfinished stream closes the connection (the next call opens a
    /// new one).
    pub fn entries(&mut self, query: EntriesQuery) -> Result<EntryStream<'_>, Error> {
        self.flush()?;
        let id = self.submit_stream(&query)?;
        Ok(EntryStream {
            client: self,
            query,
            id,
            page: VecDeque::new(),
            delivered: 0,
            end: None,
        })
    }

    /// Sends a stream request without keeping it for re-sending: the stream resumes itself.
    fn submit_stream(&mut self, query: &EntriesQuery) -> Result<u64, Error> {
        let id = self.submit(&Request::Entries(query.clone()), None)?;
        self.pending.retain(|pending| pending.id != id);
        Ok(id)
    }
}

/// Entries as they arrive; `end` says why the stream stopped once it has.
#[derive(Debug)]
pub struct EntryStream<'client> {
    client: &'client mut Client,
    query: EntriesQuery,
    id: u64,
    page: VecDeque<StoredEntry>,
    delivered: u64,
    end: Option<StreamEnd>,
}

impl EntryStream<'_> {
    /// How the stream ended, once `next` has returned `None`.
    pub fn end(&self) -> Option<StreamEnd> {
        self.end
    }

    /// The next entry, waiting for it if need be; `None` at the end of the stream.
    fn next_entry(&mut self) -> Result<Option<StoredEntry>, Error> {
        loop {
            if let Some(entry) = self.page.pop_front() {
                self.query.filter.after_seq = Some(entry.seq);
                self.delivered += 1;
                return Ok(Some(entry));
            }
            if self.end.is_some() {
                return Ok(None);
            }
            let patience = if self.query.follow {
                Patience::Forever
            } else {
                Patience::Answer
            };
            let Some(frame) = self.client.next_frame(patience)? else {
                self.resume()?;
                continue;
            };
            if frame.id != self.id {
                self.client.settle(frame)?;
                continue;
            }
            match frame.response {
                Response::Entries(entries) => self.page.extend(entries),
                Response::End(end) => self.end = Some(end),
                Response::Error(reply) => {
                    self.end = Some(StreamEnd {
                        reason: EndReason::Complete,
                        next_after: self.query.filter.after_seq,
                    });
                    return Err(Error::Refused(reply));
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// After a reconnect, asks again for what was not yet delivered.
    fn resume(&mut self) -> Result<(), Error> {
        let mut query = self.query.clone();
        // The newest entries were already chosen by the first request; go on after them.
        if query.filter.after_seq.is_some() || self.delivered > 0 {
            query.newest = None;
        }
        if let Some(limit) = query.limit {
            query.limit = Some(limit.saturating_sub(self.delivered).max(1));
        }
        self.id = self.client.submit_stream(&query)?;
        Ok(())
    }
}

impl Iterator for EntryStream<'_> {
    type Item = Result<StoredEntry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

impl Drop for EntryStream<'_> {
    fn drop(&mut self) {
        if self.end.is_none() {
            // Its frames would keep coming on this connection; a new one is cleaner.
            self.client.stream = None;
            self.client.clear_read_buffer();
        }
    }
}
