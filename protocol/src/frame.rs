//! Framing: a little-endian `u32` body length, then the bincode body.
//!
//! Decoding looks at the length first and refuses a frame above the limit before reserving a
//! byte for it; incomplete input is `Ok(None)`, so a reader simply reads more and tries
//! again, and [`FrameReader`] does that for every reader of the project. Every use of bincode
//! in the project is in this file, so that the codec can be swapped by touching it alone.

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::MAX_FRAME_LEN;

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

/// bincode's legacy configuration (little endian, fixed-width integers, `u64` lengths) with a
/// byte limit. Without the limit bincode reserves whatever length a string claims before
/// reading it, so eight garbage bytes could ask for exabytes; with it, a claim above the
/// limit is an error before any allocation.
const CONFIG: Configuration<LittleEndian, Fixint, Limit<{ MAX_FRAME_LEN as usize }>> =
    bincode::config::legacy().with_limit();

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than the limit allows.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced or encoded length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The body is not a valid encoding of the expected message.
    #[error("undecodable frame: {0}")]
    Undecodable(String),
    /// The body decoded but left bytes over.
    #[error("frame has {0} bytes after the end of its message")]
    TrailingBytes(usize),
    /// The message could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Appends the frame of `message` (prefix and body) to `out`. Refuses a body above
/// `max_frame_len` and leaves `out` as it was.
pub fn encode<T: Serialize>(
    message: &T,
    max_frame_len: u32,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    if let Err(error) = bincode::serde::encode_into_std_write(message, out, CONFIG) {
        out.truncate(start);
        return Err(FrameError::Encode(error.to_string()));
    }
    let body_len = out.len() - start - LEN_PREFIX;
    if body_len > max_frame_len as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len: body_len as u64,
            max: max_frame_len,
        });
    }
    out[start..start + LEN_PREFIX].copy_from_slice(&(body_len as u32).to_le_bytes());
    Ok(())
}

/// Appends the frame of a request to `out` without taking the request, so that a caller whose
/// request is too large for one frame still holds it and can split it. The bytes are those of
/// the equivalent `RequestFrame`.
pub fn encode_request(
    id: u64,
    request: &crate::Request,
    max_frame_len: u32,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        id: u64,
        request: &'a crate::Request,
    }
    encode(&Borrowed { id, request }, max_frame_len, out)
}

/// Looks at the start of `buf`: `Ok(None)` if a whole frame is not there yet, else the total
/// length of the first frame (prefix included). Refuses a declared length above the limit as
/// soon as the prefix is readable.
pub fn check(buf: &[u8], max_frame_len: u32) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let body_len = u32::from_le_bytes(prefix.try_into().expect("slice of four bytes"));
    if body_len > max_frame_len {
        return Err(FrameError::TooLarge {
            len: u64::from(body_len),
            max: max_frame_len,
        });
    }
    let total = LEN_PREFIX + body_len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// Decodes one message from a frame body (the bytes after the prefix). The whole body must be
/// the message.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (message, used) = bincode::serde::decode_from_slice(body, CONFIG)
        .map_err(|error| FrameError::Undecodable(error.to_string()))?;
    if used != body.len() {
        return Err(FrameError::TrailingBytes(body.len() - used));
    }
    Ok(message)
}

/// Decodes the first frame of `buf`: `Ok(None)` if it is not all there yet, else the message
/// and the number of bytes it took.
pub fn decode<T: DeserializeOwned>(
    buf: &[u8],
    max_frame_len: u32,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(total) = check(buf, max_frame_len)? else {
        return Ok(None);
    };
    decode_body(&buf[LEN_PREFIX..total]).map(|message| Some((message, total)))
}

/// Collects bytes as they arrive from a stream and hands out whole frames, in order: the one
/// frame reader of the daemon, the client and the tests. It does no I/O itself, so it serves
/// blocking and async readers alike.
///
/// Taking a frame only moves an offset; spent bytes are dropped when more space is asked for,
/// which moves at most the one partial frame left. So every byte is copied at most once, and
/// reading a buffer full of small frames is linear in its length.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    start: usize,
    max_frame_len: u32,
}

/// Bytes a read asks for at a time.
const READ_CHUNK: usize = 16 << 10;

