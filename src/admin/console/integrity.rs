//! The integrity page (`/ui/integrity`): the hash chain's last verify
//! result as a badge, a button that runs verify again, and the latest
//! signed checkpoint.

use std::fmt::Write as _;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::events::store_error;
use super::html::{esc, time, Section};
use super::{html_page, message_page, ConsoleState, Detour};
use crate::event::{format_timestamp, EventType};
use crate::store::verify::fleet::FleetVerifyReport;
use crate::store::verify::{verify_any, Verification, VerifyOptions, VerifyReport};
use crate::store::{EventFilter, EventQuery};

/// One verify run: when, and what it found.
#[derive(Debug, Clone)]
pub struct VerifyRun {
    pub at: DateTime<Utc>,
    pub report: Verification,
}

/// `GET /ui/integrity`.
pub async fn page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let reader = match state.reader(&headers) {
        Ok(reader) => reader,
        Err(detour) => return detour.into_response(),
    };
    let last = state
        .last_verify
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let checkpoint = match latest_checkpoint(&state).await {
        Ok(c) => c,
        Err(detour) => return detour.into_response(),
    };
    let mut body = String::with_capacity(4096);
    badge(&mut body, last.as_ref());
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/ui/verify\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" id=\"run-verify\">Run verify now</button>\
         <p class=\"note\">Walks every stored event's hash link and every signed checkpoint. \
         It only reads; on a large store it takes a while.</p></form>",
        esc(&reader.session.csrf)
    );
    body.push_str(
        "<section aria-labelledby=\"cp-h\"><h2 id=\"cp-h\">Latest signed checkpoint</h2>",
    );
    match checkpoint {
        Some((seq, timestamp, m)) => {
            let _ = write!(
                body,
                "<dl class=\"summary\"><dt>Checkpoint event</dt><dd>seq {seq}, {}</dd>\
                 <dt>Covers events up to</dt><dd>seq {}</dd><dt>Key id</dt><dd><code id=\"key-id\">{}</code></dd>\
                 <dt>Covered hash</dt><dd><code>{}</code></dd><dt>Reason</dt><dd>{}</dd></dl>",
                time(&timestamp),
                esc(&m["seq"].to_string()),
                esc(m["key_id"].as_str().unwrap_or("")),
                esc(m["hash"].as_str().unwrap_or("")),
                esc(m["reason"].as_str().unwrap_or("")),
            );
        }
        None => body.push_str("<p>No signed checkpoint is stored (checkpoint signing is off, or none is due yet).</p>"),
    }
    body.push_str("</section>");
    html_page("Integrity", Section::Integrity, &reader, &body)
}

/// `POST /ui/verify`: runs verify (CSRF-checked), keeps the result, and
/// returns to the integrity page.
pub async fn run(State(state): State<ConsoleState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(detour) = state.checked_form(&parts.headers, body).await {
        return detour.into_response();
    }
    let options = VerifyOptions {
        keys: state.admin.verify_keys.clone(),
        tolerate_unknown_keys: true,
        expect_checkpoints: Vec::new(),
    };
    match verify_any(state.admin.store.as_ref(), options).await {
        Ok(report) => {
            *state
                .last_verify
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(VerifyRun {
                at: Utc::now(),
                report,
            });
            Redirect::to("/ui/integrity").into_response()
        }
        Err(error) => {
            tracing::error!(%error, "Console verify failed: the audit store failed.");
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Verify could not run",
                "The audit store could not be read. Try again shortly.",
            )
        }
    }
}

fn badge(out: &mut String, last: Option<&VerifyRun>) {
    let Some(run) = last else {
        out.push_str(
            "<p class=\"badge unknown\" id=\"verify-badge\" data-state=\"unknown\">\
             Not verified since this process started</p>",
        );
        return;
    };
    let r = match &run.report {
        Verification::Chain(r) => r,
        Verification::Fleet(fleet) => return fleet_badge(out, run.at, fleet),
    };
    chain_badge(out, run.at, r);
}

