//! Opening a connection to the daemon within a deadline: the connect itself, then `Hello`.
//!
//! std's `UnixStream::connect` blocks for as long as the daemon's listen backlog is full,
//! which is forever when the daemon has stopped accepting; a client must get a clear error
//! instead. So the socket is connected non-blocking and retried until the deadline.

use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use witness_protocol::frame::{self, FrameReader};
use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{Hello, PROTOCOL_VERSION, Request, Response, ResponseFrame, ServerHello};

use crate::Error;

/// Connects to the Unix socket at `path`, waiting at most `timeout` for room in the daemon's
/// backlog. The stream it returns blocks, with no timeouts set.
pub(crate) fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let address = socket_address(path)?;
    // SAFETY: socket has no memory preconditions; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let stream = UnixStream::from(fd);
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    loop {
        // SAFETY: `address` is a valid sockaddr_un and its size is passed with it.
        let result = unsafe {
            libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&stream),
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if result == 0 {
            break;
        }
        let error = io::Error::last_os_error();
        // A full backlog: Linux answers EAGAIN to a non-blocking connect and offers nothing
        // to wait on, so try again shortly.
        let full = matches!(
            error.raw_os_error(),
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS)
        );
        if !full {
            return Err(error);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the daemon did not accept the connection within {timeout:?} (its \
                     backlog is full: it is overloaded or hung)"
                ),
            ));
        }
        std::thread::sleep(delay.min(deadline - now));
        delay = (delay * 2).min(Duration::from_millis(50));
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn socket_address(path: &Path) -> io::Result<libc::sockaddr_un> {
    // SAFETY: sockaddr_un is plain data, valid when zeroed.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // One byte stays for the terminating NUL.
    if bytes.is_empty() || bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} cannot name a Unix socket: it must be 1 to {} bytes with no NUL",
                path.display(),
                address.sun_path.len() - 1
            ),
        ));
    }
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    Ok(address)
}

/// Connects and exchanges `Hello`, all within `timeout`; on success the stream's read and
/// write timeouts are `answer_timeout`. The outer error is the connection's (worth retrying);
/// the inner one is the daemon's refusal, which retrying will not cure.
pub(crate) fn handshake(
    path: &Path,
    client_name: &str,
    timeout: Duration,
    answer_timeout: Option<Duration>,
) -> io::Result<Result<(UnixStream, ServerHello), Error>> {
    let started = Instant::now();
    let mut stream = connect(path, timeout)?;
    let left = || {
        timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(left()))?;
    let hello = Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        client: client_name.into(),
    });
    let mut bytes = Vec::new();
    if let Err(error) = frame::encode_request(0, &hello, MAX_FRAME_LEN, &mut bytes) {
        return Ok(Err(error.into()));
    }
    // A daemon that refuses the connection (full, or this user not allowed) says why at once
    // and closes, so sending Hello can fail while its reason waits to be read: read it first.
    let sent = stream
        .write_all(&bytes)
        .map_err(timed_out_as("sending Hello", timeout));
    let mut reader = FrameReader::new(MAX_FRAME_LEN);
    let frame = loop {
        match reader.next_frame::<ResponseFrame>() {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(error) => return Ok(Err(error.into())),
        }
        stream.set_read_timeout(Some(left()))?;
        let read = reader
            .read_from(&mut stream)
            .map_err(timed_out_as("waiting for the daemon's Hello", timeout));
        let n = match read {
            Ok(n) => n,
            Err(error) => return Err(sent.err().unwrap_or(error)),
        };
        if n == 0 {
            sent?;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection during the handshake",
            ));
        }
    };
    stream.set_read_timeout(answer_timeout)?;
    stream.set_write_timeout(answer_timeout)?;
    Ok(match frame.response {
        Response::Hello(server) => Ok((stream, server)),
        Response::Error(reply) => Err(Error::Refused(reply)),
        other => Err(Error::Protocol(format!("{other:?}"))),
    })
}

/// Whether an I/O error is a socket timeout firing (which std reports as `WouldBlock` on
/// Unix).
pub(crate) fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn timed_out_as(what: &'static str, timeout: Duration) -> impl Fn(io::Error) -> io::Error {
    move |error| {
        if is_timeout(&error) {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no progress {what} within {timeout:?}: the daemon is overloaded or hung"),
            )
        } else {
            error
        }
    }
}
