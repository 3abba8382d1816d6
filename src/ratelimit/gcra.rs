//! The generic cell rate algorithm: one stored number per key, the theoretical arrival time
//! (TAT). A request conforms when, after adding one interval, the TAT runs no further ahead of
//! now than the burst allows. Smooth (no window edges to exploit) and exact. The Redis limiter
//! runs the same steps in a script; this is the one written in Rust.

use super::rate::Rate;

/// What a check found for one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The TAT after this request (or unchanged, if the request was refused).
    pub tat: u64,
    pub conforms: bool,
}

/// One limit's step: `stored` is its TAT or `None` for a fresh key.
pub fn step(rate: &Rate, stored: Option<u64>, now: u64) -> Outcome {
    let tat = stored.unwrap_or(now).max(now);
    let next = tat + rate.interval_us();
    if next - now <= rate.tolerance_us() {
        Outcome {
            tat: next,
            conforms: true,
        }
    } else {
        Outcome {
            tat,
            conforms: false,
        }
    }
}

/// Requests still allowed right away after `tat`.
pub fn remaining(rate: &Rate, tat: u64, now: u64) -> u64 {
    let used = tat.saturating_sub(now);
    rate.tolerance_us().saturating_sub(used) / rate.interval_us()
}

/// Microseconds until one more request would conform.
pub fn wait_us(rate: &Rate, tat: u64, now: u64) -> u64 {
    (tat.max(now) + rate.interval_us()).saturating_sub(now + rate.tolerance_us())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rate(count: u32, seconds: u64, burst: u32) -> Rate {
        Rate {
            count,
            period: Duration::from_secs(seconds),
            burst,
        }
    }

    /// Runs `n` requests at `now`, feeding each TAT to the next.
    fn burst(rate: &Rate, tat: &mut Option<u64>, now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| {
                let outcome = step(rate, *tat, now);
                *tat = Some(outcome.tat);
                outcome.conforms
            })
            .count()
    }

    #[test]
    fn the_burst_passes_at_once_and_then_one_per_interval() {
        let r = rate(10, 60, 10); // one every 6 s
        let mut tat = None;
        assert_eq!(burst(&r, &mut tat, 0, 25), 10);
        assert_eq!(remaining(&r, tat.unwrap(), 0), 0);
        assert_eq!(wait_us(&r, tat.unwrap(), 0), 6_000_000);
        assert_eq!(burst(&r, &mut tat, 5_999_999, 1), 0);
        assert_eq!(burst(&r, &mut tat, 6_000_000, 2), 1);
        // A whole period later the full burst is back.
        assert_eq!(burst(&r, &mut tat, 66_000_000, 20), 10);
    }

    #[test]
    fn a_refused_request_consumes_nothing() {
        let r = rate(2, 1, 2);
        let mut tat = None;
        assert_eq!(burst(&r, &mut tat, 0, 2), 2);
        let before = tat;
        assert!(!step(&r, tat, 0).conforms);
        assert_eq!(step(&r, tat, 0).tat, before.unwrap());
    }

    #[test]
    fn no_window_edge_lets_twice_the_limit_through() {
        // 100/min, hammered across what would be a fixed-window boundary.
        let r = rate(100, 60, 100);
        let mut tat = None;
        let first = burst(&r, &mut tat, 59_000_000, 200);
        let second = burst(&r, &mut tat, 61_000_000, 200);
        assert_eq!(first, 100);
        // Two seconds refill 3 requests (one per 0.6 s), not another 100.
        assert_eq!(second, 3);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// However requests are spread over a span D, at most burst + D / interval pass,
            /// and a refused request leaves the state as it was.
            #[test]
            fn never_more_than_the_burst_plus_the_refill(
                count in 1u32..50,
                seconds in prop::sample::select(vec![1u64, 60, 3600]),
                burst in 1u32..50,
                gaps in prop::collection::vec(0u64..5_000_000, 1..300),
            ) {
                let r = rate(count, seconds, burst);
                let mut tat = None;
                let mut now = 1_000_000_000u64;
                let start = now;
                let mut allowed = 0u64;
                for gap in gaps {
                    now += gap;
                    let outcome = step(&r, tat, now);
                    if outcome.conforms {
                        allowed += 1;
                        tat = Some(outcome.tat);
                    } else {
                        prop_assert_eq!(Some(outcome.tat), tat.map(|t| t.max(now)));
                    }
                }
                let refill = (now - start) / r.interval_us();
                prop_assert!(allowed <= u64::from(burst) + refill, "{} > {} + {}", allowed, burst, refill);
            }
        }
    }

    #[test]
    fn remaining_counts_down() {
        let r = rate(5, 60, 5);
        let mut tat = None;
        for expected in (0..5).rev() {
            let outcome = step(&r, tat, 0);
            tat = Some(outcome.tat);
            assert_eq!(remaining(&r, outcome.tat, 0), expected);
        }
    }
}
