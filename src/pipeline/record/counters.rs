//! The metrics counters a record increments, looked up by borrowed names.
//!
//! A metrics family is keyed by an owned label set, so each lookup there
//! builds its strings; a call's record increments a few counters, so the
//! handles are kept here by model and policy name after the first lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;

use crate::policy::Severity;
use crate::telemetry::metrics::{Metrics, PolicyLabels, TokenLabels};

/// Most model names kept: callers name models, so the set is open; past
/// it, lookups go to the family as before.
const MAX_MODELS: usize = 256;

/// Counter handles by name.
#[derive(Default)]
pub struct RecordCounters {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// Model name as the response or request gave it, to the prompt and
    /// completion token counters of its label.
    tokens: HashMap<String, [Option<Counter>; 2]>,
    /// Policy name to its violation counter, per severity.
    violations: HashMap<String, Vec<(Severity, Counter)>>,
}

impl RecordCounters {
    /// Adds the prompt and completion tokens of `model`; a kind with no
    /// tokens creates no series.
    pub fn add_tokens(&self, metrics: &Metrics, model: &str, counts: [u64; 2]) {
        const KINDS: [&str; 2] = ["prompt", "completion"];
        let create = |kind: &str| {
            metrics
                .tokens
                .get_or_create(&TokenLabels {
                    model: metrics.model_label(model),
                    kind: kind.to_owned(),
                })
                .clone()
        };
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if !cache.tokens.contains_key(model) {
            if cache.tokens.len() >= MAX_MODELS {
                for (kind, n) in KINDS.into_iter().zip(counts) {
                    if n > 0 {
                        create(kind).inc_by(n);
                    }
                }
                return;
            }
            cache.tokens.insert(model.to_owned(), [None, None]);
        }
        let Some(slots) = cache.tokens.get_mut(model) else {
            return;
        };
        for ((slot, kind), n) in slots.iter_mut().zip(KINDS).zip(counts) {
            if n > 0 {
                slot.get_or_insert_with(|| create(kind)).inc_by(n);
            }
        }
    }

    /// Counts one violation of `policy` at `severity`.
    pub fn violation(&self, metrics: &Metrics, policy: &str, severity: Severity) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let kept = cache
            .violations
            .get(policy)
            .and_then(|by| by.iter().find(|(s, _)| *s == severity));
        if let Some((_, counter)) = kept {
            counter.inc();
            return;
        }
        let counter = metrics
            .violations
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
                severity: severity.as_str().to_owned(),
            })
            .clone();
        counter.inc();
        // Policy names come from the configuration: a bounded set.
        cache
            .violations
            .entry(policy.to_owned())
            .or_default()
            .push((severity, counter));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::PipelineStats;

    #[test]
    fn counts_reach_the_metrics_families() {
        let metrics = Metrics::new(Arc::new(PipelineStats::default()));
        let counters = RecordCounters::default();
        for _ in 0..3 {
            counters.add_tokens(&metrics, "gpt-x", [5, 7]);
            counters.violation(&metrics, "pii", Severity::High);
        }
        counters.violation(&metrics, "pii", Severity::Low);
        let get_tokens = |kind: &str| {
            metrics
                .tokens
                .get_or_create(&TokenLabels {
                    model: "gpt-x".into(),
                    kind: kind.into(),
                })
                .get()
        };
        assert_eq!((get_tokens("prompt"), get_tokens("completion")), (15, 21));
        counters.add_tokens(&metrics, "gpt-y", [0, 2]);
        let encoded = metrics.encode();
        assert!(
            encoded.contains(r#"model="gpt-y",kind="completion""#),
            "{encoded}"
        );
        assert!(
            !encoded.contains(r#"model="gpt-y",kind="prompt""#),
            "{encoded}"
        );
        let violations = |severity: Severity| {
            metrics
                .violations
                .get_or_create(&PolicyLabels {
                    policy: "pii".into(),
                    severity: severity.as_str().into(),
                })
                .get()
        };
        assert_eq!(violations(Severity::High), 3);
        assert_eq!(violations(Severity::Low), 1);
    }
}
