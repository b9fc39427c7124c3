//! The spool file: appends of `send` that a client could not deliver before it closed, kept in
//! a private file of the user's runtime folder until a later client delivers them.
//!
//! The format and the folder are the Python client's (docs/PROTOCOL.md, "The spool file"), so
//! either client delivers what the other kept. Each batch keeps the producer numbers it was
//! (or would have been) sent with, so a delivery that repeats an append the daemon had
//! committed before the connection broke is answered with the old receipts: every entry is
//! recorded once, however often delivery is tried. A file is claimed by renaming it before
//! delivery, so two clients never deliver it at once, and a claim whose process has died is
//! taken over, so a client killed mid-delivery does not strand a file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use witness_protocol::frame;
use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{Entry, ProducerRef};

/// The first bytes of every spool file.
pub const MAGIC: &[u8] = b"WITSPOOL1\n";

/// The most a spool file holds; entries that would not fit are not kept.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of the SHA-256 that ends a file.
const CHECK_LEN: usize = 32;

/// Appends kept for a later delivery: the producer numbers they carry, and their entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The producer id and the number of the first entry, as first sent.
    pub producer: ProducerRef,
    /// The entries, numbered from `producer.first_number` on.
    pub entries: Vec<Entry>,
}

/// Why entries could not be kept, or a spool file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolFileError {
    /// No folder of this user's alone could be had for the file.
    #[error("no private spool folder: {0}")]
    NoFolder(String),
    /// The entries would make a file larger than [`MAX_BYTES`].
    #[error("{bytes} bytes is more than a spool file may hold ({MAX_BYTES})")]
    TooLarge {
        /// The size the file would have had.
        bytes: usize,
    },
    /// The file does not start as a spool file does.
    #[error("not a witness spool file")]
    NotASpoolFile,
    /// The checksum does not match what precedes it.
    #[error("its checksum does not match: cut short or changed")]
    Checksum,
    /// The checksum matches but the batches inside do not add up.
    #[error("{0}")]
    Malformed(String),
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The folder where files for the daemon at `socket` are kept, if it exists and is private.
pub fn folder(socket: &Path) -> Option<PathBuf> {
    locate(socket, false).ok()
}

/// `$XDG_RUNTIME_DIR` when it names a folder, else `/run/user/UID` when it exists, else
/// `witness-spool-UID` in the temporary folder; then `witness/spool-HASH`, HASH being the
/// first 16 hex digits of the SHA-256 of the socket's absolute path. Every folder on the
/// way must be the user's and closed to writes by others (the last one to reads too), or
/// someone else could swap or read what is kept.
fn locate(socket: &Path, create: bool) -> Result<PathBuf, SpoolFileError> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|runtime| runtime.is_absolute() && runtime.is_dir())
        .or_else(|| Some(PathBuf::from(format!("/run/user/{uid}"))).filter(|p| p.is_dir()));
    let runtime = match runtime {
        Some(runtime) => runtime,
        None => {
            let tmp = std::env::temp_dir().join(format!("witness-spool-{uid}"));
            if create {
                make_private(&tmp)?;
            }
            tmp
        }
    };
    let digest = Sha256::digest(normalized(socket).as_os_str().as_encoded_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let parent = runtime.join("witness");
    let path = parent.join(format!("spool-{name}"));
    let closed_to_others = |folder: &Path, mask: u32| -> Result<(), SpoolFileError> {
        let meta = fs::symlink_metadata(folder)?;
        if meta.file_type().is_symlink() || !meta.is_dir() || meta.uid() != uid {
            return Err(SpoolFileError::NoFolder(format!(
                "{} is not a folder of this user's",
                folder.display()
            )));
        }
        if meta.mode() & mask != 0 {
            return Err(SpoolFileError::NoFolder(format!(
                "others may change what is in {}",
                folder.display()
            )));
        }
        Ok(())
    };
    closed_to_others(&runtime, 0o022)?;
    if create {
        make_private(&parent)?;
        make_private(&path)?;
    }
    closed_to_others(&parent, 0o022)?;
    closed_to_others(&path, 0o077)?;
    Ok(path)
}

