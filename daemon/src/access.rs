//! Who may use the daemon, how many connections each user holds, and how fast each principal
//! may append: decided here for every transport, from the socket's peer credentials or from
//! what an HTTP listener established (its name, the peer's address, a token), never from
//! what a client says of itself.
//!
//! Root and the daemon's own user are the operators: always admitted, never rate-limited, and
//! given `reserved_connections` beyond the connection limit, so that `witness stats` works on
//! a daemon whose every slot a misbehaving client has taken.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::config::Access;

/// The access policy in force, which a reload replaces, and the per-user state it needs.
#[derive(Debug, Default)]
pub struct Gate {
    access: RwLock<Access>,
    /// Connections open, in all and per user.
    pub connections: Arc<Connections>,
    /// Per-user rates.
    pub rates: Rates,
}

impl Gate {
    /// A gate enforcing `access`.
    pub fn new(access: Access) -> Gate {
        Gate {
            access: RwLock::new(access),
            ..Gate::default()
        }
    }

    /// The policy in force.
    pub fn access(&self) -> Access {
        self.access.read().expect("never poisoned").clone()
    }

    /// Replaces the policy (a reload); connections open keep their places.
    pub fn replace(&self, access: Access) {
        *self.access.write().expect("never poisoned") = access;
    }
}

/// What the kernel says of the process at the other end of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// Process id.
    pub pid: Option<i64>,
    /// User id.
    pub uid: Option<u32>,
    /// Primary group id.
    pub gid: Option<u32>,
    /// Supplementary groups (`SO_PEERGROUPS`), where the kernel reports them.
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of the peer of `stream`.
    pub fn of(stream: &tokio::net::UnixStream) -> Peer {
        let credentials = stream.peer_cred().ok();
        Peer {
            pid: credentials.and_then(|c| c.pid()).map(i64::from),
            uid: credentials.map(|c| c.uid()),
            gid: credentials.map(|c| c.gid()),
            groups: peer_groups(stream),
        }
    }

    /// Root or the daemon's own user.
    pub fn is_operator(&self) -> bool {
        let own = crate::format::row::own_uid();
        matches!(self.uid, Some(uid) if uid == 0 || uid == own)
    }

    fn in_lists(&self, uids: &[u32], gids: &[u32]) -> bool {
        if uids.is_empty() && gids.is_empty() {
            return true;
        }
        self.uid.is_some_and(|uid| uids.contains(&uid))
            || self.gid.is_some_and(|gid| gids.contains(&gid))
            || self.groups.iter().any(|gid| gids.contains(gid))
    }

    /// The uid as people read it in messages.
    pub fn uid_text(&self) -> String {
        self.uid.map_or("unknown".to_owned(), |uid| uid.to_string())
    }
}

/// Who sends an append or asks for a read: a process on the Unix socket, known by its
/// credentials, or an HTTP client, known by the listener, its address and the token it
/// showed. An entry that came over HTTP never carries a uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A peer of the Unix socket.
    Unix(Peer),
    /// A client of one of the HTTP listeners.
    Http(HttpIdentity),
}

/// Who an HTTP client is, as far as the daemon can tell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpIdentity {
    /// The listener's name (`metrics`, and the listeners to come).
    pub listener: &'static str,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The name of the bearer token or session it showed, once the listener has checked it.
    pub token: Option<String>,
}

/// Why a principal may not do what it asked, naming who was refused and the setting that
/// decides it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The uid is in neither `allow_uids` nor `allow_gids`.
    #[error(
        "uid {uid} is not admitted to this witnessd (see allow_uids and allow_gids in its \
         configuration)"
    )]
    NotAdmitted {
        /// The peer's uid, or `unknown`.
        uid: String,
    },
    /// The uid may write but is in neither `read_uids` nor `read_gids`.
    #[error(
        "uid {uid} may write to this witnessd but not read from it (see read_uids and \
         read_gids in its configuration)"
    )]
    NoRead {
        /// The peer's uid, or `unknown`.
        uid: String,
    },
    /// An HTTP client showed no token where one is needed.
    #[error(
        "{listener} at {peer} showed no token: HTTP readers, and writers from other hosts, need one"
    )]
    NoToken {
        /// The listener's name.
        listener: &'static str,
        /// The client's address.
        peer: std::net::SocketAddr,
    },
    /// Every connection is in use.
    #[error(
        "all {max} connections are in use: retry later (root and the daemon's user have \
         {reserved} more)"
    )]
    Full {
        /// `max_connections`.
        max: usize,
        /// `reserved_connections`.
        reserved: usize,
    },
    /// The uid holds as many connections as it may.
    #[error(
        "uid {uid} already holds {held} connections, its limit (max_connections_per_uid): \
         close some, or share one"
    )]
    PerUid {
        /// The uid.
        uid: u32,
        /// Connections it holds.
        held: usize,
    },
    /// The principal is over its rate.
    #[error(
        "{key} is over its limit of {limit} (uid_entries_per_sec, uid_bytes_per_sec): \
         nothing was recorded; retry later"
    )]
    Rate {
        /// Who: a uid, a token or an address.
        key: String,
        /// The limit it went past, with its unit.
        limit: String,
    },
}

