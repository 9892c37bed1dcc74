//! One JSON Lines file of the file store, and what the store keeps in
//! memory about it so queries read only the files (and the parts of a
//! file) that can match.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::event::{AuditEvent, EventType};
use crate::store::{EventFilter, Rotation, StoreError};

/// Every store file is `audit-<period>.jsonl`.
const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";
/// One mark every this many events: a newest-first query reads a file
/// backwards one block of this many lines at a time.
const MARK_EVERY: u64 = 256;

/// What the store knows about one file.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub name: String,
    pub path: PathBuf,
    /// Bytes on disk, a torn tail included.
    pub size: u64,
    /// End of the last complete line; reads stop here.
    pub end: u64,
    pub count: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub last_hash: String,
    pub min_ts: Option<DateTime<Utc>>,
    pub max_ts: Option<DateTime<Utc>>,
    pub by_type: BTreeMap<String, u64>,
    pub by_level: BTreeMap<String, u64>,
    pub violations_by_policy: BTreeMap<String, u64>,
    pub violations_by_severity: BTreeMap<String, u64>,
    /// `(seq, offset)` of every [`MARK_EVERY`]-th event line, the first
    /// included. Shared with readers; an append copies it only while a
    /// reader still holds the old one.
    pub marks: Arc<Vec<(i64, u64)>>,
    /// Offsets of complete lines that are not events: torn writes that a
    /// later append closed with a newline. Readers skip exactly these; any
    /// other line that does not parse is corruption.
    pub skip: Arc<Vec<u64>>,
    /// The file ends inside a line (a write torn by a crash): the next
    /// append writes a newline first, so it starts on a fresh line.
    pub torn: bool,
}

/// A reader's copy of a segment, taken under the lock and read without it.
#[derive(Debug, Clone)]
pub(super) struct View {
    pub path: PathBuf,
    pub end: u64,
    pub first_seq: Option<i64>,
    pub min_ts: Option<DateTime<Utc>>,
    pub max_ts: Option<DateTime<Utc>>,
    pub marks: Arc<Vec<(i64, u64)>>,
    pub skip: Arc<Vec<u64>>,
}

/// The file an event belongs in by its timestamp. Names sort in time order
/// within one rotation (ISO week-year and week for weekly).
#[cfg(test)]
pub(super) fn file_name(rotation: Rotation, ts: &DateTime<Utc>) -> String {
    let mut name = String::new();
    write_file_name(rotation, ts, &mut name);
    name
}

/// The name of the file an event belongs in by its timestamp, written
/// into `out` (cleared first): an append names the file of every event,
/// into one buffer it keeps. Names sort in time order within one rotation
/// (ISO week-year and week for weekly).
pub(super) fn write_file_name(rotation: Rotation, ts: &DateTime<Utc>, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    let week = ts.iso_week();
    let year = match rotation {
        Rotation::Weekly => week.year(),
        Rotation::Hourly | Rotation::Daily => ts.year(),
    };
    // chrono's `%Y` and `%G` add a sign outside these years; its
    // formatter is used for them (it builds a string of its own).
    let written = if (0..=9999).contains(&year) {
        match rotation {
            Rotation::Hourly => write!(
                out,
                "{PREFIX}{year:04}-{:02}-{:02}T{:02}{SUFFIX}",
                ts.month(),
                ts.day(),
                ts.hour()
            ),
            Rotation::Daily => write!(
                out,
                "{PREFIX}{year:04}-{:02}-{:02}{SUFFIX}",
                ts.month(),
                ts.day()
            ),
            Rotation::Weekly => write!(out, "{PREFIX}{year:04}-W{:02}{SUFFIX}", week.week()),
        }
    } else {
        let period = match rotation {
            Rotation::Hourly => ts.format("%Y-%m-%dT%H"),
            Rotation::Daily => ts.format("%Y-%m-%d"),
            Rotation::Weekly => ts.format("%G-W%V"),
        };
        write!(out, "{PREFIX}{period}{SUFFIX}")
    };
    // Writing to a String cannot fail.
    debug_assert!(written.is_ok());
}

pub(super) fn is_store_file(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(SUFFIX)
}

/// Reads the complete lines in `from..to` of `path` in file order, calling
/// `f` with each event until it breaks. A file that is gone was purged
/// after the caller's snapshot, and reads as empty.
pub(super) fn read_range(
    path: &Path,
    from: u64,
    to: u64,
    skip: &[u64],
    mut f: impl FnMut(AuditEvent) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("cannot open", path, e)),
    };
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    reader
        .seek(SeekFrom::Start(from))
        .map_err(|e| io_error("cannot read", path, e))?;
    let mut reader = reader.take(to.saturating_sub(from));
    let mut line = Vec::new();
    let mut offset = from;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error("cannot read", path, e))?;
        if n == 0 {
            return Ok(());
        }
        let at = offset;
        offset += n as u64;
        let text = trim_line(&line);
        if text.is_empty() || skip.contains(&at) {
            continue;
        }
        let event: AuditEvent = serde_json::from_slice(text).map_err(|e| {
            StoreError::Corrupt(format!(
                "{} at byte {at}: not an audit event: {e}",
                path.display()
            ))
        })?;
        if f(event).is_break() {
            return Ok(());
        }
    }
}

