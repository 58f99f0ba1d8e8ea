//! The metadata quorum's own log, on ringlog's storage: what raft-rs asks a `Storage`
//! to hold, made durable. A quorum member never forgets what it voted or
//! acknowledged, because the driver persists entries and the hard state (term, vote,
//! commit) and fsyncs them before it sends any message that depends on them.
//!
//! In the directory `__cluster_metadata-0` (Kafka's name for the metadata log):
//! - `entries.log`: frames of `[length u32][crc32c u32][protobuf Entry]`, appended.
//!   A torn or corrupt tail (a crash mid-append) ends the log where it starts: such
//!   entries were never acknowledged, since acknowledgement follows the fsync.
//! - `hardstate`: term, vote and commit; replaced atomically.
//! - `snapshot`: the image up to an index (its records as JSON) with the voters;
//!   replaced atomically. Entries it covers leave `entries.log` (compaction).
//!
//! The entries are also held in memory (the metadata log is small): raft-rs reads
//! them through `Storage`, which never touches the disk. Blocking std I/O, for the
//! rare metadata writes: the driver runs writes on a blocking pool.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::storage::atomic_file::write_atomic;

pub const DIR: &str = "__cluster_metadata-0";
const ENTRIES: &str = "entries.log";
const HARDSTATE: &str = "hardstate";
const SNAPSHOT: &str = "snapshot";
const FRAME_HEADER: usize = 8;
/// No entry is larger than this (a metadata batch); a larger length is corruption.
const MAX_ENTRY: usize = 64 << 20;

/// The files, owned by whoever writes (moved to the blocking pool and back).
pub struct LogFiles {
    dir: PathBuf,
    entries: File,
    /// Where each in-memory entry's frame starts in `entries.log`, so a conflicting
    /// suffix can be cut off.
    offsets: Vec<u64>,
    end: u64,
}