impl From<Denied> for witness_protocol::ErrorReply {
    /// Refusals of who a principal is are `Forbidden`; refusals of how much it asks are
    /// `Busy`, which a client retries.
    fn from(denied: Denied) -> Self {
        use witness_protocol::ErrorCode;
        let code = match denied {
            Denied::NotAdmitted { .. } | Denied::NoRead { .. } | Denied::NoToken { .. } => {
                ErrorCode::Forbidden
            }
            Denied::Full { .. } | Denied::PerUid { .. } | Denied::Rate { .. } => ErrorCode::Busy,
        };
        witness_protocol::ErrorReply::new(code, denied.to_string())
    }
}

/// What a request asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The daemon's counters (`Stats`, `/metrics`).
    Metrics,
    /// Reading the log back.
    Read,
    /// Appending to it.
    Write,
}

/// Whether `principal` may do what it `need`s: `Err` says who was refused and which setting
/// decides it. The one rule for every transport.
pub fn authorize(access: &Access, principal: &Principal, need: Need) -> Result<(), Denied> {
    match (principal, need) {
        (Principal::Unix(peer), Need::Metrics | Need::Write) => admit(access, peer),
        (Principal::Unix(peer), Need::Read) => may_read(access, peer),
        // Metrics listeners are opt-in and serve counters only.
        (Principal::Http(_), Need::Metrics) => Ok(()),
        // A token or session was checked by the listener; without one, only a peer on this
        // host may write, as over the socket.
        (Principal::Http(identity), Need::Write)
            if identity.token.is_some() || identity.peer.ip().is_loopback() =>
        {
            Ok(())
        }
        (Principal::Http(identity), Need::Read) if identity.token.is_some() => Ok(()),
        (Principal::Http(identity), _) => Err(Denied::NoToken {
            listener: identity.listener,
            peer: identity.peer,
        }),
    }
}

impl Principal {
    /// Where rate limits count it: a uid, a token, or an address; `None` for operators,
    /// who are never limited.
    fn rate_key(&self) -> Option<RateKey> {
        match self {
            Principal::Unix(peer) if peer.is_operator() => None,
            Principal::Unix(peer) => peer.uid.map(RateKey::Uid),
            Principal::Http(HttpIdentity {
                token: Some(token), ..
            }) => Some(RateKey::Token(token.clone())),
            Principal::Http(identity) => Some(RateKey::Address(identity.peer.ip())),
        }
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum RateKey {
    Uid(u32),
    Token(String),
    Address(std::net::IpAddr),
}

impl std::fmt::Display for RateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateKey::Uid(uid) => write!(f, "uid {uid}"),
            RateKey::Token(name) => write!(f, "token {name}"),
            RateKey::Address(address) => write!(f, "address {address}"),
        }
    }
}

/// Supplementary groups of the peer; empty where the kernel does not say (before Linux 4.13).
fn peer_groups(stream: &tokio::net::UnixStream) -> Vec<u32> {
    let mut groups = vec![0 as libc::gid_t; 64];
    let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: the buffer and its length are passed together and the kernel writes at most
    // `len` bytes.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
    groups
}

/// Whether a peer may connect at all: `Err` names the uid and the keys that refuse it.
pub fn admit(access: &Access, peer: &Peer) -> Result<(), Denied> {
    if peer.is_operator() || peer.in_lists(&access.allow_uids, &access.allow_gids) {
        return Ok(());
    }
    Err(Denied::NotAdmitted {
        uid: peer.uid_text(),
    })
}

/// Whether a peer may read the log back: `Err` names the uid and the keys that refuse it.
pub fn may_read(access: &Access, peer: &Peer) -> Result<(), Denied> {
    if peer.is_operator() || peer.in_lists(&access.read_uids, &access.read_gids) {
        return Ok(());
    }
    Err(Denied::NoRead {
        uid: peer.uid_text(),
    })
}

