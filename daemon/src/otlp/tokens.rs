//! Bearer tokens for the OTLP listener (`otlp_tokens_file`): one `name token` a line, `#`
//! comments and blank lines aside. Each name is a principal of its own, with the rate limits
//! and the fair share of a uid. The file must be private to the daemon's user, as a key is.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The shortest token taken: 16 characters, so that one cannot be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// It cannot be read.
    #[error("cannot read the OTLP tokens file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Others than its owner may read it.
    #[error(
        "the OTLP tokens file {} may be read by others (mode {mode:o}): chmod 600 it",
        .path.display()
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not `name token`.
    #[error("{}:{line}: {reason}", .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The tokens of a file, kept as SHA-256 digests so that a comparison takes the same time
/// whatever the token shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(String, [u8; 32])>,
}

impl Tokens {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let read = |source| TokensError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.mode() & 0o077 != 0 {
            return Err(TokensError::Open {
                path: path.to_owned(),
                mode: meta.mode() & 0o777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Tokens::parse(&text).map_err(|(line, reason)| TokensError::Line {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses the text of a tokens file; the error names the line.
    pub fn parse(text: &str) -> Result<Tokens, (usize, String)> {
        let mut tokens = Tokens::default();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err((number, "a line is `name token`, two words".into()));
            };
            if name.len() > 64 || name.chars().any(|c| c.is_control()) {
                return Err((number, "a name is at most 64 printable characters".into()));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err((
                    number,
                    format!("the token of {name} is shorter than {MIN_TOKEN_LEN} characters"),
                ));
            }
            if tokens.entries.iter().any(|(known, _)| known == name) {
                return Err((number, format!("{name} is named twice")));
            }
            tokens
                .entries
                .push((name.to_owned(), Sha256::digest(token.as_bytes()).into()));
        }
        Ok(tokens)
    }

    /// Whether the file names no token (then only loopback peers are served).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the token shown, if it is one of these.
    pub fn name_of(&self, shown: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(shown.as_bytes()).into();
        // Every entry is compared, the equal one or not, in constant time each.
        let mut found = None;
        for (name, known) in &self.entries {
            let differ = known
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if differ == 0 {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_name_and_token_and_garbage_is_named_by_line() {
        let tokens =
            Tokens::parse("# who\n\nci  0123456789abcdef\nlaptop fedcba9876543210x\n").unwrap();
        assert_eq!(tokens.name_of("0123456789abcdef"), Some("ci"));
        assert_eq!(tokens.name_of("fedcba9876543210x"), Some("laptop"));
        assert_eq!(tokens.name_of("0123456789abcdeF"), None);
        assert_eq!(Tokens::parse("one\n").unwrap_err().0, 1);
        assert_eq!(Tokens::parse("a b c\n").unwrap_err().0, 1);
        assert!(
            Tokens::parse("ci short\n")
                .unwrap_err()
                .1
                .contains("shorter")
        );
        assert!(
            Tokens::parse("ci 0123456789abcdef\nci 0123456789abcdeg\n")
                .unwrap_err()
                .1
                .contains("twice")
        );
    }
}
