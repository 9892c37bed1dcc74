//! Shipping: the local store is an outbox, and each configured target
//! gets every event at least once, in `seq` order.
//!
//! A shipper is a sink behind the pipeline, never a path from the proxy:
//! it reads what the writer already committed, so a slow or dead target
//! never holds a call nor the writer. Each target has its own shipper and
//! its own cursor in the local store (the last `seq` it acknowledged). A
//! step reads a batch after the cursor, writes it to the target, and moves
//! the cursor only once the target said the batch is durable. A crash
//! between the two re-sends that batch at the next start, which the
//! target ignores, since it keeps each (source, seq) once.
//!
//! On failure the shipper waits (capped exponential backoff with jitter)
//! and tries the same batch again; the first failure of a run of them is
//! recorded as an ERROR event, the recovery as a SYSTEM event. At shutdown
//! the shipper gets what is left of the grace period to send the tail,
//! after the writer stored its last event; what is still unshipped is
//! logged with its seq range and sent at the next start.

pub mod backoff;
pub mod http;
pub mod postgres;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use self::backoff::Backoff;
use self::status::TargetStatus;
use super::Handle;
use crate::event::{parse_timestamp, EventRecord, EventType, Level, NewEvent};
use crate::store::{SharedStore, StoreError};

/// The longest one batch may take to be written before the try counts as
/// failed (a stalled network must not hold a shipper forever).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A place events are shipped to.
#[async_trait]
pub trait ShipTarget: Send + Sync + 'static {
    /// The target's name: its cursor's key and its metrics label.
    fn name(&self) -> &'static str;

    /// Writes `batch` (ascending `seq`, from one source) and returns only
    /// once the target holds it durably. Writing a batch again must leave
    /// one copy of each event.
    async fn write(&self, source: &Source, batch: &[EventRecord]) -> Result<(), ShipError>;
}

/// The store instance events come from, as targets record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The local store's stable id.
    pub source_id: String,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub node: Option<String>,
}

/// Why a batch was not acknowledged. Messages never carry a credential.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("cannot connect to the {target} target: {message}")]
    Connect {
        target: &'static str,
        message: String,
    },
    #[error("the {target} target refused the batch: {message}")]
    Write {
        target: &'static str,
        message: String,
    },
    #[error("the {target} target did not answer within {secs} s")]
    Timeout { target: &'static str, secs: u64 },
    #[error("the local store could not be read for shipping: {0}")]
    Store(#[from] StoreError),
}

/// How a shipper batches and retries (the `shipping` config slice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipperConfig {
    pub batch_size: usize,
    pub poll_interval: Duration,
    pub max_backoff: Duration,
}

/// One target's shipper, before it runs.
pub struct Shipper {
    pub store: SharedStore,
    pub target: Arc<dyn ShipTarget>,
    pub source: Source,
    pub config: ShipperConfig,
    pub status: Arc<TargetStatus>,
    /// Where ERROR and SYSTEM events about shipping are recorded.
    pub events: Handle,
}

/// A running shipper: [`drain`](Self::drain) it at shutdown.
pub struct ShipperHandle {
    name: &'static str,
    /// Set once: the instant by which the tail must be sent.
    drain: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

/// The batch after a cursor, read while the batch before it was being
/// written.
#[derive(Default)]
struct ReadAhead {
    /// The cursor the batch follows, and the batch (never empty).
    next: Option<(i64, Vec<EventRecord>)>,
}

impl ReadAhead {
    /// The batch read after `cursor`, if one is held. An empty read is not
    /// kept: events may have been stored since.
    fn take(&mut self, cursor: i64) -> Option<Vec<EventRecord>> {
        match self.next.take() {
            Some((after, batch)) if after == cursor => Some(batch),
            _ => None,
        }
    }