/// Connections open, in all and per user, for the limits checked at accept.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<(usize, HashMap<u32, usize>)>,
}

/// Holds one connection's place in the counts until dropped.
#[derive(Debug)]
pub struct Place {
    connections: Arc<Connections>,
    uid: Option<u32>,
}

impl Connections {
    /// Takes a place for a new connection of `peer`, or says why there is none.
    pub fn enter(
        self: &Arc<Self>,
        peer: &Peer,
        max_connections: usize,
        access: &Access,
    ) -> Result<Place, Denied> {
        let mut open = self.open.lock().expect("never poisoned");
        let (total, per_uid) = &mut *open;
        let operator = peer.is_operator();
        let limit = if operator {
            max_connections + access.reserved_connections
        } else {
            max_connections
        };
        if *total >= limit {
            return Err(Denied::Full {
                max: max_connections,
                reserved: access.reserved_connections,
            });
        }
        if let Some(uid) = peer.uid {
            let mine = per_uid.entry(uid).or_default();
            if !operator && *mine >= access.max_connections_per_uid {
                return Err(Denied::PerUid { uid, held: *mine });
            }
            *mine += 1;
        }
        *total += 1;
        Ok(Place {
            connections: Arc::clone(self),
            uid: peer.uid,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().expect("never poisoned");
        let (total, per_uid) = &mut *open;
        *total -= 1;
        if let Some(uid) = self.uid
            && let Some(mine) = per_uid.get_mut(&uid)
        {
            *mine -= 1;
            if *mine == 0 {
                per_uid.remove(&uid);
            }
        }
    }
}

/// Per-principal token buckets for entries and bytes (a uid, a token or an address), and the
/// count of appends each had refused for going past them.
#[derive(Debug, Default)]
pub struct Rates {
    buckets: Mutex<HashMap<RateKey, Bucket>>,
    limited: Mutex<BTreeMap<RateKey, u64>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    entries: f64,
    bytes: f64,
    at: Instant,
}

impl Rates {
    /// Takes `n_entries` and `n_bytes` from `principal`'s buckets, or refuses with the
    /// reason. A bucket holds one second's worth and may go into debt by one request larger
    /// than that, so no request is refused for ever: a principal simply waits out its debt.
    pub fn take(
        &self,
        access: &Access,
        principal: &Principal,
        n_entries: usize,
        n_bytes: usize,
    ) -> Result<(), Denied> {
        let (entry_rate, byte_rate) = (access.uid_entries_per_sec, access.uid_bytes_per_sec);
        if entry_rate == 0 && byte_rate == 0 {
            return Ok(());
        }
        let Some(key) = principal.rate_key() else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("never poisoned");
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            entries: entry_rate as f64,
            bytes: byte_rate as f64,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.at = now;
        bucket.entries = (bucket.entries + elapsed * entry_rate as f64).min(entry_rate as f64);
        bucket.bytes = (bucket.bytes + elapsed * byte_rate as f64).min(byte_rate as f64);
        let short = |rate: u64, tokens: f64, want: usize| {
            rate > 0 && tokens < (want as f64).min(rate as f64)
        };
        let refusal = if short(entry_rate, bucket.entries, n_entries) {
            Some(format!("{entry_rate} entries/s"))
        } else if short(byte_rate, bucket.bytes, n_bytes) {
            Some(format!("{byte_rate} bytes/s"))
        } else {
            None
        };
        if let Some(limit) = refusal {
            drop(buckets);
            let message = Denied::Rate {
                key: key.to_string(),
                limit,
            };
            *self
                .limited
                .lock()
                .expect("never poisoned")
                .entry(key)
                .or_default() += 1;
            return Err(message);
        }
        if entry_rate > 0 {
            bucket.entries -= n_entries as f64;
        }
        if byte_rate > 0 {
            bucket.bytes -= n_bytes as f64;
        }
        Ok(())
    }

    /// Appends refused for rate, by uid, since start (HTTP principals are counted in their
    /// listener's refusals).
    pub fn limited(&self) -> Vec<(u32, u64)> {
        self.limited
            .lock()
            .expect("never poisoned")
            .iter()
            .filter_map(|(key, &count)| match key {
                RateKey::Uid(uid) => Some((*uid, count)),
                _ => None,
            })
            .collect()
    }
}
