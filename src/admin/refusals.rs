//! Refused admin calls, collapsed per client and interval.
//!
//! A client hammering the API with wrong tokens must not write one event
//! and one log line per attempt: that fills the store (and, with a size
//! cap, makes retention purge real records). The first refusal from a
//! client address in an interval is recorded at once, as an AUTHENTICATION
//! event with `count: 1`; the rest are only counted, and recorded as one
//! AUTHENTICATION event with their `count` when the interval closes (or at
//! shutdown). The log line follows the same rhythm. At most
//! [`MAX_CLIENTS`] addresses are tracked per interval; refusals from any
//! further address are summed under `client_ip: "other"`. So refusals add at
//! most two events per tracked address per interval, whatever their rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event::{EventType, Level, NewEvent};
use crate::pipeline::Handle;
use crate::telemetry::metrics::Metrics;

/// Client addresses tracked at once; beyond, refusals go to `other`.
pub const MAX_CLIENTS: usize = 256;

/// Collapses refused admin calls into counted AUTHENTICATION events.
pub struct RefusalLog {
    events: Handle,
    metrics: Arc<Metrics>,
    interval: Duration,
    windows: Mutex<HashMap<String, Window>>,
}

/// One refused call, as recorded (never the presented token).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub client_ip: Option<String>,
    pub method: String,
    pub path: String,
    /// `missing_token`, `invalid_token` or `insufficient_scope`.
    pub reason: &'static str,
}

/// Refusals from one client since its first recorded one.
struct Window {
    started: Instant,
    /// Refusals after the first, not yet recorded, by reason.
    pending: HashMap<&'static str, u64>,
    /// Path of the latest pending refusal.
    last_path: String,
}

// === impl RefusalLog ===

impl RefusalLog {
    /// Records through `events`; `interval` is how long one client's
    /// refusals are summed before their count is recorded.
    pub fn new(events: Handle, metrics: Arc<Metrics>, interval: Duration) -> Self {
        Self {
            events,
            metrics,
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one refusal; records it now if it is its client's first in
    /// the interval.
    pub fn refused(&self, refusal: Refusal) {
        self.metrics.admin_refusals.inc();
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut client = refusal
            .client_ip
            .clone()
            .unwrap_or_else(|| "unknown".to_owned());
        if !windows.contains_key(&client) && windows.len() >= MAX_CLIENTS {
            client = "other".to_owned();
        }
        if let Some(window) = windows.get_mut(&client) {
            if now.duration_since(window.started) < self.interval {
                *window.pending.entry(refusal.reason).or_default() += 1;
                window.last_path.clone_from(&refusal.path);
                return;
            }
            if let Some(window) = windows.remove(&client) {
                self.record_pending(&client, window);
            }
        }
        windows.insert(
            client.clone(),
            Window {
                started: now,
                pending: HashMap::new(),
                last_path: String::new(),
            },
        );
        drop(windows);
        tracing::warn!(
            method = %refusal.method,
            path = %refusal.path,
            client_ip = %client,
            reason = refusal.reason,
            "Admin request refused; further refusals from this client are counted for the interval."
        );
        let mut metadata = json!({
            "method": refusal.method,
            "path": refusal.path,
            "reason": refusal.reason,
            "count": 1,
        });
        if let Some(ip) = refusal.client_ip {
            metadata["client_ip"] = json!(ip);
        }
        // Offered, never awaited: refusals must not slow anything down.
        self.events.offer(
            NewEvent::new(
                EventType::Authentication,
                format!("Admin API request refused: {}", refusal.reason),
            )
            .with_level(Level::Warning)
            .with_metadata(metadata),
        );
    }

    /// Records the counts of every interval that has closed; with `all`,
    /// of every interval (at shutdown).
    pub fn flush(&self, all: bool) {
        let now = Instant::now();
        let closed: Vec<(String, Window)> = {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<String> = windows
                .iter()
                .filter(|(_, w)| all || now.duration_since(w.started) >= self.interval)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| windows.remove(&k).map(|w| (k, w)))
                .collect()
        };
        for (client, window) in closed {
            self.record_pending(&client, window);
        }
    }

    /// Flushes closed intervals every interval until `stop`, then flushes
    /// everything.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(false),
                () = stop.cancelled() => break,
            }
        }
        self.flush(true);
    }

    fn record_pending(&self, client: &str, window: Window) {
        let count: u64 = window.pending.values().sum();
        if count == 0 {
            return;
        }
        let reasons: Map<String, Value> = window
            .pending
            .iter()
            .map(|(reason, n)| ((*reason).to_owned(), json!(n)))
            .collect();
        let secs = window.started.elapsed().as_secs_f64().round();
        tracing::warn!(
            client_ip = %client,
            count,
            "Admin requests refused again in the interval."
        );
        self.events.offer(
            NewEvent::new(
                EventType::Authentication,
                format!("Admin API requests refused {count} more times in {secs} s"),
            )
            .with_level(Level::Warning)
            .with_metadata(json!({
                "client_ip": client,
                "count": count,
                "reasons": reasons,
                "last_path": window.last_path,
                "interval_secs": self.interval.as_secs_f64(),
                "collapsed": true,
            })),
        );
    }
}
