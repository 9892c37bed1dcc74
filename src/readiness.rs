//! Whether the sidecar should receive traffic, for `/readyz`.
//!
//! Readiness is derived, never stored: the proxy's listening latch, the
//! draining flag set at the start of shutdown, and the store's write health
//! published by the writer. Any of them can turn it back to not-ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::pipeline::StoreHealth;

/// Shared readiness state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Readiness {
    inner: Arc<Flags>,
    store: StoreHealth,
}

#[derive(Debug, Default)]
struct Flags {
    proxy_listening: AtomicBool,
    draining: AtomicBool,
}

/// Why the sidecar is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    ProxyNotListening,
    Draining,
    StoreNotWritable,
}

// === impl Readiness ===

impl Readiness {
    pub fn new(store: StoreHealth) -> Self {
        Self {
            inner: Arc::default(),
            store,
        }
    }

    pub fn set_proxy_listening(&self, listening: bool) {
        self.inner
            .proxy_listening
            .store(listening, Ordering::Release);
    }

    /// Marks the start of shutdown; readiness stays false from then on.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    pub fn store_health(&self) -> &StoreHealth {
        &self.store
    }

    pub fn check(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            Err(NotReady::Draining)
        } else if !self.inner.proxy_listening.load(Ordering::Acquire) {
            Err(NotReady::ProxyNotListening)
        } else if !self.store.is_writable() {
            Err(NotReady::StoreNotWritable)
        } else {
            Ok(())
        }
    }
}

// === impl NotReady ===

impl NotReady {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotReady::ProxyNotListening => "proxy_not_listening",
            NotReady::Draining => "draining",
            NotReady::StoreNotWritable => "store_not_writable",
        }
    }
}
