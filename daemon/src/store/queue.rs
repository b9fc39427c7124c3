//! The writer's queue: appends wait here between their connection and the writer, one lane
//! per connection, and the writer takes them in turn across lanes.
//!
//! A single first-in-first-out queue let one connection that floods put its whole backlog
//! ahead of everyone else's next entry. Here each connection's appends stay in order in its
//! lane, and a lane with a thousand appends waiting gives up its turn after each one, so a
//! connection that sends one entry at a time is in the next batch whatever others queue.
//! How much a lane may hold is bounded where appends are admitted
//! ([`Admission`](crate::store::admission::Admission)); this structure only orders them.
//!
//! Requests other than appends ([`Control`]) travel here too, so that the writer waits on
//! one thing; they go before any job.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use witness_protocol::Ack;

use crate::store::job::{Control, Job};

/// How long the writer keeps giving up the processor, rather than sleeping, while it waits
/// on an empty queue.
///
/// Synchronous clients re-send shortly after their answer; a writer that went to sleep at
/// once would pay a wake-up (a futex and a context switch, tens of microseconds on a busy
/// virtual machine) for each of them. Yielding lets those threads run and usually finds
/// their entry already queued. A lone Rust client re-sends some 150 µs after its answer and
/// a Python one later, so ten yields (a few microseconds on an idle machine) caught none of
/// them; a quarter of a millisecond catches most, and costs an idle writer at most that much
/// processor time after each batch (BENCHMARKS.md, "The writer's wait").
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(250);

/// Identifies a lane: one per connection.
pub type LaneId = u64;

/// What the writer finds when it looks at the queue.
#[derive(Debug)]
pub enum Next {
    /// The next job, by turn, its lane, and whether that lane has more jobs queued.
    Job(LaneId, Box<Job>, bool),
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
        let mut spin = None;
        loop {
            if let Some(control) = state.controls.pop_front() {
                return Next::Control(control);
            }
            if let Some((lane, job, more)) = state.take_job(&Shares::default()) {
                return Next::Job(lane, job, more);
            }
            if state.closed {
                return Next::Closed;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Next::Idle;
            };
            state = self.wait(state, left, &mut spin);
        }
    }

    /// Waits until `deadline` for the next job by turn whose lane has not used up its share
    /// of this batch, leaving control requests for later: `None` when none came (jobs of
    /// lanes that have used their share do not count) or when the queue is closed.
    pub fn next_job(&self, deadline: Instant, shares: &mut Shares) -> Option<Box<Job>> {
        let mut state = self.lock();
        let mut spin = None;
        loop {
            if let Some((lane, job, more)) = state.take_job(shares) {
                shares.record(lane, &job, more);
                return Some(job);
            }
            // Lanes that have used their share do not end the wait: a waiting client's next
            // entry, a moment away, belongs in this batch rather than behind it.
            if state.closed {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            state = self.wait(state, left, &mut spin);
        }
    }

    /// Gives up the lock until something may have changed: the processor, until
    /// `SPIN_BEFORE_SLEEP` has passed since the first call for this wait (`spin` holds when),
    /// then a sleep of at most `left` until a push wakes it.
    fn wait<'a>(
        &'a self,
        state: MutexGuard<'a, State>,
        left: Duration,
        spin: &mut Option<Instant>,
    ) -> MutexGuard<'a, State> {
        let now = Instant::now();
        let until = *spin.get_or_insert(now + SPIN_BEFORE_SLEEP);
        if now < until {
            drop(state);
            std::thread::yield_now();
            return self.lock();
        }
        self.ready
            .wait_timeout(state, left)
            .expect("the queue's lock is never poisoned")
            .0
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
    fn take_job(&mut self, shares: &Shares) -> Option<(LaneId, Box<Job>, bool)> {
        let position = self.turns.iter().position(|lane| shares.allows(*lane))?;
        let lane = self.turns.remove(position).expect("a position found");
        let jobs = self.lanes.get_mut(&lane).expect("a lane in turn has jobs");
        let job = jobs.pop_front().expect("a lane in turn has jobs");
        let more = !jobs.is_empty();
        if more {
            self.turns.push_back(lane);
        } else {
            self.lanes.remove(&lane);
        }
        Some((lane, job, more))
    }
}