    fn keep(&mut self, cursor: i64, batch: Vec<EventRecord>) {
        self.next = (!batch.is_empty()).then_some((cursor, batch));
    }
}

/// What one step did.
enum Step {
    /// Nothing after the cursor.
    CaughtUp,
    /// A batch was acknowledged and the cursor moved.
    Shipped,
}

/// Spawns `shipper` on `tracker`.
pub fn spawn(tracker: &TaskTracker, shipper: Shipper) -> ShipperHandle {
    let name = shipper.target.name();
    let (drain, drain_rx) = watch::channel(None);
    let task = tracker.spawn(shipper.run(drain_rx));
    ShipperHandle { name, drain, task }
}

// === impl ShipperHandle ===

impl ShipperHandle {
    /// Tells the shipper to send what is left until `deadline`, then stop,
    /// and waits for it (a little past the deadline at most).
    pub async fn drain(self, deadline: Instant) {
        let _ = self.drain.send(Some(deadline));
        let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(wait, self.task).await.is_err() {
            abort.abort();
            tracing::warn!(target = self.name, "Shipper did not stop in time.");
        }
    }
}

// === impl Shipper ===

impl Shipper {
    async fn run(self, mut drain: watch::Receiver<Option<Instant>>) {
        let name = self.target.name();
        let mut backoff = Backoff::new(self.config.max_backoff);
        let mut cursor: Option<i64> = None;
        let mut ahead = ReadAhead::default();
        let mut failures: u64 = 0;
        tracing::info!(target = name, "Shipping audit events.");
        loop {
            let deadline = *drain.borrow();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let budget = deadline.map_or(WRITE_TIMEOUT, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(WRITE_TIMEOUT)
            });
            // A drain asked for while a write hangs cuts it at the drain's
            // deadline, so the shipper stops in time to log the tail.
            let step = tokio::select! {
                step = tokio::time::timeout(budget, self.step(&mut cursor, &mut ahead)) => match step {
                    Ok(step) => step,
                    Err(_) => Err(ShipError::Timeout {
                        target: name,
                        secs: budget.as_secs(),
                    }),
                },
                () = drain_deadline_passed(&mut drain) => Err(ShipError::Timeout {
                    target: name,
                    secs: budget.as_secs(),
                }),
            };
            // A drain may have been asked for during the step.
            let draining = deadline.is_some() || drain.borrow().is_some();
            match step {
                Ok(step) => {
                    // During a drain the shutdown event is already the last
                    // one stored: nothing may follow it, or the next start
                    // would take the stop for an unclean one.
                    if failures > 0 && !draining {
                        self.record_recovery(failures);
                    }
                    failures = 0;
                    backoff.reset();
                    if matches!(step, Step::CaughtUp) {
                        if deadline.is_some() {
                            break;
                        }
                        if draining {
                            // The step may have read before the last event
                            // was stored: look once more.
                            continue;
                        }
                        wait(&mut drain, self.config.poll_interval).await;
                    }
                }
                Err(error) => {
                    self.status.record_error(error.to_string());
                    failures += 1;
                    if failures == 1 && !draining {
                        self.record_failure(&error, cursor);
                    } else {
                        tracing::debug!(target = name, %error, failures, "Shipping still failing.");
                    }
                    wait(&mut drain, backoff.next_wait()).await;
                }
            }
        }
        self.report_tail(cursor).await;
    }

