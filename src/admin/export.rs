//! `GET /api/export`: every matching event, oldest first, as a download.
//!
//! The body is encoded while the store streams, into one buffer that is
//! handed to hyper whenever it passes [`FLUSH_BYTES`], so memory stays flat
//! whatever the size and a slow client slows the store reads instead of
//! filling memory. If the store fails midway the body ends with an error,
//! so the client sees a broken download rather than a short file that
//! looks complete.
//!
//! A verifiable export (JSON or NDJSON; the default when the proxy signs
//! checkpoints) also holds the checkpoints that cover its events and, for
//! a filtered export, a `{"chain_link": ...}` item for each event it leaves
//! out (see [`cover`]), so `verify --file` can check it alone.

pub mod cover;

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::error::AdminError;
use super::params::{Params, FILTER_PARAMS};
use super::AdminState;
use crate::event::chain::ChainLink;
use crate::event::EventRecord;
use crate::store::{scope_filter, AuditStore, EventFilter, RecordStream, SharedStore, StoreError};

pub use cover::ExportItem;

/// A stream of export items, oldest first.
pub type ItemStream = futures_util::stream::BoxStream<'static, Result<ExportItem, StoreError>>;

/// Bytes buffered before they are passed on: large enough that each
/// socket write and each chunk hyper frames carries many events.
pub const FLUSH_BYTES: usize = 64 * 1024;

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

/// The columns a CSV export of the central store adds after
/// [`CSV_HEADER`]: where each event came from.
pub const CSV_ORIGIN_HEADER: [&str; 4] = ["source_id", "pod", "namespace", "node"];

/// Which columns a CSV export has. An export of a local store keeps
/// [`CSV_HEADER`] alone, as it always had; one of a store of many sources
/// adds [`CSV_ORIGIN_HEADER`], since a row's `seq` means nothing without
/// its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvColumns {
    Event,
    EventAndOrigin,
}

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

/// Writes events in one format into the chunk being filled.
struct Encoder {
    /// Whether a JSON array item has been written (for the separators).
    wrote_item: bool,
    out: Out,
    csv_columns: CsvColumns,
    /// The `seq` cell, reused from row to row.
    seq: String,
}

/// The chunk being filled.
enum Out {
    Json {
        ndjson: bool,
        buf: Vec<u8>,
    },
    /// One CSV writer per chunk, writing straight into the chunk's buffer
    /// (boxed: the writer carries its own state and buffer).
    Csv(Box<csv::Writer<Vec<u8>>>),
}

