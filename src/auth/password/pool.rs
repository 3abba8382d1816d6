//! The threads that run password checks: a few, each at the lowest scheduling priority, so
//! argon2 only gets CPU time that proxying leaves over.
//!
//! `SCHED_IDLE` is the Linux policy for background work: such a thread runs when no ordinary
//! thread wants the core (its weight is 3 against 1024 for an ordinary thread), and an ordinary
//! thread that wakes up preempts it at once. On a machine with spare cores a check runs at full
//! speed; on a saturated one, checks slow down to a crawl instead of slowing proxying, and the
//! bound on pending checks (see the parent module) turns the backlog into 503 `login_busy`.
//! Where `SCHED_IDLE` is refused, the thread falls back to nice 19 (weight 15).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
};

/// One password check, with what it answers to.
pub type Job = Box<dyn FnOnce() + Send>;

/// Threads that take jobs from one queue. Dropping the pool lets them finish the queue and exit.
pub struct Pool {
    jobs: SyncSender<Job>,
    workers: usize,
}

impl Pool {
    /// `workers` threads (those that could be started) and a queue of at most `capacity` jobs.
    pub fn new(workers: usize, capacity: usize) -> Pool {
        let (jobs, queue) = sync_channel::<Job>(capacity);
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for index in 0..workers {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("guichet-password-{index}"))
                .spawn(move || work(&queue));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => tracing::error!(%error, "cannot start a password-check thread"),
            }
        }
        Pool {
            jobs,
            workers: started,
        }
    }

    /// The threads that run checks.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queues `job`, or gives it back when the queue is full or no thread is left to run it.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.try_send(job).map_err(|refused| match refused {
            std::sync::mpsc::TrySendError::Full(job)
            | std::sync::mpsc::TrySendError::Disconnected(job) => job,
        })
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    match lower_priority() {
        Ok(level) => tracing::debug!(level, "password-check thread started"),
        Err(error) => tracing::warn!(
            %error,
            "password checks run at normal priority: a burst of logins can slow proxying"
        ),
    }
    loop {
        // Jobs run outside the lock, so a poisoned lock only means a panic while waiting.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else {
            return;
        };
        // A panicking check drops its reply (the login fails) but keeps the thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Neither `SCHED_IDLE` nor nice 19 could be had.
#[derive(Debug, thiserror::Error)]
#[error("cannot lower the thread's priority: {0}")]
struct PriorityKept(#[source] thread_priority::Error);

/// Moves the calling thread to `SCHED_IDLE`, or else to nice 19; names the level reached.
fn lower_priority() -> Result<&'static str, PriorityKept> {
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    // Setting the policy also sets the nice value to 0, which fails in a process started with
    // a higher one even though the policy took: what counts is the policy in force afterwards.
    let _ = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle);
    if thread_schedule_policy() == Ok(idle) {
        return Ok("SCHED_IDLE");
    }
    let other = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
    set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, other)
        .map(|()| "nice 19")
        .map_err(PriorityKept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_threads_at_the_idle_policy() {
        let pool = Pool::new(1, 4);
        assert_eq!(pool.workers(), 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(thread_schedule_policy());
        });
        assert!(pool.submit(job).is_ok());
        let policy = rx.recv().expect("the job ran");
        assert_eq!(
            policy,
            Ok(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Idle
            ))
        );
    }

    #[test]
    fn a_panicking_job_keeps_its_thread() {
        let pool = Pool::new(1, 4);
        assert!(pool.submit(Box::new(|| panic!("a check failed"))).is_ok());
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(pool
            .submit(Box::new(move || tx.send(()).unwrap_or(())))
            .is_ok());
        assert!(rx.recv().is_ok(), "the thread still takes jobs");
    }

    #[test]
    fn a_full_queue_gives_the_job_back() {
        let pool = Pool::new(1, 1);
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        // The first job holds the thread, the second fills the queue.
        let holding: Job = Box::new(move || {
            let _ = started_tx.send(());
            let _ = released.recv();
        });
        assert!(pool.submit(holding).is_ok());
        started.recv().expect("the first job runs");
        assert!(pool.submit(Box::new(|| {})).is_ok());
        assert!(pool.submit(Box::new(|| {})).is_err());
        drop(release);
    }
}
