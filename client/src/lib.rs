//! The blocking client of witnessd.
//!
//! ```no_run
//! use witness_client::{Client, Cost, Entry};
//! let mut client = Client::from_env()?;
//! let receipt = client.log(Entry::new("llm_call", "planner").trace("req-7")
//!     .payload(serde_json::json!({"prompt_chars": 812}))
//!     .cost(Cost::new(812, 120, 2_310).model("small-model")))?;
//! println!("recorded as #{}", receipt.seq);
//! for i in 0..1000 {
//!     client.send(Entry::new("tick", "worker").payload(serde_json::json!({"i": i})))?;
//! }
//! client.flush()?;
//! # Ok::<(), witness_client::Error>(())
//! ```
//!
//! Every append carries this client's producer id and the numbers of its entries. When the
//! connection breaks, the client reconnects and re-sends everything not yet acknowledged;
//! the daemon recognises entries it already committed and does not write them twice.

mod error;
pub mod paths;
mod read;
mod socket;
pub mod spool;
pub mod spool_file;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use error::{Error, Rejection};
pub use read::EntryStream;
pub use spool::Spool;
pub use spool_file::SpoolFileError;
/// Queries and what they answer, for `trace`, `traces`, `cost` and `entries`.
pub use witness_protocol::admin;
use witness_protocol::frame::{self, FrameReader};
use witness_protocol::limits::{MAX_ENTRIES_PER_APPEND, MAX_FRAME_LEN};
pub use witness_protocol::query;
pub use witness_protocol::{
    Ack, Cost, Entry, ErrorCode, ErrorReply, Receipt, VerifyRange, VerifyReport,
};
use witness_protocol::{
    Append, OnFull, ProducerRef, Request, RequestFrame, Response, ResponseFrame, ServerHello,
};

/// How a client batches, pipelines and reconnects.
#[derive(Debug, Clone)]
pub struct Options {
    /// A name for the daemon's logs.
    pub client_name: String,
    /// `send` writes an append once this many entries are buffered.
    pub send_batch: usize,
    /// Most requests awaiting an answer; at the limit, calls wait for answers. Capped below
    /// the daemon's own limit.
    pub max_in_flight: usize,
    /// How long to keep trying to reconnect after the connection breaks. The clock starts at
    /// the first break and only an answer from the daemon stops it, so a daemon that accepts
    /// the handshake and then drops the connection, again and again, cannot keep a call
    /// reconnecting for ever.
    pub reconnect_timeout: Duration,
    /// How long connecting and the handshake may take, so that a daemon that has stopped
    /// accepting gives an error rather than a hang.
    pub connect_timeout: Duration,
    /// How long to wait for each answer (and for the daemon to take each request); `None`
    /// waits forever. A stream that follows new entries waits for them without this bound.
    pub answer_timeout: Option<Duration>,
    /// When set, nothing this client does waits past this instant: connecting, reconnecting
    /// and waiting for answers all end there with `Error::TimedOut` (or `Disconnected`), so
    /// that a command's time limit covers the whole command, not each wait. Streams that
    /// follow new entries are not bounded by it.
    pub deadline: Option<Instant>,
    /// Entries of `send` still unrecorded when the client is dropped or closed, because the
    /// daemon could not be reached within `reconnect_timeout`, are kept in the user's spool
    /// file (see [`spool_file`]) for a later client to deliver, instead of being lost.
    pub keep_unsent: bool,
    /// The first connection of a process to a daemon delivers, in a thread of its own, what
    /// earlier clients kept in the spool for it.
    pub deliver_kept: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            client_name: concat!("witness-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            send_batch: 64,
            max_in_flight: 256,
            reconnect_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            answer_timeout: Some(Duration::from_secs(60)),
            deadline: None,
            keep_unsent: true,
            deliver_kept: true,
        }
    }
}

/// What became of the entries of `send` when a client or spool was closed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Closed {
    /// Every entry sent is recorded.
    Recorded,
    /// The daemon could not be reached: the unrecorded entries are kept in a spool file,
    /// with the producer numbers they were sent with, for the next client to deliver once.
    Kept {
        /// How many entries the file holds.
        entries: usize,
        /// The spool file.
        path: PathBuf,
        /// Why they could not be delivered.
        cause: Error,
    },
}

