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

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::PipelineStats;

type Job = Box<dyn FnOnce() + Send>;

/// How long the thread, woken for one job, waits for more before it
/// starts. Jobs that arrive meanwhile wake nobody, so at a few thousand
/// calls a second one wake-up builds several records instead of one each.
const LINGER: Duration = Duration::from_millis(2);

/// Hands record-building jobs to the builder thread. Cheap to clone; the
/// thread ends once every clone is dropped and its queue is empty.
#[derive(Clone)]
pub struct RecordBuilder {
    jobs: Option<Arc<Sender>>,
    /// Where failed jobs are counted.
    stats: Arc<PipelineStats>,
}

/// The jobs waiting for the thread, and whether it sleeps on them.
struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
    capacity: usize,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// The thread waits for a first job: the next one must wake it.
    parked: bool,
    /// A queued job cannot wait for others.
    urgent: bool,
    /// False once every [`RecordBuilder`] is gone.
    open: bool,
}

/// Shared by the clones of one [`RecordBuilder`]; the last one dropped
/// tells the thread to finish.
struct Sender {
    queue: Arc<Queue>,
}

/// Whether a job may wait for others to gather before the thread starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Urgency {
    Linger,
    Now,
}

// === impl RecordBuilder ===

impl RecordBuilder {
    /// Starts the builder thread with room for `queued` waiting jobs,
    /// counting failed jobs in `stats`. If the thread cannot be started,
    /// every job runs where it is handed in.
    pub fn start(queued: usize, stats: Arc<PipelineStats>) -> Self {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(queued),
                parked: false,
                urgent: false,
                open: true,
            }),
            wake: Condvar::new(),
            capacity: queued.max(1),
        });
        let counted = stats.clone();
        let taken = queue.clone();
        let spawned = std::thread::Builder::new()
            .name("audit-record".into())
            .spawn(move || {
                lower_priority();
                // Swapped with the queue's each time, so neither side
                // allocates a new one per batch.
                let mut jobs = VecDeque::with_capacity(queued);
                while taken.next_jobs(&mut jobs) {
                    for job in jobs.drain(..) {
                        run_caught(job, &counted);
                    }
                }
            });
        match spawned {
            Ok(_) => Self {
                jobs: Some(Arc::new(Sender { queue })),
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
    /// The job may wait a moment for others, so that one wake-up of the
    /// thread builds several.
    pub fn run<T, F>(&self, job: F) -> impl Future<Output = Option<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_as(job, Urgency::Linger)
    }

    /// As [`run`](Self::run), for a job a call waits for: the thread
    /// starts on it at once.
    pub fn run_now<T, F>(&self, job: F) -> impl Future<Output = Option<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_as(job, Urgency::Now)
    }

    /// Runs `job` on the builder thread, or right here when its queue is
    /// full, without waiting for it: no hand-off back to the caller.
    pub fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.hand_in(Box::new(job), Urgency::Linger);
    }

    /// Hands the job in when called, not when first polled: the future
    /// returned holds only the way back, not the job and what it owns, so
    /// a caller's state machine does not carry the job's size through its
    /// later waits.
    fn run_as<T, F>(
        &self,
        job: F,
        urgency: Urgency,
    ) -> impl Future<Output = Option<T>> + Send + 'static
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
        self.hand_in(job, urgency);
        async move { result.await.ok() }
    }

    /// Queues `job` for the thread, or runs it here when the queue is
    /// full or there is no thread.
    fn hand_in(&self, job: Job, urgency: Urgency) {
        // Counted until the job has run: its events are on their way to
        // the queue, and admission counts them as coming (see
        // `admission`'s module doc).
        self.stats.records_building.fetch_add(1, Ordering::Relaxed);
        let here = match &self.jobs {
            Some(sender) => sender.queue.push(job, urgency),
            None => Some(job),
        };
        if let Some(job) = here {
            run_caught(job, &self.stats);
        }
    }
}

