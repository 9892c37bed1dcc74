//! The file store: JSON Lines files in one folder, one serialised
//! [`AuditEvent`] per line exactly as given, rotated hourly, daily or weekly
//! by the event's UTC timestamp (`audit-2026-11-26T14.jsonl`,
//! `audit-2026-11-26.jsonl`, `audit-2026-W48.jsonl`; ISO week-year and week,
//! so names sort in time order).
//!
//! Files are ordered by the `seq` they hold, and an event never goes to a
//! file older than the newest one: an event stamped just before a period
//! boundary but sealed after an event of the next period lands in the newer
//! file. So reading the files in order reads the chain in order, and a
//! file's name is the period its *first* events belong to.
//!
//! `open` reads every file once and keeps a small index per file (seq and
//! time ranges, counts, a byte offset every few hundred lines), so queries
//! skip files that cannot match and read the newest file backwards in
//! blocks, and `stats` reads no file at all. All file I/O runs on blocking
//! threads; one append is one write and one `sync_data` per file touched.
//!
//! One process writes a folder: `open` takes an exclusive lock on its
//! `.lock` file, so a second `serve` or an offline `purge` on the same
//! folder is refused instead of forking the chain. Readers
//! ([`FileStore::open_for_reading`]) take no lock. A new file's name is
//! made durable by syncing the folder once the file is created.
//!
//! Retention works on whole files: `purge_before` removes a file only once
//! every event in it is older than the cutoff, so up to one rotation period
//! of older events may remain; the size cap removes the oldest files. The
//! file being written is never removed.

mod segment;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

#[cfg(test)]
use self::segment::file_name;
use self::segment::{io_error, is_store_file, read_range, Segment, View};
use super::{
    chunk_stream, AuditStore, ChainHead, EventChunk, EventFilter, EventPage, EventQuery,
    EventStream, PurgeReport, Rotation, StoreError, StoreStats, MAX_QUERY_LIMIT,
};
use crate::event::{format_timestamp, AuditEvent, EventRecord};

/// Events per export step.
const EXPORT_CHUNK: usize = 1000;
/// Chunks an export may read ahead of its consumer.
const EXPORT_READ_AHEAD: usize = 2;
/// The file holding the store's stable id.
const SOURCE_ID_FILE: &str = "source_id";
/// Prefix of the file holding a shipping target's cursor (`ship_cursor.<target>`).
const SHIP_CURSOR_PREFIX: &str = "ship_cursor.";
/// The file `health` creates and removes when the folder holds no file yet.
const HEALTH_PROBE: &str = ".health-probe";
/// The file a writing process holds an exclusive lock on.
pub const LOCK_FILE: &str = ".lock";

/// The JSON Lines store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// From the folder's `source_id` file, made with the store.
    source_id: String,
    rotation: Rotation,
    state: Arc<Mutex<State>>,
    /// Holds the folder's write lock while the store lives (`None` for a
    /// reader). Closing the file releases it.
    _lock: Option<File>,
}

#[derive(Debug)]
struct State {
    dir: PathBuf,
    rotation: Rotation,
    /// In `seq` order; files without events first. The last one is the
    /// file being written.
    segments: Vec<Segment>,
    head: Option<ChainHead>,
    /// The file the last append went to, kept open for the next.
    open: Option<(String, File)>,
    /// Where an append writes the file name of each event.
    name_buf: String,
}

/// One file's share of an append.
struct Part {
    index: usize,
    buf: Vec<u8>,
    /// Each event and its offset within `buf`.
    events: Vec<(usize, u64)>,
    close_torn_line: bool,
}

// === impl FileStore ===

