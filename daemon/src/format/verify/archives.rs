//! The archives with the live log: each segment's file, its place in the chain, and the
//! signed checkpoints that vouch for them; and a log checked against a checkpoint.

use super::*;

/// Holds a database to a signed checkpoint: the note must verify with `key`, and the first
/// `size` entries it signed must be, recomputed from the stored rows (not from the tiles),
/// the tree whose root it signed. With the chain intact over the whole log, this proves the
/// log is the one signed, grown since by appends only. It holds with the checkpoint's size.
/// For a pruned log, the tree of the entries before its start is `before` (rebuilt from the
/// archives), else the one the tree hashes it kept for them give.
pub fn verify_checkpoint(
    connection: &Connection,
    note: &str,
    key: &VerifierKey,
    before: Option<Tree>,
) -> Result<Verdict<u64>, VerifyError> {
    let checkpoint = match Checkpoint::verified(note, key) {
        Ok(checkpoint) => checkpoint,
        Err(error) => {
            return Ok(Verdict::Fails(format!(
                "the checkpoint does not verify with the key: {error}"
            )));
        }
    };
    let _snapshot = schema::snapshot(connection)?;
    let (start, _) = schema::log_start(connection)?;
    let mut tree = match before.map_or_else(|| Tree::load_start(connection, start - 1), Ok) {
        Ok(tree) => tree,
        Err(reason) => {
            return Ok(Verdict::Fails(format!(
                "the tree hashes kept for pruned entries: {reason}"
            )));
        }
    };
    if checkpoint.size < tree.size() {
        return Ok(Verdict::Fails(format!(
            "the checkpoint signs {} entries, all pruned from the log (which starts at seq \
             {start}): check it with the archives",
            checkpoint.size
        )));
    }
    let mut statement = connection.prepare(&format!(
        "SELECT {} FROM entries WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
        row::select_columns()
    ))?;
    let mut rows = statement.query([tree.size() as i64 + 1, checkpoint.size as i64])?;
    let mut scratch = Vec::with_capacity(1024);
    while let Some(stored) = rows.next()? {
        let seq: i64 = stored.get(column::SEQ)?;
        if seq as u64 != tree.size() + 1 {
            break;
        }
        let values = match row::read_values(stored) {
            Ok(values) => values,
            Err(reason) => return Ok(Verdict::Fails(format!("entry {seq}: {reason}"))),
        };
        tree.push(leaf_hash(&values, &mut scratch));
        // Only the leaf hashes are kept, not the tiles a database would store.
        let _ = tree.take_full();
    }
    if tree.size() < checkpoint.size {
        return Ok(Verdict::Fails(format!(
            "the checkpoint signs {} entries, but entries {} to {} are missing",
            checkpoint.size,
            tree.size() + 1,
            checkpoint.size
        )));
    }
    if tree.root() != checkpoint.root {
        return Ok(Verdict::Fails(format!(
            "the first {} entries are not those the checkpoint signed: their tree has another \
             root (the log was rewritten, or this is another log)",
            checkpoint.size
        )));
    }
    Ok(Verdict::Holds(checkpoint.size))
}

/// What became of one pruned range, as [`verify_archives`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentState {
    /// Its file is there, unchanged, and verifies.
    Intact,
    /// It was dropped without an archive, as the log records.
    Dropped,
    /// Its file is not in the folder.
    Missing,
    /// Its file is there but is not what was sealed, or does not verify: why.
    Altered(String),
}

/// The archives of a pruned log checked against it: each range the log records, what became
/// of it, and every problem, in a sentence each.
#[derive(Debug, Clone)]
pub struct ArchivesReport {
    /// Each pruned range and its state, oldest first.
    pub segments: Vec<(Segment, SegmentState)>,
    /// Segment files in the folder that the log does not record (a prune interrupted
    /// between sealing and recording leaves one; the next prune seals it again).
    pub unrecorded: Vec<String>,
    /// What is wrong; empty when the archives and the live log are one unbroken log.
    pub problems: Vec<String>,
    /// The tree of every entry before the live log's start, rebuilt from the archives' leaves,
    /// when every pruned range was archived and verifies.
    pub tree: Option<Tree>,
}

