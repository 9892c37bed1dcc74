//! When the writer signs a checkpoint, and what it signs.
//!
//! The writer owns `seq` and the chain, so it alone signs (see
//! [`crate::event::checkpoint`]). It asks this module, each time it seals a
//! batch, whether a checkpoint is due: the first one after start, then one
//! every `every_events` events or every `interval` (even when idle, as a
//! heartbeat), and one at a clean stop. A checkpoint is sealed right after
//! the event it covers, in the same batch.

use std::time::Duration;

use tokio::time::Instant;

use crate::event::checkpoint::{CheckpointSigner, Reason, Statement};
use crate::event::{EventType, Level, NewEvent};

/// The writer's checkpoint settings, from the `audit` config slice.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub signer: CheckpointSigner,
    /// A checkpoint after this many events.
    pub every_events: u64,
    /// A checkpoint at least this often, written even when idle.
    pub interval: Duration,
}

/// The writer's checkpoint state.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    cfg: CheckpointConfig,
    source_id: String,
    /// Events sealed since the last checkpoint.
    since_last: u64,
    last_at: Instant,
    /// The reason of the last checkpoint signed, `None` before the first.
    last_reason: Option<Reason>,
    /// A clean stop was asked for: the next checkpoint is the stop one.
    stopping: bool,
    /// A CONFIGURATION event (which names the key) was sealed: the start
    /// checkpoint follows it.
    configured: bool,
    /// An export asked for one over the head.
    requested: bool,
}

// === impl Checkpointer ===

impl Checkpointer {
    pub(crate) fn new(cfg: CheckpointConfig, source_id: String) -> Self {
        Self {
            cfg,
            source_id,
            since_last: 0,
            last_at: Instant::now(),
            last_reason: None,
            stopping: false,
            configured: false,
            requested: false,
        }
    }

    /// Counts one sealed event (not a checkpoint).
    pub(crate) fn sealed(&mut self, event_type: &EventType) {
        self.since_last += 1;
        self.configured |= *event_type == EventType::Configuration;
    }

    /// Asks for the stop checkpoint at the next opportunity.
    pub(crate) fn stop(&mut self) {
        self.stopping = true;
    }

    /// Asks for a checkpoint over the head at the next opportunity (none
    /// if the head is covered already).
    pub(crate) fn request(&mut self) {
        self.requested = true;
    }

    /// When the next time-based checkpoint is due (for the idle timer).
    pub(crate) fn next_due(&self) -> Instant {
        self.last_at + self.cfg.interval
    }

    /// Why a checkpoint is due now, if one is. The first of a process is
    /// the start checkpoint: right after its CONFIGURATION event, or
    /// whenever another rule calls for one first.
    pub(crate) fn due(&self, now: Instant) -> Option<Reason> {
        if self.stopping {
            // Nothing new since a stop checkpoint: no second one.
            let sealed = self.last_reason == Some(Reason::Stop) && self.since_last == 0;
            return (!sealed).then_some(Reason::Stop);
        }
        let first = self.last_reason.is_none();
        let reason = if first && self.configured {
            Some(Reason::Start)
        } else if self.requested && self.since_last > 0 {
            Some(Reason::Export)
        } else if self.since_last >= self.cfg.every_events {
            Some(Reason::Events)
        } else if now >= self.next_due() {
            Some(Reason::Interval)
        } else {
            None
        };
        reason.map(|r| if first { Reason::Start } else { r })
    }

    /// The CHECKPOINT event covering the event at `seq` with `hash` (the
    /// chain's head), and the state reset for the next one.
    pub(crate) fn make(&mut self, reason: Reason, seq: i64, hash: &str) -> NewEvent {
        self.since_last = 0;
        self.last_at = Instant::now();
        self.last_reason = Some(reason);
        self.stopping = false;
        self.requested = false;
        self.build(reason, seq, hash)
    }

    /// `event` signed again for a new place in the chain (the writer
    /// re-sealed its batch after another process appended).
    pub(crate) fn resign(&self, event: NewEvent, seq: i64, hash: &str) -> NewEvent {
        let reason = event
            .metadata
            .field("reason")
            .as_str()
            .and_then(Reason::parse)
            .unwrap_or(Reason::Interval);
        let mut again = self.build(reason, seq, hash);
        again.id = event.id;
        again
    }

    fn build(&self, reason: Reason, seq: i64, hash: &str) -> NewEvent {
        let time = crate::event::now();
        let checkpoint = self.cfg.signer.sign(Statement {
            source_id: self.source_id.clone(),
            seq,
            hash: hash.to_owned(),
            time,
            key_id: self.cfg.signer.key_id().to_owned(),
            reason,
            interval_ms: u64::try_from(self.cfg.interval.as_millis()).unwrap_or(u64::MAX),
        });
        let mut event = NewEvent::new(
            EventType::Checkpoint,
            format!("Checkpoint over seq {seq} ({})", reason.as_str()),
        )
        .with_level(Level::Info)
        .with_metadata(checkpoint.to_metadata());
        event.timestamp = time;
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpointer(every: u64, interval: Duration) -> Checkpointer {
        Checkpointer::new(
            CheckpointConfig {
                signer: CheckpointSigner::generate().unwrap(),
                every_events: every,
                interval,
            },
            "source".into(),
        )
    }

    #[test]
    fn checkpoints_fall_due_by_start_count_time_and_stop() {
        let mut c = checkpointer(3, Duration::from_secs(3600));
        assert_eq!(c.due(Instant::now()), None);
        c.sealed(&EventType::System);
        assert_eq!(c.due(Instant::now()), None);
        c.sealed(&EventType::Configuration);
        assert_eq!(c.due(Instant::now()), Some(Reason::Start));
        c.make(Reason::Start, 2, "h");
        assert_eq!(c.due(Instant::now()), None);
        for _ in 0..3 {
            c.sealed(&EventType::Custom);
        }
        assert_eq!(c.due(Instant::now()), Some(Reason::Events));
        c.make(Reason::Events, 6, "h");
        assert_eq!(c.due(Instant::now()), None);
        assert_eq!(c.due(c.next_due()), Some(Reason::Interval));
        c.make(Reason::Interval, 7, "h");
        c.stop();
        assert_eq!(c.due(Instant::now()), Some(Reason::Stop));
        c.make(Reason::Stop, 8, "h");
        c.stop();
        assert_eq!(c.due(Instant::now()), None);
    }

    #[test]
    fn a_resigned_checkpoint_keeps_its_id_and_reason() {
        let mut c = checkpointer(3, Duration::from_secs(60));
        let first = c.make(Reason::Events, 4, "aa");
        let again = c.resign(first.clone(), 9, "bb");
        assert_eq!(again.id, first.id);
        assert_eq!(again.metadata.field("reason"), "events");
        assert_eq!(again.metadata.field("seq"), 9);
        assert_eq!(again.metadata.field("hash"), "bb");
    }
}