/// What `Client::deliver_kept` delivered.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Delivered {
    /// Spool files delivered and removed.
    pub files: usize,
    /// Entries in them that are now recorded (including any the daemon had before).
    pub entries: usize,
    /// Entries the daemon refused, with its first reason: a refusal is final, so they are
    /// not kept again.
    pub refused: usize,
    /// The daemon's reason for the first refusal.
    pub first_refusal: Option<ErrorReply>,
    /// Files that could not be read, set aside under a `.bad` name, with the reason.
    pub set_aside: Vec<(PathBuf, String)>,
}

/// A request sent and not yet answered, kept with its bytes so that it can be re-sent.
#[derive(Debug)]
struct Pending {
    id: u64,
    frame: Vec<u8>,
    /// For appends from `send`: the number of the first entry and how many there are.
    sent: Option<(u64, usize)>,
}

/// A connection to witnessd. Not shared between threads: give each thread its own, or wrap
/// one in a mutex.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    options: Options,
    stream: Option<UnixStream>,
    server: ServerHello,
    /// Answers read and not yet taken.
    reader: FrameReader,
    next_id: u64,
    producer_id: u64,
    next_number: u64,
    buffered: Vec<Entry>,
    pending: VecDeque<Pending>,
    rejections: Vec<Rejection>,
    /// When the connection last broke with no answer read since: the reconnect timeout
    /// counts from here.
    outage: Option<Instant>,
}