fn make_private(folder: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(folder) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// The socket's absolute path with `.`, `..` and repeated slashes resolved as words, not by
/// following links: what Python's `os.path.abspath` gives, so both clients find one folder.
fn normalized(socket: &Path) -> PathBuf {
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(socket))
        .unwrap_or_else(|_| socket.to_path_buf());
    let mut out = PathBuf::from("/");
    for part in absolute.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The bytes of a spool file holding `batches`.
pub fn encode(batches: &[Batch]) -> Result<Vec<u8>, SpoolFileError> {
    let mut out = MAGIC.to_vec();
    let mut entry = Vec::new();
    for batch in batches {
        out.extend_from_slice(&batch.producer.producer_id.to_le_bytes());
        out.extend_from_slice(&batch.producer.first_number.to_le_bytes());
        out.extend_from_slice(&(batch.entries.len() as u32).to_le_bytes());
        for one in &batch.entries {
            entry.clear();
            frame::encode(one, MAX_FRAME_LEN, &mut entry)
                .map_err(|error| SpoolFileError::Malformed(error.to_string()))?;
            // The frame's own length prefix is the entry's length field.
            out.extend_from_slice(&entry);
        }
        if out.len() + CHECK_LEN > MAX_BYTES {
            return Err(SpoolFileError::TooLarge {
                bytes: out.len() + CHECK_LEN,
            });
        }
    }
    let check = Sha256::digest(&out);
    out.extend_from_slice(&check);
    Ok(out)
}

/// The batches of a spool file.
pub fn decode(data: &[u8]) -> Result<Vec<Batch>, SpoolFileError> {
    if data.len() < MAGIC.len() + CHECK_LEN || !data.starts_with(MAGIC) {
        return Err(SpoolFileError::NotASpoolFile);
    }
    let (body, check) = data.split_at(data.len() - CHECK_LEN);
    if Sha256::digest(body).as_slice() != check {
        return Err(SpoolFileError::Checksum);
    }
    let mut cursor = Cursor {
        body,
        at: MAGIC.len(),
    };
    let mut batches = Vec::new();
    while cursor.at < body.len() {
        let producer_id = cursor.u64("a batch's header")?;
        let first_number = cursor.u64("a batch's header")?;
        let count = cursor.u32("a batch's header")?;
        let mut entries = Vec::new();
        for index in 0..count {
            let len = cursor.u32("an entry's length")?;
            let entry: Entry =
                frame::decode_body(cursor.take(len as usize, "an entry")?).map_err(|error| {
                    SpoolFileError::Malformed(format!(
                        "entry {index} of producer {producer_id:x}'s batch from number \
                         {first_number}: {error}"
                    ))
                })?;
            entries.push(entry);
        }
        batches.push(Batch {
            producer: ProducerRef {
                producer_id,
                first_number,
            },
            entries,
        });
    }
    Ok(batches)
}

/// Reads a file's body in order, refusing a field that runs past its end.
struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SpoolFileError> {
        let bytes = self
            .body
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| SpoolFileError::Malformed(format!("{what} runs past the end")))?;
        self.at += n;
        Ok(bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, SpoolFileError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("four bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, SpoolFileError> {
        let bytes = self.take(8, what)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
    }
}

/// Keeps `batches` in a new spool file for the daemon at `socket`, durably: written under a
/// temporary name, synced, renamed, and the folder synced. Returns the file's path.
pub fn write(socket: &Path, batches: &[Batch]) -> Result<PathBuf, SpoolFileError> {
    let data = encode(batches)?;
    let folder = locate(socket, true)?;
    let producer = batches
        .first()
        .map_or(0, |batch| batch.producer.producer_id);
    let path = folder.join(format!("{}-{producer:x}.spool", std::process::id()));
    let partial = path.with_extension("spool.partial");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(&data)?;
    file.sync_all()?;
    fs::rename(&partial, &path)?;
    fs::File::open(&folder)?.sync_all()?;
    Ok(path)
}

/// Takes the spool files waiting for the daemon at `socket`, oldest name first: each is
/// renamed to `NAME.PID.claimed`, PID being this process's, so no other client delivers it
/// too. A file claimed by a process that no longer exists is taken over.
pub fn claim(socket: &Path) -> Vec<PathBuf> {
    let Some(folder) = folder(socket) else {
        return Vec::new();
    };
    let Ok(listing) = fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut names: Vec<String> = listing
        .filter_map(|item| item.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".spool") || abandoned(name))
        .collect();
    names.sort();
    let pid = std::process::id();
    names
        .into_iter()
        .filter_map(|name| {
            let original = name
                .strip_suffix(".claimed")
                .map_or(name.as_str(), |claim| {
                    claim
                        .rsplit_once('.')
                        .map_or(claim, |(original, _)| original)
                });
            let mine = folder.join(format!("{original}.{pid}.claimed"));
            // Another client may take it first: then it is theirs.
            fs::rename(folder.join(&name), &mine).ok().map(|()| mine)
        })
        .collect()
}