/// `GET /api/export`.
pub async fn export(
    State(state): State<AdminState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AdminError> {
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.extend(["format", "verifiable"]);
    let params = Params::parse(raw.as_deref(), &allowed)?;
    let format = match params.single("format")? {
        None => Format::Json,
        Some(raw) => Format::parse(raw).ok_or_else(|| {
            AdminError::invalid("format", "`format` must be one of json, ndjson, csv")
        })?,
    };
    let filter = scope_filter(
        state.store.as_ref(),
        params.filter()?,
        state.events.source(),
    )
    .await?;
    let signing = !state.verify_keys.is_empty();
    let verifiable = match params.single("verifiable")? {
        None => signing,
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(_) => {
            return Err(AdminError::invalid(
                "verifiable",
                "`verifiable` must be true or false",
            ))
        }
    };
    if verifiable && signing {
        // A checkpoint over the newest event, so the whole export is
        // covered; a stalled store must not hold the download forever.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            state.events.flush_and_checkpoint(),
        )
        .await;
    }
    let events = match filter {
        Some(filter) => items(&state.store, format, filter, verifiable),
        None => cover::plain(futures_util::stream::empty().boxed()),
    };
    let columns = CsvColumns::of(state.store.as_ref());
    let mut response = attachment(
        format,
        Body::from_stream(encode_items(format, columns, events)),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `body` as a download in `format`, named `audit-events-<now>.<extension>`.
pub fn attachment(format: Format, body: Body) -> Response {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let disposition = format!(
        "attachment; filename=\"audit-events-{stamp}.{}\"",
        format.extension()
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// What an export of `filter` holds: the matching events, plus (when
/// `verifiable`, in JSON or NDJSON) the checkpoints and chain links that
/// let `verify --file` check them.
pub fn items(
    store: &SharedStore,
    format: Format,
    filter: EventFilter,
    verifiable: bool,
) -> ItemStream {
    // Chain links and checkpoints prove one chain: a central export holds
    // many, each verified on the central side.
    if !verifiable
        || format == Format::Csv
        || filter == EventFilter::default()
        || store.holds_many_sources()
    {
        return cover::plain(store.export_records(filter));
    }
    cover::covered(store.export_records(EventFilter::default()), filter)
}

/// The encoded body of a local store's events: chunks of at least
/// [`FLUSH_BYTES`] (the last may be smaller), ending in an error if the
/// store fails.
pub fn encode(
    format: Format,
    events: RecordStream,
) -> impl Stream<Item = Result<Bytes, ExportAborted>> + Send + 'static {
    encode_items(format, CsvColumns::Event, cover::plain(events))
}

/// As [`encode`], for the events of any store, whose CSV has `columns`.
pub fn encode_records(
    format: Format,
    columns: CsvColumns,
    events: RecordStream,
) -> impl Stream<Item = Result<Bytes, ExportAborted>> + Send + 'static {
    encode_items(format, columns, cover::plain(events))
}

/// As [`encode_records`], for export items (events, and chain links).
pub fn encode_items(
    format: Format,
    columns: CsvColumns,
    mut events: ItemStream,
) -> impl Stream<Item = Result<Bytes, ExportAborted>> + Send + 'static {
    async_stream::stream! {
        let mut encoder = Encoder::new(format, columns);
        encoder.begin();
        while let Some(item) = events.next().await {
            let written = match item {
                Ok(ExportItem::Event(event)) => encoder.event(&event),
                Ok(ExportItem::Link(link)) => encoder.link(&link),
                Err(error) => {
                    tracing::error!(%error, "Export aborted: the audit store failed.");
                    Err(ExportAborted)
                }
            };
            if let Err(aborted) = written {
                if let Ok(rest) = encoder.take() {
                    if !rest.is_empty() {
                        yield Ok(rest);
                    }
                }
                yield Err(aborted);
                return;
            }
            if encoder.len() >= FLUSH_BYTES {
                let chunk = encoder.take();
                let failed = chunk.is_err();
                yield chunk;
                if failed {
                    return;
                }
            }
        }
        encoder.end();
        yield encoder.take();
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

// === impl CsvColumns ===

impl CsvColumns {
    /// The columns of `store`'s CSV exports.
    pub fn of(store: &dyn AuditStore) -> Self {
        if store.holds_many_sources() {
            CsvColumns::EventAndOrigin
        } else {
            CsvColumns::Event
        }
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
    fn new(format: Format, csv_columns: CsvColumns) -> Self {
        let out = match format {
            Format::Json => Out::Json {
                ndjson: false,
                buf: new_buffer(),
            },
            Format::Ndjson => Out::Json {
                ndjson: true,
                buf: new_buffer(),
            },
            Format::Csv => Out::Csv(Box::new(csv_writer())),
        };
        Self {
            wrote_item: false,
            out,
            csv_columns,
            seq: String::new(),
        }
    }

    fn begin(&mut self) {
        match &mut self.out {
            Out::Json { ndjson: false, buf } => buf.push(b'['),
            Out::Json { ndjson: true, .. } => {}
            Out::Csv(csv) => {
                // The header has no cell that needs quoting, and cannot fail.
                let _ = match self.csv_columns {
                    CsvColumns::Event => csv.write_record(CSV_HEADER),
                    CsvColumns::EventAndOrigin => {
                        csv.write_record(CSV_HEADER.iter().chain(&CSV_ORIGIN_HEADER))
                    }
                };
            }
        }
    }

    fn event(&mut self, event: &EventRecord) -> Result<(), ExportAborted> {
        match &mut self.out {
            Out::Json { ndjson: false, buf } => {
                if self.wrote_item {
                    buf.push(b',');
                }
                buf.push(b'\n');
                serde_json::to_writer(&mut *buf, event).map_err(|_| ExportAborted)?;
                self.wrote_item = true;
            }
            Out::Json { ndjson: true, buf } => {
                serde_json::to_writer(&mut *buf, event).map_err(|_| ExportAborted)?;
                buf.push(b'\n');
            }
            Out::Csv(csv) => {
                self.seq.clear();
                let _ = write!(self.seq, "{}", event.seq);
                let cells = [
                    event.id.as_str(),
                    self.seq.as_str(),
                    event.timestamp.as_str(),
                    event.event_type.as_str(),
                    event.level.as_str(),
                    event.message.as_str(),
                    event.request_id.as_deref().unwrap_or(""),
                    event.metadata.get(),
                    event.prev_hash.as_str(),
                    event.hash.as_str(),
                ];
                let cells = cells.map(inert_cell);
                match self.csv_columns {
                    CsvColumns::Event => csv.write_record(cells.iter().map(|c| c.as_bytes())),
                    CsvColumns::EventAndOrigin => {
                        let origin = event.origin.as_deref();
                        let origin_cells = [
                            origin.map(|o| o.source_id.as_str()),
                            origin.and_then(|o| o.pod.as_deref()),
                            origin.and_then(|o| o.namespace.as_deref()),
                            origin.and_then(|o| o.node.as_deref()),
                        ]
                        .map(|cell| inert_cell(cell.unwrap_or("")));
                        csv.write_record(cells.iter().chain(&origin_cells).map(|c| c.as_bytes()))
                    }
                }
                .map_err(|_| ExportAborted)?;
            }
        }
        Ok(())
    }

    /// A left-out event's link, as `{"chain_link": {...}}` (JSON and
    /// NDJSON only; a CSV export carries none).
    fn link(&mut self, link: &ChainLink) -> Result<(), ExportAborted> {
        #[derive(serde::Serialize)]
        struct Wrapped<'a> {
            chain_link: &'a ChainLink,
        }
        let item = Wrapped { chain_link: link };
        match &mut self.out {
            Out::Json { ndjson: false, buf } => {
                if self.wrote_item {
                    buf.push(b',');
                }
                buf.push(b'\n');
                serde_json::to_writer(&mut *buf, &item).map_err(|_| ExportAborted)?;
                self.wrote_item = true;
            }
            Out::Json { ndjson: true, buf } => {
                serde_json::to_writer(&mut *buf, &item).map_err(|_| ExportAborted)?;
                buf.push(b'\n');
            }
            Out::Csv(_) => {}
        }
        Ok(())
    }

    fn end(&mut self) {
        if let Out::Json { ndjson: false, buf } = &mut self.out {
            if self.wrote_item {
                buf.push(b'\n');
            }
            buf.extend_from_slice(b"]\n");
        }
    }

    /// Bytes in the chunk so far. The CSV writer holds back up to its own
    /// buffer's worth, which [`Encoder::take`] adds.
    fn len(&self) -> usize {
        match &self.out {
            Out::Json { buf, .. } => buf.len(),
            Out::Csv(csv) => csv.get_ref().len(),
        }
    }

    /// Hands over the chunk and starts the next. The buffer goes whole
    /// rather than copied: the next chunk needs a fresh one either way.
    fn take(&mut self) -> Result<Bytes, ExportAborted> {
        match &mut self.out {
            Out::Json { buf, .. } => Ok(Bytes::from(std::mem::replace(buf, new_buffer()))),
            Out::Csv(csv) => std::mem::replace(&mut **csv, csv_writer())
                .into_inner()
                .map(Bytes::from)
                .map_err(|_| ExportAborted),
        }
    }
}

/// A chunk's buffer: room for [`FLUSH_BYTES`] and the event that crosses it.
fn new_buffer() -> Vec<u8> {
    Vec::with_capacity(FLUSH_BYTES + 4096)
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().from_writer(new_buffer())
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
    use futures_util::stream;
    use serde_json::json;

    use super::*;
    use crate::event::chain::GENESIS_HASH;
    use crate::event::{AuditEvent, EventType, NewEvent};
    use crate::store::StoreError;

    /// Events whose cells need every kind of CSV care, with enough
    /// metadata that the body spans several chunks.
    fn events(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let message = match seq % 4 {
                    0 => format!("=cmd {seq}"),
                    1 => format!("quote \" and, comma {seq}"),
                    2 => format!("line\nbreak {seq}"),
                    _ => format!("plain {seq}"),
                };
                let mut new = NewEvent::new(EventType::Custom, message).with_metadata(
                    json!({"seq": seq, "pad": "x".repeat(900), "q": "\"é\n", "f": 0.1}),
                );
                if seq % 2 == 0 {
                    new = new.with_request_id(format!("req-{seq}"));
                }
                let e = new.seal(seq, &prev);
                prev.clone_from(&e.hash);
                e
            })
            .collect()
    }

    fn records(events: &[AuditEvent]) -> RecordStream {
        let records: Vec<_> = events
            .iter()
            .map(|e| Ok(EventRecord::try_from(e.clone()).unwrap()))
            .collect();
        stream::iter(records).boxed()
    }

    async fn body(format: Format, events: RecordStream) -> (Vec<Bytes>, bool) {
        let chunks: Vec<_> = encode(format, events).collect().await;
        let failed = chunks.iter().any(|c| c.is_err());
        (chunks.into_iter().filter_map(Result::ok).collect(), failed)
    }

    /// Each format written the plain way, from whole events at once.
    fn reference(format: Format, events: &[AuditEvent]) -> Vec<u8> {
        match format {
            Format::Json => {
                let items: Vec<String> = events
                    .iter()
                    .map(|e| serde_json::to_string(e).unwrap())
                    .collect();
                if items.is_empty() {
                    b"[]\n".to_vec()
                } else {
                    format!("[\n{}\n]\n", items.join(",\n")).into_bytes()
                }
            }
            Format::Ndjson => events
                .iter()
                .flat_map(|e| {
                    let mut line = serde_json::to_vec(e).unwrap();
                    line.push(b'\n');
                    line
                })
                .collect(),
            Format::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(CSV_HEADER).unwrap();
                for e in events {
                    let cells = [
                        e.id.clone(),
                        e.seq.to_string(),
                        crate::event::format_timestamp(&e.timestamp),
                        e.event_type.to_string(),
                        e.level.to_string(),
                        e.message.clone(),
                        e.request_id.clone().unwrap_or_default(),
                        serde_json::to_string(&e.metadata).unwrap(),
                        e.prev_hash.clone(),
                        e.hash.clone(),
                    ];
                    w.write_record(cells.iter().map(|c| inert_cell(c).into_owned()))
                        .unwrap();
                }
                w.into_inner().unwrap()
            }
        }
    }

    #[tokio::test]
    async fn every_format_matches_a_plain_encoding_across_chunks() {
        for n in [0, 1, 300] {
            let events = events(n);
            for format in [Format::Json, Format::Ndjson, Format::Csv] {
                let (chunks, failed) = body(format, records(&events)).await;
                assert!(!failed);
                // Every chunk but the last is at least FLUSH_BYTES.
                let (last, full) = chunks.split_last().unwrap();
                assert!(full.iter().all(|c| c.len() >= FLUSH_BYTES), "{format:?}");
                assert!(n < 300 || !full.is_empty(), "{format:?} came in one chunk");
                let mut all: Vec<u8> = full.iter().flat_map(|c| c.to_vec()).collect();
                all.extend_from_slice(last);
                assert_eq!(
                    String::from_utf8(all).unwrap(),
                    String::from_utf8(reference(format, &events)).unwrap(),
                    "{format:?} of {n}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_store_error_ends_the_body_with_an_error_after_the_good_rows() {
        let events = events(3);
        for format in [Format::Json, Format::Ndjson, Format::Csv] {
            let items: Vec<Result<EventRecord, StoreError>> = vec![
                Ok(EventRecord::try_from(events[0].clone()).unwrap()),
                Err(StoreError::Corrupt(
                    "event seq 2: metadata is not valid JSON".into(),
                )),
                Ok(EventRecord::try_from(events[2].clone()).unwrap()),
            ];
            let chunks: Vec<_> = encode(format, stream::iter(items).boxed()).collect().await;
            assert!(
                matches!(chunks.last(), Some(Err(ExportAborted))),
                "{format:?}"
            );
            let sent: Vec<u8> = chunks
                .iter()
                .filter_map(|c| c.as_ref().ok())
                .flat_map(|b| b.to_vec())
                .collect();
            let sent = String::from_utf8(sent).unwrap();
            assert!(sent.contains(&events[0].id), "{format:?}");
            assert!(!sent.contains(&events[2].id), "{format:?}");
        }
    }

    #[tokio::test]
    async fn a_csv_of_many_sources_adds_each_rows_origin() {
        let events = events(3);
        let mut records: Vec<EventRecord> = events
            .iter()
            .map(|e| EventRecord::try_from(e.clone()).unwrap())
            .collect();
        records[0].origin = Some(Box::new(crate::event::Origin {
            source_id: "source-a".into(),
            pod: Some("pod-a".into()),
            namespace: Some("team-x".into()),
            node: Some("=node".into()),
            row_id: 1,
        }));
        let stream = stream::iter(records.into_iter().map(Ok)).boxed();
        let chunks: Vec<_> = encode_records(Format::Csv, CsvColumns::EventAndOrigin, stream)
            .collect()
            .await;
        let body: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        let mut reader = csv::Reader::from_reader(body.as_slice());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        let mut want: Vec<&str> = CSV_HEADER.to_vec();
        want.extend(CSV_ORIGIN_HEADER);
        assert_eq!(header, want);
        let rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(rows.len(), 3);
        // The event's cells as a local export writes them, then the origin
        // (made inert like any cell); a row without one has empty cells.
        let local = reference(Format::Csv, &events);
        let mut local = csv::Reader::from_reader(local.as_slice());
        for (row, plain) in rows.iter().zip(local.records()) {
            let plain: Vec<String> = plain.unwrap().iter().map(str::to_owned).collect();
            assert_eq!(row[..10], plain[..]);
        }
        assert_eq!(rows[0][10..], ["source-a", "pod-a", "team-x", "'=node"]);
        assert_eq!(rows[1][10..], ["", "", "", ""]);
    }

    #[test]
    fn formula_cells_are_made_inert() {
        for risky in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(inert_cell(risky), format!("'{risky}"));
        }
        assert_eq!(inert_cell("plain = text"), "plain = text");
        assert_eq!(inert_cell(""), "");
    }
}