impl Client {
    /// Connects to the daemon at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
        Client::connect_with(path, Options::default())
    }

    /// Connects to the socket named by `WITNESS_SOCKET`, else the user's own daemon's, else
    /// the system service's (see `paths::client_socket_path`).
    pub fn from_env() -> Result<Client, Error> {
        Client::connect(paths::socket_path_from_env())
    }

    /// Connects to the daemon at `path` with the given options.
    pub fn connect_with(path: impl AsRef<Path>, options: Options) -> Result<Client, Error> {
        let path = path.as_ref().to_path_buf();
        let (stream, server) = socket::handshake(
            &path,
            &options.client_name,
            within(options.connect_timeout, options.deadline),
            options.answer_timeout,
        )
        .map_err(|source| Error::Connect {
            path: path.clone(),
            source,
        })??;
        if options.deliver_kept {
            deliver_in_background(&path, &options);
        }
        Ok(Client {
            path,
            options,
            stream: Some(stream),
            server,
            reader: FrameReader::new(MAX_FRAME_LEN),
            next_id: 1,
            producer_id: random_producer_id(),
            next_number: 1,
            buffered: Vec::new(),
            pending: VecDeque::new(),
            rejections: Vec::new(),
            outage: None,
        })
    }

    /// What the daemon said of itself at the handshake.
    pub fn server(&self) -> &ServerHello {
        &self.server
    }

    /// Records one entry and returns once it is durable.
    pub fn log(&mut self, entry: Entry) -> Result<Receipt, Error> {
        let mut receipts = self.log_batch(vec![entry])?;
        receipts
            .pop()
            .ok_or_else(|| Error::Protocol("no receipt for the entry".into()))
    }

    /// Records entries atomically (all or none, with consecutive sequence numbers) and
    /// returns once they are durable.
    pub fn log_batch(&mut self, entries: Vec<Entry>) -> Result<Vec<Receipt>, Error> {
        self.append_and_wait(entries, Ack::Committed, OnFull::Wait)
    }

    /// Like `log_batch`, but a full daemon queue fails at once with `Error::Refused` and a
    /// `Busy` code instead of waiting for room.
    pub fn try_log_batch(&mut self, entries: Vec<Entry>) -> Result<Vec<Receipt>, Error> {
        self.append_and_wait(entries, Ack::Committed, OnFull::Busy)
    }

    /// Records entries and returns once the daemon has queued them, before they are durable.
    pub fn log_queued(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        self.append_and_wait(entries, Ack::Queued, OnFull::Wait)
            .map(drop)
    }

    /// Buffers an entry to be sent with others, and returns at once. `flush` waits until
    /// every sent entry is durable and reports those the daemon refused.
    pub fn send(&mut self, entry: Entry) -> Result<(), Error> {
        entry.check_limits()?;
        self.buffered.push(entry);
        if self.buffered.len() >= self.options.send_batch {
            self.write_buffered()?;
        }
        Ok(())
    }

    /// Sends what `send` buffered and waits until every entry sent is committed. Fails with
    /// `Error::Rejected` if the daemon refused any (the rest are recorded).
    pub fn flush(&mut self) -> Result<(), Error> {
        self.write_buffered()?;
        while !self.pending.is_empty() {
            let frame = self.read_frame()?;
            self.settle(frame)?;
        }
        if self.rejections.is_empty() {
            Ok(())
        } else {
            Err(Error::Rejected(std::mem::take(&mut self.rejections)))
        }
    }

    /// Flushes what `send` buffered and waits until it is durable, as `flush` does, then
    /// disconnects. If the daemon cannot be reached within `reconnect_timeout`, the entries
    /// not yet recorded are kept in the spool file ([`Closed::Kept`]) unless `keep_unsent`
    /// is off; if they cannot be kept either, `Error::NotKept` says how many were lost.
    pub fn close(mut self) -> Result<Closed, Error> {
        self.finish()
    }

    fn finish(&mut self) -> Result<Closed, Error> {
        let cause = match self.flush() {
            Ok(()) => return Ok(Closed::Recorded),
            Err(refused @ Error::Rejected(_)) => return Err(refused),
            Err(cause) => cause,
        };
        let batches = self.unsent();
        let entries: usize = batches.iter().map(|batch| batch.entries.len()).sum();
        if entries == 0 || !self.options.keep_unsent {
            return Err(cause);
        }
        match spool_file::write(&self.path, &batches) {
            Ok(path) => Ok(Closed::Kept {
                entries,
                path,
                cause,
            }),
            Err(reason) => Err(Error::NotKept {
                entries,
                cause: Box::new(cause),
                reason,
            }),
        }
    }

    /// Takes the appends of `send` not yet answered and the entries still buffered, with
    /// their producer numbers (the buffered ones numbered now, after the others).
    fn unsent(&mut self) -> Vec<spool_file::Batch> {
        let mut batches: Vec<spool_file::Batch> = self
            .pending
            .drain(..)
            .filter(|pending| pending.sent.is_some())
            .filter_map(|pending| {
                let body = pending.frame.get(frame::LEN_PREFIX..)?;
                match frame::decode_body::<RequestFrame>(body).ok()?.request {
                    Request::Append(Append {
                        producer: Some(producer),
                        entries,
                        ..
                    }) => Some(spool_file::Batch { producer, entries }),
                    _ => None,
                }
            })
            .collect();
        let max = (self.server.max_entries_per_append as usize).clamp(1, MAX_ENTRIES_PER_APPEND);
        while !self.buffered.is_empty() {
            let take = self.buffered.len().min(max);
            let entries: Vec<Entry> = self.buffered.drain(..take).collect();
            let producer = self.number(entries.len());
            batches.push(spool_file::Batch { producer, entries });
        }
        batches
    }

    /// Delivers what clients kept in the spool file for this daemon ([`spool_file`]), file
    /// by file, each append with the producer numbers it was first sent with, so that an
    /// entry the daemon already holds is not written again. A file is removed once
    /// delivered and one that cannot be read is set aside; if the daemon cannot be reached,
    /// the file being delivered and those after it are given back for a later delivery.
    pub fn deliver_kept(&mut self) -> Result<Delivered, Error> {
        let mut delivered = Delivered::default();
        let claimed = spool_file::claim(&self.path);
        for (index, file) in claimed.iter().enumerate() {
            let read = std::fs::read(file)
                .map_err(SpoolFileError::from)
                .and_then(|data| spool_file::decode(&data));
            let batches = match read {
                Ok(batches) => batches,
                Err(reason) => {
                    let bad = spool_file::set_aside(file);
                    delivered.set_aside.push((bad, reason.to_string()));
                    continue;
                }
            };
            if let Err(error) = self.deliver_batches(batches, &mut delivered) {
                claimed[index..]
                    .iter()
                    .for_each(|file| spool_file::give_back(file));
                return Err(error);
            }
            // Delivered: a failure to remove it costs only a later, harmless re-delivery.
            let _ = std::fs::remove_file(file);
            delivered.files += 1;
        }
        Ok(delivered)
    }

    fn deliver_batches(
        &mut self,
        batches: Vec<spool_file::Batch>,
        delivered: &mut Delivered,
    ) -> Result<(), Error> {
        let max = (self.server.max_entries_per_append as usize).clamp(1, MAX_ENTRIES_PER_APPEND);
        for batch in batches {
            let mut first_number = batch.producer.first_number;
            let mut entries = batch.entries;
            while !entries.is_empty() {
                // Numbers are consecutive, so a part of a batch keeps its own.
                let rest = entries.split_off(entries.len().min(max));
                let n_entries = entries.len();
                let request = Request::Append(Append {
                    ack: Ack::Durable,
                    on_full: OnFull::Wait,
                    producer: Some(ProducerRef {
                        producer_id: batch.producer.producer_id,
                        first_number,
                    }),
                    entries,
                });
                let id = self.submit(&request, None)?;
                match self.wait_for(id)? {
                    Response::Committed { .. } => delivered.entries += n_entries,
                    Response::Error(reply) => {
                        delivered.refused += n_entries;
                        delivered.first_refusal.get_or_insert(reply);
                    }
                    other => return Err(unexpected(&other)),
                }
                first_number += n_entries as u64;
                entries = rest;
            }
        }
        Ok(())
    }

    /// Asks the daemon whether it is alive; returns the round-trip time.
    pub fn ping(&mut self) -> Result<Duration, Error> {
        let started = Instant::now();
        match self.call(Request::Ping)? {
            Response::Pong => Ok(started.elapsed()),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the daemon to re-verify the hash chain over `range`.
    pub fn verify(&mut self, range: VerifyRange) -> Result<VerifyReport, Error> {
        match self.call(Request::Verify(range))? {
            Response::Verified(report) => Ok(report),
            other => Err(unexpected(&other)),
        }
    }

    fn append_and_wait(
        &mut self,
        entries: Vec<Entry>,
        ack: Ack,
        on_full: OnFull,
    ) -> Result<Vec<Receipt>, Error> {
        let n_entries = entries.len();
        for entry in &entries {
            entry.check_limits()?;
        }
        self.check_batch_len(n_entries)?;
        self.write_buffered()?;
        let producer = self.number(n_entries);
        let request = Request::Append(Append {
            ack,
            on_full,
            producer: Some(producer),
            entries,
        });
        let id = self.submit(&request, None).map_err(|error| match error {
            Error::Frame(reason) => Error::BatchTooLarge {
                n_entries,
                reason: reason.to_string(),
            },
            other => other,
        })?;
        match self.wait_for(id)? {
            Response::Committed { receipts } if receipts.len() == n_entries => Ok(receipts),
            Response::Queued { .. } if ack == Ack::Queued => Ok(Vec::new()),
            Response::Error(reply) => Err(Error::Refused(reply)),
            other => Err(unexpected(&other)),
        }
    }

    fn check_batch_len(&self, n_entries: usize) -> Result<(), Error> {
        let max = (self.server.max_entries_per_append as usize).min(MAX_ENTRIES_PER_APPEND);
        if n_entries == 0 || n_entries > max {
            return Err(Error::BatchTooLarge {
                n_entries,
                reason: format!("an append holds from 1 to {max} entries"),
            });
        }
        Ok(())
    }

    /// Takes `n_entries` consecutive producer numbers.
    fn number(&mut self, n_entries: usize) -> ProducerRef {
        let first_number = self.next_number;
        self.next_number += n_entries as u64;
        ProducerRef {
            producer_id: self.producer_id,
            first_number,
        }
    }

    /// Writes the entries `send` buffered as one append, halving it if it is too big.
    pub(crate) fn write_buffered(&mut self) -> Result<(), Error> {
        let max = (self.server.max_entries_per_append as usize).min(MAX_ENTRIES_PER_APPEND);
        while !self.buffered.is_empty() {
            let take = self.buffered.len().min(max);
            let entries: Vec<Entry> = self.buffered.drain(..take).collect();
            self.submit_sent(entries)?;
        }
        Ok(())
    }

    fn submit_sent(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        let n_entries = entries.len();
        let producer = self.number(n_entries);
        // `send` needs to know only that its entries are durable, and its answers may wait
        // unread in the daemon while the client fills its window: no receipts.
        let request = Request::Append(Append {
            ack: Ack::Durable,
            on_full: OnFull::Wait,
            producer: Some(producer),
            entries,
        });
        match self.submit(&request, Some((producer.first_number, n_entries))) {
            Err(Error::Frame(_)) if n_entries > 1 => {
                // Too big for one frame: take the numbers back and send it in halves.
                self.next_number = producer.first_number;
                let Request::Append(Append {
                    entries: mut first, ..
                }) = request
                else {
                    unreachable!("built as an append")
                };
                let second = first.split_off(n_entries / 2);
                self.submit_sent(first)?;
                self.submit_sent(second)
            }
            other => other.map(drop),
        }
    }

    /// Encodes a request, keeps it until answered, and writes it, first waiting for answers
    /// if too many are outstanding.
    fn submit(&mut self, request: &Request, sent: Option<(u64, usize)>) -> Result<u64, Error> {
        let limit = self
            .options
            .max_in_flight
            .min(self.server.max_in_flight as usize / 2)
            .max(1);
        // Reading answers costs the caller syscalls, so it waits until half the window is
        // used: most `send` calls then cost one buffered push, one in 64 a single write.
        if self.pending.len() >= limit.div_ceil(2) {
            self.drain_ready()?;
        }
        while self.pending.len() >= limit {
            let frame = self.read_frame()?;
            self.settle(frame)?;
        }
        let id = self.next_id;
        let mut bytes = Vec::new();
        frame::encode_request(
            id,
            request,
            self.server.max_frame_len.min(MAX_FRAME_LEN),
            &mut bytes,
        )?;
        self.next_id += 1;
        self.pending.push_back(Pending {
            id,
            frame: bytes,
            sent,
        });
        let written = match self.stream.as_mut() {
            Some(stream) => stream.write_all(&self.pending.back().expect("just pushed").frame),
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        match written {
            Ok(()) => {}
            // The daemon takes no requests: it is hung, and reconnecting will not cure that.
            // The request stays pending, to be re-sent on the next connection.
            Err(error) if socket::is_timeout(&error) => {
                self.stream = None;
                self.clear_read_buffer();
                return Err(self.timed_out("take a request"));
            }
            Err(_) => self.reconnect()?,
        }
        Ok(id)
    }

    /// Sends a request that is not an append and waits for its answer.
    fn call(&mut self, request: Request) -> Result<Response, Error> {
        self.write_buffered()?;
        let id = self.submit(&request, None)?;
        self.wait_for(id)
    }

    /// Reads answers until the one for `id` arrives, settling the others on the way.
    fn wait_for(&mut self, id: u64) -> Result<Response, Error> {
        loop {
            let frame = self.read_frame()?;
            if frame.id == id {
                self.pending.retain(|pending| pending.id != id);
                return Ok(frame.response);
            }
            self.settle(frame)?;
        }
    }

    /// Takes note of an answer to an earlier request: it is no longer pending, and a refusal
    /// of sent entries is kept for `flush`.
    fn settle(&mut self, frame: ResponseFrame) -> Result<(), Error> {
        if frame.id == 0
            && let Response::Error(reply) = frame.response
        {
            return Err(Error::Refused(reply));
        }
        let position = if self
            .pending
            .front()
            .is_some_and(|pending| pending.id == frame.id)
        {
            Some(0)
        } else {
            self.pending
                .iter()
                .position(|pending| pending.id == frame.id)
        };
        let Some(pending) = position.and_then(|position| self.pending.remove(position)) else {
            return Ok(());
        };
        if let (Some((first_entry, n_entries)), Response::Error(reply)) =
            (pending.sent, frame.response)
        {
            self.rejections.push(Rejection {
                first_entry,
                n_entries,
                reply,
            });
        }
        Ok(())
    }

    /// Settles every answer already waiting on the socket, without blocking.
    fn drain_ready(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let mut broken = None;
        stream.set_nonblocking(true).ok();
        loop {
            match self.reader.read_from(stream) {
                Ok(0) => {
                    broken = Some(io::Error::from(io::ErrorKind::UnexpectedEof));
                    break;
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        stream.set_nonblocking(false).ok();
        while let Some(frame) = self.take_buffered_frame()? {
            self.settle(frame)?;
        }
        match broken {
            Some(_) => self.reconnect(),
            None => Ok(()),
        }
    }

    /// Forgets every byte read and not yet decoded (the connection they came on is gone).
    fn clear_read_buffer(&mut self) {
        self.reader.clear();
    }

    fn take_buffered_frame(&mut self) -> Result<Option<ResponseFrame>, Error> {
        Ok(self.reader.next_frame::<ResponseFrame>()?)
    }

    /// Reads one answer, blocking; reconnects (and re-sends) if the connection breaks.
    fn read_frame(&mut self) -> Result<ResponseFrame, Error> {
        loop {
            if let Some(frame) = self.next_frame(Patience::Answer)? {
                return Ok(frame);
            }
        }
    }

    /// Reads one answer, blocking, within the answer timeout unless `patience` says to wait
    /// for whatever comes. `None` says the connection broke and was made again, with pending
    /// requests re-sent: a stream, which is not among them, must ask again.
    fn next_frame(&mut self, patience: Patience) -> Result<Option<ResponseFrame>, Error> {
        loop {
            if let Some(frame) = self.take_buffered_frame()? {
                self.outage = None;
                return Ok(Some(frame));
            }
            if patience == Patience::Answer && self.past_deadline() {
                return Err(self.timed_out("answer"));
            }
            let deadline = self.options.deadline;
            let read = match self.stream.as_mut() {
                Some(stream) if patience == Patience::Forever => {
                    let bounded = stream.read_timeout().ok().flatten();
                    let _ = stream.set_read_timeout(None);
                    let read = self.reader.read_from(stream);
                    let _ = stream.set_read_timeout(bounded);
                    read
                }
                Some(stream) => {
                    if let Some(deadline) = deadline {
                        let answer = self.options.answer_timeout.unwrap_or(Duration::MAX);
                        let _ = stream.set_read_timeout(Some(within(answer, Some(deadline))));
                    }
                    self.reader.read_from(stream)
                }
                None => Err(io::ErrorKind::NotConnected.into()),
            };
            match read {
                Ok(n) if n > 0 => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // A live connection on which the daemon says nothing: reconnecting would not
                // help, so say so. What is pending stays pending.
                Err(error) if socket::is_timeout(&error) => {
                    return Err(self.timed_out("answer"));
                }
                Ok(_) | Err(_) => {
                    self.reconnect()?;
                    return Ok(None);
                }
            }
        }
    }

    /// Whether the deadline of `Options`, if any, has passed.
    fn past_deadline(&self) -> bool {
        self.options
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn timed_out(&self, what: &'static str) -> Error {
        Error::TimedOut {
            path: self.path.clone(),
            waited: self.options.answer_timeout.unwrap_or_default(),
            what,
        }
    }

    /// Connects again, with backoff, until the reconnect timeout, and re-sends every request
    /// not yet answered, in order. The daemon drops entries it had already committed.
    fn reconnect(&mut self) -> Result<(), Error> {
        self.stream = None;
        self.clear_read_buffer();
        let started = *self.outage.get_or_insert_with(Instant::now);
        let mut delay = Duration::from_millis(5);
        let mut last_error = io::Error::from(io::ErrorKind::TimedOut);
        loop {
            if started.elapsed() >= self.options.reconnect_timeout || self.past_deadline() {
                return Err(Error::Disconnected {
                    path: self.path.clone(),
                    waited: started.elapsed(),
                    source: last_error,
                });
            }
            let attempt = socket::handshake(
                &self.path,
                &self.options.client_name,
                within(self.options.connect_timeout, self.options.deadline),
                self.options.answer_timeout,
            );
            match attempt {
                Ok(Ok((mut stream, server))) => {
                    let resent = self
                        .pending
                        .iter()
                        .try_for_each(|p| stream.write_all(&p.frame));
                    match resent {
                        Ok(()) => {
                            self.server = server;
                            self.stream = Some(stream);
                            return Ok(());
                        }
                        Err(error) => last_error = error,
                    }
                }
                Ok(Err(error)) => return Err(error),
                Err(error) => last_error = error,
            }
            let left = self
                .options
                .reconnect_timeout
                .saturating_sub(started.elapsed());
            std::thread::sleep(within(delay.min(left), self.options.deadline));
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
}

impl Drop for Client {
    /// Sends what is still buffered and waits for it, as a `BufWriter` does, trying to
    /// reconnect for at most a second; what cannot be delivered is kept in the spool file,
    /// and said on standard error. Call `close` to see the outcome instead.
    fn drop(&mut self) {
        if !self.buffered.is_empty() || !self.pending.is_empty() {
            self.options.reconnect_timeout =
                self.options.reconnect_timeout.min(Duration::from_secs(1));
            let outcome = self.finish();
            say_unrecorded(&outcome);
        }
    }
}

/// Says on standard error what became of entries a dropped client or spool could not
/// deliver: nobody else is left to tell, and entries must not vanish unsaid.
pub(crate) fn say_unrecorded(outcome: &Result<Closed, Error>) {
    match outcome {
        Ok(Closed::Kept {
            entries,
            path,
            cause,
        }) => eprintln!(
            "witness: {entries} entries sent were not recorded ({cause}); they are kept in \
             {}, for the next witness client that reaches the daemon",
            path.display()
        ),
        Err(lost @ Error::NotKept { .. }) => eprintln!("witness: {lost}"),
        _ => {}
    }
}

/// Paths of the daemons this process has started delivering the spool to.
static DELIVERING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Delivers, once a process and in a thread of its own, what earlier clients kept in the
/// spool for the daemon at `path`.
fn deliver_in_background(path: &Path, options: &Options) {
    if !spool_file::waiting(path) {
        return;
    }
    {
        let Ok(mut started) = DELIVERING.lock() else {
            return;
        };
        if started.iter().any(|known| known == path) {
            return;
        }
        started.push(path.to_path_buf());
    }
    let options = Options {
        deliver_kept: false,
        deadline: None,
        ..options.clone()
    };
    let path = path.to_path_buf();
    let _ = std::thread::Builder::new()
        .name("witness-deliver".into())
        .spawn(move || {
            // Not reached: the files stay for a later client.
            let Ok(delivered) =
                Client::connect_with(&path, options).and_then(|mut client| client.deliver_kept())
            else {
                return;
            };
            if let Some(reply) = &delivered.first_refusal {
                eprintln!(
                    "witness: {} spooled entries were refused: {}",
                    delivered.refused, reply.message
                );
            }
            for (bad, reason) in &delivered.set_aside {
                eprintln!(
                    "witness: spool file {} cannot be delivered ({reason}); set aside",
                    bad.display()
                );
            }
        });
}

/// `wait`, cut short so as to end by `deadline`; never zero, which sockets take for "no
/// timeout".
fn within(wait: Duration, deadline: Option<Instant>) -> Duration {
    let left = deadline.map_or(wait, |deadline| {
        wait.min(deadline.saturating_duration_since(Instant::now()))
    });
    left.max(Duration::from_millis(1))
}

/// How long a read of an answer may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Within the answer timeout.
    Answer,
    /// For as long as it takes: a follower waiting for new entries.
    Forever,
}

fn unexpected(response: &Response) -> Error {
    match response {
        Response::Error(reply) => Error::Refused(reply.clone()),
        other => Error::Protocol(format!("{other:?}")),
    }
}

/// A random producer id in 1..=i64::MAX, so that it fits SQLite's integers.
fn random_producer_id() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: time and pid still make a collision between two live clients
        // practically impossible.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        bytes = (nanos ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    (u64::from_le_bytes(bytes) >> 1).max(1)
}

/// True when an error is the daemon saying its queue is full.
pub fn is_busy(error: &Error) -> bool {
    matches!(error, Error::Refused(reply) if reply.code == ErrorCode::Busy)
}
