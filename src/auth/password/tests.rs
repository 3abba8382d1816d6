use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::credentials::is_argon2_hash;

async fn check(checker: &PasswordChecker, password: &str, stored: Option<&str>) -> bool {
    let place = checker.admit().expect("a free place");
    place.verify(password, stored).await.expect("the check ran")
}

#[tokio::test]
async fn a_hash_verifies_its_password_only() {
    let checker = PasswordChecker::new(1, 4);
    let stored = hash("demo-password");
    assert!(stored.starts_with("$argon2id$"));
    assert!(is_argon2_hash(&stored));
    assert!(check(&checker, "demo-password", Some(&stored)).await);
    assert!(!check(&checker, "Demo-password", Some(&stored)).await);
    assert!(!check(&checker, "demo-password", Some("not a hash")).await);
    assert!(!is_argon2_hash("$2b$12$bcrypt-hash"));
}

#[tokio::test]
async fn past_the_bound_a_check_is_refused_until_a_place_frees_up() {
    let checker = PasswordChecker::new(1, 3);
    let held: Vec<Admitted> = (0..3).map(|_| checker.admit().expect("a place")).collect();
    let busy = checker.admit().err().expect("every place is taken");
    assert!((1..=MAX_RETRY_AFTER).contains(&busy.retry_after));
    drop(held);
    assert_eq!(checker.shared.pending.load(Ordering::Acquire), 0);
    let stored = hash("right");
    assert!(check(&checker, "right", Some(&stored)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_checks_stay_within_the_bound_and_the_admitted_verify() {
    const MAX: usize = 4;
    let checker = PasswordChecker::new(1, MAX);
    let stored: Arc<str> = hash("right").into();
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (checker, stored) = (checker.clone(), stored.clone());
        logins.spawn(async move {
            let place = checker.admit()?;
            let pending = checker.shared.pending.load(Ordering::Acquire);
            assert!(pending <= MAX, "{pending} checks pending, bound {MAX}");
            Ok(place.verify("right", Some(&stored)).await)
        });
    }
    let (mut verified, mut busy) = (0, 0);
    while let Some(answer) = logins.join_next().await {
        match answer.expect("no panic") {
            Ok(outcome) => {
                assert_eq!(outcome, Ok(true), "an admitted right password verifies");
                verified += 1;
            }
            Err(Busy { retry_after }) => {
                assert!(retry_after >= 1);
                busy += 1;
            }
        }
    }
    assert!(verified >= MAX, "the first {MAX} are admitted: {verified}");
    assert!(busy >= 1, "40 at once cannot all fit in {MAX} places");
    assert_eq!(checker.shared.pending.load(Ordering::Acquire), 0);
}

#[tokio::test]
async fn an_unknown_user_costs_a_check_like_a_known_one_and_never_matches() {
    let checker = PasswordChecker::new(1, 4);
    // The decoy is checked with the same algorithm and cost as a stored password.
    let decoy = PasswordHash::new(&checker.shared.decoy).expect("a PHC string");
    let stored = hash("right");
    let real = PasswordHash::new(&stored).expect("a PHC string");
    assert_eq!(decoy.algorithm, real.algorithm);
    assert_eq!(decoy.version, real.version);
    assert_eq!(decoy.params, real.params);
    // Even the decoy's own password does not log an unknown user in.
    assert!(!check(&checker, DECOY, None).await);
    assert!(!check(&checker, "right", None).await);
    assert!(!check(&checker, "wrong", Some(&stored)).await);
}

#[test]
fn retry_after_follows_the_queue_and_the_measured_time_of_a_check() {
    let checker = PasswordChecker::new(1, 64);
    let shared = &checker.shared;
    shared.check_micros.store(200_000, Ordering::Relaxed);
    assert_eq!(shared.retry_after(4), 1, "0.8 s rounds up to 1");
    assert_eq!(shared.retry_after(64), 13, "64 × 0.2 s = 12.8 s");
    assert_eq!(shared.retry_after(100_000), MAX_RETRY_AFTER);
    for _ in 0..64 {
        shared.record(Duration::from_secs(1));
    }
    assert_eq!(
        shared.retry_after(4),
        4,
        "checks that slow down raise the estimate"
    );
}
