//! Losses that could not be recorded in the store before the process
//! stopped, carried to the next start in a small side file next to the
//! store (`unrecorded-losses.json`).
//!
//! The store is where losses are normally recorded (an ERROR event once it
//! takes writes again). When it never did before the stop, the count is
//! written here at exit, and the next start records it and removes the
//! file, so a gap is never left without a trace.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The side file's name, in the store's folder.
pub const LOSS_FILE: &str = "unrecorded-losses.json";

/// Where unrecorded losses are kept between runs.
#[derive(Debug, Clone)]
pub struct LossLedger {
    path: PathBuf,
}

/// What the side file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// Events lost and never recorded as such.
    pub events: u64,
    /// Runs that ended with such losses.
    pub runs: u64,
}

// === impl LossLedger ===

impl LossLedger {
    /// The ledger in the store folder `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(LOSS_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What earlier runs left, if anything. An unreadable file counts as
    /// one run with an unknown loss (0 events), so it is still reported.
    pub fn read(&self) -> Option<Carried> {
        let text = std::fs::read(&self.path).ok()?;
        Some(serde_json::from_slice(&text).unwrap_or(Carried { events: 0, runs: 1 }))
    }

    /// Adds `events` lost in this run to what the file holds.
    pub fn add(&self, events: u64) -> std::io::Result<()> {
        let before = self.read().unwrap_or_default();
        let after = Carried {
            events: before.events + events,
            runs: before.runs + 1,
        };
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&after).unwrap_or_default())?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Forgets what the file held, once it is on record.
    pub fn clear(&self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, file = %self.path.display(), "Cannot remove the unrecorded-losses file.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_add_up_across_runs_and_clear_once_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LossLedger::in_dir(dir.path());
        assert_eq!(ledger.read(), None);
        ledger.add(5).unwrap();
        ledger.add(2).unwrap();
        assert_eq!(ledger.read(), Some(Carried { events: 7, runs: 2 }));
        ledger.clear();
        assert_eq!(ledger.read(), None);
    }

    #[test]
    fn an_unreadable_file_still_reports_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LossLedger::in_dir(dir.path());
        std::fs::write(ledger.path(), b"not json").unwrap();
        assert_eq!(ledger.read(), Some(Carried { events: 0, runs: 1 }));
    }
}
