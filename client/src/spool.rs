//! A background sender for hot paths: [`Spool::send`] puts the entry in a queue and returns;
//! a thread of the spool's own batches the entries, writes them to the socket, reads the
//! answers and reconnects when it must.
//!
//! `Client::send` batches too, but the call that completes a batch writes it to the socket,
//! which on a busy machine costs tens of microseconds (the write wakes the daemon). Here the
//! caller only takes a lock and pushes; it wakes the thread only when the thread has gone to
//! sleep after a quiet spell, or when a batch is ready. The thread writes a partial batch
//! once its first entry has waited [`MAX_DELAY`], and waits that long again before it
//! sleeps, so a steady trickle costs the caller no system call at all and the daemon one
//! frame per millisecond per spool, at the price of up to [`MAX_DELAY`] before an entry
//! leaves the process (`flush` sends at once).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use witness_protocol::Entry;

use crate::{Client, Closed, Error, Options, Rejection};

/// Longest an entry waits in the spool for others to share its frame; also how long the
/// thread stays awake after the last entry before it sleeps until woken.
pub const MAX_DELAY: Duration = Duration::from_millis(1);

/// Entries the queue holds before `send` waits for room (backpressure from the daemon).
pub const DEFAULT_CAPACITY: usize = 16_384;

/// A background sender over its own connection. Shareable between threads (`send` takes
/// `&self`). Entries go out in the order `send` was called; `flush` waits until every entry
/// sent before it is durable. Dropping or closing the spool flushes it; what the daemon
/// could not be reached for is kept in the spool file, as `Client::close` does.
#[derive(Debug)]
pub struct Spool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the spool's thread.
    work: Condvar,
    /// Wakes callers waiting for room or for a flush.
    settled: Condvar,
    capacity: usize,
    /// A queue this long is a batch: worth waking the thread for.
    batch: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<Entry>,
    /// The thread waits with no timeout: only a caller can wake it.
    asleep: bool,
    /// The thread waits, with or without a timeout.
    waiting: bool,
    flush_asked: u64,
    flush_done: u64,
    rejections: Vec<Rejection>,
    failure: Option<Error>,
    closing: bool,
    /// The thread has stopped (it panicked, or the spool is being dropped).
    stopped: bool,
    /// What closing did with the entries still unrecorded.
    closed: Option<Result<Closed, Error>>,
}

impl Spool {
    /// Connects to the daemon at `path` and starts the spool's thread.
    pub fn connect(path: impl AsRef<Path>) -> Result<Spool, Error> {
        Spool::connect_with(path, Options::default(), DEFAULT_CAPACITY)
    }

    /// Connects to the socket named by `WITNESS_SOCKET`, else the user's own daemon's, else
    /// the system service's (see `paths::client_socket_path`).
    pub fn from_env() -> Result<Spool, Error> {
        Spool::connect(crate::paths::socket_path_from_env())
    }

    /// Connects with the given client options and queue capacity (in entries).
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: Options,
        capacity: usize,
    ) -> Result<Spool, Error> {
        let batch = options.send_batch.max(1);
        let client = Client::connect_with(path, options)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            settled: Condvar::new(),
            capacity: capacity.max(batch),
            batch,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("witness-spool".into())
                .spawn(move || {
                    let stopped = StopOnExit(&shared);
                    run(&shared, client);
                    drop(stopped);
                })
                .map_err(|error| Error::Protocol(format!("cannot start the spool: {error}")))?
        };
        Ok(Spool {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues an entry and returns; it fails only for an entry that breaks a limit. Waits
    /// only when the queue is full, which means the daemon is not keeping up. Refusals and
    /// connection failures are reported by `flush`.
    pub fn send(&self, entry: Entry) -> Result<(), Error> {
        self.push(entry, true)
    }

    /// Like `send`, but never waits: a full queue fails at once with `Error::QueueFull`, and
    /// the entry is not queued: the caller may keep it, count it or retry.
    pub fn try_send(&self, entry: Entry) -> Result<(), Error> {
        self.push(entry, false)
    }

    fn push(&self, entry: Entry, wait: bool) -> Result<(), Error> {
        entry.check_limits()?;
        let mut state = self.lock();
        while state.queue.len() >= self.shared.capacity && !state.stopped {
            if !wait {
                return Err(Error::QueueFull {
                    capacity: self.shared.capacity,
                });
            }
            state = self
                .shared
                .settled
                .wait(state)
                .expect("the spool's lock is never poisoned");
        }
        if state.stopped {
            return Err(Error::Protocol("the spool's thread has stopped".into()));
        }
        state.queue.push(entry);
        let wake = state.waiting && (state.asleep || state.queue.len() == self.shared.batch);
        if wake {
            state.asleep = false;
        }
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Waits until every entry sent before this call is durable. Reports the entries the
    /// daemon refused since the last flush (`Error::Rejected`, the rest are recorded), or a
    /// connection that broke for good (its entries are still held and re-sent).
    pub fn flush(&self) -> Result<(), Error> {
        let mut state = self.lock();
        state.flush_asked += 1;
        let ticket = state.flush_asked;
        state.asleep = false;
        self.shared.work.notify_one();
        while state.flush_done < ticket && !state.stopped {
            state = self
                .shared
                .settled
                .wait(state)
                .expect("the spool's lock is never poisoned");
        }
        if let Some(failure) = state.failure.take() {
            return Err(failure);
        }
        if state.flush_done < ticket {
            return Err(Error::Protocol("the spool's thread has stopped".into()));
        }
        match std::mem::take(&mut state.rejections) {
            rejections if rejections.is_empty() => Ok(()),
            rejections => Err(Error::Rejected(rejections)),
        }
    }

    /// Flushes, stops the thread and disconnects. If the daemon cannot be reached within
    /// `reconnect_timeout`, what is unrecorded is kept in the spool file ([`Closed::Kept`]).
    /// Refusals since the last flush are reported as by `flush`.
    pub fn close(mut self) -> Result<Closed, Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<Closed, Error> {
        self.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut state = self.lock();
        let closed = state
            .closed
            .take()
            .unwrap_or_else(|| Err(Error::Protocol("the spool's thread has stopped".into())));
        match (closed, std::mem::take(&mut state.rejections)) {
            (Ok(Closed::Recorded), rejections) if !rejections.is_empty() => {
                Err(Error::Rejected(rejections))
            }
            (closed, _) => closed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .expect("the spool's lock is never poisoned")
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let outcome = self.stop();
            crate::say_unrecorded(&outcome);
        }
    }
}

/// Marks the spool stopped however its thread ends, so that no caller waits forever.
struct StopOnExit<'a>(&'a Shared);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.stopped = true;
        }
        self.0.settled.notify_all();
    }
}

