//! The checks every read request is made of, before it reaches the database: a bad filter
//! gets a clear `BadRequest` that names the field, never a query that scans for nothing.
//! Each command's own check is in its file and is made of these.

use witness_protocol::limits::{MAX_COMPONENT_LEN, MAX_EVENT_LEN, MAX_TRACE_ID_LEN};
use witness_protocol::query::{Filter, MAX_PAGE};
use witness_protocol::{ErrorCode, ErrorReply};

pub(super) fn bad(message: String) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, message)
}

pub(super) fn check_text(field: &str, value: Option<&str>, max: usize) -> Result<(), ErrorReply> {
    match value {
        Some("") => Err(bad(format!("{field} filter is empty"))),
        Some(text) if text.len() > max => Err(bad(format!(
            "{field} filter is {} bytes long; no stored {field} is longer than {max}",
            text.len()
        ))),
        _ => Ok(()),
    }
}

pub(super) fn check_window(since: Option<i64>, until: Option<i64>) -> Result<(), ErrorReply> {
    for (name, time) in [("since", since), ("until", until)] {
        if time.is_some_and(|time| time < 0) {
            return Err(bad(format!(
                "{name} is before 1970-01-01T00:00:00Z; no entry is that old"
            )));
        }
    }
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(bad("since must be before until".into()));
    }
    Ok(())
}

pub(super) fn check_limit(limit: u32) -> Result<(), ErrorReply> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(bad(format!(
            "limit is {limit}; it must be between 1 and {MAX_PAGE}: page with the cursor"
        )));
    }
    Ok(())
}

pub(super) fn check_filter(filter: &Filter) -> Result<(), ErrorReply> {
    check_text("component", filter.component.as_deref(), MAX_COMPONENT_LEN)?;
    check_text("event", filter.event.as_deref(), MAX_EVENT_LEN)?;
    check_text("trace id", filter.trace_id.as_deref(), MAX_TRACE_ID_LEN)?;
    check_window(filter.since, filter.until)?;
    if let (Some(after), Some(to)) = (filter.after_seq, filter.to_seq)
        && after >= to
    {
        return Err(bad(format!(
            "the range after seq {after} up to seq {to} is empty"
        )));
    }
    Ok(())
}

/// Checks where a backup goes: an absolute path to a file that does not exist yet, in a
/// folder that does and that the daemon may write. `VACUUM INTO` would refuse these too, but
/// this says why.
pub fn check_backup_path(path: &str) -> Result<(), ErrorReply> {
    let target = std::path::Path::new(path);
    if path.is_empty() || path.contains('\0') || !target.is_absolute() {
        return Err(bad(format!(
            "backup path {path:?} must be absolute: the daemon's working folder is not yours"
        )));
    }
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(bad(format!(
            "{path} exists; a backup never overwrites a file: pick a new name"
        )));
    }
    match target.parent().map(std::fs::metadata) {
        Some(Ok(metadata)) if metadata.is_dir() => {}
        _ => {
            return Err(bad(format!(
                "the folder of {path} does not exist, or the daemon cannot see it"
            )));
        }
    }
    // The daemon writes the copy as its own user, and a sandbox may leave it only its state
    // folder: find out now, with a clear reason, rather than from SQLite's "unable to open".
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(target);
            Ok(())
        }
        Err(error) => Err(bad(format!(
            "the daemon cannot create {path}: {error} (it writes as its own user; under the \
             systemd unit only /var/lib/witness/ is writable)"
        ))),
    }
}

/// Checks a request for a model's price: a model name, and a provider if any, of the
/// lengths entries allow.
pub fn check_price(query: &witness_protocol::query::PriceQuery) -> Result<(), ErrorReply> {
    use witness_protocol::limits::{MAX_MODEL_LEN, MAX_PRICED_BY_LEN};
    check_text("model", Some(&query.model), MAX_MODEL_LEN)?;
    check_text("provider", query.provider.as_deref(), MAX_PRICED_BY_LEN)
}