pub(super) fn io_error(what: &str, path: &Path, error: io::Error) -> StoreError {
    let message = format!("{what} {}: {error}", path.display());
    match error.kind() {
        io::ErrorKind::StorageFull => StoreError::Full(message),
        _ => StoreError::Unavailable(message),
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

// === impl Segment ===

impl Segment {
    pub fn empty(dir: &Path, name: String) -> Self {
        Self {
            path: dir.join(&name),
            name,
            size: 0,
            end: 0,
            count: 0,
            first_seq: None,
            last_seq: None,
            last_hash: String::new(),
            min_ts: None,
            max_ts: None,
            by_type: BTreeMap::new(),
            by_level: BTreeMap::new(),
            violations_by_policy: BTreeMap::new(),
            violations_by_severity: BTreeMap::new(),
            marks: Arc::new(Vec::new()),
            skip: Arc::new(Vec::new()),
            torn: false,
        }
    }

    /// Indexes an existing file. Lines that are not events are skipped with
    /// a warning (the hash chain shows whether one was an event once); a
    /// torn last line is left out and remembered.
    pub fn scan(dir: &Path, name: String) -> Result<Self, StoreError> {
        let mut segment = Segment::empty(dir, name);
        let path = segment.path.clone();
        let file = File::open(&path).map_err(|e| io_error("cannot open", &path, e))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut line = Vec::new();
        let mut offset = 0u64;
        let mut skip = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| io_error("cannot read", &path, e))?;
            if n == 0 {
                break;
            }
            let at = offset;
            offset += n as u64;
            if !line.ends_with(b"\n") {
                tracing::warn!(
                    file = %path.display(),
                    offset = at,
                    bytes = n,
                    "Torn last line in the audit file skipped; the next append starts on a fresh line."
                );
                segment.torn = true;
                break;
            }
            segment.end = offset;
            let text = trim_line(&line);
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<AuditEvent>(text) {
                Ok(event) => segment.record(&event, at),
                Err(error) => {
                    tracing::warn!(
                        file = %path.display(),
                        offset = at,
                        %error,
                        "Audit file line is not an event; skipped."
                    );
                    skip.push(at);
                }
            }
        }
        segment.size = offset;
        segment.skip = Arc::new(skip);
        Ok(segment)
    }

    /// Marks the file torn after an append that failed and could not be cut
    /// back: the bytes from `end` to `len` on disk are that append's, and
    /// none of them is an event (the writer seals those events again).
    /// Every line they start is skipped by readers, and the next append
    /// starts on a fresh line.
    pub fn mark_torn(&mut self, len: u64) -> Result<(), StoreError> {
        if len <= self.end {
            return Ok(());
        }
        let mut file =
            File::open(&self.path).map_err(|e| io_error("cannot open", &self.path, e))?;
        file.seek(SeekFrom::Start(self.end))
            .map_err(|e| io_error("cannot read", &self.path, e))?;
        let mut region = Vec::new();
        file.take(len - self.end)
            .read_to_end(&mut region)
            .map_err(|e| io_error("cannot read", &self.path, e))?;
        let skip = Arc::make_mut(&mut self.skip);
        // The first line starts at `end`; the append that closes the torn
        // line adds that one.
        for (i, byte) in region.iter().enumerate() {
            let next = self.end + i as u64 + 1;
            if *byte == b'\n' && next < len {
                skip.push(next);
            }
        }
        self.size = len;
        self.torn = true;
        Ok(())
    }

    /// Adds an event written at `offset` to the index.
    pub fn record(&mut self, event: &AuditEvent, offset: u64) {
        if self.count % MARK_EVERY == 0 {
            Arc::make_mut(&mut self.marks).push((event.seq, offset));
        }
        self.count += 1;
        self.first_seq.get_or_insert(event.seq);
        self.last_seq = Some(event.seq);
        self.last_hash.clone_from(&event.hash);
        self.min_ts = Some(
            self.min_ts
                .map_or(event.timestamp, |t| t.min(event.timestamp)),
        );
        self.max_ts = Some(
            self.max_ts
                .map_or(event.timestamp, |t| t.max(event.timestamp)),
        );
        *self
            .by_type
            .entry(event.event_type.as_str().to_owned())
            .or_default() += 1;
        *self
            .by_level
            .entry(event.level.as_str().to_owned())
            .or_default() += 1;
        if event.event_type == EventType::ComplianceViolation {
            let policy = event.metadata.field("policy_name");
            let policy = policy.as_str().unwrap_or_default();
            *self
                .violations_by_policy
                .entry(policy.to_owned())
                .or_default() += 1;
            let severity = event.metadata.field("severity");
            let severity = severity.as_str().unwrap_or_default();
            *self
                .violations_by_severity
                .entry(severity.to_owned())
                .or_default() += 1;
        }
    }

    pub fn view(&self) -> View {
        View {
            path: self.path.clone(),
            end: self.end,
            first_seq: self.first_seq,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            marks: self.marks.clone(),
            skip: self.skip.clone(),
        }
    }
}

// === impl View ===

impl View {
    /// Whether any event of the file can fall in the filter's time range.
    pub fn overlaps(&self, filter: &EventFilter) -> bool {
        let (Some(min), Some(max)) = (self.min_ts, self.max_ts) else {
            return false;
        };
        filter.start_time.is_none_or(|start| max >= start)
            && filter.end_time.is_none_or(|end| min < end)
    }

    /// The byte range of block `i` (from mark `i` to the next mark or the
    /// end of the complete lines).
    pub fn block(&self, i: usize) -> (u64, u64) {
        let from = self.marks.get(i).map_or(0, |m| m.1);
        let to = self.marks.get(i + 1).map_or(self.end, |m| m.1);
        (from, to)
    }
}