// === impl Queue ===

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A job never runs under the lock, so a poisoned lock still holds
        // a whole queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, or gives it back when the queue is full. Wakes the
    /// thread only when it waits for a first job, the queue is half full,
    /// or the job cannot wait.
    fn push(&self, job: Job, urgency: Urgency) -> Option<Job> {
        let mut state = self.lock();
        if state.jobs.len() >= self.capacity || !state.open {
            return Some(job);
        }
        state.jobs.push_back(job);
        state.urgent |= urgency == Urgency::Now;
        let wake = state.parked || state.urgent || state.jobs.len() * 2 >= self.capacity;
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        None
    }

    /// Swaps the next jobs to run, taken together, into `batch` (empty);
    /// false once the queue is closed and empty.
    fn next_jobs(&self, batch: &mut VecDeque<Job>) -> bool {
        let mut state = self.lock();
        while state.jobs.is_empty() {
            if !state.open {
                return false;
            }
            state.parked = true;
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.parked = false;
        }
        // Jobs queued while this waits wake nobody (unless the queue
        // fills up or one cannot wait).
        if state.open && !state.urgent && state.jobs.len() * 2 < self.capacity {
            state = self
                .wake
                .wait_timeout(state, LINGER)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.urgent = false;
        std::mem::swap(&mut state.jobs, batch);
        true
    }
}

// === impl Sender ===

impl Drop for Sender {
    fn drop(&mut self) {
        self.queue.lock().open = false;
        self.queue.wake.notify_one();
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
    stats.records_building.fetch_sub(1, Ordering::Relaxed);
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
    async fn the_future_waiting_for_a_job_holds_none_of_what_the_job_owns() {
        // A record's task waits on these for as long as its call runs; the
        // job's captures go with the job, not into the waiting future.
        let big = [7u8; 4096];
        for builder in [
            RecordBuilder::start(4, Default::default()),
            RecordBuilder::inline(Default::default()),
        ] {
            let waiting = builder.run(move || big.iter().map(|&b| usize::from(b)).sum::<usize>());
            assert!(std::mem::size_of_val(&waiting) <= 64);
            assert_eq!(waiting.await, Some(7 * 4096));
            let waiting = builder.run_now(move || big.len());
            assert!(std::mem::size_of_val(&waiting) <= 64);
            assert_eq!(waiting.await, Some(4096));
        }
    }

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
    async fn a_job_counts_as_building_until_it_has_run() {
        fn building(stats: &PipelineStats) -> u64 {
            stats.records_building.load(Ordering::Relaxed)
        }
        // In place: counted while it runs, uncounted when it returns,
        // panicking or not.
        let stats = Arc::new(PipelineStats::default());
        let inline = RecordBuilder::inline(stats.clone());
        let seen = {
            let stats = stats.clone();
            inline.run(move || building(&stats)).await
        };
        assert_eq!(seen, Some(1));
        assert_eq!(building(&stats), 0);
        let failed: Option<()> = inline.run(|| panic!("a bug in one record")).await;
        assert_eq!(failed, None);
        assert_eq!(building(&stats), 0);
        // On the thread: uncounted just after its reply is sent.
        let stats = Arc::new(PipelineStats::default());
        let on_thread = RecordBuilder::start(4, stats.clone());
        let seen = {
            let stats = stats.clone();
            on_thread.run(move || building(&stats)).await
        };
        assert_eq!(seen, Some(1));
        for _ in 0..10_000 {
            if building(&stats) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(building(&stats), 0);
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
    async fn a_spawned_job_runs_on_the_builder_thread_without_a_reply() {
        let builder = RecordBuilder::start(4, Default::default());
        let (tx, rx) = std::sync::mpsc::channel();
        builder.spawn(move || {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let name = tokio::task::spawn_blocking(move || rx.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("audit-record"));
    }

    #[tokio::test]
    async fn jobs_queued_when_the_last_builder_is_dropped_still_run() {
        let builder = RecordBuilder::start(8, Default::default());
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            builder.spawn(move || {
                let _ = tx.send(i);
            });
        }
        drop((builder, tx));
        let ran = tokio::task::spawn_blocking(move || rx.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(ran, vec![0, 1, 2], "in order, every one");
    }

    #[tokio::test]
    async fn a_job_a_call_waits_for_runs_on_the_builder_thread() {
        let builder = RecordBuilder::start(4, Default::default());
        let name = builder
            .run_now(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("audit-record"));
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