fn chain_badge(out: &mut String, at: DateTime<Utc>, r: &VerifyReport) {
    if r.ok {
        let _ = write!(
            out,
            "<p class=\"badge ok\" id=\"verify-badge\" data-state=\"ok\">Chain intact</p>"
        );
    } else {
        let _ = write!(
            out,
            "<p class=\"badge bad\" id=\"verify-badge\" data-state=\"broken\">Chain broken</p>"
        );
    }
    let _ = write!(
        out,
        "<dl class=\"summary\"><dt>Verified at</dt><dd>{}</dd><dt>Events checked</dt><dd id=\"events-checked\">{}</dd>",
        time(&format_timestamp(&at)),
        r.events_checked
    );
    if let Some(seq) = r.first_bad_seq {
        let _ = write!(
            out,
            "<dt>First broken seq</dt><dd id=\"first-bad-seq\">{seq}</dd>"
        );
    }
    if let Some(fault) = r.fault {
        let _ = write!(out, "<dt>Fault</dt><dd>{}</dd>", esc(fault.as_str()));
    }
    if let Some(reason) = &r.reason {
        let _ = write!(out, "<dt>Reason</dt><dd>{}</dd>", esc(reason));
    }
    if let Some(head) = &r.head {
        let _ = write!(
            out,
            "<dt>Last good event</dt><dd>seq {}, <code>{}</code></dd>",
            head.seq,
            esc(&head.hash)
        );
    }
    let signatures = match r.checkpoints.signatures_ok {
        Some(true) => "all verified with the key in use",
        Some(false) => "a signature does not verify",
        None => "not checked (no signing key configured)",
    };
    let _ = write!(
        out,
        "<dt>Checkpoints checked</dt><dd>{}</dd><dt>Signatures</dt><dd>{signatures}</dd>",
        r.checkpoints.checked
    );
    if r.checkpoints.unknown_key > 0 {
        let _ = write!(
            out,
            "<dt>Signed by earlier keys</dt><dd>{} (check them with <code>verify --public-key</code>)</dd>",
            r.checkpoints.unknown_key
        );
    }
    out.push_str("</dl>");
}

/// The central store's verify: each source's chain on its own, with
/// tampering apart from seqs that were never shipped or are missing.
fn fleet_badge(out: &mut String, at: DateTime<Utc>, r: &FleetVerifyReport) {
    let (class, state, label) = match (r.intact, r.complete) {
        (true, true) => ("ok", "ok", "Every source's chain intact"),
        (true, false) => ("warn", "incomplete", "Chains intact, seqs missing"),
        (false, _) => ("bad", "broken", "Chain broken"),
    };
    let _ = write!(
        out,
        "<p class=\"badge {class}\" id=\"verify-badge\" data-state=\"{state}\">{label}</p>\
         <dl class=\"summary\"><dt>Verified at</dt><dd>{}</dd><dt>Sources checked</dt><dd>{}</dd>\
         <dt>Events checked</dt><dd id=\"events-checked\">{}</dd></dl>",
        time(&format_timestamp(&at)),
        r.sources_checked,
        r.events_checked
    );
    out.push_str(
        "<table><caption>Sources</caption><thead><tr><th scope=\"col\">Source id</th>\
         <th scope=\"col\">Pod</th><th scope=\"col\">Namespace</th><th scope=\"col\">Seqs held</th>\
         <th scope=\"col\">Chain</th><th scope=\"col\">First broken seq</th>\
         <th scope=\"col\">Missing seqs</th></tr></thead><tbody>",
    );
    for source in &r.sources {
        let held = match (source.first_seq, source.last_seq) {
            (Some(first), Some(last)) => format!("{first}..={last}"),
            _ => String::new(),
        };
        let chain = match source.fault {
            None if source.intact => "intact".to_owned(),
            None => "broken".to_owned(),
            Some(fault) => format!("broken ({})", fault.as_str()),
        };
        let missing: Vec<String> = source
            .missing
            .iter()
            .map(|(first, last)| format!("{first}..={last}"))
            .collect();
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{held}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&source.source_id),
            esc(source.pod.as_deref().unwrap_or("")),
            esc(source.namespace.as_deref().unwrap_or("")),
            esc(&chain),
            source.first_bad_seq.map(|s| s.to_string()).unwrap_or_default(),
            esc(&missing.join(", ")),
        );
    }
    out.push_str("</tbody></table>");
}

/// The newest CHECKPOINT event: its seq, time and metadata.
async fn latest_checkpoint(state: &ConsoleState) -> Result<Option<(i64, String, Value)>, Detour> {
    let page = state
        .admin
        .store
        .query_records(&EventQuery {
            filter: EventFilter {
                event_types: vec![EventType::Checkpoint],
                ..EventFilter::default()
            },
            limit: 1,
            before_seq: None,
        })
        .await
        .map_err(|e| Detour::from(store_error(e)))?;
    Ok(page.events.into_iter().next().map(|r| {
        let m = serde_json::from_str(r.metadata.get()).unwrap_or(Value::Null);
        (r.seq, r.timestamp, m)
    }))
}