impl FrameReader {
    /// A reader that refuses frames whose body is above `max_frame_len`.
    pub fn new(max_frame_len: u32) -> FrameReader {
        FrameReader {
            buffer: Vec::with_capacity(READ_CHUNK),
            start: 0,
            max_frame_len,
        }
    }

    /// The buffer to read more bytes into, at its end (for `read_buf` and the like), with room
    /// for at least one chunk. Spent frames are dropped first.
    pub fn space(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.reserve(READ_CHUNK);
        &mut self.buffer
    }

    /// Reads once from `source` into the buffer: the bytes read, 0 at the end of the stream.
    pub fn read_from(&mut self, source: &mut impl std::io::Read) -> std::io::Result<usize> {
        let buffer = self.space();
        let len = buffer.len();
        buffer.resize(len + READ_CHUNK, 0);
        let read = source.read(&mut buffer[len..]);
        buffer.truncate(len + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Adds bytes received some other way.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.space().extend_from_slice(bytes);
    }

    /// The body of the next whole frame, taken; `Ok(None)` until one has arrived whole. A
    /// length prefix above the limit is refused as soon as it is readable.
    pub fn next_body(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let unread = &self.buffer[self.start..];
        let Some(total) = check(unread, self.max_frame_len)? else {
            return Ok(None);
        };
        let body = self.start + LEN_PREFIX..self.start + total;
        self.start += total;
        Ok(Some(&self.buffer[body]))
    }

    /// The next whole frame, taken and decoded; `Ok(None)` until one has arrived whole. A
    /// frame that does not decode is taken all the same.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_body()? {
            Some(body) => decode_body(body).map(Some),
            None => Ok(None),
        }
    }

    /// Bytes received and not yet taken as a frame: a frame in the middle of arriving.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// Forgets every byte not yet taken (the stream they came on is gone).
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.start = 0;
    }
}