/// What each lane has taken of the batch being filled, and how much one lane may take.
///
/// Taking jobs in turn is not enough on its own: a connection that sends one entry and waits
/// for its answer waits for the whole commit, and a batch filled by a flooder takes tens of
/// milliseconds to commit. So once a light lane (a client waiting for this commit alone)
/// meets a heavy one (a backlog: a flooder) in a batch, and in every batch the writer starts
/// bounded after it (for a moment: the writer's `CONTENTION_MEMORY`), each lane may put at
/// most `quantum` entries into it (but always one whole job): beside a flooder, commits stay
/// short. In most of those batches the writer leaves the heavy lanes out altogether
/// ([`Shares::rest_heavy`]), since even one whole append of a flooder's makes the commit
/// several times as long. Lanes that all pipeline, and lone clients, are never bounded, so
/// they fill whole batches and lose no throughput.
#[derive(Debug, Default)]
pub struct Shares {
    taken: HashMap<LaneId, usize>,
    backlogged: HashSet<LaneId>,
    waiting: HashSet<LaneId>,
    quantum: usize,
    bounded: bool,
    /// Lanes that had a backlog in a recent batch: a pipelining client is sometimes caught
    /// with a single request in flight, and is not light for that.
    heavy_before: HashSet<LaneId>,
    /// Whether this batch leaves out the lanes of `heavy_before`.
    rests_heavy: bool,
}

impl Shares {
    /// A batch in which each lane may take `quantum` entries once light and heavy lanes
    /// meet, or from the start when `bounded` (they met in a batch a moment before);
    /// `heavy_before` are the lanes that had a backlog in recent batches.
    pub fn new(quantum: usize, bounded: bool, heavy_before: HashSet<LaneId>) -> Shares {
        Shares {
            quantum: quantum.max(1),
            bounded,
            heavy_before,
            ..Shares::default()
        }
    }

    /// Leaves the lanes that had a backlog in recent batches out of this one.
    pub fn rest_heavy(&mut self, rest: bool) {
        self.rests_heavy = rest;
    }

    /// Whether each lane's part of this batch is bounded.
    pub fn is_bounded(&self) -> bool {
        self.bounded
    }

    /// How many light lanes (waiting for this commit alone, with no backlog now or
    /// recently) put a job into this batch.
    pub fn light_waiting(&self) -> usize {
        self.waiting
            .iter()
            .filter(|lane| !self.backlogged.contains(lane) && !self.heavy_before.contains(lane))
            .count()
    }

    /// Lanes that had jobs queued behind the one they put into this batch.
    pub fn backlogged(&self) -> impl Iterator<Item = LaneId> + '_ {
        self.backlogged.iter().copied()
    }

    /// Notes that `lane` put `job` into the batch, and whether it had `more` queued.
    pub fn record(&mut self, lane: LaneId, job: &Job, more: bool) {
        *self.taken.entry(lane).or_default() += job.entries.len();
        if more {
            self.backlogged.insert(lane);
        }
        if job.alone && matches!(job.ack, Ack::Committed | Ack::Durable) {
            self.waiting.insert(lane);
        }
        self.bounded = self.bounded || self.light_beside_heavy();
    }

    /// Whether a client waiting for this commit alone (a job acknowledged on commit, sent
    /// with nothing else in flight) shared the batch with a lane that had a backlog: the
    /// case the quantum is for.
    pub fn light_beside_heavy(&self) -> bool {
        !self.backlogged.is_empty()
            && self
                .waiting
                .iter()
                .any(|lane| !self.backlogged.contains(lane) && !self.heavy_before.contains(lane))
    }

    fn allows(&self, lane: LaneId) -> bool {
        if self.rests_heavy && self.heavy_before.contains(&lane) {
            return false;
        }
        !self.bounded || self.taken.get(&lane).copied().unwrap_or(0) < self.quantum
    }
}

