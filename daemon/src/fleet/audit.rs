//! The fleet's audit: every host's copy at the centre checked from the rows alone, as
//! `witness fleet verify` does it. The chain is recomputed from the first entry, the tree
//! over it is checked against each checkpoint the host signed (with the key the centre
//! pinned at first contact), and the end must be the watermark. It trusts nothing the
//! forwarder computed, so a host that lied to the centre, or a row changed at the centre,
//! is named here.

use witness_protocol::note::VerifierKey;

use super::{FleetError, event_columns, pg_values};
use crate::format::chain;
use crate::format::cursor::{Break, Cursor, Unheld};
use crate::format::tree::Tree;

/// Rows fetched at a time from the centre.
const FETCH: i32 = 10_000;

/// What the audit found of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAudit {
    /// The host.
    pub host_id: String,
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// `None` when every check held; else what failed.
    pub problem: Option<Problem>,
}

/// Why a host's copy does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The forwarder found the host's log no longer extends the centre's copy, and the
    /// centre refused it.
    Refused(String),
    /// The centre's copy itself does not hold together.
    Broken(String),
    /// The host's copy is intact, but other logs asked to forward under its id and were
    /// refused: two machines believe they are this host.
    Conflict(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Refused(reason) => write!(f, "REFUSED: {reason}"),
            Problem::Broken(reason) => write!(f, "BROKEN: {reason}"),
            Problem::Conflict(reason) => write!(f, "CONFLICT: {reason}"),
        }
    }
}

/// Audits every host, or only `only`; an unknown host is an error.
pub fn verify(
    client: &mut postgres::Client,
    only: Option<&str>,
) -> Result<Vec<HostAudit>, FleetError> {
    let hosts = client.query(
        "SELECT host_id, verifier_key, last_seq, last_hash, refused FROM hosts \
         WHERE $1::text IS NULL OR host_id = $1 ORDER BY host_id",
        &[&only],
    )?;
    if let (Some(only), true) = (only, hosts.is_empty()) {
        return Err(FleetError::Postgres(format!(
            "no host {only:?} has forwarded to this database"
        )));
    }
    let mut conflicts = super::query::conflicts(client)?;
    let mut audits = Vec::new();
    for host in hosts {
        let host_id: String = host.get(0);
        let key: String = host.get(1);
        let last_seq: i64 = host.get(2);
        let last_hash: Vec<u8> = host.get(3);
        let refused: Option<String> = host.get(4);
        let mut audit = audit_host(client, &host_id, &key, last_seq, &last_hash)?;
        let others = conflicts.remove(&host_id).unwrap_or_default();
        if let Some(reason) = refused {
            audit.problem = Some(Problem::Refused(reason));
        } else if audit.problem.is_none()
            && let Some(first) = others.first()
        {
            audit.problem = Some(Problem::Conflict(format!(
                "{} other log{} asked to forward under this id and {} refused (key {}, {} \
                 attempts); this host's copy is intact: give the other a host_id of its own, \
                 then run `witness fleet clear {host_id}`",
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                if others.len() == 1 { "was" } else { "were" },
                first.verifier_key,
                first.attempts,
            )));
        }
        audits.push(audit);
    }
    Ok(audits)
}

fn audit_host(
    client: &mut postgres::Client,
    host_id: &str,
    key: &str,
    last_seq: i64,
    last_hash: &[u8],
) -> Result<HostAudit, FleetError> {
    let mut audit = HostAudit {
        host_id: host_id.to_owned(),
        entries: 0,
        checkpoints: 0,
        problem: None,
    };
    let broken = |audit: &mut HostAudit, reason: String| {
        audit.problem = Some(Problem::Broken(reason));
    };
    let key = match VerifierKey::parse(key) {
        Ok(key) => key,
        Err(error) => {
            broken(
                &mut audit,
                format!("its pinned key does not parse: {error}"),
            );
            return Ok(audit);
        }
    };
    let checkpoints: Vec<(i64, String)> = client
        .query(
            "SELECT size, note FROM checkpoints WHERE host_id = $1 ORDER BY size",
            &[&host_id],
        )?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut pending = checkpoints.iter().peekable();
    let mut transaction = client.transaction()?;
    let statement = transaction.prepare(&format!(
        "SELECT {} FROM events WHERE host_id = $1 ORDER BY seq",
        event_columns()
    ))?;
    let portal = transaction.bind(&statement, &[&host_id])?;
    let mut cursor = Cursor::new(1, chain::GENESIS, Some(Tree::default()));
    'rows: loop {
        let rows = transaction.query_portal(&portal, FETCH)?;
        if rows.is_empty() {
            break;
        }
        for stored in &rows {
            let (values, hash) = pg_values(stored)?;
            let seq = cursor.next_seq();
            if let Err(problem) = cursor.step(&values, hash) {
                broken(
                    &mut audit,
                    match problem {
                        Break::Gap { found, .. } => format!(
                            "entry {seq} is missing (the next is {})",
                            found.map_or("a row with no seq".into(), |seq| seq.to_string())
                        ),
                        Break::Altered { .. } => {
                            format!("entry {seq} does not hash to its stored hash: it was altered")
                        }
                    },
                );
                break 'rows;
            }
            if let Some(tree) = cursor.tree() {
                tree.take_full();
            }
            audit.entries += 1;
            while let Some((size, note)) = pending.next_if(|(size, _)| *size as u64 <= seq) {
                if let Err(problem) = cursor.check_checkpoint(*size as u64, note, &key) {
                    broken(
                        &mut audit,
                        match problem {
                            Unheld::Unsigned { reason, .. } => {
                                format!("its checkpoint at size {size} does not verify: {reason}")
                            }
                            Unheld::OtherTree { .. } => {
                                format!("its checkpoint at size {size} signs another tree")
                            }
                        },
                    );
                    break 'rows;
                }
                audit.checkpoints += 1;
            }
        }
    }
    drop(portal);
    transaction.commit()?;
    if audit.problem.is_none() {
        let entries = audit.entries;
        if entries as i64 != last_seq {
            broken(
                &mut audit,
                format!("the centre holds {entries} entries, but its watermark says {last_seq}"),
            );
        } else if cursor.previous().as_slice() != last_hash {
            broken(
                &mut audit,
                "its last entry's hash is not the watermark's".to_owned(),
            );
        } else if let Some((size, _)) = pending.next() {
            broken(
                &mut audit,
                format!("its checkpoint at size {size} is past the entries the centre holds"),
            );
        }
    }
    Ok(audit)
}