/// The request id at the start of an undecodable request body, so that the error can name the
/// request; every request frame starts with its id as a little-endian `u64`.
pub fn peek_request_id(body: &[u8]) -> Option<u64> {
    body.get(..8)
        .map(|id| u64::from_le_bytes(id.try_into().expect("slice of eight bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn frame_of<T: Serialize>(message: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, MAX_FRAME_LEN, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_of_every_request() {
        let requests = [
            Request::Hello(Hello {
                version: 9,
                client: "x".into(),
            }),
            Request::Append(Append {
                ack: Ack::None,
                on_full: OnFull::Busy,
                producer: Some(ProducerRef {
                    producer_id: 5,
                    first_number: 1,
                }),
                entries: vec![
                    Entry::new("e", "c")
                        .trace("t")
                        .client_time(-3)
                        .cost(Cost::new(1, 2, 3).model("m").cache_read_tokens(4)),
                ],
            }),
            Request::Verify(VerifyRange {
                from: Some(1),
                to: None,
            }),
            Request::Ping,
        ];
        for (id, request) in requests.into_iter().enumerate() {
            let frame = RequestFrame {
                id: id as u64,
                request,
            };
            let bytes = frame_of(&frame);
            let (decoded, used) = decode::<RequestFrame>(&bytes, MAX_FRAME_LEN)
                .unwrap()
                .unwrap();
            assert_eq!(decoded, frame);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn borrowed_request_encodes_as_the_owned_frame() {
        let request = Request::Verify(VerifyRange {
            from: Some(3),
            to: None,
        });
        let mut borrowed = Vec::new();
        encode_request(9, &request, MAX_FRAME_LEN, &mut borrowed).unwrap();
        assert_eq!(borrowed, frame_of(&RequestFrame { id: 9, request }));
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        let bytes = frame_of(&RequestFrame {
            id: 1,
            request: Request::Ping,
        });
        for cut in 0..bytes.len() {
            assert!(
                decode::<RequestFrame>(&bytes[..cut], MAX_FRAME_LEN)
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let prefix = (MAX_FRAME_LEN + 1).to_le_bytes();
        let error = check(&prefix, MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { .. }), "{error}");
        assert!(error.to_string().contains("exceeds the maximum"));
    }

    #[test]
    fn encode_refuses_a_body_above_the_limit() {
        let mut out = vec![1, 2];
        let frame = RequestFrame {
            id: 1,
            request: Request::Ping,
        };
        let error = encode(&frame, 4, &mut out).unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { .. }));
        assert_eq!(out, [1, 2]);
    }

    fn body_error(body: &[u8]) -> String {
        decode_body::<RequestFrame>(body).unwrap_err().to_string()
    }

    #[test]
    fn garbage_bodies_are_errors_that_say_so() {
        // An unknown request variant.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&99u32.to_le_bytes());
        assert!(body_error(&body).starts_with("undecodable frame"));
        // A string that claims more bytes than there are: no allocation, an error.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(body_error(&body).starts_with("undecodable frame"));
        // Invalid UTF-8 in a string.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&2u64.to_le_bytes());
        body.extend_from_slice(&[0xff, 0xfe]);
        assert!(body_error(&body).starts_with("undecodable frame"));
        // Extra bytes after a valid message.
        let mut body = frame_of(&RequestFrame {
            id: 1,
            request: Request::Ping,
        });
        body.drain(..LEN_PREFIX);
        body.push(0);
        assert_eq!(
            body_error(&body),
            "frame has 1 bytes after the end of its message"
        );
        // Empty.
        assert!(body_error(&[]).starts_with("undecodable frame"));
    }

    #[test]
    fn request_id_is_readable_from_a_broken_body() {
        assert_eq!(peek_request_id(&42u64.to_le_bytes()), Some(42));
        assert_eq!(peek_request_id(&[1, 2, 3]), None);
    }

    #[test]
    fn a_frame_reader_takes_frames_split_anywhere_and_keeps_their_order() {
        let mut stream = Vec::new();
        for id in 0..50u64 {
            stream.extend(frame_of(&RequestFrame {
                id,
                request: Request::Append(Append {
                    ack: Ack::Committed,
                    on_full: OnFull::Wait,
                    producer: None,
                    entries: vec![
                        Entry::new("e", "c")
                            .payload_text(format!("\"{}\"", "x".repeat(id as usize))),
                    ],
                }),
            }));
        }
        for piece in [1, 3, 7, 64, 4096, stream.len()] {
            let mut reader = FrameReader::new(MAX_FRAME_LEN);
            let mut ids = Vec::new();
            let mut source = &stream[..];
            loop {
                while let Some(frame) = reader.next_frame::<RequestFrame>().unwrap() {
                    ids.push(frame.id);
                }
                let n = piece.min(source.len());
                if n == 0 {
                    break;
                }
                reader.extend(&source[..n]);
                source = &source[n..];
            }
            assert_eq!(ids, (0..50).collect::<Vec<_>>(), "pieces of {piece}");
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn a_frame_reader_refuses_a_large_prefix_before_its_body_arrives() {
        let mut reader = FrameReader::new(1024);
        reader.extend(&2000u32.to_le_bytes());
        assert!(matches!(
            reader.next_body(),
            Err(FrameError::TooLarge {
                len: 2000,
                max: 1024
            })
        ));
    }

    #[test]
    fn a_frame_reader_moves_each_byte_at_most_once() {
        // Many small frames in one read, then a partial one: taking them moves nothing, and
        // asking for room moves only the partial frame's bytes.
        let one = frame_of(&RequestFrame {
            id: 1,
            request: Request::Ping,
        });
        let mut reader = FrameReader::new(MAX_FRAME_LEN);
        let mut bytes: Vec<u8> = one.repeat(10_000);
        bytes.extend_from_slice(&one[..3]);
        reader.extend(&bytes);
        let mut n = 0;
        while reader.next_frame::<RequestFrame>().unwrap().is_some() {
            n += 1;
        }
        assert_eq!((n, reader.buffered()), (10_000, 3));
        assert_eq!(reader.space().len(), 3);
        reader.extend(&one[3..]);
        assert!(reader.next_frame::<RequestFrame>().unwrap().is_some());
        let mut source: &[u8] = &one;
        assert_eq!(reader.read_from(&mut source).unwrap(), one.len());
        assert!(reader.next_frame::<RequestFrame>().unwrap().is_some());
        reader.extend(&one[..2]);
        reader.clear();
        assert_eq!(reader.buffered(), 0);
    }
}
