//! OpenTelemetry in: OTLP/HTTP requests (`docs/OTLP.md`) decoded and mapped to entries.
//!
//! A request body is decoded here from protobuf or OTLP/JSON, gunzipped first when it says
//! so, with its size bounded after decompression without inflating more than the bound to
//! find out. Each span and each log record becomes one entry (`map`), with the key that
//! makes a re-sent export store it once: `(trace id, span id)` for a span, the record's
//! content and time for a log record. The HTTP handlers (`http::otlp`) admit the entries
//! through the intake and answer once they are committed; bearer tokens are read here
//! (`tokens`).

pub mod map;
pub mod tokens;

use std::io::Read;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// The body limit after decompression by default: 20 MiB, as OpenTelemetry's collector.
pub const DEFAULT_MAX_BODY: usize = 20 << 20;

/// How a request body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`: OTLP/JSON (hex ids, integer enums).
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names; none for any other type.
    pub fn of_content_type(content_type: &str) -> Option<Encoding> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of an answer in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the limit, before or after decompression.
    #[error("the request body is over the limit of {limit} bytes (counted after decompression)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// `Content-Encoding` is neither gzip nor identity.
    #[error("Content-Encoding {0:?} is not served: send gzip or none")]
    Encoding(String),
    /// The gzip stream is not one.
    #[error("the gzip body cannot be decompressed: {0}")]
    Gzip(std::io::Error),
    /// The message does not decode.
    #[error("the body is not an OTLP {what} request in {encoding}: {reason}")]
    Decode {
        /// `traces` or `logs`.
        what: &'static str,
        /// `protobuf` or `JSON`.
        encoding: &'static str,
        /// The decoder's account.
        reason: String,
    },
}

/// The body as sent, decompressed if `content_encoding` says gzip, at most `limit` bytes.
pub fn inflate(
    body: &[u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    match content_encoding.map(str::trim) {
        None | Some("") => {}
        Some(encoding) if encoding.eq_ignore_ascii_case("identity") => {}
        Some(encoding) if encoding.eq_ignore_ascii_case("gzip") => {
            // Read one byte past the limit and no more: a gzip bomb stops there.
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(BodyError::Gzip)?;
            if out.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            return Ok(out);
        }
        Some(other) => return Err(BodyError::Encoding(other.to_owned())),
    }
    if body.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(body.to_vec())
}

fn decode<T>(body: &[u8], encoding: Encoding, what: &'static str) -> Result<T, BodyError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|error| BodyError::Decode {
            what,
            encoding: "protobuf",
            reason: error.to_string(),
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|error| BodyError::Decode {
            what,
            encoding: "JSON",
            reason: error.to_string(),
        }),
    }
}

/// An `ExportTraceServiceRequest`, decoded.
pub fn decode_traces(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportTraceServiceRequest, BodyError> {
    decode(body, encoding, "traces")
}

/// An `ExportLogsServiceRequest`, decoded.
pub fn decode_logs(body: &[u8], encoding: Encoding) -> Result<ExportLogsServiceRequest, BodyError> {
    decode(body, encoding, "logs")
}

/// `google.rpc.Status`, the body of an OTLP/HTTP answer that is not a success.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong, for a person.
    #[prost(string, tag = "2")]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_body_is_bounded_after_decompression_and_a_bomb_is_not_inflated() {
        assert_eq!(inflate(b"abc", None, 3).unwrap(), b"abc");
        assert!(matches!(
            inflate(b"abcd", None, 3),
            Err(BodyError::TooLarge { limit: 3 })
        ));
        assert_eq!(inflate(&gzip(b"hello"), Some("gzip"), 5).unwrap(), b"hello");
        // 1 GiB of zeros is about a megabyte of gzip; the reader stops at the limit.
        let zeros = vec![0u8; 64 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 1 << 20);
        assert!(matches!(
            inflate(&bomb, Some("gzip"), 1 << 20),
            Err(BodyError::TooLarge { .. })
        ));
        assert!(matches!(
            inflate(b"not gzip", Some("gzip"), 100),
            Err(BodyError::Gzip(_))
        ));
        assert!(matches!(
            inflate(b"x", Some("br"), 100),
            Err(BodyError::Encoding(_))
        ));
    }

    #[test]
    fn content_types_are_read_by_their_essence() {
        assert_eq!(
            Encoding::of_content_type("application/x-protobuf"),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            Encoding::of_content_type("Application/JSON; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::of_content_type("text/plain"), None);
    }
}
