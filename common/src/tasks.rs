//! Every task a service spawns, so that shutdown can wait for all of them
//! (mini-redis's "shutdown complete" channel, as tokio-util's `TaskTracker`).
//!
//! A task watches the [`Shutdown`](crate::shutdown::Shutdown) signal and ends
//! its round; `run_until_stopped` then awaits [`Tasks::finished`], so the
//! process exits only once every consumer has committed, every relay round
//! has ended and every purchase in flight has been enqueued or undone.
use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::shutdown::Shutdown;

/// Why a runtime handle: actix runs each HTTP worker on a runtime of its
/// own, which is dropped, with every task still on it, once the server has
/// drained. Work that must outlive the request that started it is spawned
/// on the process's main runtime, where `run_until_stopped` waits for it.
#[derive(Clone, Debug)]
pub struct Tasks {
    tracker: TaskTracker,
    main: Handle,
}

impl Tasks {
    /// Call on the main runtime (in `Application::build`). No `Default`:
    /// outside a runtime there is no handle to take, and that must not pass
    /// silently.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            tracker: TaskTracker::new(),
            main: Handle::current(),
        }
    }

    /// A long-lived task (a consumer, a worker loop): its end is logged with
    /// its name, so a stuck shutdown says which task it waits for.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let named = async move {
            let output = task.await;
            tracing::info!(task = name, "task finished");
            output
        };
        self.tracker.spawn_on(named, &self.main)
    }

    /// A task the service cannot run without (a consumer): when it ends, for
    /// whatever reason, it fires `shutdown`, so the process stops whole.
    pub fn spawn_essential<F>(&self, name: &'static str, shutdown: &Shutdown, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = shutdown.clone();
        self.spawn(name, async move {
            task.await;
            stop.trigger();
        });
    }

    /// Work a request awaits but must not cut off if it is dropped (a
    /// purchase past its script). Runs on the caller's runtime (an HTTP
    /// worker's, keeping its thread-local Redis connection) and span; the
    /// server's drain waits for the request, and so for it.
    pub fn track<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task.in_current_span())
    }

    /// Work that outlives the request that started it (an undo retried, a
    /// produce being resolved): on the main runtime, in the caller's span,
    /// and waited for at shutdown.
    pub fn detach<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn_on(task.in_current_span(), &self.main);
    }

    /// How many tracked tasks are still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every task has finished, at most `limit`. No new task can
    /// be tracked afterwards. `false` when some were still running: they are
    /// logged and dropped with the runtime.
    pub async fn finished(&self, limit: Duration) -> bool {
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::error!(
            running = self.tracker.len(),
            "tasks still running at the end of the shutdown grace; exiting without them"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn finished_waits_for_a_task_ending_its_round() {
        let (tasks, shutdown) = (Tasks::new(), Shutdown::new());
        let done = Arc::new(AtomicBool::new(false));
        let (stop, flag) = (shutdown.clone(), done.clone());
        tasks.spawn("worker", async move {
            stop.wait().await;
            // The round in progress when shutdown fired.
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, Ordering::SeqCst);
        });
        shutdown.trigger();
        assert!(tasks.finished(Duration::from_secs(5)).await);
        assert!(
            done.load(Ordering::SeqCst),
            "returned before the task ended"
        );
        assert_eq!(tasks.running(), 0);
    }

    /// The gateway's bug this module fixed: work detached from an HTTP
    /// worker's runtime must survive that runtime, which actix drops after
    /// the drain, and shutdown must wait for it.
    #[tokio::test]
    async fn detached_work_outlives_the_runtime_that_started_it() {
        let tasks = Tasks::new();
        let done = Arc::new(AtomicBool::new(false));
        let (worker_tasks, flag) = (tasks.clone(), done.clone());
        std::thread::spawn(move || {
            let worker = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a worker runtime");
            worker.block_on(async move {
                worker_tasks.detach(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    flag.store(true, Ordering::SeqCst);
                });
            });
            drop(worker);
        })
        .join()
        .expect("the worker thread");
        assert!(tasks.finished(Duration::from_secs(5)).await);
        assert!(
            done.load(Ordering::SeqCst),
            "the work died with its runtime"
        );
    }

    #[tokio::test]
    async fn finished_gives_up_after_its_limit() {
        let tasks = Tasks::new();
        tasks.detach(std::future::pending::<()>());
        assert!(!tasks.finished(Duration::from_millis(50)).await);
        assert_eq!(tasks.running(), 1);
    }
}
