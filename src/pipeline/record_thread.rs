//! The thread call records are built on.
//!
//! Building a record (decoding, SSE reassembly, sanitising, serialising) is
//! CPU work no call waits for. On the proxy's own workers it is scheduled
//! cooperatively: a worker busy with a record cannot serve a socket that
//! just became ready, and the app sees that as time to first byte. On a
//! thread of its own the kernel shares the cores instead, and a worker
//! woken by a socket gets a core without waiting for the record to finish.

use std::sync::Arc;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// A single-threaded runtime on its own OS thread. It runs until the last
/// clone is dropped (each record task holds one, so pending records finish
/// first).
#[derive(Clone)]
pub struct RecordThread {
    handle: Handle,
    _stop: Arc<oneshot::Sender<()>>,
}

// === impl RecordThread ===

impl RecordThread {
    /// Starts the thread. If the OS refuses a thread, records run on the
    /// caller's runtime instead, as they would without this thread.
    pub fn start() -> RecordThread {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel::<Handle>();
        let spawned = std::thread::Builder::new()
            .name("audit-record".into())
            .spawn(move || {
                let runtime = match Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::warn!(%error, "Audit record thread could not start its runtime.");
                        return;
                    }
                };
                if handle_tx.send(runtime.handle().clone()).is_err() {
                    return;
                }
                // Spawned record tasks run while this waits; the sender goes
                // when the last clone does.
                let _ = runtime.block_on(stop_rx);
            });
        let handle = match spawned {
            Ok(_) => handle_rx.recv().ok(),
            Err(error) => {
                tracing::warn!(%error, "Audit record thread could not start.");
                None
            }
        };
        RecordThread {
            handle: handle.unwrap_or_else(Handle::current),
            _stop: Arc::new(stop_tx),
        }
    }

    /// Where record tasks are spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_record_thread_and_it_stops_with_the_last_clone() {
        let thread = RecordThread::start();
        let name = thread
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("audit-record"));

        let handle = thread.handle().clone();
        drop(thread);
        // The runtime shuts down once its stop sender is gone.
        for _ in 0..200 {
            if handle.spawn(async {}).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the record thread kept running after its last clone was dropped");
    }
}
