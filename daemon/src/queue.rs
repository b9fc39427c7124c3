//! The writer's queue: appends wait here between their connection and the writer, one lane
//! per connection, and the writer takes them in turn across lanes.
//!
//! A single first-in-first-out queue let one connection that floods put its whole backlog
//! ahead of everyone else's next entry. Here each connection's appends stay in order in its
//! lane, and a lane with a thousand appends waiting gives up its turn after each one, so a
//! connection that sends one entry at a time is in the next batch whatever others queue.
//! How much a lane may hold is bounded where appends are admitted
//! ([`Admission`]); this structure only orders them.
//!
//! Requests other than appends ([`Control`]) travel here too, so that the writer waits on
//! one thing; they go before any job.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::writer::{Control, Job};

/// Identifies a lane: one per connection.
pub type LaneId = u64;

/// What the writer finds when it looks at the queue.
#[derive(Debug)]
pub enum Next {
    /// The next job, by turn, and its lane.
    Job(LaneId, Box<Job>),
    /// A request other than an append.
    Control(Control),
    /// Nothing came before the timeout.
    Idle,
    /// The queue is closed and empty: the writer's work is done.
    Closed,
}

/// The queue between connections and the writer.
#[derive(Debug, Default)]
pub struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct State {
    lanes: HashMap<LaneId, VecDeque<Box<Job>>>,
    /// Lanes with jobs, in the order they get their next turn.
    turns: VecDeque<LaneId>,
    controls: VecDeque<Control>,
    closed: bool,
}