impl FileStore {
    /// Opens (creating if needed) the store in `dir`, reading the existing
    /// files to find the chain head and build the index. A torn last line
    /// (a crash mid-write) is skipped with a warning.
    ///
    /// Takes the folder's write lock: a store another process writes (a
    /// running `serve`, an offline `purge`) is refused with a message
    /// saying so.
    pub fn open(dir: &Path, rotation: Rotation) -> Result<FileStore, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let lock = lock_folder(dir)?;
        let mut store = Self::open_for_reading(dir, rotation)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Opens the store in `dir` without its write lock, for offline
    /// commands that only read (a server may be writing meanwhile).
    pub fn open_for_reading(dir: &Path, rotation: Rotation) -> Result<FileStore, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_error("cannot list", dir, e))? {
            let entry = entry.map_err(|e| io_error("cannot list", dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_store_file(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
                segments.push(Segment::scan(dir, name)?);
            }
        }
        // By seq, not by name: names of different rotations do not sort
        // together, and the chain order is what readers rely on.
        segments.sort_by(|a, b| {
            (a.first_seq.unwrap_or(i64::MIN), &a.name)
                .cmp(&(b.first_seq.unwrap_or(i64::MIN), &b.name))
        });
        for pair in segments.windows(2) {
            if let (Some(last), Some(first)) = (pair[0].last_seq, pair[1].first_seq) {
                if first <= last {
                    tracing::warn!(
                        earlier = %pair[0].name,
                        later = %pair[1].name,
                        "Audit files overlap in seq; verify will report the chain."
                    );
                }
            }
        }
        let head = segments.iter().rev().find_map(|s| {
            s.last_seq.map(|seq| ChainHead {
                seq,
                hash: s.last_hash.clone(),
            })
        });
        let source_id = read_or_make_source_id(dir)?;
        Ok(FileStore {
            dir: dir.to_owned(),
            source_id,
            rotation,
            state: Arc::new(Mutex::new(State {
                dir: dir.to_owned(),
                rotation,
                segments,
                head,
                open: None,
                name_buf: String::new(),
            })),
            _lock: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// Runs `f` on a blocking thread with the state locked (writes and
    /// purges, which must not interleave).
    async fn locked<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut State) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&state)))
            .await
            .map_err(|e| StoreError::Other(format!("file store task failed: {e}")))?
    }

    /// Runs `f` on a blocking thread over a snapshot of the index, without
    /// the lock, so reads never hold up an append.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(Vec<View>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let views = lock(&state).views();
            f(views)
        })
        .await
        .map_err(|e| StoreError::Other(format!("file store task failed: {e}")))?
    }
}

