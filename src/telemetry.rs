//! The process's own diagnostics: tracing to stderr, JSON or text.
//!
//! Verbosity follows `RUST_LOG` (tracing's EnvFilter syntax), `info` by
//! default. These logs never carry bodies, prompts or credentials; the
//! audit record is the place for content, sanitised.

pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. A second call is a no-op (tests start
/// several servers in one process).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// An error and its causes on one line, `outer: inner: …`, for a log line
/// or an ERROR event (callers pass errors that never hold a credential).
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
