//! The single writer: batches queued events, stamps `seq` and the hash
//! chain, and appends them to the store.
//!
//! "When to flush" is this loop: a quiet proxy writes an event at once; a
//! busy one starts a write at most every `commit_interval` (sooner when a
//! batch fills or someone waits for an ack or a flush), so it writes in
//! large transactions. "How to write" is one
//! `append_batch` call, retried with backoff while the error is retriable
//! (`writer/retry.rs`). What is lost on the way is recorded once the store
//! takes writes again (`writer/report.rs`).

mod report;
mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use self::report::{LostBatch, Noted, Report};
use super::checkpoint::{CheckpointConfig, Checkpointer};
use super::health::{self, StoreHealth, StoreHealthSetter};
use super::losses::{Carried, LossLedger};
use super::{Handle, PipelineStats, SubmitError, WriterMsg};
use crate::event::{chain::GENESIS_HASH, AuditEvent, EventType, Level, NewEvent};
use crate::store::{Batch, SharedStore, StoreError};

/// The writer's settings, from the `audit` and `queue` config slices.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub enabled: bool,
    pub min_level: Level,
    /// Events the queue holds before offers are dropped.
    pub queue_capacity: usize,
    /// Bytes the queued events may hold before offers are dropped.
    pub queue_max_bytes: u64,
    /// Most events written in one transaction.
    pub max_batch: usize,
    /// Shortest time between the starts of two writes while events keep
    /// coming; a writer idle for longer writes the next event at once.
    pub commit_interval: Duration,
    /// How often an idle writer checks that the store still answers.
    pub health_interval: Duration,
    /// Attempts for one batch once the queue has closed (shutdown), so a
    /// dead store cannot hold the process forever.
    pub shutdown_attempts: u32,
    /// Added to every event's metadata as `source` (where the proxy runs).
    pub source: Option<serde_json::Value>,
    /// Signed checkpoints; `None` writes none.
    pub checkpoints: Option<CheckpointConfig>,
    /// Where losses an earlier run could not record were left; they are
    /// recorded with the first write that succeeds, and the file removed.
    pub ledger: Option<LossLedger>,
}

struct Writer {
    store: SharedStore,
    rx: mpsc::Receiver<WriterMsg>,
    /// Signalled after a message someone waits for is queued.
    waited_for: Arc<Notify>,
    cfg: WriterConfig,
    stats: Arc<PipelineStats>,
    health: StoreHealthSetter,
    seq: i64,
    prev_hash: String,
    /// False after a failed re-read of the store's head: `seq` and
    /// `prev_hash` may then name an event that was never stored, and no
    /// batch is written until the head has been read again.
    head_known: bool,
    /// Losses already recorded in the store.
    noted: Noted,
    /// Batches given up on, not yet recorded.
    lost_batches: Vec<LostBatch>,
    /// What an earlier run left in the ledger, until recorded.
    carried: Option<Carried>,
    /// Answered once the queue has closed and everything is written.
    closing: Vec<oneshot::Sender<()>>,
    /// Runs the store's writes, so one proceeds while the next is sealed.
    tracker: TaskTracker,
    checkpoints: Option<Checkpointer>,
    /// Where each batch is sealed, kept empty between batches so its room
    /// is reused (at most `max_batch` events, plus the batch's reports).
    sealing: Vec<AuditEvent>,
}

/// The chain's tip as it was before a write, to tell whether the write
/// moved it: on the stack for a hash's 64 hex digits.
enum Tip {
    Hash([u8; 64]),
    Other(String),
}

impl Tip {
    fn of(hash: &str) -> Self {
        match <[u8; 64]>::try_from(hash.as_bytes()) {
            Ok(bytes) => Tip::Hash(bytes),
            Err(_) => Tip::Other(hash.to_owned()),
        }
    }

    fn is(&self, hash: &str) -> bool {
        match self {
            Tip::Hash(bytes) => bytes.as_slice() == hash.as_bytes(),
            Tip::Other(text) => text == hash,
        }
    }
}

