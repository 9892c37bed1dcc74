//! What a verifiable export holds besides its events: the checkpoints that
//! cover them, and a [`ChainLink`] for each event it leaves out between its
//! first event and the first checkpoint after its last event.
//!
//! The store is read from the start in `seq` order (a filter's events are
//! not contiguous, and the links must be). Before the first matching event
//! nothing is written: the export's first `prev_hash` is where a verifier
//! starts. After it, every event is written whole if it matches or is a
//! checkpoint, and as a link otherwise. What follows a matching event is
//! held back until the next one needs it; at the end, only what leads up to
//! the first checkpoint after the last match is written.

use futures_util::stream::{BoxStream, StreamExt};

use crate::event::chain::ChainLink;
use crate::event::{EventRecord, EventType};
use crate::store::{EventFilter, RecordStream, StoreError};

/// Items held back at most before they are written anyway (a long tail
/// after the last match): memory stays bounded, the export a little longer.
const MAX_HELD: usize = 10_000;

/// One item of an export.
#[derive(Debug, Clone)]
pub enum ExportItem {
    Event(EventRecord),
    /// An event left out, as its chain link.
    Link(ChainLink),
}

/// Every event of `records` as a whole item.
pub fn plain(records: RecordStream) -> BoxStream<'static, Result<ExportItem, StoreError>> {
    records.map(|r| r.map(ExportItem::Event)).boxed()
}

/// The events of `all` (every event of the store, oldest first) that match
/// `filter`, with the checkpoints and links that make them verifiable.
pub fn covered(
    mut all: RecordStream,
    filter: EventFilter,
) -> BoxStream<'static, Result<ExportItem, StoreError>> {
    async_stream::stream! {
        let mut started = false;
        let mut held: Vec<ExportItem> = Vec::new();
        while let Some(record) = all.next().await {
            let record = match record {
                Ok(r) => r,
                Err(error) => {
                    yield Err(error);
                    return;
                }
            };
            if filter.matches_record(&record) {
                started = true;
                for item in held.drain(..) {
                    yield Ok(item);
                }
                yield Ok(ExportItem::Event(record));
            } else if started {
                held.push(if record.event_type == EventType::Checkpoint {
                    ExportItem::Event(record)
                } else {
                    ExportItem::Link(ChainLink::of_record(&record))
                });
                if held.len() >= MAX_HELD {
                    for item in held.drain(..) {
                        yield Ok(item);
                    }
                }
            }
        }
        // Up to the first checkpoint after the last match (if there is
        // none, the tail is not covered and no link would help).
        if let Some(end) = held.iter().position(is_checkpoint) {
            for item in held.drain(..=end) {
                yield Ok(item);
            }
        }
    }
    .boxed()
}

fn is_checkpoint(item: &ExportItem) -> bool {
    matches!(item, ExportItem::Event(r) if r.event_type == EventType::Checkpoint)
}
