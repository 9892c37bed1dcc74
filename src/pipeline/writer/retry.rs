//! How one batch is written: retried with backoff while the store's error
//! may pass, re-sealed after a concurrent append, and given up on (counted,
//! and recorded later) only when it cannot succeed.
//!
//! The chain always continues from what the store holds: after a batch is
//! given up, the head is read again, and while that read fails no batch is
//! written, so nothing is ever chained onto an event that was not stored.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::report::LostBatch;
use super::Writer;
use crate::event::chain::GENESIS_HASH;
use crate::event::{AuditEvent, EventType, NewEvent};
use crate::store::{Batch, StoreError};

/// First wait before a failed write is tried again; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Re-seals after concurrent appends before the batch counts as failed.
const MAX_CONFLICTS: u32 = 10;

// === impl Writer ===

impl Writer {
    /// Completes the write of `batch` whose first attempt gave `appended`,
    /// retrying while the error is retriable (for as long as it takes while
    /// the proxy runs; `shutdown_attempts` times once the queue has closed).
    /// Returns the last error's message if the batch was given up.
    pub(super) async fn write(
        &mut self,
        batch: &mut Batch,
        mut appended: Result<(), StoreError>,
    ) -> Result<(), String> {
        let mut delay = FIRST_BACKOFF;
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
                Err(StoreError::Conflict(message)) if conflicts < MAX_CONFLICTS => {
                    // Another process appended (an offline purge's SYSTEM
                    // event): continue the chain after what it wrote.
                    conflicts += 1;
                    tracing::debug!(%message, "Audit batch re-sealed after a concurrent append.");
                    if self.rewind().await {
                        self.reseal_batch(batch);
                    }
                }
                Err(error) => {
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    if self.health.set(false) {
                        tracing::error!(%error, events = batch.len(), "Audit store write failed.");
                    }
                    let closing = self.rx.is_closed();
                    if !error.is_retriable() || (closing && attempts >= self.cfg.shutdown_attempts)
                    {
                        let message = error.to_string();
                        self.give_up(batch, message.clone());
                        return Err(message);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                    // A store that failed may have lost its view of the
                    // head too (a reopened file): write after what it holds.
                    if !self.head_known && self.rewind().await {
                        self.reseal_batch(batch);
                    }
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

    /// Counts `batch` as lost, remembers its seq range for the ERROR event
    /// that records it, and moves the chain back to the store's head.
    pub(super) fn give_up(&mut self, batch: &[AuditEvent], error: String) {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return;
        };
        self.stats
            .lost
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        tracing::error!(%error, lost = batch.len(), first_seq = first.seq, last_seq = last.seq, "Audit batch abandoned.");
        self.lost_batches.push(LostBatch {
            first_seq: first.seq,
            last_seq: last.seq,
            events: batch.len() as u64,
            error,
        });
        // The chain must continue from what the store holds, not from the
        // batch that never landed: until the head is read again, nothing is
        // written.
        self.head_known = false;
    }

    /// Reads the store's head until it answers (`shutdown_attempts` times
    /// once the queue has closed), then seals `batch` again after it.
    /// Returns false if the head could not be read.
    pub(super) async fn recover_head(&mut self, batch: &mut [AuditEvent]) -> bool {
        let mut delay = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if self.rewind().await {
                self.reseal(batch);
                return true;
            }
            if self.rx.is_closed() && attempts >= self.cfg.shutdown_attempts {
                return false;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// Seals `batch` again after the current head, keeping each event's
    /// content.
    pub(super) fn reseal(&mut self, batch: &mut [AuditEvent]) {
        for event in batch.iter_mut() {
            let new = NewEvent {
                id: std::mem::take(&mut event.id),
                timestamp: event.timestamp,
                event_type: event.event_type.clone(),
                level: event.level,
                message: std::mem::take(&mut event.message),
                request_id: event.request_id.take(),
                metadata: std::mem::take(&mut event.metadata),
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

    fn reseal_batch(&mut self, batch: &mut Batch) {
        let mut events = batch.to_vec();
        self.reseal(&mut events);
        *batch = events.into();
    }

    /// Reads the store's head and continues the chain from it. Returns
    /// false (and leaves the head unknown) if the store did not answer.
    pub(super) async fn rewind(&mut self) -> bool {
        match self.store.head().await {
            Ok(head) => {
                self.seq = head.as_ref().map_or(0, |h| h.seq);
                self.prev_hash = head.map_or_else(|| GENESIS_HASH.to_owned(), |h| h.hash);
                self.head_known = true;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "Audit store head could not be read; writes wait for it.");
                self.head_known = false;
                false
            }
        }
    }
}
