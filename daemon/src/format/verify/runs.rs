//! What `producer_runs` must hold, recomputed from the entries' producer numbers, and the
//! check of the stored table against it.

use super::*;

/// The check of `producer_runs` during a whole-log walk: each producer's row either continues
/// the run open at the row before (same producer, next number) or starts a run that the
/// table holds under its `seq`, linked to the producer's run before.
#[derive(Default)]
pub(super) struct Runs {
    /// The log's first stored seq.
    start: i64,
    /// The run being walked through: its start, producer, next number and entries left.
    open: Option<(i64, i64, i64, i64)>,
    /// First `seq` of each producer's last run so far.
    pub(super) last_run: HashMap<i64, i64>,
    /// First `seq` of every run found, in order, to find table rows that start no run.
    starts: Vec<i64>,
    /// The first disagreement.
    problem: Option<String>,
}

impl Runs {
    /// Starts the walk at `start`, the log's first stored seq: a run that began before it,
    /// in the pruned entries, and goes on past it is open.
    pub(super) fn begin(&mut self, connection: &Connection, start: u64) -> rusqlite::Result<()> {
        self.start = start as i64;
        if start == 1 {
            return Ok(());
        }
        let straddling: Option<(i64, i64, i64, i64)> = connection
            .query_row(
                "SELECT first_seq, producer_id, first_number, entries FROM producer_runs \
                 WHERE first_seq < ?1 ORDER BY first_seq DESC LIMIT 1",
                [start as i64],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        if let Some((first_seq, producer, first_number, entries)) = straddling
            && first_seq + entries > start as i64
        {
            let done = start as i64 - first_seq;
            self.open = Some((first_seq, producer, first_number + done, entries - done));
            self.last_run.insert(producer, first_seq);
            self.starts.push(first_seq);
        }
        Ok(())
    }

    pub(super) fn add(
        &mut self,
        find_run: &mut rusqlite::Statement<'_>,
        seq: i64,
        values: &Values<'_>,
    ) -> rusqlite::Result<()> {
        if self.problem.is_some() {
            return Ok(());
        }
        let row = values[column::PRODUCER_ID]
            .integer()
            .zip(values[column::PRODUCER_NUMBER].integer());
        if let Some((start, producer, next, left)) = self.open
            && left > 0
        {
            if row == Some((producer, next)) {
                self.open = Some((start, producer, next + 1, left - 1));
            } else {
                self.problem = Some(format!(
                    "the run at seq {start} says entry {seq} is number {next} of producer \
                     {producer}, but it is not"
                ));
            }
            return Ok(());
        }
        let Some((producer, number)) = row else {
            return Ok(());
        };
        let stored: Option<(i64, i64, i64, Option<i64>)> = find_run
            .query_row([seq], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        let previous = self.last_run.get(&producer).copied();
        match stored {
            Some((p, n, entries, link)) if (p, n) == (producer, number) && entries >= 1 => {
                // The first kept run of a producer may link to a pruned one.
                let pruned = previous.is_none() && link.is_some_and(|link| link < self.start);
                if link != previous && !pruned {
                    self.problem = Some(format!(
                        "the run at seq {seq} links to a run at seq {}, but producer \
                         {producer}'s run before it starts at seq {}",
                        show_seq(link),
                        show_seq(previous)
                    ));
                }
                self.open = Some((seq, producer, number + 1, entries - 1));
                self.last_run.insert(producer, seq);
                self.starts.push(seq);
            }
            _ => {
                self.problem = Some(format!(
                    "entry {seq} (number {number} of producer {producer}) starts a run, but \
                     no row of the table says so"
                ));
            }
        }
        Ok(())
    }

    /// The first disagreement, once every entry has been walked.
    pub(super) fn finish(&self, connection: &Connection) -> Result<Verdict<()>, VerifyError> {
        if let Some(problem) = &self.problem {
            return Ok(Verdict::Fails(problem.clone()));
        }
        if let Some((start, _, _, left)) = self.open
            && left > 0
        {
            return Ok(Verdict::Fails(format!(
                "the run at seq {start} counts {left} entries more than the log holds"
            )));
        }
        let mut statement = connection.prepare("SELECT first_seq FROM producer_runs ORDER BY 1")?;
        let mut rows = statement.query([])?;
        let mut starts = self.starts.iter();
        while let Some(row) = rows.next()? {
            let first_seq: i64 = row.get(0)?;
            if starts.next() != Some(&first_seq) {
                return Ok(Verdict::Fails(format!(
                    "the table has a run at seq {first_seq}, where no run of the entries starts"
                )));
            }
        }
        Ok(Verdict::Holds(()))
    }
}
