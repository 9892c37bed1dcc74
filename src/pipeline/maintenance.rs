//! Background retention: purges events older than `audit.retention_days`
//! and keeps the store under `audit.max_store_mb`, then records each purge
//! that removed something as a SYSTEM event, so the record itself says
//! where and why it begins later than it used to.
//!
//! Purges go straight to the store, beside the writer: they only remove
//! the oldest events and never the head, so the writer's chain is never
//! touched. The SYSTEM event goes through the writer like every other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Handle;
use crate::event::{format_timestamp, EventType, NewEvent};
use crate::store::{PurgeReport, SharedStore, StoreError};

/// The retention settings, from the `audit` config slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Events older than this many days are purged; 0 keeps them forever.
    pub retention_days: u32,
    /// The store's size cap in bytes; 0 means no cap.
    pub max_store_bytes: u64,
    /// Time between runs (the first runs at once).
    pub interval: Duration,
}

/// Applies retention, then the size cap. Offers a SYSTEM event for each
/// purge that removed something, and returns the report of each purge
/// that ran (none when both are off).
pub async fn run_once(
    store: &SharedStore,
    events: &Handle,
    cfg: &MaintenanceConfig,
) -> Result<Vec<PurgeReport>, StoreError> {
    let mut reports = Vec::new();
    if cfg.retention_days > 0 {
        let before = crate::event::now() - chrono::Duration::days(i64::from(cfg.retention_days));
        let report = store.purge_before(before).await?;
        record(events, &report, "retention", Some(before), None);
        reports.push(report);
    }
    if cfg.max_store_bytes > 0 {
        let report = store.enforce_max_bytes(cfg.max_store_bytes).await?;
        record(
            events,
            &report,
            "max_store_mb",
            None,
            Some(cfg.max_store_bytes),
        );
        reports.push(report);
    }
    Ok(reports)
}

/// Runs [`run_once`] now and then every `interval` until `shutdown` is
/// cancelled. A failed run is logged and tried again at the next interval;
/// cancellation also stops a run in progress between store calls.
pub async fn run(
    store: SharedStore,
    events: Handle,
    cfg: MaintenanceConfig,
    shutdown: CancellationToken,
) {
    // An interval of zero would spin.
    let interval = cfg.interval.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            result = run_once(&store, &events, &cfg) => {
                if let Err(error) = result {
                    tracing::warn!(%error, "Audit retention run failed; retrying at the next interval.");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    tracing::debug!("Audit retention stopped.");
}

/// Offers the SYSTEM event for a purge that removed something.
fn record(
    events: &Handle,
    report: &PurgeReport,
    reason: &str,
    before: Option<DateTime<Utc>>,
    max_store_bytes: Option<u64>,
) {
    if report.removed == 0 {
        return;
    }
    tracing::info!(
        reason,
        removed = report.removed,
        first_seq = report.first_seq,
        last_seq = report.last_seq,
        "Audit events purged."
    );
    let message = match reason {
        "retention" => format!(
            "Purged {} audit events older than the retention period",
            report.removed
        ),
        _ => format!(
            "Purged {} of the oldest audit events to keep the store under its size cap",
            report.removed
        ),
    };
    events.offer(
        NewEvent::new(EventType::System, message).with_metadata(json!({
            "action": "purge",
            "reason": reason,
            "removed": report.removed,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "before": before.map(|t| format_timestamp(&t)),
            "max_store_bytes": max_store_bytes,
            "oldest_remaining": report.oldest_remaining,
            "bytes_before": report.bytes_before,
            "bytes_after": report.bytes_after,
        })),
    );
}

#[cfg(test)]
mod tests;
