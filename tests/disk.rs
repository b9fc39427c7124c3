//! A disk that fills up under the real `witnessd`, on a small file system of its own (tmpfs):
//! below `min_free_bytes` new entries are refused with the reason, and `stats` and the
//! metrics say so; with no reserve the disk fills to the last byte and every append fails
//! cleanly, even with a `kill -9` then; in every case nothing acknowledged is lost and the
//! daemon accepts entries again by itself once space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use witness_client::{Client, Entry, Error};

use crate::harness::{Witnessd, read_db, verify_file, wait_until};

/// A tmpfs mounted on a temporary folder, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A file system of `mib` MiB, or why one cannot be had here.
    fn mount(mib: u32) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a ballast file until at most `leave` bytes are free.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("ballast");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0u8; 64 << 10];
        while free(self.path()) > leave + chunk.len() as u64 {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn free(path: &Path) -> u64 {
    witness_daemon::store::dbfile::free_bytes(&path.join("x")).unwrap()
}

/// Appends batches of 2 KiB entries until one is refused; returns the acknowledged seqs with
/// their markers, and the refusal.
fn write_until_refused(socket: &Path, round: &str) -> (Vec<(u64, String)>, Error) {
    let mut client = Client::connect(socket).unwrap();
    let mut acknowledged = Vec::new();
    let filler = "x".repeat(2000);
    for batch in 0..100_000 {
        let entries: Vec<Entry> = (0..20)
            .map(|i| {
                Entry::new("fill", "disk")
                    .payload(json!({"marker": format!("{round}-{batch}-{i}"), "filler": filler}))
            })
            .collect();
        match client.log_batch(entries) {
            Ok(receipts) => acknowledged.extend(
                receipts
                    .iter()
                    .enumerate()
                    .map(|(i, receipt)| (receipt.seq, format!("{round}-{batch}-{i}"))),
            ),
            Err(error) => return (acknowledged, error),
        }
    }
    panic!("the disk never filled");
}

/// Every acknowledged entry is in the database with its marker.
fn assert_kept(db: &Path, acknowledged: &[(u64, String)]) {
    let connection = read_db(db);
    let mut statement = connection
        .prepare("SELECT json_extract(payload, '$.marker') FROM entries WHERE seq = ?1")
        .unwrap();
    for (seq, marker) in acknowledged {
        let stored: String = statement
            .query_row([*seq as i64], |row| row.get(0))
            .unwrap();
        assert_eq!(&stored, marker, "entry {seq}");
    }
}

#[test]
fn a_low_disk_refuses_with_the_reason_a_full_one_fails_cleanly_and_both_resume() {
    let disk = match SmallDisk::mount(24) {
        Ok(disk) => disk,
        Err(reason) => {
            // A machine that may not mount still checks the refusal, against a reserve
            // larger than the real free space.
            eprintln!(
                "cannot mount a small file system here ({reason}); checking the reserve alone"
            );
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("witnessd.toml");
            std::fs::write(&config, "min_free_bytes = 1125899906842624\n").unwrap();
            let daemon = Witnessd::start(dir.path(), &["--config", config.to_str().unwrap()]);
            let (acknowledged, error) = write_until_refused(&daemon.socket, "r");
            assert!(acknowledged.is_empty());
            assert!(error.to_string().contains("min_free_bytes"), "{error}");
            return;
        }
    };
    let config = disk.path().join("witnessd.toml");
    let write_config = |min_free: u64| {
        std::fs::write(
            &config,
            format!(
                "min_free_bytes = {min_free}\ncheckpoint_pages = 64\ncheckpoint_interval_ms = 50\n"
            ),
        )
        .unwrap();
    };

    // Below the reserve: refused with the reason, said in stats and metrics.
    let reserve = 4 << 20;
    write_config(reserve);
    let ballast = disk.fill(10 << 20);
    let daemon = Witnessd::start(disk.path(), &["--config", config.to_str().unwrap()]);
    let (mut acknowledged, error) = write_until_refused(&daemon.socket, "low");
    assert!(!acknowledged.is_empty());
    let message = error.to_string();
    assert!(
        message.contains("min_free_bytes") && message.contains("nothing of this append"),
        "{message}"
    );
    let mut client = Client::connect(&daemon.socket).unwrap();
    let stats = client.stats().unwrap();
    assert!(stats.disk_low.is_some(), "{stats:?}");
    assert!(stats.disk_free_bytes < reserve, "{stats:?}");
    let metrics = witness_daemon::observe::prometheus::prometheus(&stats);
    assert!(metrics.contains("witness_disk_low 1"), "{metrics}");
    // Reads go on while writes are refused.
    client.ping().unwrap();
    let verdict = client.verify(Default::default()).unwrap();
    assert!(
        matches!(verdict, witness_protocol::VerifyReport::Intact { count, .. } if count == acknowledged.len() as u64),
        "{verdict:?}"
    );

    // Space returns: entries are taken again without a restart.
    std::fs::remove_file(&ballast).unwrap();
    wait_until(
        "the daemon accepts entries again",
        Duration::from_secs(10),
        || client.log(Entry::new("back", "disk")).is_ok(),
    );
    assert!(client.stats().unwrap().disk_low.is_none());
    drop(client);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());

    // No reserve: the disk fills to the last byte; every append fails cleanly, none is lost.
    write_config(0);
    let daemon = Witnessd::start(disk.path(), &["--config", config.to_str().unwrap()]);
    let ballast = disk.fill(3 << 20);
    let (more, error) = write_until_refused(&daemon.socket, "full");
    acknowledged.extend(more);
    let message = error.to_string();
    assert!(
        message.contains("full") || message.contains("space"),
        "{message}"
    );
    let mut client = Client::connect(&daemon.socket).unwrap();
    // A smaller entry may still fit where the batch did not; whatever is acknowledged counts.
    for i in 0..5 {
        let marker = format!("after-full-{i}");
        if let Ok(receipt) =
            client.log(Entry::new("small", "disk").payload(json!({"marker": marker})))
        {
            acknowledged.push((receipt.seq, marker));
        }
    }
    client.ping().unwrap();
    std::fs::remove_file(&ballast).unwrap();
    wait_until(
        "the daemon accepts entries after a full disk",
        Duration::from_secs(10),
        || client.log(Entry::new("back again", "disk")).is_ok(),
    );
    drop(client);
    daemon.signal(libc::SIGTERM);
    let described = daemon.describe();
    assert!(daemon.wait().success(), "{described}");

    // Killed while the disk is full: what was acknowledged is there after a restart.
    let daemon = Witnessd::start(disk.path(), &["--config", config.to_str().unwrap()]);
    let ballast = disk.fill(2 << 20);
    let (more, _) = write_until_refused(&daemon.socket, "killed");
    acknowledged.extend(more);
    daemon.kill9();
    std::fs::remove_file(&ballast).unwrap();
    let daemon = Witnessd::start(disk.path(), &["--config", config.to_str().unwrap()]);
    Client::connect(&daemon.socket)
        .unwrap()
        .log(Entry::new("after the kill", "disk"))
        .unwrap();
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success());
    let db = disk.path().join("witness.db");
    assert_kept(&db, &acknowledged);
    let stored: i64 = read_db(&db)
        .query_row("SELECT count(*) FROM entries", [], |row| row.get(0))
        .unwrap();
    assert_eq!(verify_file(&db), stored as u64);
}