/// One batch takes at most this share of `queue.max_bytes` in events
/// (see `Writer::batch_end`).
const BATCH_SHARES_OF_QUEUE: u64 = 8;

/// A write's first outcome and how long it took.
type Appended = (Result<(), StoreError>, Duration);

/// A sealed batch handed to the store, with who waits for it.
struct InFlight {
    batch: Batch,
    acks: Vec<(usize, Ack)>,
    flushes: Vec<oneshot::Sender<()>>,
    /// Losses the batch records, if any; noted once it is stored.
    report: Option<Report>,
    append: Appending,
}

/// The store's write task, awaited as its outcome (the task's own failure
/// read as the store's). Polls the task's handle in place rather than a
/// boxed future per batch.
struct Appending(tokio::task::JoinHandle<Appended>);

impl Future for Appending {
    type Output = Appended;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Appended> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                let error = StoreError::Unavailable(format!("store write task ended: {e}"));
                (Err(error), Duration::ZERO)
            })
        })
    }
}

/// What woke the writer.
enum Step {
    Received(usize),
    Written(Appended),
    /// The commit interval has passed with events waiting, or someone
    /// waits for what is queued.
    Due,
    Idle,
}

type Ack = oneshot::Sender<Result<AuditEvent, SubmitError>>;

/// Starts the writer on `tracker` and returns the producers' handle and the
/// health view. The writer ends once every `Handle` is dropped and the queue
/// is drained.
pub async fn spawn_writer(
    store: SharedStore,
    cfg: WriterConfig,
    tracker: &TaskTracker,
) -> Result<(Handle, StoreHealth), StoreError> {
    let head = store.head().await?;
    let checkpoints = match cfg.checkpoints.clone().filter(|_| cfg.enabled) {
        Some(c) => Some(Checkpointer::new(
            c,
            store
                .source_id()
                .await?
                .unwrap_or_else(crate::event::new_id),
        )),
        None => None,
    };
    let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
    let stats = Arc::new(PipelineStats::default());
    let (setter, health) = health::channel();
    let waited_for = Arc::new(Notify::new());
    let handle = Handle::new(
        tx,
        cfg.min_level,
        cfg.enabled,
        stats.clone(),
        cfg.source.clone(),
        cfg.queue_max_bytes,
        waited_for.clone(),
    );
    let carried = cfg.ledger.as_ref().and_then(LossLedger::read);
    let writer = Writer {
        store,
        rx,
        waited_for,
        stats,
        health: setter,
        seq: head.as_ref().map_or(0, |h| h.seq),
        prev_hash: head.map_or_else(|| GENESIS_HASH.to_owned(), |h| h.hash),
        head_known: true,
        noted: Noted::default(),
        lost_batches: Vec::new(),
        carried,
        closing: Vec::new(),
        tracker: tracker.clone(),
        checkpoints,
        cfg,
        sealing: Vec::new(),
    };
    tracker.spawn(writer.run());
    Ok((handle, health))
}

// === impl WriterConfig ===

#[cfg(test)]
impl WriterConfig {
    /// A writer that stores every level, writes as soon as anything is
    /// queued, never signs and has room to spare: the tests' baseline, with
    /// their own queue size and batch.
    pub(crate) fn for_tests(queue_capacity: usize, max_batch: usize) -> Self {
        Self {
            enabled: true,
            min_level: Level::Debug,
            queue_capacity,
            max_batch,
            commit_interval: Duration::ZERO,
            health_interval: Duration::from_secs(3600),
            shutdown_attempts: 1,
            source: None,
            checkpoints: None,
            queue_max_bytes: u64::MAX / 2,
            ledger: None,
        }
    }
}

// === impl Writer ===