    /// Ships one batch after the cursor, if there is one.
    async fn step(
        &self,
        cursor: &mut Option<i64>,
        ahead: &mut ReadAhead,
    ) -> Result<Step, ShipError> {
        let name = self.target.name();
        let after = match *cursor {
            Some(seq) => seq,
            None => {
                let stored = self.store.ship_cursor(name).await?;
                if let Some(seq) = stored {
                    self.status.set_cursor(seq);
                }
                *cursor = Some(stored.unwrap_or(0));
                stored.unwrap_or(0)
            }
        };
        let batch = match ahead.take(after) {
            Some(batch) => batch,
            None => {
                self.store
                    .records_after(after, self.config.batch_size)
                    .await?
            }
        };
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            self.status.set_lag(0, 0);
            return Ok(Step::CaughtUp);
        };
        let last_seq = last.seq;
        if after > 0 && first.seq > after + 1 {
            // The size cap (or the memory store's ring) removed events the
            // target never got; maintenance recorded the range as an ERROR.
            let lost = first.seq - after - 1;
            self.status.record_lost(lost as u64);
            tracing::error!(
                target = name,
                first_seq = after + 1,
                last_seq = first.seq - 1,
                "Events were removed from the local store before they were shipped."
            );
        }
        self.update_lag(first.seq - 1, Some(first)).await?;
        // The next batch is read from the local store while the target
        // writes this one: a backlog drains at the pace of the slower of
        // the two, not of their sum. It is kept only if this write works.
        let (written, next) = tokio::join!(
            self.target.write(&self.source, &batch),
            self.store.records_after(last_seq, self.config.batch_size)
        );
        written?;
        // Only now, with the batch durable at the target, does the cursor
        // move: a crash before this line re-sends the batch, never skips it.
        self.store.set_ship_cursor(name, last_seq).await?;
        *cursor = Some(last_seq);
        self.status.set_cursor(last_seq);
        self.status
            .record_success(batch.len() as u64, crate::event::now().timestamp());
        let next = next?;
        self.update_lag(last_seq, next.first()).await?;
        ahead.keep(last_seq, next);
        Ok(Step::Shipped)
    }

    /// Lag after `shipped_up_to`: events up to the store's head, and the
    /// age of `oldest_unshipped`.
    async fn update_lag(
        &self,
        shipped_up_to: i64,
        oldest_unshipped: Option<&EventRecord>,
    ) -> Result<(), StoreError> {
        let head = self.store.head().await?.map_or(0, |h| h.seq);
        let lag = u64::try_from(head - shipped_up_to).unwrap_or(0);
        let age = oldest_unshipped
            .and_then(|r| parse_timestamp(&r.timestamp))
            .map_or(0, |t| {
                u64::try_from((crate::event::now() - t).num_seconds()).unwrap_or(0)
            });
        self.status.set_lag(lag, if lag == 0 { 0 } else { age });
        Ok(())
    }

    fn record_failure(&self, error: &ShipError, cursor: Option<i64>) {
        let name = self.target.name();
        tracing::warn!(target = name, %error, "Shipping audit events failed; retrying with backoff.");
        self.events.offer(
            NewEvent::new(
                EventType::Error,
                format!("Shipping audit events to {name} failed; retrying"),
            )
            .with_level(Level::Error)
            .with_metadata(json!({
                "error_type": "shipping_failed",
                "details": {
                    "target": name,
                    "error": error.to_string(),
                    "shipped_up_to_seq": cursor,
                },
            })),
        );
    }

    fn record_recovery(&self, failures: u64) {
        let name = self.target.name();
        tracing::info!(target = name, failures, "Shipping audit events resumed.");
        self.events.offer(
            NewEvent::new(
                EventType::System,
                format!("Shipping audit events to {name} resumed"),
            )
            .with_metadata(json!({
                "phase": "shipping_resumed",
                "target": name,
                "failed_attempts": failures,
            })),
        );
    }

    /// Logs what stays unshipped when the shipper stops: it is kept in the
    /// local store and sent at the next start.
    async fn report_tail(&self, cursor: Option<i64>) {
        let name = self.target.name();
        let head = match self.store.head().await {
            Ok(head) => head.map_or(0, |h| h.seq),
            Err(error) => {
                tracing::warn!(target = name, %error, "Shipper stopped; the unshipped range is unknown.");
                return;
            }
        };
        let shipped = cursor.unwrap_or(0);
        if head > shipped {
            tracing::warn!(
                target = name,
                first_seq = shipped + 1,
                last_seq = head,
                "Shipper stopped with events unshipped; they stay in the local store and are sent at the next start."
            );
        } else {
            tracing::info!(
                target = name,
                shipped_up_to_seq = shipped,
                "Shipper stopped with every event shipped."
            );
        }
    }
}

/// Resolves once a drain deadline is set and has passed; never without one.
async fn drain_deadline_passed(drain: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *drain.borrow_and_update();
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        if drain.changed().await.is_err() {
            // The handle is gone: no drain will come.
            std::future::pending::<()>().await;
        }
    }
}

/// Sleeps `for_`, cut short when a drain is requested (and never past its
/// deadline).
async fn wait(drain: &mut watch::Receiver<Option<Instant>>, for_: Duration) {
    let mut until = Instant::now() + for_;
    if let Some(deadline) = *drain.borrow() {
        until = until.min(deadline);
    }
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        changed = drain.changed() => {
            // The handle is gone: nobody will ask for a drain; sleep on.
            if changed.is_err() {
                tokio::time::sleep_until(until).await;
            }
        }
    }
}

#[cfg(test)]
#[path = "shipper/tests.rs"]
mod tests;
