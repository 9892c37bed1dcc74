//! Whether the store currently accepts writes, as the writer last saw it.

use tokio::sync::watch;

/// A cheap, cloneable view of the store's write health. `fail_closed` and
/// `/readyz` read it; only the writer changes it.
#[derive(Clone, Debug)]
pub struct StoreHealth {
    rx: watch::Receiver<bool>,
}

/// The writer's side.
#[derive(Debug)]
pub(crate) struct StoreHealthSetter {
    tx: watch::Sender<bool>,
}

pub(crate) fn channel() -> (StoreHealthSetter, StoreHealth) {
    let (tx, rx) = watch::channel(true);
    (StoreHealthSetter { tx }, StoreHealth { rx })
}

// === impl StoreHealth ===

impl StoreHealth {
    pub fn is_writable(&self) -> bool {
        *self.rx.borrow()
    }

    /// Returns once the store is not writable (at once if it is not now);
    /// never while the writer is gone with the store writable.
    pub async fn unwritable(&mut self) {
        if self.rx.wait_for(|writable| !*writable).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// A health view fixed at `writable`, for tests and for the proxy-only
    /// mode where auditing is disabled.
    pub fn fixed(writable: bool) -> Self {
        let (_tx, rx) = watch::channel(writable);
        Self { rx }
    }
}

// === impl StoreHealthSetter ===

impl StoreHealthSetter {
    pub(crate) fn get(&self) -> bool {
        *self.tx.borrow()
    }

    /// Returns the previous value.
    pub(crate) fn set(&self, writable: bool) -> bool {
        self.tx.send_replace(writable)
    }
}