/// Checks the archive segments in `dir` against the live log at `live`: every range the log
/// pruned must be there as sealed (its SHA-256), verify on its own, follow the range before it
/// in the chain, and hash to the tree hashes the live log kept for it; the last must end where
/// the live log starts. The tree rebuilt from them lets `verify_from` check the whole log.
pub fn verify_archives(live: &Connection, dir: &Path) -> Result<ArchivesReport, VerifyError> {
    let _snapshot = schema::snapshot(live)?;
    let segments = Segment::all(live)?;
    let (start, start_hash) = schema::log_start(live)?;
    let mut report = ArchivesReport {
        segments: Vec::new(),
        unrecorded: Vec::new(),
        problems: Vec::new(),
        tree: Some(Tree::default()),
    };
    let recorded: std::collections::HashSet<&str> = segments
        .iter()
        .filter_map(|segment| segment.file.as_deref())
        .collect();
    if let Ok(items) = std::fs::read_dir(dir) {
        let mut names: Vec<String> = items
            .filter_map(Result::ok)
            .map(|item| item.file_name().to_string_lossy().into_owned())
            .filter(|name| archive::parse_name(name).is_some() && !recorded.contains(name.as_str()))
            .collect();
        names.sort();
        report.unrecorded = names;
    } else if !segments.is_empty() {
        report.problems.push(format!(
            "the archive folder {} cannot be read",
            dir.display()
        ));
    }
    let mut next = (1u64, GENESIS);
    // The chain hash before the live log's start, as the last segment has it, when a prune
    // is under way and the live log still holds the end of the last range.
    let mut overlap_anchor = None;
    let mut stored = Tiles::new(live);
    for segment in segments {
        let range = format!("entries {} to {}", segment.first_seq, segment.last_seq);
        if (segment.first_seq, segment.previous) != next {
            report.problems.push(format!(
                "the log records {range} as pruned, but they do not follow the range before \
                 (expected seq {} after chain hash {})",
                next.0,
                hex::encode(next.1)
            ));
            report.tree = None;
        }
        next = (segment.last_seq + 1, segment.last_hash);
        let state = match &segment.file {
            None => {
                report.tree = None;
                SegmentState::Dropped
            }
            Some(name) => {
                let (state, anchor) =
                    check_archived(&segment, &dir.join(name), &mut report, &mut stored, start)?;
                overlap_anchor = anchor;
                state
            }
        };
        if state != SegmentState::Intact {
            let name = segment.file.as_deref().unwrap_or("");
            match &state {
                SegmentState::Missing => report.problems.push(format!(
                    "MISSING: {name} ({range}) is not in {}",
                    dir.display()
                )),
                SegmentState::Altered(reason) => {
                    report
                        .problems
                        .push(format!("ALTERED: {name} ({range}): {reason}"));
                }
                _ => {}
            }
        }
        report.segments.push((segment, state));
    }
    if !report.segments.is_empty() {
        let last = report.segments.last().map(|(segment, _)| segment);
        let under_way = last.is_some_and(|last| (last.first_seq..=last.last_seq).contains(&start));
        if start < next.0 && under_way && overlap_anchor == Some(start_hash) {
            // The writer deletes a sealed range in steps: between two of them the live log
            // still holds the range's end, which the segment holds too, and the two agree.
        } else if start < next.0 {
            report.problems.push(format!(
                "a prune is unfinished: the live log starts at seq {start}, inside the last \
                 pruned range; start the daemon to finish it"
            ));
            report.tree = None;
        } else if (start, start_hash) != next {
            report.problems.push(format!(
                "the live log starts at seq {start}, which does not follow the last pruned range \
                 (it ends at seq {})",
                next.0 - 1
            ));
            report.tree = None;
        }
    }
    Ok(report)
}

/// Checks one archived range's file, adding its leaves to the rebuilt tree and comparing the
/// tiles above them with those the live log kept.
fn check_archived(
    segment: &Segment,
    path: &Path,
    report: &mut ArchivesReport,
    stored: &mut Tiles<'_>,
    live_start: u64,
) -> Result<(SegmentState, Option<[u8; 32]>), VerifyError> {
    if !path.exists() {
        report.tree = None;
        return Ok((SegmentState::Missing, None));
    }
    let altered = |report: &mut ArchivesReport, reason: String| {
        report.tree = None;
        Ok((SegmentState::Altered(reason), None))
    };
    match archive::sha256_file(path) {
        Ok((sha256, _)) if Some(sha256) == segment.sha256 => {}
        Ok(_) => return altered(report, "its SHA-256 is not the one sealed".into()),
        Err(error) => return altered(report, format!("it cannot be read: {error}")),
    }
    let connection = match archive::open(path) {
        Ok(connection) => connection,
        Err(error) => return altered(report, error.to_string()),
    };
    let check = match verify_segment(&connection)? {
        Verdict::Holds(check) => check,
        Verdict::Fails(reason) => return altered(report, reason),
    };
    if (
        check.first_seq,
        check.last_seq,
        check.previous,
        check.last_hash,
    ) != (
        segment.first_seq,
        segment.last_seq,
        segment.previous,
        segment.last_hash,
    ) {
        return altered(
            report,
            "it holds another range or other chain hashes than the log recorded".into(),
        );
    }
    // While a prune is under way the live log still holds this range's end: the tree
    // before the live log's start takes only the entries before it.
    let kept = live_start
        .saturating_sub(check.first_seq)
        .min(check.leaves.len() as u64) as usize;
    if let Some(tree) = &mut report.tree {
        for leaf in &check.leaves[..kept] {
            tree.push(*leaf);
        }
        for (level, idx, hashes) in tree.take_full() {
            if level > 0 && stored.tile(level, idx)? != hashes.as_slice() {
                report.problems.push(format!(
                    "tile {level}/{idx}, kept by the live log, differs from the tree of the \
                     archived entries"
                ));
                report.tree = None;
                break;
            }
        }
    }
    let anchor = if live_start <= check.first_seq {
        Some(check.previous)
    } else if live_start <= check.last_seq {
        connection
            .query_row(
                "SELECT hash FROM entries WHERE seq = ?1",
                [live_start as i64 - 1],
                |row| row.get::<_, Vec<u8>>(0),
            )
            .optional()?
            .and_then(|hash| <[u8; 32]>::try_from(hash.as_slice()).ok())
    } else {
        None
    };
    Ok((SegmentState::Intact, anchor))
}