/// Whether the writer starts its batches bounded: for `memory` after a batch in which light
/// and heavy lanes last met. A flooder's backlog is always there; the waiting clients' next
/// appends are not, between their round trips, and a batch filled in such a gap, unbounded,
/// is the long commit they would each wait behind next.
#[derive(Debug, Clone, Copy)]
pub struct Contention {
    memory: Duration,
    until: Option<Instant>,
}

impl Contention {
    /// No contention seen yet; once seen, remembered for `memory`.
    pub fn new(memory: Duration) -> Contention {
        Contention {
            memory,
            until: None,
        }
    }

    /// Notes the batch `shares` filled, at `now`.
    pub fn note(&mut self, shares: &Shares, now: Instant) {
        if shares.light_beside_heavy() {
            self.until = Some(now + self.memory);
        }
    }

    /// Whether a batch started at `now` starts bounded.
    pub fn bounded(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::admission::Admission;
    use crate::store::job::Origin;
    use witness_protocol::Entry;

    /// A job on lane `lane` (kept in its origin's pid, for `fill` to count by).
    fn job(entries: usize, ack: Ack, alone: bool) -> Box<Job> {
        let admission = Admission::new(1 << 20);
        let lane = admission.lane();
        let admitted = admission.try_now(&lane, entries).expect("room");
        let mut job = Job::internal(
            (0..entries).map(|_| Entry::new("e", "c")).collect(),
            Origin::default(),
        );
        job.ack = ack;
        job.admitted = Some(admitted);
        job.alone = alone;
        Box::new(job)
    }

    /// Fills one batch the way the writer does, and returns how many entries each lane put in.
    fn fill(queue: &JobQueue, shares: &mut Shares, max_entries: usize) -> HashMap<LaneId, usize> {
        let mut taken = HashMap::new();
        let mut n = 0;
        while n < max_entries {
            let Some(job) = queue.next_job(Instant::now(), shares) else {
                break;
            };
            n += job.entries.len();
            *taken
                .entry(job.origin.pid.unwrap_or(0) as LaneId)
                .or_default() += job.entries.len();
        }
        taken
    }

    fn push(queue: &JobQueue, lane: LaneId, mut job: Box<Job>) {
        job.origin.pid = Some(lane as i64);
        queue.push(lane, job).unwrap();
    }

    #[test]
    fn a_waiting_client_bounds_a_flooder_but_flooders_alone_fill_whole_batches() {
        // Two lanes that both pipeline 64-entry appends: never bounded, the batch is full.
        let queue = JobQueue::new();
        for _ in 0..40 {
            push(&queue, 1, job(64, Ack::Durable, false));
            push(&queue, 2, job(64, Ack::Durable, false));
        }
        let mut shares = Shares::new(256, false, HashSet::new());
        let taken = fill(&queue, &mut shares, 4096);
        assert_eq!(taken.values().sum::<usize>(), 4096, "{taken:?}");
        assert!(!shares.light_beside_heavy());

        // A flooder beside a client waiting on one entry: once they meet, the flooder puts
        // at most the quantum (here 256 entries) into the batch, and the client is in it.
        let queue = JobQueue::new();
        for _ in 0..100 {
            push(&queue, 1, job(64, Ack::Durable, false));
        }
        push(&queue, 2, job(1, Ack::Committed, true));
        let mut shares = Shares::new(256, false, HashSet::new());
        let taken = fill(&queue, &mut shares, 4096);
        assert_eq!(taken[&2], 1);
        assert!(taken[&1] <= 256 + 64, "{taken:?}");
        assert!(shares.light_beside_heavy());

        // A pipelining lane caught with a single append in flight is not taken for a waiting
        // client while it counts as heavy from recent batches.
        let queue = JobQueue::new();
        for _ in 0..100 {
            push(&queue, 1, job(64, Ack::Durable, false));
        }
        push(&queue, 2, job(64, Ack::Durable, true));
        let mut shares = Shares::new(256, false, HashSet::from([2]));
        let taken = fill(&queue, &mut shares, 4096);
        assert_eq!(taken.values().sum::<usize>(), 4096, "{taken:?}");
        assert!(!shares.light_beside_heavy());
    }

    #[test]
    fn batches_stay_bounded_for_a_moment_after_a_waiting_client_met_a_flooder() {
        let start = Instant::now();
        let mut contention = Contention::new(Duration::from_millis(100));
        assert!(!contention.bounded(start));
        // A flooder beside a client waiting on one entry.
        let queue = JobQueue::new();
        for _ in 0..100 {
            push(&queue, 1, job(64, Ack::Durable, false));
        }
        push(&queue, 2, job(1, Ack::Committed, true));
        let mut met = Shares::new(64, false, HashSet::new());
        fill(&queue, &mut met, 4096);
        contention.note(&met, start);
        // The next batch holds only the flooder (the client's next append is not in yet):
        // started bounded, the flooder puts one quantum into it, not a whole batch.
        let mut shares = Shares::new(64, contention.bounded(start), HashSet::from([1]));
        let taken = fill(&queue, &mut shares, 4096);
        assert_eq!(taken[&1], 64, "{taken:?}");
        assert!(!shares.light_beside_heavy());
        contention.note(&shares, start + Duration::from_millis(10));
        assert!(contention.bounded(start + Duration::from_millis(99)));
        // Once the moment has passed without them meeting, the flooder fills whole batches.
        assert!(!contention.bounded(start + Duration::from_millis(100)));
        let mut shares = Shares::new(64, false, HashSet::from([1]));
        let taken = fill(&queue, &mut shares, 4096);
        assert_eq!(taken[&1], 4096, "{taken:?}");
    }

    #[test]
    fn a_bounded_batch_waits_for_a_waiting_client_while_the_flooder_has_used_its_share() {
        // The flooder has used its share of a bounded batch and has more queued; a client
        // waiting on its commit sends its next entry a moment later. The writer, within its
        // deadline, takes that entry into this batch rather than committing the flooder's
        // part alone and leaving the client to wait behind a second commit.
        let queue = JobQueue::new();
        for _ in 0..10 {
            push(&queue, 1, job(64, Ack::Durable, false));
        }
        let mut shares = Shares::new(64, true, HashSet::from([1]));
        let first = queue
            .next_job(Instant::now(), &mut shares)
            .expect("the flooder's first append");
        assert_eq!(first.entries.len(), 64);
        let sender = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                push(&queue, 2, job(1, Ack::Committed, true));
            })
        };
        let next = queue.next_job(Instant::now() + Duration::from_secs(10), &mut shares);
        sender.join().unwrap();
        let next = next.expect("the client's entry, which came before the deadline");
        assert_eq!(next.origin.pid, Some(2));
        // Past the deadline with only the flooder's backlog left, the batch is done at once.
        assert!(queue.next_job(Instant::now(), &mut shares).is_none());
    }

    #[test]
    fn a_batch_that_rests_the_heavy_lanes_holds_only_the_light_ones() {
        // A flooder (heavy in recent batches) and two clients each waiting on one entry.
        let queue = JobQueue::new();
        for _ in 0..10 {
            push(&queue, 1, job(64, Ack::Durable, false));
        }
        push(&queue, 2, job(1, Ack::Committed, true));
        push(&queue, 3, job(1, Ack::Committed, true));
        let mut shares = Shares::new(64, true, HashSet::from([1]));
        shares.rest_heavy(true);
        let taken = fill(&queue, &mut shares, 4096);
        assert_eq!(taken, HashMap::from([(2, 1), (3, 1)]), "{taken:?}");
        assert_eq!(shares.light_waiting(), 2);
        // With only the flooder's jobs queued, such a batch finds nothing by its deadline,
        // and the flooder's jobs are all still there, in order, for the next batch.
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(queue.next_job(deadline, &mut shares).is_none());
        assert!(Instant::now() >= deadline);
        let mut shares = Shares::new(64, true, HashSet::from([1]));
        let taken = fill(&queue, &mut shares, 4096);
        assert_eq!(taken, HashMap::from([(1, 64)]), "{taken:?}");
        assert_eq!(shares.light_waiting(), 0);
    }
}
