//! `GET /api/export`: every matching event, oldest first, as a download.
//!
//! The body is encoded while the store streams, into one buffer that is
//! handed to hyper whenever it passes [`FLUSH_BYTES`], so memory stays flat
//! whatever the size and a slow client slows the store reads instead of
//! filling memory. If the store fails midway the body ends with an error,
//! so the client sees a broken download rather than a short file that
//! looks complete.

use std::borrow::Cow;
use std::fmt;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::error::AdminError;
use super::params::{Params, FILTER_PARAMS};
use super::AdminState;
use crate::event::{format_timestamp, AuditEvent};
use crate::store::EventStream;

/// Bytes buffered before they are passed on.
pub const FLUSH_BYTES: usize = 32 * 1024;

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 10] = [
    "id",
    "seq",
    "timestamp",
    "event_type",
    "level",
    "message",
    "request_id",
    "metadata",
    "prev_hash",
    "hash",
];

/// An export encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
}

/// Ends a download whose events could not all be read.
#[derive(Debug)]
pub struct ExportAborted;

/// Writes events in one format into a byte buffer.
struct Encoder {
    format: Format,
    /// Whether a JSON array item has been written (for the separators).
    wrote_item: bool,
    csv: csv::WriterBuilder,
}

/// `GET /api/export`.
pub async fn export(
    State(state): State<AdminState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AdminError> {
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.push("format");
    let params = Params::parse(raw.as_deref(), &allowed)?;
    let format = match params.single("format")? {
        None => Format::Json,
        Some(raw) => Format::parse(raw).ok_or_else(|| {
            AdminError::invalid("format", "`format` must be one of json, ndjson, csv")
        })?,
    };
    let filter = params.filter()?;
    let events = state.store.export(filter);
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let disposition = format!(
        "attachment; filename=\"audit-events-{stamp}.{}\"",
        format.extension()
    );
    let mut response = Body::from_stream(encode(format, events)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The encoded body: chunks of at least [`FLUSH_BYTES`] (the last may be
/// smaller), ending in an error if the store fails.
pub fn encode(
    format: Format,
    mut events: EventStream,
) -> impl Stream<Item = Result<Bytes, ExportAborted>> + Send + 'static {
    async_stream::stream! {
        let mut encoder = Encoder::new(format);
        let mut buf = Vec::with_capacity(FLUSH_BYTES + 4096);
        encoder.begin(&mut buf);
        while let Some(item) = events.next().await {
            let written = match item {
                Ok(event) => encoder.event(&event, &mut buf),
                Err(error) => {
                    tracing::error!(%error, "Export aborted: the audit store failed.");
                    Err(ExportAborted)
                }
            };
            if let Err(aborted) = written {
                if !buf.is_empty() {
                    yield Ok(Bytes::copy_from_slice(&buf));
                }
                yield Err(aborted);
                return;
            }
            if buf.len() >= FLUSH_BYTES {
                yield Ok(Bytes::copy_from_slice(&buf));
                buf.clear();
            }
        }
        encoder.end(&mut buf);
        yield Ok(Bytes::copy_from_slice(&buf));
    }
}

/// Makes a cell inert for spreadsheets: one starting with `=`, `+`, `-`,
/// `@`, tab or CR would be read as a formula, so it gets a leading `'`.
pub fn inert_cell(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

// === impl Format ===

impl Format {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn extension(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

// === impl Encoder ===

impl Encoder {
    fn new(format: Format) -> Self {
        let mut csv = csv::WriterBuilder::new();
        // Rows are written one at a time into the shared buffer; a small
        // internal buffer is enough.
        csv.buffer_capacity(1024);
        Self {
            format,
            wrote_item: false,
            csv,
        }
    }

    fn begin(&mut self, buf: &mut Vec<u8>) {
        match self.format {
            Format::Json => buf.push(b'['),
            Format::Ndjson => {}
            Format::Csv => {
                // The header has no cell that needs quoting, and cannot fail.
                let _ = self.csv_row(buf, CSV_HEADER);
            }
        }
    }

    fn event(&mut self, event: &AuditEvent, buf: &mut Vec<u8>) -> Result<(), ExportAborted> {
        match self.format {
            Format::Json => {
                if self.wrote_item {
                    buf.push(b',');
                }
                buf.push(b'\n');
                serde_json::to_writer(&mut *buf, event).map_err(|_| ExportAborted)?;
                self.wrote_item = true;
            }
            Format::Ndjson => {
                serde_json::to_writer(&mut *buf, event).map_err(|_| ExportAborted)?;
                buf.push(b'\n');
            }
            Format::Csv => {
                let seq = event.seq.to_string();
                let timestamp = format_timestamp(&event.timestamp);
                let metadata = serde_json::to_string(&event.metadata).map_err(|_| ExportAborted)?;
                let cells = [
                    event.id.as_str(),
                    seq.as_str(),
                    timestamp.as_str(),
                    event.event_type.as_str(),
                    event.level.as_str(),
                    event.message.as_str(),
                    event.request_id.as_deref().unwrap_or(""),
                    metadata.as_str(),
                    event.prev_hash.as_str(),
                    event.hash.as_str(),
                ];
                let cells = cells.map(inert_cell);
                self.csv_row(buf, cells.iter().map(|c| c.as_bytes()))?;
            }
        }
        Ok(())
    }

    fn end(&mut self, buf: &mut Vec<u8>) {
        if self.format == Format::Json {
            if self.wrote_item {
                buf.push(b'\n');
            }
            buf.extend_from_slice(b"]\n");
        }
    }

    fn csv_row<T: AsRef<[u8]>>(
        &self,
        buf: &mut Vec<u8>,
        cells: impl IntoIterator<Item = T>,
    ) -> Result<(), ExportAborted> {
        // A writer per row over the shared buffer: its own buffer is small,
        // and this keeps one output buffer for the whole export.
        let mut writer = self.csv.from_writer(buf);
        writer.write_record(cells).map_err(|_| ExportAborted)?;
        writer.flush().map_err(|_| ExportAborted)
    }
}

// === impl ExportAborted ===

impl fmt::Display for ExportAborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the export was aborted because the audit store failed")
    }
}

impl std::error::Error for ExportAborted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_made_inert() {
        for risky in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(inert_cell(risky), format!("'{risky}"));
        }
        assert_eq!(inert_cell("plain = text"), "plain = text");
        assert_eq!(inert_cell(""), "");
    }
}