#[async_trait]
impl AuditStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn append_batch(&self, events: super::Batch) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.locked(move |state| state.append(&events)).await
    }

    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        Ok(lock(&self.state).head.clone())
    }

    async fn source_id(&self) -> Result<Option<String>, StoreError> {
        Ok(Some(self.source_id.clone()))
    }

    async fn records_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let limit = limit.clamp(1, MAX_QUERY_LIMIT);
        let events = self
            .read(move |views| {
                // Oldest first, skipping whole files and blocks that end at
                // or before `after_seq`, so a shipper's read costs a block,
                // not the store.
                let mut found = Vec::new();
                for (v, view) in views.iter().enumerate() {
                    let next_file = views.get(v + 1).and_then(|n| n.first_seq);
                    if next_file.is_some_and(|next| next <= after_seq + 1) {
                        continue;
                    }
                    for i in 0..view.marks.len() {
                        if view.marks.get(i + 1).is_some_and(|m| m.0 <= after_seq + 1) {
                            continue;
                        }
                        let (from, to) = view.block(i);
                        read_range(&view.path, from, to, &view.skip, |e| {
                            if e.seq > after_seq {
                                found.push(e);
                            }
                            if found.len() >= limit {
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        })?;
                        if found.len() >= limit {
                            return Ok(found);
                        }
                    }
                }
                Ok(found)
            })
            .await?;
        events.into_iter().map(super::to_record).collect()
    }

    async fn ship_cursor(&self, target: &str) -> Result<Option<i64>, StoreError> {
        let path = ship_cursor_path(&self.dir, target)?;
        tokio::task::spawn_blocking(move || read_ship_cursor(&path))
            .await
            .map_err(|e| StoreError::Other(format!("cursor read task failed: {e}")))?
    }

    async fn set_ship_cursor(&self, target: &str, seq: i64) -> Result<(), StoreError> {
        let path = ship_cursor_path(&self.dir, target)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_ship_cursor(&dir, &path, seq))
            .await
            .map_err(|e| StoreError::Other(format!("cursor write task failed: {e}")))?
    }

    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let limit = query.limit.clamp(1, MAX_QUERY_LIMIT);
        let filter = query.filter.clone();
        let before = query.before_seq;
        self.read(move |views| {
            let below = |seq: i64| before.is_none_or(|b| seq < b);
            // Newest first, one block at a time, until one more than the
            // page is found; memory is bounded by a block and the page.
            let mut found = Vec::new();
            'files: for view in views.iter().rev() {
                if !view.first_seq.is_some_and(below) || !view.overlaps(&filter) {
                    continue;
                }
                for i in (0..view.marks.len()).rev() {
                    if !below(view.marks[i].0) {
                        continue;
                    }
                    let (from, to) = view.block(i);
                    let mut block = Vec::new();
                    read_range(&view.path, from, to, &view.skip, |e| {
                        if below(e.seq) && filter.matches(&e) {
                            block.push(e);
                        }
                        ControlFlow::Continue(())
                    })?;
                    found.extend(block.into_iter().rev());
                    if found.len() > limit {
                        break 'files;
                    }
                }
            }
            Ok(EventPage::from_overfetched(found, limit))
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError> {
        let id = id.to_owned();
        self.read(move |views| {
            let mut hit = None;
            for view in views.iter().rev() {
                read_range(&view.path, 0, view.end, &view.skip, |e| {
                    if e.id == id {
                        hit = Some(e);
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                })?;
                if hit.is_some() {
                    break;
                }
            }
            Ok(hit)
        })
        .await
    }

    fn export(&self, filter: EventFilter) -> EventStream {
        let (tx, rx) = mpsc::channel::<EventChunk>(EXPORT_READ_AHEAD);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let state = self.state.clone();
                // Detached on purpose: the task ends on its own when the
                // export is done or the receiver (the download) is dropped.
                drop(runtime.spawn_blocking(move || {
                    // The snapshot fixes the export to the store as it was
                    // when the download began.
                    let views = lock(&state).views();
                    if let Err(error) = export_chunks(&views, &filter, &tx) {
                        let _ = tx.blocking_send(Err(error));
                    }
                }));
            }
            Err(_) => {
                let _ = tx.try_send(Err(StoreError::Other(
                    "export needs a tokio runtime".into(),
                )));
            }
        }
        chunk_stream(rx)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let state = lock(&self.state);
        let mut stats = StoreStats::default();
        let add = |into: &mut std::collections::BTreeMap<String, u64>, from: &_| {
            for (k, n) in from {
                *into.entry(String::clone(k)).or_default() += n;
            }
        };
        for s in &state.segments {
            stats.total_events += s.count;
            stats.store_bytes += s.size;
            add(&mut stats.by_type, &s.by_type);
            add(&mut stats.by_level, &s.by_level);
            add(&mut stats.violations_by_policy, &s.violations_by_policy);
            add(&mut stats.violations_by_severity, &s.violations_by_severity);
        }
        let times = || state.segments.iter();
        stats.oldest_timestamp = times()
            .filter_map(|s| s.min_ts)
            .min()
            .map(|t| format_timestamp(&t));
        stats.newest_timestamp = times()
            .filter_map(|s| s.max_ts)
            .max()
            .map(|t| format_timestamp(&t));
        Ok(stats)
    }

    async fn health(&self) -> Result<(), StoreError> {
        let current = lock(&self.state).segments.last().map(|s| s.path.clone());
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || match current {
            // Opening the file being written for append is what the next
            // write does first.
            Some(path) => OpenOptions::new()
                .append(true)
                .open(&path)
                .map(drop)
                .map_err(|e| io_error("cannot open for append", &path, e)),
            None => {
                let probe = dir.join(HEALTH_PROBE);
                File::create(&probe)
                    .and_then(|mut f| f.write_all(b"ok"))
                    .and_then(|()| fs::remove_file(&probe))
                    .map_err(|e| io_error("cannot write in", &dir, e))
            }
        })
        .await
        .map_err(|e| StoreError::Other(format!("file store task failed: {e}")))?
    }

    async fn purge_before(&self, before: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        self.locked(move |state| {
            // A file goes only when all of it is older than the cutoff.
            state.remove_oldest(|s, _| s.max_ts.is_none_or(|t| t < before))
        })
        .await
    }

    async fn enforce_max_bytes(&self, max_bytes: u64) -> Result<PurgeReport, StoreError> {
        self.locked(move |state| state.remove_oldest(|_, total| total > max_bytes))
            .await
    }
}