/// What raft-rs reads: the snapshot, the hard state and the entries after the
/// snapshot, in memory.
#[derive(Default)]
pub struct RaftLog {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn frame(entry: &Entry) -> Vec<u8> {
    let body = entry.write_to_bytes().expect("an entry encodes");
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The whole frames at the start of `bytes` and where each starts; the rest is a torn
/// or corrupt tail.
fn read_frames(bytes: &[u8]) -> (Vec<Entry>, Vec<u64>, u64) {
    let (mut entries, mut offsets, mut at) = (Vec::new(), Vec::new(), 0usize);
    while bytes.len() - at >= FRAME_HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        let body = at + FRAME_HEADER;
        if len > MAX_ENTRY || bytes.len() - body < len {
            break;
        }
        let data = &bytes[body..body + len];
        if crc32c::crc32c(data) != crc {
            break;
        }
        let Ok(entry) = Entry::parse_from_bytes(data) else {
            break;
        };
        entries.push(entry);
        offsets.push(at as u64);
        at = body + len;
    }
    (entries, offsets, at as u64)
}

impl LogFiles {
    /// Opens (creating) the log in `parent/__cluster_metadata-0` and reads it back.
    pub fn open(parent: &Path) -> io::Result<(LogFiles, RaftLog)> {
        let dir = parent.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let mut log = RaftLog::default();
        match std::fs::read(dir.join(HARDSTATE)) {
            Ok(b) => {
                log.hard_state = HardState::parse_from_bytes(&b)
                    .map_err(|e| corrupt(format!("{DIR}/{HARDSTATE}: {e}")))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match std::fs::read(dir.join(SNAPSHOT)) {
            Ok(b) => {
                log.snapshot = Snapshot::parse_from_bytes(&b)
                    .map_err(|e| corrupt(format!("{DIR}/{SNAPSHOT}: {e}")))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(ENTRIES))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (entries, offsets, end) = read_frames(&bytes);
        if end < bytes.len() as u64 {
            tracing::warn!(
                dropped = bytes.len() as u64 - end,
                "the metadata log ends in a torn or corrupt frame; cutting it off"
            );
            file.set_len(end)?;
            file.sync_all()?;
        }
        // Entries at or below the snapshot are left from before a compaction that
        // did not finish rewriting the file.
        let first = log.snapshot.get_metadata().index + 1;
        let skip = entries.iter().take_while(|e| e.index < first).count();
        let mut files = LogFiles {
            dir,
            entries: file,
            offsets: offsets[skip..].to_vec(),
            end,
        };
        log.entries = entries[skip..].to_vec();
        if let Some(gap) = log.entries.first().filter(|e| e.index != first) {
            return Err(corrupt(format!(
                "{DIR}: entries start at {} after a snapshot at {}",
                gap.index,
                first - 1
            )));
        }
        if log.entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(corrupt(format!("{DIR}: entries are not consecutive")));
        }
        if skip > 0 {
            files.rewrite(&log.entries)?;
        }
        Ok((files, log))
    }

    /// Makes `new` durable, replacing any entries from `new[0].index` on.
    pub fn append(&mut self, log_first: u64, new: &[Entry]) -> io::Result<()> {
        let Some(first) = new.first() else {
            return Ok(());
        };
        let keep = (first.index.saturating_sub(log_first)) as usize;
        if keep < self.offsets.len() {
            self.end = self.offsets[keep];
            self.offsets.truncate(keep);
            self.entries.set_len(self.end)?;
        }
        let mut bytes = Vec::new();
        for e in new {
            self.offsets.push(self.end + bytes.len() as u64);
            bytes.extend_from_slice(&frame(e));
        }
        self.entries.seek(SeekFrom::Start(self.end))?;
        self.entries.write_all(&bytes)?;
        self.entries.sync_data()?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    pub fn save_hard_state(&self, hs: &HardState) -> io::Result<()> {
        write_atomic(&self.dir, HARDSTATE, &hs.write_to_bytes().expect("encodes"))
    }

    /// Makes `snapshot` durable, then drops the entries it covers from the file;
    /// `rest` are the entries after it.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot, rest: &[Entry]) -> io::Result<()> {
        write_atomic(
            &self.dir,
            SNAPSHOT,
            &snapshot.write_to_bytes().expect("encodes"),
        )?;
        self.rewrite(rest)
    }

    /// Replaces `entries.log` with exactly `entries`, atomically.
    fn rewrite(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut bytes = Vec::new();
        self.offsets.clear();
        for e in entries {
            self.offsets.push(bytes.len() as u64);
            bytes.extend_from_slice(&frame(e));
        }
        write_atomic(&self.dir, ENTRIES, &bytes)?;
        self.entries = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(ENTRIES))?;
        self.end = bytes.len() as u64;
        Ok(())
    }
}

impl RaftLog {
    pub fn first_index(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }
    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }
    pub fn is_empty(&self) -> bool {
        self.last_index() == 0
            && self
                .snapshot
                .get_metadata()
                .get_conf_state()
                .voters
                .is_empty()
    }
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Appends `new` in memory, cutting off a conflicting suffix (after the files).
    pub fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        let keep = first.index.saturating_sub(self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(new);
    }

    /// Sets the snapshot (one received from the leader, or one of our own) and keeps
    /// only the entries after it; returns those entries.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) -> &[Entry] {
        let index = snapshot.get_metadata().index;
        self.entries.retain(|e| e.index > index);
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < snapshot.get_metadata().term {
            self.hard_state.term = snapshot.get_metadata().term;
        }
        self.snapshot = snapshot;
        &self.entries
    }

    /// Drops every entry: a snapshot from the leader replaces the whole log.
    pub fn clear_entries(&mut self) {
        self.entries.clear();
    }

    /// The entry at `index`, if the log holds it.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let first = self.entries.first()?.index;
        self.entries.get(index.checked_sub(first)? as usize)
    }
}