/// The spool's thread: take what is queued, hand it to the client, write, and settle
/// flushes; wait, then sleep, when there is nothing to do.
fn run(shared: &Shared, mut client: Client) {
    let mut taken = Vec::new();
    // When the client's unwritten partial batch began.
    let mut oldest: Option<Instant> = None;
    loop {
        let (ticket, closing) = {
            let mut state = shared.state.lock().expect("never poisoned");
            let mut lingered = false;
            while state.queue.is_empty() && state.flush_asked == state.flush_done && !state.closing
            {
                let timeout = match oldest {
                    Some(since) => match (since + MAX_DELAY).checked_duration_since(Instant::now())
                    {
                        Some(left) if !left.is_zero() => Some(left),
                        // A partial batch is due.
                        _ => break,
                    },
                    None if !lingered => Some(MAX_DELAY),
                    None => None,
                };
                state.waiting = true;
                match timeout {
                    Some(timeout) => {
                        state = shared
                            .work
                            .wait_timeout(state, timeout)
                            .expect("never poisoned")
                            .0;
                        lingered = oldest.is_none();
                    }
                    None => {
                        state.asleep = true;
                        state = shared.work.wait(state).expect("never poisoned");
                    }
                }
                state.waiting = false;
                state.asleep = false;
            }
            std::mem::swap(&mut taken, &mut state.queue);
            (state.flush_asked, state.closing)
        };
        if !taken.is_empty() {
            // Room again for callers held up by a full queue.
            shared.settled.notify_all();
        }
        if closing {
            for entry in taken.drain(..) {
                // A send that cannot be written leaves its entries pending, which `finish`
                // delivers or keeps.
                let _ = client.send(entry);
            }
            let closed = client.finish();
            let mut state = shared.state.lock().expect("never poisoned");
            state.closed = Some(closed);
            state.flush_done = state.flush_done.max(ticket);
            return;
        }
        let mut failure = None;
        for entry in taken.drain(..) {
            if let Err(error) = client.send(entry) {
                failure.get_or_insert(error);
            }
        }
        let mut rejections = Vec::new();
        let flushing = {
            let state = shared.state.lock().expect("never poisoned");
            state.flush_done < ticket
        };
        if client.buffered.is_empty() {
            oldest = None;
        } else {
            oldest.get_or_insert_with(Instant::now);
        }
        let due = oldest.is_some_and(|since| since.elapsed() >= MAX_DELAY);
        if flushing {
            oldest = None;
            match client.flush() {
                Ok(()) => {}
                Err(Error::Rejected(refused)) => rejections = refused,
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        } else if due {
            oldest = None;
            if let Err(error) = client.write_buffered() {
                failure.get_or_insert(error);
            }
        }
        let mut state = shared.state.lock().expect("never poisoned");
        state.rejections.extend(rejections);
        if let Some(error) = failure
            && state.failure.is_none()
        {
            state.failure = Some(error);
        }
        if flushing {
            state.flush_done = state.flush_done.max(ticket);
            drop(state);
            shared.settled.notify_all();
        } else {
            drop(state);
        }
    }
}