// === impl State ===

impl State {
    fn views(&self) -> Vec<View> {
        self.segments.iter().map(Segment::view).collect()
    }

    /// Writes `events` (sealed, in seq order) at the end of the chain: one
    /// write and one `sync_data` per file. On failure every file is cut back
    /// to its size before, so a batch is stored whole or not at all.
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut last = self.head.as_ref().map(|h| h.seq);
        for e in events {
            if last.is_some_and(|l| e.seq <= l) {
                return Err(StoreError::Conflict(format!(
                    "seq {} does not follow the store's seq {}",
                    e.seq,
                    last.unwrap_or_default()
                )));
            }
            last = Some(e.seq);
        }

        let created_from = self.segments.len();
        let mut parts: Vec<Part> = Vec::new();
        let mut newest = self.segments.last().and_then(|s| s.max_ts);
        for (i, e) in events.iter().enumerate() {
            let index = self.target(e, newest);
            newest = newest.max(Some(e.timestamp));
            let part = match parts.last_mut() {
                Some(part) if part.index == index => part,
                _ => {
                    let close_torn_line = self.segments[index].torn;
                    parts.push(Part {
                        index,
                        buf: if close_torn_line {
                            b"\n".to_vec()
                        } else {
                            Vec::new()
                        },
                        events: Vec::new(),
                        close_torn_line,
                    });
                    let Some(part) = parts.last_mut() else {
                        return Err(StoreError::Other("no part to write".into()));
                    };
                    part
                }
            };
            let at = part.buf.len() as u64;
            if let Err(err) = serde_json::to_writer(&mut part.buf, e) {
                self.segments.truncate(created_from);
                return Err(StoreError::Other(format!("cannot serialise event: {err}")));
            }
            part.buf.push(b'\n');
            part.events.push((i, at));
        }

        for part in &parts {
            if let Err(error) = self.write(part.index, &part.buf) {
                self.roll_back(&parts, created_from);
                return Err(error);
            }
        }

