//! The single writer: batches queued events, stamps `seq` and the hash
//! chain, and appends them to the store.
//!
//! "When to flush" is this loop: a quiet proxy writes an event at once; a
//! busy one starts a write at most every `commit_interval` (sooner when a
//! batch fills or someone waits for an ack or a flush), so it writes in
//! large transactions. "How to write" is one
//! `append_batch` call, retried with backoff while the error is retriable.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::checkpoint::{CheckpointConfig, Checkpointer};
use super::health::{self, StoreHealth, StoreHealthSetter};
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
}

struct Writer {
    store: SharedStore,
    rx: mpsc::Receiver<WriterMsg>,
    cfg: WriterConfig,
    stats: Arc<PipelineStats>,
    health: StoreHealthSetter,
    seq: i64,
    prev_hash: String,
    /// Drops already reported in an ERROR event.
    reported_drops: u64,
    /// Runs the store's writes, so one proceeds while the next is sealed.
    tracker: TaskTracker,
    checkpoints: Option<Checkpointer>,
}

/// A write's first outcome and how long it took.
type Appended = (Result<(), StoreError>, Duration);

/// A sealed batch handed to the store, with who waits for it.
struct InFlight {
    batch: Batch,
    acks: Vec<(usize, Ack)>,
    flushes: Vec<oneshot::Sender<()>>,
    append: Pin<Box<dyn Future<Output = Appended> + Send>>,
}

