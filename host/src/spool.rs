//! The spool: a bounded, crash-safe queue of JSON lines on disk, between the
//! router that writes escalation records and the shipper that sends them to
//! the fleet's stream while the link is up.
//!
//! A spool directory holds numbered segment files (`00000000000000000001.jsonl`,
//! …) and an `acked` file with the position of the first record the server has
//! not yet acknowledged. Records are appended to the newest segment, each as
//! one `write` of a whole line followed by `fsync`, so a record the router was
//! told is written survives a crash. [`Spool::ack`] moves the position on only
//! after the server acknowledged the records, so delivery is at-least-once:
//! after a crash the records past the last saved position are sent again, and
//! the receiver drops duplicates by record id.
//!
//! The spool is capped ([`Spool::open`]'s `cap`, bytes on disk). When a new
//! record would take it over the cap, the oldest segment is deleted, and the
//! records in it that were not yet acknowledged are counted as dropped
//! ([`SpoolStats::dropped`]): the newest records are the ones worth keeping
//! while a device is offline for long.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file holding the acknowledged position.
const ACKED_FILE: &str = "acked";

/// The default cap of a spool on disk: 64 MiB, about 100,000 news-sized records.
pub const DEFAULT_SPOOL_CAP: u64 = 64 << 20;

/// A position in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// The segment number.
    pub segment: u64,
    /// The byte offset in the segment.
    pub offset: u64,
}

/// Counters of a spool since it was opened, and what it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records appended since open.
    pub appended: u64,
    /// Records acknowledged since open.
    pub acked: u64,
    /// Records dropped by the cap before they were acknowledged, since open.
    pub dropped: u64,
    /// Records held that are not acknowledged yet.
    pub queued: u64,
    /// Bytes on disk in segments.
    pub bytes: u64,
}

/// One record read from the spool, with the position just past it.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// The line, without its newline.
    pub line: Vec<u8>,
    /// The position after this record: pass the last one of a batch to [`Spool::ack`].
    pub next: Position,
}

/// A spool directory. `Send + Sync`; share it behind an `Arc`.
pub struct Spool {
    dir: PathBuf,
    cap: u64,
    segment_cap: u64,
    state: Mutex<State>,
    /// Woken on every append, for a shipper waiting for work.
    #[cfg(feature = "fleet")]
    notify: tokio::sync::Notify,
}