        for part in &parts {
            let segment = &mut self.segments[part.index];
            let base = segment.size;
            if part.close_torn_line {
                // The torn bytes are now a complete line that is no event.
                Arc::make_mut(&mut segment.skip).push(segment.end);
                segment.torn = false;
            }
            for &(i, at) in &part.events {
                segment.record(&events[i], base + at);
            }
            segment.size += part.buf.len() as u64;
            segment.end = segment.size;
        }
        if let Some(e) = events.last() {
            self.head = Some(ChainHead {
                seq: e.seq,
                hash: e.hash.clone(),
            });
        }
        Ok(())
    }

    /// The index of the segment `event` goes to, adding a new one when its
    /// period has begun. Never an older file than the newest one: an event
    /// older than `newest` (the newest timestamp written or planned so far)
    /// stays in the current file.
    fn target(&mut self, event: &AuditEvent, newest: Option<DateTime<Utc>>) -> usize {
        segment::write_file_name(self.rotation, &event.timestamp, &mut self.name_buf);
        let name = self.name_buf.as_str();
        if let Some(current) = self.segments.last() {
            let stays = current.name == name
                || newest.is_some_and(|t| event.timestamp < t)
                || self.segments.iter().any(|s| s.name == name);
            if stays {
                return self.segments.len() - 1;
            }
        }
        self.segments
            .push(Segment::empty(&self.dir, self.name_buf.clone()));
        self.segments.len() - 1
    }

    fn write(&mut self, index: usize, buf: &[u8]) -> Result<(), StoreError> {
        let segment = &self.segments[index];
        let reuse = matches!(&self.open, Some((name, _)) if *name == segment.name);
        if !reuse {
            let created = !segment.path.exists();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&segment.path)
                .map_err(|e| io_error("cannot open", &segment.path, e))?;
            if created {
                // The new name must survive a power loss with the data the
                // writer acknowledges in it.
                sync_dir(&self.dir)?;
            }
            self.open = Some((segment.name.clone(), file));
        }
        let Some((_, file)) = self.open.as_mut() else {
            return Err(StoreError::Other("no open file".into()));
        };
        let path = &segment.path;
        file.write_all(buf)
            .map_err(|e| io_error("cannot write", path, e))?;
        // One durable write per batch: the writer acknowledges events only
        // after this returns.
        file.sync_data()
            .map_err(|e| io_error("cannot sync", path, e))
    }

    /// Undoes a failed append: cuts written files back, removes files this
    /// append created, and forgets their index entries.
    fn roll_back(&mut self, parts: &[Part], created_from: usize) {
        self.open = None;
        for part in parts {
            let segment = &self.segments[part.index];
            let restore = if part.index >= created_from {
                fs::remove_file(&segment.path).or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
            } else {
                OpenOptions::new()
                    .write(true)
                    .open(&segment.path)
                    .and_then(|f| f.set_len(segment.size))
            };
            if let Err(error) = restore {
                tracing::error!(
                    %error,
                    file = %segment.path.display(),
                    "Cannot undo a failed audit append; the file is marked torn."
                );
                if part.index < created_from {
                    self.mark_torn(part.index);
                }
            }
        }
        self.segments.truncate(created_from);
    }

    /// Marks a file whose failed append could not be cut back as torn, so
    /// what that append left is never read as events and the next append
    /// starts on a fresh line.
    fn mark_torn(&mut self, index: usize) {
        let segment = &mut self.segments[index];
        let marked = fs::metadata(&segment.path)
            .map_err(|e| io_error("cannot read", &segment.path, e))
            .and_then(|m| segment.mark_torn(m.len()));
        if let Err(error) = marked {
            tracing::error!(%error, file = %segment.path.display(), "Cannot mark the audit file torn.");
        }
    }

    /// Removes whole files from the oldest while `remove(segment, total
    /// bytes)` says so, never the newest, and reports what went.
    fn remove_oldest(
        &mut self,
        remove: impl Fn(&Segment, u64) -> bool,
    ) -> Result<PurgeReport, StoreError> {
        let total = |segments: &[Segment]| segments.iter().map(|s| s.size).sum::<u64>();
        let mut report = PurgeReport {
            bytes_before: total(&self.segments),
            ..PurgeReport::default()
        };
        let mut bytes = report.bytes_before;
        let mut result = Ok(());
        while self.segments.len() > 1 && remove(&self.segments[0], bytes) {
            let segment = &self.segments[0];
            if let Err(e) = fs::remove_file(&segment.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    result = Err(io_error("cannot remove", &segment.path, e));
                    break;
                }
            }
            if matches!(&self.open, Some((name, _)) if *name == segment.name) {
                self.open = None;
            }
            let segment = self.segments.remove(0);
            bytes -= segment.size;
            report.removed += segment.count;
            if report.first_seq.is_none() {
                report.first_seq = segment.first_seq;
            }
            if segment.last_seq.is_some() {
                report.last_seq = segment.last_seq;
            }
        }
        result?;
        report.bytes_after = total(&self.segments);
        report.oldest_remaining = self
            .segments
            .iter()
            .filter_map(|s| s.min_ts)
            .min()
            .map(|t| format_timestamp(&t));
        Ok(report)
    }
}

