//! The bound any daemon design meets on this machine for callers that wait for each answer:
//! a server that does nothing but answer. Each connection has a thread that reads a frame,
//! decodes the entry in it and answers, at once or after a group `fdatasync` of a small record
//! in a preallocated file (what a record journal ahead of the database would sync). Its
//! figures beside `log`'s say how much of a small commit's cost is the database's and how
//! much is the round trip's, which no storage design removes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use witness_protocol::Entry;
use witness_protocol::frame::{self, LEN_PREFIX};
use witness_protocol::limits::MAX_FRAME_LEN;

/// The bytes synced for each group: about what a record of one entry would be.
const RECORD: usize = 600;
/// The journal file's preallocated size; the syncer wraps around in it.
const JOURNAL: u64 = 64 << 20;

/// Calls waiting for a sync, and how many syncs are done.
#[derive(Default)]
struct Groups {
    /// The number of the next sync to start; a caller waits for the one after its arrival.
    requested: u64,
    /// Syncs finished.
    done: u64,
    /// Set when the server stops.
    stop: bool,
}

/// A running server; it stops when dropped.
pub struct Server {
    groups: Arc<(Mutex<Groups>, Condvar)>,
}

impl Server {
    /// Listens on `socket`; with `journal`, each answer waits for an `fdatasync` of that
    /// file begun after the request arrived, one sync for all the requests waiting.
    pub fn start(socket: &Path, journal: Option<&Path>) -> std::io::Result<Server> {
        let listener = UnixListener::bind(socket)?;
        let groups = Arc::new((Mutex::new(Groups::default()), Condvar::new()));
        if let Some(path) = journal {
            let file = File::options()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(path)?;
            // Preallocated and synced once, so that a sync writes the record, not a new size.
            file.set_len(JOURNAL)?;
            file.write_all_at(&vec![1u8; JOURNAL as usize], 0)?;
            file.sync_all()?;
            let groups = groups.clone();
            std::thread::spawn(move || sync_groups(&file, &groups));
        }
        let durable = journal.is_some();
        let for_connections = groups.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let groups = for_connections.clone();
                if groups.0.lock().expect("groups").stop {
                    break;
                }
                std::thread::spawn(move || answer(stream, durable.then_some(&*groups)));
            }
        });
        Ok(Server { groups })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.groups.0.lock().expect("groups").stop = true;
        self.groups.1.notify_all();
    }
}

/// Writes a record and syncs it whenever a caller waits, until the server stops.
fn sync_groups(file: &File, groups: &(Mutex<Groups>, Condvar)) {
    let record = [7u8; RECORD];
    let mut offset = 0u64;
    loop {
        {
            let mut state = groups.0.lock().expect("groups");
            while state.requested == state.done && !state.stop {
                state = groups.1.wait(state).expect("groups");
            }
            if state.stop {
                return;
            }
        }
        let this = groups.0.lock().expect("groups").requested;
        if file.write_all_at(&record, offset).is_err() || file.sync_data().is_err() {
            // The waiting calls must not be answered as synced, nor wait for ever.
            groups.0.lock().expect("groups").stop = true;
            groups.1.notify_all();
            return;
        }
        offset = (offset + RECORD as u64) % (JOURNAL - RECORD as u64);
        groups.0.lock().expect("groups").done = this;
        groups.1.notify_all();
    }
}

/// Answers one connection's frames until it closes.
fn answer(mut stream: UnixStream, groups: Option<&(Mutex<Groups>, Condvar)>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut body = Vec::new();
    let mut reply = Vec::new();
    frame::encode(&(0u64, 0u64), MAX_FRAME_LEN, &mut reply).expect("a reply encodes");
    loop {
        let mut prefix = [0u8; LEN_PREFIX];
        if stream.read_exact(&mut prefix).is_err() {
            return;
        }
        body.resize(u32::from_le_bytes(prefix) as usize, 0);
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        if frame::decode_body::<Entry>(&body).is_err() {
            return;
        }
        if let Some((lock, ready)) = groups {
            let mut state = lock.lock().expect("groups");
            // A sync already under way may have begun before this request: wait for the next.
            state.requested += 1;
            let wanted = state.requested;
            ready.notify_all();
            while state.done < wanted && !state.stop {
                state = ready.wait(state).expect("groups");
            }
            if state.done < wanted {
                return;
            }
        }
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

/// A caller's side: sends `entry` as one frame and waits for the answer.
pub fn call(stream: &mut UnixStream, entry: &Entry, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    buffer.clear();
    frame::encode(entry, MAX_FRAME_LEN, buffer).map_err(std::io::Error::other)?;
    stream.write_all(buffer)?;
    let mut prefix = [0u8; LEN_PREFIX];
    stream.read_exact(&mut prefix)?;
    buffer.resize(u32::from_le_bytes(prefix) as usize, 0);
    stream.read_exact(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            event: "bench".into(),
            component: "roundtrip".into(),
            trace_id: None,
            payload: "{}".into(),
            cost: None,
            client_ts: None,
            imported: None,
        }
    }

    #[test]
    fn answers_at_once_and_after_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        for durable in [false, true] {
            let socket = dir.path().join(format!("{durable}.sock"));
            let journal = dir.path().join("journal");
            let _server = Server::start(&socket, durable.then_some(&*journal)).unwrap();
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buffer = Vec::new();
            for _ in 0..3 {
                call(&mut stream, &entry(), &mut buffer).unwrap();
                assert!(!buffer.is_empty(), "an answer has a body");
            }
            if durable {
                let written = std::fs::read(&journal).unwrap();
                assert_eq!(
                    &written[..RECORD],
                    &[7u8; RECORD][..],
                    "the record was written"
                );
            }
        }
    }

    #[test]
    fn a_frame_that_is_not_an_entry_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let _server = Server::start(&socket, None).unwrap();
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff]).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            stream.read_to_end(&mut rest).unwrap(),
            0,
            "closed without an answer"
        );
    }
}
