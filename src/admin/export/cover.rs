//! What a verifiable export holds besides its events: the checkpoints that
//! cover them, and a [`ChainLink`] for each event it leaves out between its
//! first event and the last checkpoint it needs.
//!
//! The store is read from the start in `seq` order (a filter's events are
//! not contiguous, and the links must be). Before the first matching event
//! nothing is written: the export's first `prev_hash` is where a verifier
//! starts. After it, every event is written whole if it matches or is a
//! checkpoint, and as a link otherwise. Links are held back until the next
//! whole item needs them, so links after the export's last checkpoint (which
//! no signature would cover) are left out.

use futures_util::stream::{BoxStream, StreamExt};

use crate::event::chain::ChainLink;
use crate::event::{EventRecord, EventType};
use crate::store::{EventFilter, RecordStream, StoreError};

/// Links held back at most before they are written anyway (a long run of
/// left-out events with no checkpoint, on a store that does not sign).
const MAX_HELD_LINKS: usize = 10_000;

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
        let mut held: Vec<ChainLink> = Vec::new();
        while let Some(record) = all.next().await {
            let record = match record {
                Ok(r) => r,
                Err(error) => {
                    yield Err(error);
                    return;
                }
            };
            let wanted = filter.matches_record(&record);
            if wanted || (started && record.event_type == EventType::Checkpoint) {
                started = true;
                for link in held.drain(..) {
                    yield Ok(ExportItem::Link(link));
                }
                yield Ok(ExportItem::Event(record));
            } else if started {
                held.push(ChainLink::of_record(&record));
                if held.len() >= MAX_HELD_LINKS {
                    for link in held.drain(..) {
                        yield Ok(ExportItem::Link(link));
                    }
                }
            }
        }
    }
    .boxed()
}