/// The folder's `source_id`, made (written and synced, then renamed into
/// place) on the first open.
fn read_or_make_source_id(dir: &Path) -> Result<String, StoreError> {
    let path = dir.join(SOURCE_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("cannot read", &path, e)),
    }
    let id = uuid::Uuid::now_v7().to_string();
    let partial = dir.join(format!(".{SOURCE_ID_FILE}.partial"));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&partial)?;
        file.write_all(format!("{id}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&partial, &path)
    };
    write().map_err(|e| io_error("cannot write", &path, e))?;
    Ok(id)
}

/// The cursor file of `target`, whose name must be a plain word so it
/// cannot reach outside the folder.
fn ship_cursor_path(dir: &Path, target: &str) -> Result<PathBuf, StoreError> {
    let plain = !target.is_empty()
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain {
        return Err(StoreError::Other(format!(
            "shipping target name {target:?} must be letters, digits, _ or -"
        )));
    }
    Ok(dir.join(format!("{SHIP_CURSOR_PREFIX}{target}")))
}

fn read_ship_cursor(path: &Path) -> Result<Option<i64>, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("{} does not hold a seq", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("cannot read", path, e)),
    }
}

/// Replaces the cursor file atomically: a crash leaves the old cursor or
/// the new one, never a torn number (an old one only re-sends a batch,
/// which the target ignores as a duplicate).
fn write_ship_cursor(dir: &Path, path: &Path, seq: i64) -> Result<(), StoreError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&partial)?;
        file.write_all(format!("{seq}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&partial, path)
    };
    write().map_err(|e| io_error("cannot write", path, e))?;
    sync_dir(dir)
}

/// Takes the exclusive, non-blocking lock on `dir/.lock`, held until the
/// returned file is closed (the OS releases it if the process dies).
fn lock_folder(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("cannot open", &path, e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Other(format!(
            "the file store in {} is in use by another process (a running serve or purge); \
             only one process may write it at a time",
            dir.display()
        ))),
        Err(e) => Err(io_error("cannot lock", &path, e.into())),
    }
}

/// Syncs the folder itself, so names created in it are durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync", dir, e))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code path panics while holding the lock, and every append updates
    // the index only after its writes succeeded, so a poisoned lock still
    // guards a consistent index.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads every matching event of `views` oldest first, in chunks; returns
/// early once the receiver is gone.
fn export_chunks(
    views: &[View],
    filter: &EventFilter,
    tx: &mpsc::Sender<EventChunk>,
) -> Result<(), StoreError> {
    let mut chunk = Vec::with_capacity(EXPORT_CHUNK);
    let mut gone = false;
    for view in views.iter().filter(|v| v.overlaps(filter)) {
        let read = read_range(&view.path, 0, view.end, &view.skip, |e| {
            if filter.matches(&e) {
                chunk.push(e);
            }
            if chunk.len() == EXPORT_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(EXPORT_CHUNK));
                if tx.blocking_send(Ok(full)).is_err() {
                    gone = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if gone {
            return Ok(());
        }
        if let Err(error) = read {
            // Hand over the good events before it, so the consumer stops
            // exactly at the bad line.
            if !chunk.is_empty() {
                let _ = tx.blocking_send(Ok(std::mem::take(&mut chunk)));
            }
            return Err(error);
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
