//! Sealing a range into an archive segment: written beside the archive folder's other
//! segments under a temporary name, fsynced, read back and verified, then renamed into place
//! with the folder fsynced; and at start, the temporary files of a sealing cut short removed.

use super::*;

impl Worker {
    /// Seals the entries `first..=last` into a segment file (or, with no archive folder,
    /// describes the range to drop).
    pub(super) fn seal(&mut self, first: u64, last: u64) -> Result<Segment, RetainError> {
        let archive_dir = self.config.archive_dir.clone();
        let reader = self.reader()?;
        let (start, previous) = schema::log_start(reader)?;
        if start != first {
            return Err(RetainError::Refused(PruneRefused::NotAtStart {
                start,
                first,
            }));
        }
        let last_hash: Vec<u8> = reader
            .query_row(
                "SELECT hash FROM entries WHERE seq = ?1",
                [last as i64],
                |row| row.get(0),
            )
            .optional()?
            .ok_or(RetainError::Unexpected(
                "an entry to seal is not in the live log",
                last,
            ))?;
        let last_hash = <[u8; 32]>::try_from(last_hash.as_slice()).map_err(|_| {
            RetainError::Unexpected(
                "an entry to seal has a hash that is not 32 bytes long",
                last,
            )
        })?;
        let sealed = crate::format::row::now_ns();
        let Some(dir) = archive_dir else {
            return Ok(Segment {
                first_seq: first,
                last_seq: last,
                previous,
                last_hash,
                file: None,
                sha256: None,
                bytes: None,
                sealed,
            });
        };
        let started = Instant::now();
        let temporary = archive::temporary_path(&dir, first, last);
        let name = archive::file_name(first, last);
        archive::write(reader, &temporary, first, last, previous, last_hash, sealed)?;
        crate::faults::crash_at("archive-written");
        archive::sync_file(&temporary)?;
        crate::faults::crash_at("archive-synced");
        check_sealed(&temporary, first, last, previous, last_hash)?;
        let (sha256, bytes) =
            archive::sha256_file(&temporary).map_err(|source| RetainError::ReadBack {
                path: temporary.clone(),
                source,
            })?;
        archive::seal(&temporary, &dir.join(&name))?;
        crate::faults::crash_at("archive-renamed");
        tracing::info!(first, last, file = %name, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "sealed an archive segment");
        Ok(Segment {
            first_seq: first,
            last_seq: last,
            previous,
            last_hash,
            file: Some(name),
            sha256: Some(sha256),
            bytes: Some(bytes),
            sealed,
        })
    }
}

/// Reads a segment back from disk and holds it to what the live log says it must be.
fn check_sealed(
    path: &Path,
    first: u64,
    last: u64,
    previous: [u8; 32],
    last_hash: [u8; 32],
) -> Result<(), RetainError> {
    let unsealed = |reason: String| RetainError::Unsealed {
        path: path.to_owned(),
        reason,
    };
    let connection = archive::open(path).map_err(|error| unsealed(error.to_string()))?;
    let check = verify::verify_segment(&connection)
        .map_err(|error| unsealed(error.to_string()))?
        .into_result()
        .map_err(unsealed)?;
    if (
        check.first_seq,
        check.last_seq,
        check.previous,
        check.last_hash,
    ) != (first, last, previous, last_hash)
    {
        return Err(unsealed("it does not hold the range asked".into()));
    }
    Ok(())
}

/// Creates the archive folder if need be and removes the temporary files of a sealing that a
/// crash cut short.
pub(super) fn clean_archive_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if archive::is_temporary(&item.file_name().to_string_lossy()) {
            tracing::warn!(file = %item.path().display(), "removing a segment left half written");
            std::fs::remove_file(item.path())?;
        }
    }
    Ok(())
}
