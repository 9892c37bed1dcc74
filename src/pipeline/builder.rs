//! A thread of its own for building call records, at the lowest CPU
//! priority.
//!
//! Building a record (parsing both bodies, scanning them, the metadata
//! JSON) is the larger part of auditing's CPU per call, and nothing waits
//! for it. On the async workers it sits in front of the next call's bytes
//! whenever the two meet on a core. Here the OS runs it only when a core
//! has nothing better to do. When calls keep every core busy the thread
//! falls behind; once its queue is full, records are built where they
//! were started, so auditing slows the calls down instead of piling up.
//!
//! A job that panics (a bug in building one record) loses that record
//! only: the panic is caught, counted in
//! [`PipelineStats::build_failures`](super::PipelineStats::build_failures)
//! (the writer records the count as an ERROR event), and the thread goes
//! on with the next job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::PipelineStats;

type Job = Box<dyn FnOnce() + Send>;

/// Hands record-building jobs to the builder thread. Cheap to clone; the
/// thread ends once every clone is dropped and its queue is empty.
#[derive(Clone)]
pub struct RecordBuilder {
    jobs: Option<SyncSender<Job>>,
    /// Where failed jobs are counted.
    stats: Arc<PipelineStats>,
}

// === impl RecordBuilder ===

impl RecordBuilder {
    /// Starts the builder thread with room for `queued` waiting jobs,
    /// counting failed jobs in `stats`. If the thread cannot be started,
    /// every job runs where it is handed in.
    pub fn start(queued: usize, stats: Arc<PipelineStats>) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(queued);
        let counted = stats.clone();
        let spawned = std::thread::Builder::new()
            .name("audit-record".into())
            .spawn(move || {
                lower_priority();
                while let Ok(job) = rx.recv() {
                    run_caught(job, &counted);
                }
            });
        match spawned {
            Ok(_) => Self {
                jobs: Some(tx),
                stats,
            },
            Err(error) => {
                tracing::warn!(%error, "No record builder thread; records are built on the async workers.");
                Self::inline(stats)
            }
        }
    }

    /// A builder that runs every job where it is handed in.
    pub fn inline(stats: Arc<PipelineStats>) -> Self {
        Self { jobs: None, stats }
    }

    /// Runs `job` on the builder thread, or right here when its queue is
    /// full, and returns what it returned (`None` only if the job died).
    pub async fn run<T, F>(&self, job: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let stats = self.stats.clone();
        let job: Job = Box::new(move || {
            // Caught here, so the failure is counted before the caller
            // learns of it (the result channel closes after).
            match catch_unwind(AssertUnwindSafe(job)) {
                Ok(value) => {
                    let _ = done.send(value);
                }
                Err(_) => count_failure(&stats),
            }
        });
        let here = match &self.jobs {
            Some(jobs) => match jobs.try_send(job) {
                Ok(()) => None,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job),
            },
            None => Some(job),
        };
        if let Some(job) = here {
            run_caught(job, &self.stats);
        }
        result.await.ok()
    }
}

/// Runs `job`, turning a panic that escaped it (a failing drop) into a
/// counted, logged failure, so the thread lives on.
fn run_caught(job: Job, stats: &PipelineStats) {
    // Unwind-safe in effect: the job owns what it captured, and all of it
    // is dropped with the job; nothing shared is left half-changed.
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        count_failure(stats);
    }
}

fn count_failure(stats: &PipelineStats) {
    let failures = stats.build_failures.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::error!(
        failures,
        "Building a call record failed; the record is lost and counted."
    );
}

/// Nice 19 for the calling thread (Linux threads have a niceness of their
/// own). Raising one's niceness needs no privilege; should it fail anyway,
/// the thread runs at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(tid), 19) {
            tracing::debug!(%error, "Record builder keeps normal priority.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_job_runs_on_the_builder_thread_and_returns_its_result() {
        let builder = RecordBuilder::start(4, Default::default());
        let name = builder
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("audit-record"));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_builder_thread_runs_at_the_lowest_priority() {
        let builder = RecordBuilder::start(4, Default::default());
        let nice = builder
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(nice, 19);
    }

    #[tokio::test]
    async fn a_full_queue_builds_where_the_job_was_handed_in() {
        let builder = RecordBuilder::start(1, Default::default());
        let tracker = tokio_util::task::TaskTracker::new();
        // The first job holds the thread until released.
        let started = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let busy = {
            let (builder, started, release) = (builder.clone(), started.clone(), release.clone());
            tracker.spawn(async move {
                builder
                    .run(move || {
                        started.wait();
                        release.wait();
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        started.wait();
        // The second waits in the queue's one place.
        let queued = {
            let builder = builder.clone();
            tracker.spawn(async move {
                builder
                    .run(|| std::thread::current().name().map(str::to_owned))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The third finds the queue full.
        let here = std::thread::current().id();
        let ran_on = builder.run(move || std::thread::current().id()).await;
        assert_eq!(ran_on, Some(here), "built in place while the queue is full");
        release.wait();
        busy.await.unwrap().unwrap();
        let queued_on = queued.await.unwrap().unwrap();
        assert_eq!(queued_on.as_deref(), Some("audit-record"));
    }

    #[tokio::test]
    async fn a_panicking_job_is_counted_and_the_thread_goes_on() {
        let stats = Arc::new(PipelineStats::default());
        let builder = RecordBuilder::start(4, stats.clone());
        let failed: Option<()> = builder.run(|| panic!("a bug in one record")).await;
        assert_eq!(failed, None);
        assert_eq!(stats.build_failures.load(Ordering::Relaxed), 1);
        let name = builder
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("audit-record"), "the thread is alive");
        let inline = RecordBuilder::inline(stats.clone());
        assert_eq!(inline.run(|| panic!("inline too")).await, None::<()>);
        assert_eq!(stats.build_failures.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn an_inline_builder_runs_jobs_in_place() {
        let here = std::thread::current().id();
        let ran_on = RecordBuilder::inline(Default::default())
            .run(move || std::thread::current().id())
            .await;
        assert_eq!(ran_on, Some(here));
    }
}
