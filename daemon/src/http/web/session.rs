//! Logging in to the dashboard without a password: a user asks over the Unix socket
//! (`witness web`), where the kernel names them, for a one-time token; the browser trades it
//! for a session cookie. A session carries the credentials of the user who asked, and each
//! request is authorized from them against the access rules in force, so the dashboard reads
//! exactly what that user could read over the socket, and stops the moment a reload says
//! otherwise.
//!
//! Tokens and session ids are 32 random bytes; only their SHA-256 is kept, so neither a
//! lookup's timing nor a look at the daemon's memory gives one away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use witness_protocol::admin::WebLogin;

use crate::access::Peer;

/// How long a login token may wait to be used.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(120);

/// How long a session lasts from its login; then the user asks `witness web` again.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Tokens waiting to be used, and sessions open, at most: past these a login is refused
/// rather than memory grown (a user who may read can ask for tokens in a loop).
pub const MAX_PENDING: usize = 1000;

/// See [`MAX_PENDING`].
pub const MAX_SESSIONS: usize = 1000;

/// The session cookie's name.
pub const COOKIE: &str = "witness_session";

/// An open session: whose it is, and the secret its requests that change anything repeat
/// in a header (CSRF).
#[derive(Debug, Clone)]
pub struct Session {
    /// The credentials of the user who asked for the login, as the socket saw them.
    pub peer: Peer,
    /// The value of the `X-CSRF-Token` header every `POST` of this session must carry.
    pub csrf: String,
    /// When it expires, in nanoseconds since the Unix epoch, for the page.
    pub expires_ns: i64,
    expires: Instant,
}

/// Why a login could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// `web_listen` is unset.
    #[error(
        "this witnessd serves no dashboard: set web_listen (such as \"127.0.0.1:7319\") in its configuration and restart it"
    )]
    Off,
    /// Too many tokens wait unused.
    #[error("{MAX_PENDING} login tokens wait unused: retry in {} s", TOKEN_LIFETIME.as_secs())]
    Full,
    /// The system gave no randomness.
    #[error("no randomness for a token: {0}")]
    Random(String),
}

#[derive(Debug)]
struct Pending {
    peer: Peer,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    pending: HashMap<[u8; 32], Pending>,
    sessions: HashMap<[u8; 32], Session>,
}

/// The dashboard's tokens and sessions, shared by the socket (which issues tokens) and the
/// web listener (which redeems them).
#[derive(Debug, Default)]
pub struct Sessions {
    address: OnceLock<SocketAddr>,
    inner: Mutex<Inner>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn random_secret() -> Result<String, IssueError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| IssueError::Random(error.to_string()))?;
    Ok(hex::encode(bytes))
}

fn now_ns_after(lifetime: Duration) -> i64 {
    crate::format::row::now_ns().saturating_add(lifetime.as_nanos() as i64)
}

impl Sessions {
    /// Records where the dashboard is served, once its listener is bound.
    pub fn serve_at(&self, address: SocketAddr) {
        let _ = self.address.set(address);
    }

    /// Where the dashboard is served, if it is.
    pub fn address(&self) -> Option<SocketAddr> {
        self.address.get().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent whatever panicked while one was held.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A one-time login for `peer`, whom the socket has already found may read.
    pub fn issue(&self, peer: Peer) -> Result<WebLogin, IssueError> {
        let address = self.address().ok_or(IssueError::Off)?;
        let token = random_secret()?;
        let now = Instant::now();
        let mut inner = self.lock();
        inner.pending.retain(|_, pending| pending.expires > now);
        if inner.pending.len() >= MAX_PENDING {
            return Err(IssueError::Full);
        }
        inner.pending.insert(
            digest(&token),
            Pending {
                peer,
                expires: now + TOKEN_LIFETIME,
            },
        );
        let host = match address {
            // An unspecified address is reached on loopback from this host.
            SocketAddr::V4(v4) if v4.ip().is_unspecified() => format!("127.0.0.1:{}", v4.port()),
            SocketAddr::V6(v6) if v6.ip().is_unspecified() => format!("[::1]:{}", v6.port()),
            other => other.to_string(),
        };
        Ok(WebLogin {
            url: format!("http://{host}/login#token={token}"),
            expires_in_secs: TOKEN_LIFETIME.as_secs(),
        })
    }

    /// Trades a token for a new session, once: the token is gone whatever the answer.
    /// Returns the session's id (the cookie's value) and the session.
    pub fn redeem(&self, token: &str) -> Option<(String, Session)> {
        let now = Instant::now();
        let mut inner = self.lock();
        let pending = inner.pending.remove(&digest(token))?;
        if pending.expires <= now {
            return None;
        }
        inner.sessions.retain(|_, session| session.expires > now);
        if inner.sessions.len() >= MAX_SESSIONS {
            // The oldest session makes room: a login the user just asked for wins.
            if let Some(oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(key, _)| *key)
            {
                inner.sessions.remove(&oldest);
            }
        }
        let id = random_secret().ok()?;
        let csrf = random_secret().ok()?;
        let session = Session {
            peer: pending.peer,
            csrf,
            expires_ns: now_ns_after(SESSION_LIFETIME),
            expires: now + SESSION_LIFETIME,
        };
        inner.sessions.insert(digest(&id), session.clone());
        Some((id, session))
    }

    /// The open session whose id is `id`, if it has not expired.
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut inner = self.lock();
        let key = digest(id);
        match inner.sessions.get(&key) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                inner.sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session whose id is `id` (logging out).
    pub fn end(&self, id: &str) {
        self.lock().sessions.remove(&digest(id));
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (digest(a), digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            pid: Some(1),
            uid: Some(1000),
            gid: Some(1000),
            groups: vec![],
        }
    }

    fn token_of(login: &WebLogin) -> String {
        login.url.split("#token=").nth(1).unwrap().to_owned()
    }

    #[test]
    fn a_token_works_once() {
        let sessions = Sessions::default();
        sessions.serve_at("127.0.0.1:7319".parse().unwrap());
        let login = sessions.issue(peer()).unwrap();
        assert!(login.url.starts_with("http://127.0.0.1:7319/login#token="));
        let token = token_of(&login);
        let (id, session) = sessions.redeem(&token).expect("the first use works");
        assert_eq!(session.peer.uid, Some(1000));
        assert!(sessions.redeem(&token).is_none(), "the second does not");
        assert!(sessions.session(&id).is_some());
        sessions.end(&id);
        assert!(sessions.session(&id).is_none());
        assert!(sessions.session("garbage").is_none());
    }

    #[test]
    fn no_dashboard_no_token() {
        assert_eq!(Sessions::default().issue(peer()), Err(IssueError::Off));
    }

    #[test]
    fn an_unspecified_address_is_reached_on_loopback() {
        let sessions = Sessions::default();
        sessions.serve_at("0.0.0.0:80".parse().unwrap());
        assert!(
            sessions
                .issue(peer())
                .unwrap()
                .url
                .starts_with("http://127.0.0.1:80/")
        );
    }

    #[test]
    fn pending_tokens_are_bounded() {
        let sessions = Sessions::default();
        sessions.serve_at("127.0.0.1:1".parse().unwrap());
        for _ in 0..MAX_PENDING {
            sessions.issue(peer()).unwrap();
        }
        assert_eq!(sessions.issue(peer()), Err(IssueError::Full));
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", ""));
    }
}
