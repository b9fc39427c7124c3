//! Room in the writer's queue, counted in entries: what an append must hold before it may
//! join the queue, and holds until its batch is committed. This bounds the memory appends
//! take between their connection and the writer, and keeps one connection from taking it all.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