/// What woke the writer.
enum Step {
    Received(usize),
    Written(Appended),
    /// The commit interval has passed with events waiting.
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
    let handle = Handle::new(
        tx,
        cfg.min_level,
        cfg.enabled,
        stats.clone(),
        cfg.source.clone(),
    );
    let writer = Writer {
        store,
        rx,
        stats,
        health: setter,
        seq: head.as_ref().map_or(0, |h| h.seq),
        prev_hash: head.map_or_else(|| GENESIS_HASH.to_owned(), |h| h.hash),
        reported_drops: 0,
        tracker: tracker.clone(),
        checkpoints,
        cfg,
    };
    tracker.spawn(writer.run());
    Ok((handle, health))
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
            let step = match in_flight.as_mut() {
                // A write is under way: take new events as they come (they
                // are sealed while it runs) but settle it as soon as it ends,
                // so acks and flushes are not held back by a quiet queue.
                Some(write) => tokio::select! {
                    n = self.rx.recv_many(&mut msgs, room) => Step::Received(n),
                    appended = &mut write.append => Step::Written(appended),
                    () = tokio::time::sleep_until(due), if lingering => Step::Due,
                },
                None => tokio::select! {
                    n = self.rx.recv_many(&mut msgs, room) => Step::Received(n),
                    () = tokio::time::sleep_until(due), if lingering => Step::Due,
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
        tracing::debug!(
            written = self.stats.written.load(Ordering::Relaxed),
            "Audit writer stopped."
        );
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
        let mut batch: Vec<AuditEvent> = Vec::with_capacity(msgs.len());
        let mut acks: Vec<(usize, Ack)> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        for msg in msgs.drain(..) {
            match msg {
                WriterMsg::Event(e) => batch.push(self.seal(e)),
                WriterMsg::EventAck(e, ack) => {
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
            }
        }
        let taken = batch.len() as u64;
        let _ = self
            .stats
            .queue_depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(taken))
            });
        // One batch in the store at a time, so batches land in chain
        // order; this one was sealed while the previous was written.
        if let Some(mut write) = in_flight.take() {
            let appended = (&mut write.append).await;
            self.settle(write, appended, &mut batch).await;
        }
        self.report_drops(&mut batch);
        self.stamp_checkpoint(&mut batch);
        if batch.is_empty() {
            for done in flushes {
                let _ = done.send(());
            }
        } else {
            *in_flight = Some(self.begin(batch, acks, flushes));
        }
    }

    /// Hands `batch` to the store on its own task, so the store writes it
    /// while the next batch is sealed here.
    fn begin(
        &self,
        batch: Vec<AuditEvent>,
        acks: Vec<(usize, Ack)>,
        flushes: Vec<oneshot::Sender<()>>,
    ) -> InFlight {
        let batch: Batch = batch.into();
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
            append: Box::pin(async move {
                task.await.unwrap_or_else(|e| {
                    let error = StoreError::Unavailable(format!("store write task ended: {e}"));
                    (Err(error), Duration::ZERO)
                })
            }),
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
            ..
        } = write;
        let (appended, elapsed) = appended;
        self.stats.write_seconds.observe(elapsed.as_secs_f64());
        // `next` ends the chain as sealed so far; if the write moved the
        // chain's tip, `next` no longer follows it.
        let tip = self.prev_hash.clone();
        let result = self.write(&mut batch, appended).await;
        if self.prev_hash != tip {
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

    /// Appends an ERROR event for drops not yet reported, so the record
    /// itself says that it has a gap.
    fn report_drops(&mut self, batch: &mut Vec<AuditEvent>) {
        let dropped = self.stats.dropped.load(Ordering::Relaxed);
        if dropped == self.reported_drops || !self.health.get() {
            return;
        }
        let newly = dropped - self.reported_drops;
        self.reported_drops = dropped;
        let event = NewEvent::new(
            EventType::Error,
            format!("{newly} audit events were dropped because the event queue was full"),
        )
        .with_metadata(json!({
            "error_type": "events_dropped",
            "details": {"dropped": newly, "dropped_total": dropped},
        }));
        let mut event = event;
        super::stamp_source(&mut event, self.cfg.source.as_ref());
        batch.push(self.seal(event));
    }

    /// Completes the write of `batch` whose first attempt gave `appended`,
    /// retrying while the error is retriable. Returns the last error's
    /// message if the batch could not be written.
    async fn write(
        &mut self,
        batch: &mut Batch,
        mut appended: Result<(), StoreError>,
    ) -> Result<(), String> {
        let mut delay = Duration::from_millis(50);
        let mut attempts = 1u32;
        let mut conflicts = 0u32;
        loop {
            match appended {
                Ok(()) => {
                    self.stats
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if !self.health.set(true) {
                        tracing::info!("Audit store accepts writes again.");
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict(message)) if conflicts < 10 => {
                    // Another process appended (an offline purge's SYSTEM
                    // event): continue the chain after what it wrote.
                    conflicts += 1;
                    tracing::debug!(%message, "Audit batch re-sealed after a concurrent append.");
                    self.rewind().await;
                    let mut events = batch.to_vec();
                    self.reseal(&mut events);
                    *batch = events.into();
                }
                Err(error) => {
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    if self.health.set(false) {
                        tracing::error!(%error, events = batch.len(), "Audit store write failed.");
                    }
                    let closing = self.rx.is_closed();
                    if !error.is_retriable() || (closing && attempts >= self.cfg.shutdown_attempts)
                    {
                        self.stats
                            .lost
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        // The chain must continue from what the store holds,
                        // not from the batch that never landed.
                        self.rewind().await;
                        tracing::error!(%error, lost = batch.len(), "Audit batch abandoned.");
                        return Err(error.to_string());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
            attempts += 1;
            let started = tokio::time::Instant::now();
            appended = self.store.append_batch(batch.clone()).await;
            self.stats
                .write_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Seals `batch` again after the current head, keeping each event's
    /// content.
    fn reseal(&mut self, batch: &mut [AuditEvent]) {
        for event in batch.iter_mut() {
            let new = NewEvent {
                id: std::mem::take(&mut event.id),
                timestamp: event.timestamp,
                event_type: event.event_type.clone(),
                level: event.level,
                message: std::mem::take(&mut event.message),
                request_id: event.request_id.take(),
                metadata: std::mem::take(&mut event.metadata),
                metadata_json: std::mem::take(&mut event.metadata_json),
            };
            // A checkpoint signs the event before it: sign again for the
            // new place.
            let new = match &self.checkpoints {
                Some(c) if new.event_type == EventType::Checkpoint => {
                    c.resign(new, self.seq, &self.prev_hash)
                }
                _ => new,
            };
            *event = self.seal(new);
        }
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

    async fn rewind(&mut self) {
        if let Ok(head) = self.store.head().await {
            self.seq = head.as_ref().map_or(0, |h| h.seq);
            self.prev_hash = head.map_or_else(|| GENESIS_HASH.to_owned(), |h| h.hash);
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