struct State {
    /// Segment numbers on disk, oldest first, with their sizes and record counts.
    segments: Vec<Segment>,
    current: File,
    acked: Position,
    stats: SpoolStats,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    number: u64,
    bytes: u64,
    records: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, capped at `cap` bytes on disk.
    /// A torn last line left by a crash is cut off. Fails with [`Error::Io`]
    /// naming the file when the directory cannot be read or written, and with
    /// [`Error::Spool`] when `acked` is not a position this spool can have.
    pub fn open(dir: impl AsRef<Path>, cap: u64) -> Result<Spool> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".jsonl")?.parse().ok())
            .collect();
        numbers.sort_unstable();
        if numbers.is_empty() {
            numbers.push(1);
        }
        let last = *numbers.last().unwrap_or(&1);
        let current = open_segment(&dir, last)?;
        let mut segments = Vec::new();
        for &number in &numbers {
            let path = segment_path(&dir, number);
            let (bytes, records) = count(&path)?;
            segments.push(Segment { number, bytes, records });
        }
        let acked_path = dir.join(ACKED_FILE);
        let acked = match std::fs::read_to_string(&acked_path) {
            Ok(text) => parse_position(&text).ok_or_else(|| Error::Spool {
                path: acked_path.clone(),
                message: format!("{text:?} is not a position (expected \"SEGMENT OFFSET\")"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Position { segment: numbers[0], offset: 0 },
            Err(e) => return Err(Error::io(&acked_path, e)),
        };
        // Segments deleted while their position was saved (a crash between the two): start at the oldest left.
        let acked = acked.max(Position { segment: numbers[0], offset: 0 });
        let mut state = State { segments, current, acked, stats: SpoolStats::default() };
        state.stats.queued = queued(&dir, &state)?;
        state.stats.bytes = state.segments.iter().map(|s| s.bytes).sum();
        // A segment of an eighth of the cap: the cap is kept to within one segment.
        let segment_cap = (cap / 8).max(4096);
        Ok(Spool {
            dir,
            cap,
            segment_cap,
            state: Mutex::new(state),
            #[cfg(feature = "fleet")]
            notify: tokio::sync::Notify::new(),
        })
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record (a line without newlines) and syncs it to disk.
    /// Drops the oldest segment first when the record would take the spool
    /// over its cap. Fails with [`Error::Io`] on a full disk; the spool stays
    /// usable.
    pub fn append(&self, line: &[u8]) -> Result<()> {
        debug_assert!(!line.contains(&b'\n'));
        let mut state = self.lock();
        let need = line.len() as u64 + 1;
        let current = state.segments.last().copied().expect("a spool has a segment");
        if current.bytes > 0 && current.bytes + need > self.segment_cap {
            let number = current.number + 1;
            state.current = open_segment(&self.dir, number)?;
            state.segments.push(Segment { number, bytes: 0, records: 0 });
        }
        while state.stats.bytes + need > self.cap && state.segments.len() > 1 {
            self.drop_oldest(&mut state)?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
        let path = segment_path(&self.dir, state.segments.last().map(|s| s.number).unwrap_or(1));
        let written = state.current.write_all(&bytes).and_then(|()| state.current.sync_data());
        if let Err(e) = written {
            // A partial line would be cut off at the next open; cut it off now so the next record starts clean.
            let len = state.segments.last().map(|s| s.bytes).unwrap_or(0);
            let _ = state.current.set_len(len);
            return Err(Error::io(&path, e));
        }
        let segment = state.segments.last_mut().expect("a spool has a segment");
        segment.bytes += need;
        segment.records += 1;
        state.stats.bytes += need;
        state.stats.appended += 1;
        state.stats.queued += 1;
        drop(state);
        #[cfg(feature = "fleet")]
        self.notify.notify_one();
        Ok(())
    }

    /// Up to `max` records after the acknowledged position, oldest first.
    pub fn peek(&self, max: usize) -> Result<Vec<Spooled>> {
        let state = self.lock();
        let mut out = Vec::new();
        for segment in state.segments.iter().filter(|s| s.number >= state.acked.segment) {
            let start = if segment.number == state.acked.segment { state.acked.offset } else { 0 };
            let path = segment_path(&self.dir, segment.number);
            let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            file.seek(SeekFrom::Start(start)).map_err(|e| Error::io(&path, e))?;
            let mut reader = BufReader::new(file.take(segment.bytes.saturating_sub(start)));
            let mut offset = start;
            let mut line = Vec::new();
            while out.len() < max {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(|e| Error::io(&path, e))?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                offset += n as u64;
                line.pop();
                out.push(Spooled { line: line.clone(), next: Position { segment: segment.number, offset } });
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Marks every record before `upto` acknowledged: saves the position
    /// (atomically, synced) and deletes segments wholly acknowledged.
    pub fn ack(&self, upto: Position, records: u64) -> Result<()> {
        let mut state = self.lock();
        if upto <= state.acked {
            return Ok(());
        }
        let path = self.dir.join(ACKED_FILE);
        crate::fsutil::write_atomic(&path, format!("{} {}\n", upto.segment, upto.offset).as_bytes())?;
        state.acked = upto;
        state.stats.acked += records;
        state.stats.queued = state.stats.queued.saturating_sub(records);
        // Segments before the acknowledged one, never the one being written.
        while state.segments.len() > 1 && state.segments[0].number < upto.segment {
            let gone = state.segments.remove(0);
            let path = segment_path(&self.dir, gone.number);
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            state.stats.bytes -= gone.bytes;
        }
        Ok(())
    }

    /// What the spool has done since it was opened, and holds now.
    pub fn stats(&self) -> SpoolStats {
        self.lock().stats
    }

    /// Waits until a record is appended (or returns at once if one was appended since the last wait).
    /// For a shipper on a tokio runtime; with the `fleet` feature.
    #[cfg(feature = "fleet")]
    pub async fn appended(&self) {
        self.notify.notified().await
    }

    fn drop_oldest(&self, state: &mut State) -> Result<()> {
        let oldest = state.segments.remove(0);
        let unacked = if oldest.number < state.acked.segment {
            0
        } else if oldest.number == state.acked.segment {
            let path = segment_path(&self.dir, oldest.number);
            lines_after(&path, state.acked.offset)?
        } else {
            oldest.records
        };
        let path = segment_path(&self.dir, oldest.number);
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        state.stats.bytes -= oldest.bytes;
        state.stats.dropped += unacked;
        state.stats.queued = state.stats.queued.saturating_sub(unacked);
        if state.acked.segment <= oldest.number {
            state.acked = Position { segment: state.segments[0].number, offset: 0 };
            let acked = self.dir.join(ACKED_FILE);
            crate::fsutil::write_atomic(&acked, format!("{} 0\n", state.acked.segment).as_bytes())?;
        }
        tracing::warn!(
            spool = %self.dir.display(),
            dropped = unacked,
            "spool over its cap of {} bytes: dropped its oldest segment",
            self.cap
        );
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.jsonl"))
}

fn open_segment(dir: &Path, number: u64) -> Result<File> {
    let path = segment_path(dir, number);
    let mut file =
        OpenOptions::new().read(true).create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    cut_torn_tail(&mut file).map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

fn parse_position(text: &str) -> Option<Position> {
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(Position { segment, offset })
}

/// Bytes and whole lines in a segment.
fn count(path: &Path) -> Result<(u64, u64)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok((bytes.len() as u64, bytes.iter().filter(|&&b| b == b'\n').count() as u64))
}

fn lines_after(path: &Path, offset: u64) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let start = (offset as usize).min(bytes.len());
    Ok(bytes[start..].iter().filter(|&&b| b == b'\n').count() as u64)
}

fn queued(dir: &Path, state: &State) -> Result<u64> {
    let mut n = 0;
    for segment in &state.segments {
        if segment.number == state.acked.segment {
            n += lines_after(&segment_path(dir, segment.number), state.acked.offset)?;
        } else if segment.number > state.acked.segment {
            n += segment.records;
        }
    }
    Ok(n)
}

/// Truncates `file` after its last newline, if it does not end with one: a
/// line is whole or absent after a crash.
pub(crate) fn cut_torn_tail(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut tail = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut tail)?;
    if tail[0] == b'\n' {
        return Ok(());
    }
    // Find the last newline, reading backwards in chunks.
    let mut end = len;
    let mut keep = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    tracing::warn!(dropped = len - keep, "a JSONL file ended in a torn line; cut it off");
    file.set_len(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(spool: &Spool) -> Vec<String> {
        spool.peek(usize::MAX).unwrap().into_iter().map(|s| String::from_utf8(s.line).unwrap()).collect()
    }

    #[test]
    fn records_survive_a_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5 {
            spool.append(format!("{{\"n\":{i}}}").as_bytes()).unwrap();
        }
        let batch = spool.peek(3).unwrap();
        spool.ack(batch[2].next, 3).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(lines(&spool), ["{\"n\":3}", "{\"n\":4}"]);
        assert_eq!(spool.stats().queued, 2);
    }

    #[test]
    fn the_cap_drops_the_oldest_records_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        // 8 segments of 4 KiB.
        let spool = Spool::open(dir.path(), 32 << 10).unwrap();
        let record = |i: usize| format!("{{\"n\":{i:05},\"pad\":\"{}\"}}", "x".repeat(100));
        for i in 0..1000 {
            spool.append(record(i).as_bytes()).unwrap();
        }
        let stats = spool.stats();
        assert!(stats.bytes <= 32 << 10, "{stats:?}");
        assert!(stats.dropped > 0, "{stats:?}");
        assert_eq!(stats.dropped + stats.queued, 1000, "{stats:?}");
        let held = lines(&spool);
        assert_eq!(held.len() as u64, stats.queued);
        assert_eq!(held.last().unwrap(), &record(999), "the newest record is kept");
        assert_eq!(held[0], record(1000 - held.len()), "what is held is the newest, in order");
    }

    #[test]
    fn a_torn_last_record_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(b"{\"whole\":1}").unwrap();
        drop(spool);
        let path = segment_path(dir.path(), 1);
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"torn\":").unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(b"{\"after\":1}").unwrap();
        assert_eq!(lines(&spool), ["{\"whole\":1}", "{\"after\":1}"]);
    }

    #[test]
    fn a_corrupt_position_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ACKED_FILE), "nonsense").unwrap();
        let err = Spool::open(dir.path(), 1 << 20).err().expect("refused");
        assert!(err.to_string().contains("acked"), "{err}");
    }
}
