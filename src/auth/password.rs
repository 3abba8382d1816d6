//! Password hashing with argon2id, and the checks of logins: run on a few threads at the lowest
//! scheduling priority (`pool`), so a burst of logins never takes CPU from proxying, and bounded
//! in number, so logins from many addresses cannot queue unbounded work: past the bound a login
//! is refused at once with an estimate of when a place frees up. An unknown user costs the same
//! as a wrong password.

mod pool;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use self::pool::{Job, Pool};

/// The longest `Retry-After` given: past a minute the estimate says little, and a client told
/// to wait longer would rather retry by hand.
const MAX_RETRY_AFTER: u64 = 60;

/// Checked instead of a stored hash when the user does not exist or is inactive.
const DECOY: &str = "decoy password that never matches";

/// Checks passwords on the pool, with at most `max_pending` checks admitted at once.
#[derive(Clone)]
pub struct PasswordChecker {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    /// Logins admitted whose check has not ended: before it, queued or running.
    pending: AtomicUsize,
    max_pending: usize,
    /// A moving average of the wall time of one check on a pool thread, in microseconds: how
    /// long a place takes to free up, which grows when the machine is busy.
    check_micros: AtomicU64,
    /// A hash made by [`hash`], so the decoy costs what a stored password costs.
    decoy: Arc<str>,
}

/// Refused: `max_pending` checks are pending already.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy {
    /// Seconds until the checks ahead are likely done: the queue times one check's measured
    /// time, shared among the threads; from 1 to `MAX_RETRY_AFTER`.
    pub retry_after: u64,
}

/// The check did not run to its end: no thread was left to run it, or it panicked.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckFailed;

/// A place among the pending checks, held until the check ends and given back when dropped.
pub struct Admitted {
    shared: Arc<Shared>,
}

impl PasswordChecker {
    /// `workers` threads (at least 1) and room for `max_pending` checks (at least 1).
    pub fn new(workers: usize, max_pending: usize) -> PasswordChecker {
        let max_pending = max_pending.max(1);
        let started = Instant::now();
        let decoy = hash(DECOY);
        // Making a hash costs what checking one does: the first estimate of a check's time.
        let check_micros = micros(started.elapsed());
        PasswordChecker {
            shared: Arc::new(Shared {
                pool: Pool::new(workers.max(1), max_pending),
                pending: AtomicUsize::new(0),
                max_pending,
                check_micros: AtomicU64::new(check_micros),
                decoy: decoy.into(),
            }),
        }
    }

    /// A place for one check, or [`Busy`] when every place is taken.
    pub fn admit(&self) -> Result<Admitted, Busy> {
        let shared = &self.shared;
        let taken = shared
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                (pending < shared.max_pending).then_some(pending + 1)
            });
        match taken {
            Ok(_) => Ok(Admitted {
                shared: shared.clone(),
            }),
            Err(pending) => Err(Busy {
                retry_after: shared.retry_after(pending),
            }),
        }
    }
}

impl Shared {
    fn retry_after(&self, pending: usize) -> u64 {
        let workers = u64::try_from(self.pool.workers().max(1)).unwrap_or(1);
        let check = self.check_micros.load(Ordering::Relaxed);
        let pending = u64::try_from(pending).unwrap_or(u64::MAX);
        let drain = pending.saturating_mul(check) / workers;
        drain.div_ceil(1_000_000).clamp(1, MAX_RETRY_AFTER)
    }

    /// Folds one check's time into the average, an eighth at a time.
    fn record(&self, took: Duration) {
        let sample = micros(took);
        let _ = self
            .check_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |average| {
                Some(average - average / 8 + sample / 8)
            });
    }
}

impl Admitted {
    /// Whether `password` matches `stored` (an argon2 PHC string); `None` checks the decoy and
    /// answers false. A malformed stored hash never matches.
    pub async fn verify(self, password: &str, stored: Option<&str>) -> Result<bool, CheckFailed> {
        let matches_user = stored.is_some();
        let stored: Arc<str> = stored.map_or_else(|| self.shared.decoy.clone(), Arc::from);
        let password = password.to_string();
        let shared = self.shared.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The place goes with the job: given back when the check ends, or when the job is
            // dropped unrun.
            let place = self;
            if reply.is_closed() {
                // The login stopped waiting (its request was dropped): nobody needs the answer.
                return;
            }
            let started = Instant::now();
            let verified = verify_blocking(&password, &stored);
            place.shared.record(started.elapsed());
            // Free before answering, so a client that logs in again right away finds it free.
            drop(place);
            let _ = reply.send(verified);
        });
        shared.pool.submit(job).map_err(|_| CheckFailed)?;
        let verified = answer.await.map_err(|_| CheckFailed)?;
        Ok(verified && matches_user)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn verify_blocking(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// An argon2id PHC string for `password` with a fresh salt.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}