impl JobQueue {
    /// An empty, open queue.
    pub fn new() -> Arc<JobQueue> {
        Arc::new(JobQueue::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the queue's lock is never poisoned")
    }

    /// Queues a job at the end of its lane. A closed queue hands it back.
    pub fn push(&self, lane: LaneId, job: Box<Job>) -> Result<(), Box<Job>> {
        let mut state = self.lock();
        if state.closed {
            return Err(job);
        }
        let jobs = state.lanes.entry(lane).or_default();
        jobs.push_back(job);
        if jobs.len() == 1 {
            state.turns.push_back(lane);
        }
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a request other than an append. A closed queue hands it back.
    pub fn control(&self, control: Control) -> Result<(), Control> {
        let mut state = self.lock();
        if state.closed {
            return Err(control);
        }
        state.controls.push_back(control);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes no more jobs; the writer finishes those queued and then finds `Closed`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Waits up to `timeout` for a control request or a job (controls first).
    pub fn next(&self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(control) = state.controls.pop_front() {
                return Next::Control(control);
            }
            if let Some((lane, job)) = state.take_job(&Shares::default()) {
                return Next::Job(lane, job);
            }
            if state.closed {
                return Next::Closed;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Next::Idle;
            };
            state = self
                .ready
                .wait_timeout(state, left)
                .expect("the queue's lock is never poisoned")
                .0;
        }
    }

    /// Waits until `deadline` for the next job by turn whose lane has not used up its share
    /// of this batch, leaving control requests for later: `None` when none came, when every
    /// lane with jobs has used its share, or when the queue is closed and empty.
    pub fn next_job(&self, deadline: Instant, shares: &mut Shares) -> Option<Box<Job>> {
        let mut state = self.lock();
        loop {
            if let Some((lane, job)) = state.take_job(shares) {
                shares.record(lane, job.entries.len());
                return Some(job);
            }
            if state.closed || !state.turns.is_empty() {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            state = self
                .ready
                .wait_timeout(state, left)
                .expect("the queue's lock is never poisoned")
                .0;
        }
    }

    /// True once the queue is closed and holds no job.
    pub fn is_finished(&self) -> bool {
        let state = self.lock();
        state.closed && state.turns.is_empty()
    }
}

impl State {
    /// The first job of the next lane in turn that `shares` allows; that lane goes to the back
    /// of the line if it has more. Lanes passed over keep their place.
    fn take_job(&mut self, shares: &Shares) -> Option<(LaneId, Box<Job>)> {
        let position = self.turns.iter().position(|lane| shares.allows(*lane))?;
        let lane = self.turns.remove(position).expect("a position found");
        let jobs = self.lanes.get_mut(&lane).expect("a lane in turn has jobs");
        let job = jobs.pop_front().expect("a lane in turn has jobs");
        if jobs.is_empty() {
            self.lanes.remove(&lane);
        } else {
            self.turns.push_back(lane);
        }
        Some((lane, job))
    }
}

/// What each lane has taken of the batch being filled, and how much one lane may take.
///
/// Taking jobs in turn is not enough on its own: a connection that sends one entry and waits
/// for its answer waits for the whole commit, and a batch filled by a flooder takes tens of
/// milliseconds to commit. So while lanes contend, each may put at most `quantum` entries
/// (but always one whole job) into a batch: commits stay short, and the flooder loses
/// little, since a batch of a few hundred entries already pays its fsync many times over.
#[derive(Debug, Default)]
pub struct Shares {
    taken: HashMap<LaneId, usize>,
    quantum: Option<usize>,
}

impl Shares {
    /// A batch in which each lane may take `quantum` entries, or any number with `None`.
    pub fn new(quantum: Option<usize>) -> Shares {
        Shares {
            taken: HashMap::new(),
            quantum,
        }
    }

    /// Notes that `lane` put `n_entries` into the batch.
    pub fn record(&mut self, lane: LaneId, n_entries: usize) {
        *self.taken.entry(lane).or_default() += n_entries;
    }

    /// Lanes that put something into the batch.
    pub fn lanes(&self) -> usize {
        self.taken.len()
    }

    /// Turns the per-lane bound on (once a batch has found that lanes contend).
    pub fn limit(&mut self, quantum: usize) {
        self.quantum.get_or_insert(quantum);
    }

    fn allows(&self, lane: LaneId) -> bool {
        self.quantum
            .is_none_or(|quantum| self.taken.get(&lane).copied().unwrap_or(0) < quantum)
    }
}

/// Room in the queue, counted in entries: the whole queue's, shared by every connection, and
/// each connection's own share of it.
///
/// A connection may hold at most `share` entries, which leaves an eighth of the queue that
/// one connection can never take: while a single connection floods, every other one still
/// finds room at once. An append larger than the room it could ever get takes all of it
/// (waiting until it is free), so that every append the limits allow is served.
#[derive(Debug)]
pub struct Admission {
    /// One permit per entry of the whole queue.
    pub queue: Arc<Semaphore>,
    capacity: usize,
    share: usize,
}

/// The permits an admitted append holds until its batch is committed.
#[derive(Debug)]
pub struct Admitted {
    _lane: OwnedSemaphorePermit,
    _queue: OwnedSemaphorePermit,
}

impl Admission {
    /// Room for `capacity` entries.
    pub fn new(capacity: usize) -> Admission {
        let capacity = capacity.max(1);
        Admission {
            queue: Arc::new(Semaphore::new(capacity)),
            capacity,
            share: (capacity - capacity / 8).max(1),
        }
    }

    /// Entries the queue holds in all.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A new connection's share of the queue.
    pub fn lane(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.share))
    }

    /// Permits an append of `n_entries` needs: its size, or all of its share if it is
    /// larger.
    fn permits(&self, n_entries: usize) -> u32 {
        n_entries.clamp(1, self.share) as u32
    }

    /// Waits for room for `n_entries` in the connection's share, then in the queue.
    pub async fn wait(&self, lane: &Arc<Semaphore>, n_entries: usize) -> Admitted {
        let n = self.permits(n_entries);
        let lane = Arc::clone(lane)
            .acquire_many_owned(n)
            .await
            .expect("never closed");
        let queue = Arc::clone(&self.queue)
            .acquire_many_owned(n)
            .await
            .expect("never closed");
        Admitted {
            _lane: lane,
            _queue: queue,
        }
    }

    /// Room for `n_entries` now, or `None`.
    pub fn try_now(&self, lane: &Arc<Semaphore>, n_entries: usize) -> Option<Admitted> {
        let n = self.permits(n_entries);
        let lane = Arc::clone(lane).try_acquire_many_owned(n).ok()?;
        let queue = Arc::clone(&self.queue).try_acquire_many_owned(n).ok()?;
        Some(Admitted {
            _lane: lane,
            _queue: queue,
        })
    }
}