impl Writer {
    async fn run(mut self) {
        let mut msgs = Vec::with_capacity(self.cfg.max_batch);
        // `msgs` holds an ack or a flush: someone waits, so no lingering.
        let mut waited_for = false;
        let mut in_flight: Option<InFlight> = None;
        let mut last_begun: Option<Instant> = None;
        loop {
            // Kept above zero: a full `msgs` is dispatched before receiving.
            let room = self.cfg.max_batch - msgs.len();
            let due = last_begun.map_or_else(Instant::now, |t| t + self.cfg.commit_interval);
            let lingering = !msgs.is_empty();
            let idle = self.idle_deadline();
            // While a batch gathers (`lingering`), the queue is not read:
            // events offered meanwhile wake nobody and are taken together
            // when the interval is up. A message someone waits for (an
            // ack, a flush, a close) is signalled and ends the wait.
            let step = match in_flight.as_mut() {
                // A write is under way: new events are sealed while it runs,
                // but it is settled as soon as it ends, so acks and flushes
                // are not held back by a quiet queue.
                Some(write) => tokio::select! {
                    n = self.rx.recv_many(&mut msgs, room), if !lingering => Step::Received(n),
                    appended = &mut write.append => Step::Written(appended),
                    () = tokio::time::sleep_until(due), if lingering => Step::Due,
                    () = self.waited_for.notified(), if lingering => Step::Due,
                },
                None => tokio::select! {
                    n = self.rx.recv_many(&mut msgs, room), if !lingering => Step::Received(n),
                    () = tokio::time::sleep_until(due), if lingering => Step::Due,
                    () = self.waited_for.notified(), if lingering => Step::Due,
                    () = tokio::time::sleep_until(idle), if !lingering => Step::Idle,
                },
            };
            let ready = match step {
                Step::Idle => {
                    self.check_health().await;
                    // A heartbeat checkpoint, if one is due.
                    self.checkpoint_due()
                }
                Step::Written(appended) => {
                    if let Some(write) = in_flight.take() {
                        self.settle(write, appended, &mut []).await;
                    }
                    false
                }
                Step::Received(0) => {
                    // The queue is closed and empty: write what lingers
                    // and the stop checkpoint, finish the last write, stop.
                    // What one batch cannot take first, so that the stop
                    // checkpoint comes last.
                    while self.batch_end(&msgs) < msgs.len() {
                        self.dispatch(&mut msgs, &mut in_flight).await;
                    }
                    if let Some(c) = &mut self.checkpoints {
                        c.stop();
                    }
                    if !msgs.is_empty() || self.checkpoint_due() {
                        self.dispatch(&mut msgs, &mut in_flight).await;
                    }
                    if let Some(mut write) = in_flight.take() {
                        let appended = (&mut write.append).await;
                        self.settle(write, appended, &mut []).await;
                    }
                    break;
                }
                Step::Received(n) => {
                    let from = msgs.len() - n;
                    for msg in &msgs[from..] {
                        if let WriterMsg::Close(_) = msg {
                            // Later offers fail at once (and are counted);
                            // what is queued is still received and written.
                            self.rx.close();
                        }
                    }
                    waited_for |= msgs[msgs.len() - n..]
                        .iter()
                        .any(|m| !matches!(m, WriterMsg::Event(_)));
                    // Under a steady stream of events, commits are spaced
                    // by `commit_interval` so each carries many events: a
                    // commit writes every touched table and index page
                    // once, whatever the number of rows.
                    waited_for || msgs.len() >= self.cfg.max_batch || Instant::now() >= due
                }
                Step::Due => true,
            };
            if ready {
                self.dispatch(&mut msgs, &mut in_flight).await;
                waited_for = false;
                last_begun = Some(Instant::now());
            }
        }
        // A clean stop leaves the store whole on its own (for SQLite: the
        // WAL checkpointed into the main file), so a copy of it is complete.
        if let Err(error) = self.store.close().await {
            tracing::warn!(%error, "Audit store could not be closed cleanly.");
        }
        tracing::debug!(
            written = self.stats.written.load(Ordering::Relaxed),
            "Audit writer stopped."
        );
        for done in self.closing.drain(..) {
            let _ = done.send(());
        }
    }

