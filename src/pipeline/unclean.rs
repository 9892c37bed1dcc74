//! Whether the previous run stopped cleanly, read from the store at start.
//!
//! A clean stop ends with the SYSTEM event whose `phase` is `shutdown`. A
//! store whose newest event is anything else was left by a run that was
//! killed, crashed or lost power: what it was still holding (queued
//! events, a batch being written) is gone, and the record says so with an
//! ERROR `unclean_shutdown` naming the last stored seq and time.

use serde_json::json;

use crate::event::{format_timestamp, AuditEvent, EventType, NewEvent};
use crate::store::{AuditStore, EventQuery, StoreError};

/// Newest events looked at: checkpoints and offline purges may follow the
/// stop event.
const LOOK_BACK: usize = 16;

/// The ERROR event to record when the store's last run did not stop
/// cleanly; `None` for an empty store or a clean stop.
pub async fn unclean_shutdown_event(
    store: &dyn AuditStore,
) -> Result<Option<NewEvent>, StoreError> {
    let page = store
        .query(&EventQuery {
            filter: Default::default(),
            limit: LOOK_BACK,
            before_seq: None,
        })
        .await?;
    let Some(last) = page.events.first() else {
        return Ok(None);
    };
    let stopped_cleanly = page
        .events
        .iter()
        .find(|e| !may_follow_a_stop(e))
        .is_some_and(is_clean_stop);
    if stopped_cleanly {
        return Ok(None);
    }
    let at = format_timestamp(&last.timestamp);
    Ok(Some(
        NewEvent::new(
            EventType::Error,
            format!(
                "The previous run did not stop cleanly; its last stored event is seq {} at {at}",
                last.seq
            ),
        )
        .with_metadata(json!({
            "error_type": "unclean_shutdown",
            "details": {"last_seq": last.seq, "last_timestamp": at},
        })),
    ))
}

/// The SYSTEM event a clean stop writes last.
pub fn is_clean_stop(event: &AuditEvent) -> bool {
    event.event_type == EventType::System && event.metadata.field("phase") == "shutdown"
}

/// Events that may follow the stop event of a clean stop: a signed
/// checkpoint of the stop, the ERROR events recording losses that rode in
/// the last batch, and the SYSTEM event of an offline `purge` run later.
fn may_follow_a_stop(event: &AuditEvent) -> bool {
    let loss_report = event.event_type == EventType::Error
        && matches!(
            event.metadata.field("error_type").as_str(),
            Some("events_dropped" | "events_lost" | "record_build_failed")
        );
    event.event_type.as_str() == "CHECKPOINT"
        || loss_report
        || (event.event_type == EventType::System && event.metadata.field("action") == "purge")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::chain::GENESIS_HASH;
    use crate::store::memory::MemoryStore;

    async fn store_with(events: Vec<NewEvent>) -> MemoryStore {
        let store = MemoryStore::new(100);
        let mut prev = GENESIS_HASH.to_owned();
        let mut sealed = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            let e = e.seal(i as i64 + 1, &prev);
            prev.clone_from(&e.hash);
            sealed.push(e);
        }
        store.append_batch(Arc::from(sealed)).await.unwrap();
        store
    }

    fn stop() -> NewEvent {
        NewEvent::new(EventType::System, "Audit proxy stopped")
            .with_metadata(json!({"phase": "shutdown"}))
    }

    #[tokio::test]
    async fn an_empty_store_or_a_clean_stop_needs_no_event() {
        assert!(unclean_shutdown_event(&MemoryStore::new(10))
            .await
            .unwrap()
            .is_none());
        let store = store_with(vec![NewEvent::new(EventType::Request, "r"), stop()]).await;
        assert!(unclean_shutdown_event(&store).await.unwrap().is_none());
        // An offline purge after the stop is no run of its own.
        let purge =
            NewEvent::new(EventType::System, "purged").with_metadata(json!({"action": "purge"}));
        let store = store_with(vec![stop(), purge]).await;
        assert!(unclean_shutdown_event(&store).await.unwrap().is_none());
        // Nor are the loss reports of the last batch.
        let dropped = NewEvent::new(EventType::Error, "3 dropped")
            .with_metadata(json!({"error_type": "events_dropped"}));
        let store = store_with(vec![stop(), dropped]).await;
        assert!(unclean_shutdown_event(&store).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_store_that_ends_elsewhere_names_its_last_seq_and_time() {
        let store = store_with(vec![stop(), NewEvent::new(EventType::Request, "r")]).await;
        let event = unclean_shutdown_event(&store).await.unwrap().unwrap();
        assert_eq!(event.event_type, EventType::Error);
        assert_eq!(event.metadata.field("error_type"), "unclean_shutdown");
        assert_eq!(event.metadata.field("details")["last_seq"], 2);
        assert!(event.metadata.field("details")["last_timestamp"].is_string());
    }
}