/// The first snapshot of a new quorum: index 0 with its voters.
pub fn initial_snapshot(voters: Vec<u64>, data: Vec<u8>) -> Snapshot {
    let mut meta = SnapshotMetadata::default();
    meta.set_conf_state(ConfState {
        voters,
        ..Default::default()
    });
    let mut s = Snapshot::default();
    s.set_metadata(meta);
    s.data = data.into();
    s
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.snapshot.get_metadata().get_conf_state().clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first_index();
        let mut out: Vec<Entry> =
            self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(RaftLog::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(RaftLog::last_index(self))
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("ringlog-raft-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: data.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    fn write(files: &mut LogFiles, log: &mut RaftLog, new: &[Entry]) {
        files.append(log.first_index(), new).unwrap();
        log.append(new);
    }

    #[test]
    fn entries_and_hard_state_survive_a_reopen_and_a_conflict_cuts_the_suffix() {
        let dir = Scratch::new("reopen");
        let (mut files, mut log) = LogFiles::open(dir.path()).unwrap();
        assert!(log.is_empty());
        write(
            &mut files,
            &mut log,
            &[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")],
        );
        // A new leader overwrites from index 2.
        write(
            &mut files,
            &mut log,
            &[entry(2, 2, "B"), entry(3, 2, "C"), entry(4, 2, "D")],
        );
        let hs = HardState {
            term: 2,
            vote: 3,
            commit: 3,
            ..Default::default()
        };
        files.save_hard_state(&hs).unwrap();
        drop(files);

        let (_, log) = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.hard_state(), &hs);
        let got = log
            .entries(1, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        let data: Vec<_> = got
            .iter()
            .map(|e| (e.index, e.term, e.data.to_vec()))
            .collect();
        assert_eq!(
            data,
            vec![
                (1, 1, b"a".to_vec()),
                (2, 2, b"B".to_vec()),
                (3, 2, b"C".to_vec()),
                (4, 2, b"D".to_vec())
            ]
        );
        assert_eq!(log.term(3).unwrap(), 2);
        assert!(log.term(5).is_err());
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off() {
        let dir = Scratch::new("torn");
        let (mut files, mut log) = LogFiles::open(dir.path()).unwrap();
        write(&mut files, &mut log, &[entry(1, 1, "a"), entry(2, 1, "b")]);
        drop(files);
        let path = dir.path().join(DIR).join(ENTRIES);
        let whole = std::fs::read(&path).unwrap();
        // A torn last frame.
        std::fs::write(&path, &whole[..whole.len() - 1]).unwrap();
        let (mut files, mut log) = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.last_index(), 1);
        // The log goes on from there.
        write(&mut files, &mut log, &[entry(2, 1, "x")]);
        drop(files);
        let (_, log) = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.entry(2).unwrap().data.to_vec(), b"x".to_vec());
        // A flipped byte in the first frame: nothing after it is trusted.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FRAME_HEADER + 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, log) = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.last_index(), 0);
    }

    #[test]
    fn a_snapshot_compacts_the_log_and_survives_a_reopen() {
        let dir = Scratch::new("snapshot");
        let (mut files, mut log) = LogFiles::open(dir.path()).unwrap();
        let mut snap = initial_snapshot(vec![1, 2, 3], b"image".to_vec());
        files.save_snapshot(&snap, &[]).unwrap();
        log.set_snapshot(snap.clone());
        assert!(!log.is_empty());
        write(
            &mut files,
            &mut log,
            &[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")],
        );
        snap.mut_metadata().index = 2;
        snap.mut_metadata().term = 1;
        let rest = log.set_snapshot(snap.clone()).to_vec();
        files.save_snapshot(&snap, &rest).unwrap();
        drop(files);

        let (_, log) = LogFiles::open(dir.path()).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (3, 3));
        assert_eq!(log.term(2).unwrap(), 1);
        assert!(log
            .entries(2, 3, None, GetEntriesContext::empty(false))
            .is_err());
        let state = log.initial_state().unwrap();
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(log.snapshot_ref().data.to_vec(), b"image".to_vec());
    }
}