/// Whether files wait in the spool for the daemon at `socket`.
pub fn waiting(socket: &Path) -> bool {
    folder(socket)
        .and_then(|folder| fs::read_dir(folder).ok())
        .is_some_and(|mut listing| {
            listing.any(|item| {
                item.ok()
                    .and_then(|item| item.file_name().into_string().ok())
                    .is_some_and(|name| name.ends_with(".spool") || abandoned(&name))
            })
        })
}

/// Whether `name` is a claim by a process that is gone.
fn abandoned(name: &str) -> bool {
    let Some(claim) = name.strip_suffix(".claimed") else {
        return false;
    };
    let Some(pid) = claim
        .rsplit_once('.')
        .and_then(|(_, pid)| pid.parse::<libc::pid_t>().ok())
    else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

/// Returns a claimed file for a later delivery.
pub fn give_back(claimed: &Path) {
    if let Some(name) = claimed.file_name().and_then(|name| name.to_str())
        && let Some(original) = name
            .strip_suffix(".claimed")
            .and_then(|claim| claim.rsplit_once('.'))
            .map(|(original, _)| original)
    {
        let _ = fs::rename(claimed, claimed.with_file_name(original));
    }
}

/// Sets a file that cannot be delivered aside, as `NAME.bad`, for a person to look at.
pub fn set_aside(claimed: &Path) -> PathBuf {
    let mut bad = claimed.as_os_str().to_owned();
    bad.push(".bad");
    let bad = PathBuf::from(bad);
    let _ = fs::rename(claimed, &bad);
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: u64, first_number: u64, n: usize) -> Batch {
        Batch {
            producer: ProducerRef {
                producer_id,
                first_number,
            },
            entries: (0..n)
                .map(|i| Entry::new("e", "c").payload(serde_json::json!({ "i": i })))
                .collect(),
        }
    }

    #[test]
    fn a_file_reads_back_as_written_and_its_layout_is_the_documented_one() {
        let batches = vec![batch(7, 1, 2), batch(7, 3, 1)];
        let data = encode(&batches).unwrap();
        assert_eq!(decode(&data).unwrap(), batches);
        assert!(data.starts_with(MAGIC));
        let header = &data[MAGIC.len()..MAGIC.len() + 20];
        assert_eq!(&header[..8], &7u64.to_le_bytes());
        assert_eq!(&header[8..16], &1u64.to_le_bytes());
        assert_eq!(&header[16..20], &2u32.to_le_bytes());
        let (body, check) = data.split_at(data.len() - CHECK_LEN);
        assert_eq!(Sha256::digest(body).as_slice(), check);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let good = encode(&[batch(9, 5, 3)]).unwrap();
        assert!(matches!(decode(b""), Err(SpoolFileError::NotASpoolFile)));
        assert!(matches!(
            decode(&[b'x'; 100]),
            Err(SpoolFileError::NotASpoolFile)
        ));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(SpoolFileError::Checksum)
        ));
        let mut flipped = good.clone();
        flipped[MAGIC.len() + 30] ^= 1;
        assert!(matches!(decode(&flipped), Err(SpoolFileError::Checksum)));
        // A well-summed file whose counts lie: more entries claimed than it holds, and an
        // entry that is not one.
        let seal = |body: Vec<u8>| {
            let mut out = body.clone();
            out.extend_from_slice(&Sha256::digest(&body));
            out
        };
        let mut lying = good[..good.len() - CHECK_LEN].to_vec();
        lying[MAGIC.len() + 16] = 200;
        assert!(matches!(
            decode(&seal(lying)),
            Err(SpoolFileError::Malformed(reason)) if reason.contains("past the end")
        ));
        let mut not_an_entry = MAGIC.to_vec();
        not_an_entry.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        not_an_entry.extend_from_slice(&1u32.to_le_bytes());
        not_an_entry.extend_from_slice(&3u32.to_le_bytes());
        not_an_entry.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode(&seal(not_an_entry)),
            Err(SpoolFileError::Malformed(reason)) if reason.contains("entry 0")
        ));
        let mut short_header = MAGIC.to_vec();
        short_header.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode(&seal(short_header)),
            Err(SpoolFileError::Malformed(reason)) if reason.contains("header")
        ));
    }

    #[test]
    fn a_socket_path_is_normalized_as_python_does() {
        assert_eq!(
            normalized(Path::new("/run//witness/./x/../witness.sock")),
            PathBuf::from("/run/witness/witness.sock")
        );
    }
}
