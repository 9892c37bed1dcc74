//! Background retention: purges events older than `audit.retention_days`
//! and keeps the store under `audit.max_store_mb`, then records each purge
//! that removed something as a SYSTEM event, so the record itself says
//! where and why it begins later than it used to.
//!
//! Purges go straight to the store, beside the writer: they only remove
//! the oldest events and never the head, so the writer's chain is never
//! touched. The SYSTEM event goes through the writer like every other.
//!
//! With shipping on, retention keeps every event a target has not
//! acknowledged: it purges only before the oldest unshipped one. The size
//! cap still goes first (the disk is finite); when it removes unshipped
//! events, an ERROR event names each target and the seq range it lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Handle;
use crate::event::{format_timestamp, parse_timestamp, EventType, Level, NewEvent};
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
    /// The shipping targets whose cursors hold retention back.
    pub ship_targets: Vec<&'static str>,
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
        let mut before =
            crate::event::now() - chrono::Duration::days(i64::from(cfg.retention_days));
        if let Some(unshipped) = oldest_unshipped(store, &cfg.ship_targets).await? {
            if unshipped < before {
                tracing::info!(
                    oldest_unshipped = %format_timestamp(&unshipped),
                    "Audit retention holds back events not yet shipped."
                );
                before = unshipped;
            }
        }
        let report = store.purge_before(before).await?;
        record(events, &report, "retention", Some(before), None);
        reports.push(report);
    }
    if cfg.max_store_bytes > 0 {
        let report = store.enforce_max_bytes(cfg.max_store_bytes).await?;
        record_unshipped_losses(store, events, &report, &cfg.ship_targets).await?;
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

/// The timestamp of the oldest event some target has not acknowledged.
async fn oldest_unshipped(
    store: &SharedStore,
    targets: &[&'static str],
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut oldest: Option<DateTime<Utc>> = None;
    for target in targets {
        let after = store.ship_cursor(target).await?.unwrap_or(0);
        let next = store.records_after(after, 1).await?;
        if let Some(t) = next.first().and_then(|r| parse_timestamp(&r.timestamp)) {
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
    }
    Ok(oldest)
}

/// Offers an ERROR event per target that lost unshipped events to the
/// size cap, naming the seq range it will never receive.
async fn record_unshipped_losses(
    store: &SharedStore,
    events: &Handle,
    report: &PurgeReport,
    targets: &[&'static str],
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (report.first_seq, report.last_seq) else {
        return Ok(());
    };
    for target in targets {
        let shipped = store.ship_cursor(target).await?.unwrap_or(0);
        if last <= shipped {
            continue;
        }
        let first_lost = first.max(shipped + 1);
        tracing::error!(
            target = *target,
            first_seq = first_lost,
            last_seq = last,
            "The store's size cap removed events not yet shipped."
        );
        events.offer(
            NewEvent::new(
                EventType::Error,
                format!(
                    "The size cap removed events {first_lost}..={last} before they were shipped to {target}"
                ),
            )
            .with_level(Level::Error)
            .with_metadata(json!({
                "error_type": "unshipped_events_purged",
                "details": {
                    "target": target,
                    "first_seq": first_lost,
                    "last_seq": last,
                    "count": last - first_lost + 1,
                },
            })),
        );
    }
    Ok(())
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