    /// Seals what `msgs` holds (and whatever else is queued, up to a
    /// batch), waits for the write in flight, and starts this batch's.
    async fn dispatch(&mut self, msgs: &mut Vec<WriterMsg>, in_flight: &mut Option<InFlight>) {
        // Sealing is CPU work that no call waits for: let the worker serve
        // ready sockets first (more events queue up meanwhile, so batches
        // grow under load).
        tokio::task::yield_now().await;
        while msgs.len() < self.cfg.max_batch {
            match self.rx.try_recv() {
                Ok(msg) => msgs.push(msg),
                Err(_) => break,
            }
        }
        let mut batch = std::mem::take(&mut self.sealing);
        batch.reserve(msgs.len());
        let mut acks: Vec<(usize, Ack)> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut bytes = 0u64;
        let taken = self.batch_end(msgs);
        for msg in msgs.drain(..taken) {
            match msg {
                WriterMsg::Event(e) => {
                    bytes += super::queued_bytes(&e);
                    batch.push(self.seal(e));
                }
                WriterMsg::EventAck(e, ack) => {
                    bytes += super::queued_bytes(&e);
                    acks.push((batch.len(), ack));
                    batch.push(self.seal(e));
                }
                WriterMsg::Flush(done) => flushes.push(done),
                WriterMsg::Checkpoint { stop, done } => {
                    if let Some(c) = &mut self.checkpoints {
                        if stop {
                            c.stop();
                        } else {
                            c.request();
                        }
                    }
                    flushes.push(done);
                }
                WriterMsg::Close(done) => {
                    // Taken here rather than by the loop: close all the same.
                    self.rx.close();
                    self.closing.push(done);
                }
            }
        }
        let taken = batch.len() as u64;
        for (counter, n) in [
            (&self.stats.queue_depth, taken),
            (&self.stats.queue_bytes, bytes),
        ] {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(n))
            });
        }
        if taken > 0 {
            // Calls held at admission for a full queue may go on (one is
            // woken, and passes the turn on while room remains). Rung
            // whether or not anyone waits, so a call that is just starting
            // to wait cannot miss it.
            self.stats.room.notify_one();
            // Every record whose events are held for room tries again.
            self.stats.held_room.notify_waiters();
        }
        // One batch in the store at a time, so batches land in chain
        // order; this one was sealed while the previous was written.
        if let Some(mut write) = in_flight.take() {
            let appended = (&mut write.append).await;
            self.settle(write, appended, &mut batch).await;
        }
        if !self.head_known && !batch.is_empty() && !self.recover_head(&mut batch).await {
            self.give_up(&batch, "the store's head could not be read".into());
            for (_, ack) in acks.drain(..) {
                let _ = ack.send(Err(SubmitError::Store("the store cannot be read".into())));
            }
            batch.clear();
        }
        let report = self.report_losses(&mut batch);
        // Last, so a due checkpoint covers the loss reports too.
        if self.head_known {
            self.stamp_checkpoint(&mut batch);
        }
        if batch.is_empty() {
            for done in flushes {
                let _ = done.send(());
            }
        } else {
            *in_flight = Some(self.begin(&mut batch, acks, flushes, report));
        }
        batch.clear();
        self.sealing = batch;
    }

    /// How many of `msgs` one batch takes: all of them, unless their events
    /// hold more than a batch's share of `queue.max_bytes`. The queue makes
    /// room only as the writer takes a batch, once per write; a write of a
    /// whole queue of large bodies can outlast `queue.full_wait_ms`, and
    /// everyone waiting for room would give up. Smaller batches make room
    /// more often. At least one event is taken.
    fn batch_end(&self, msgs: &[WriterMsg]) -> usize {
        let most = (self.cfg.queue_max_bytes / BATCH_SHARES_OF_QUEUE).max(1);
        let mut bytes = 0u64;
        for (i, msg) in msgs.iter().enumerate() {
            if let WriterMsg::Event(e) | WriterMsg::EventAck(e, _) = msg {
                if bytes > 0 && bytes + super::queued_bytes(e) > most {
                    return i;
                }
                bytes += super::queued_bytes(e);
            }
        }
        msgs.len()
    }

    /// Hands `batch` to the store on its own task, so the store writes it
    /// while the next batch is sealed here.
    fn begin(
        &self,
        batch: &mut Vec<AuditEvent>,
        acks: Vec<(usize, Ack)>,
        flushes: Vec<oneshot::Sender<()>>,
        report: Option<Report>,
    ) -> InFlight {
        // Moved out in one allocation of the exact size; `batch` keeps its
        // room for the next.
        let batch: Batch = batch.drain(..).collect();
        let store = self.store.clone();
        let events = batch.clone();
        let task = self.tracker.spawn(async move {
            let started = tokio::time::Instant::now();
            let appended = store.append_batch(events).await;
            (appended, started.elapsed())
        });
        InFlight {
            batch,
            acks,
            flushes,
            report,
            append: Appending(task),
        }
    }

    /// Finishes a write: retries it if it failed, answers its acks and
    /// flushes. `next` was sealed after it; if the write had to move the
    /// chain (re-sealed after a concurrent append, or abandoned), `next` is
    /// sealed again to follow what the store now holds.
    async fn settle(&mut self, write: InFlight, appended: Appended, next: &mut [AuditEvent]) {
        let InFlight {
            mut batch,
            acks,
            flushes,
            report,
            ..
        } = write;
        let (appended, elapsed) = appended;
        self.stats.write_seconds.observe(elapsed.as_secs_f64());
        // `next` ends the chain as sealed so far; if the write moved the
        // chain's tip, `next` no longer follows it.
        let tip = Tip::of(&self.prev_hash);
        let result = self.write(&mut batch, appended).await;
        if let Some(report) = report {
            self.settle_report(report, result.is_ok());
        }
        if !tip.is(&self.prev_hash) {
            self.reseal(next);
        }
        for (i, ack) in acks {
            let reply = match &result {
                Ok(()) => Ok(batch[i].clone()),
                Err(e) => Err(SubmitError::Store(e.clone())),
            };
            let _ = ack.send(reply);
        }
        for done in flushes {
            let _ = done.send(());
        }
    }

    fn seal(&mut self, event: NewEvent) -> AuditEvent {
        if let Some(c) = self.checkpoints.as_mut() {
            if event.event_type != EventType::Checkpoint {
                c.sealed(&event.event_type);
            }
        }
        self.seq += 1;
        let sealed = event.seal(self.seq, &self.prev_hash);
        self.prev_hash.clone_from(&sealed.hash);
        sealed
    }

    /// When an idle writer wakes: for its health check, or sooner for a
    /// heartbeat checkpoint.
    fn idle_deadline(&self) -> Instant {
        let health = Instant::now() + self.cfg.health_interval;
        self.checkpoints
            .as_ref()
            .map_or(health, |c| health.min(c.next_due()))
    }

    fn checkpoint_due(&self) -> bool {
        self.checkpoints
            .as_ref()
            .is_some_and(|c| c.due(Instant::now()).is_some())
    }

    /// Appends a signed checkpoint over the batch's last event when one is
    /// due (see [`super::checkpoint`]).
    fn stamp_checkpoint(&mut self, batch: &mut Vec<AuditEvent>) {
        let Some(reason) = self
            .checkpoints
            .as_ref()
            .and_then(|c| c.due(Instant::now()))
        else {
            return;
        };
        if self.seq == 0 {
            // Nothing to cover yet.
            return;
        }
        let (seq, hash) = (self.seq, self.prev_hash.clone());
        if let Some(c) = self.checkpoints.as_mut() {
            let event = c.make(reason, seq, &hash);
            batch.push(self.seal(event));
        }
    }

    async fn check_health(&mut self) {
        match self.store.health().await {
            Ok(()) => {
                if !self.health.set(true) {
                    tracing::info!("Audit store answers again.");
                }
            }
            Err(error) => {
                if self.health.set(false) {
                    tracing::error!(%error, "Audit store health check failed.");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
