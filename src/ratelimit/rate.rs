//! Rates as written in the configuration: `N/s|sec|second|min|minute|hour|day` (Django REST
//! framework's syntax), with an optional burst.

use std::fmt;
use std::time::Duration;

/// A number of requests per period, and how many may come at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
    /// At most this many at once; the default is `count`.
    pub burst: u32,
}

impl Rate {
    /// Parses `100/hour`; the burst defaults to the count.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("`{text}` is not a rate");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!(
                "`{text}` allows nothing; remove the limit or raise it"
            ));
        }
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        Ok(Rate {
            count,
            period: Duration::from_secs(seconds),
            burst: count,
        })
    }

    /// Microseconds between two requests at the steady rate.
    pub fn interval_us(&self) -> u64 {
        (self.period.as_micros() as u64 / u64::from(self.count)).max(1)
    }

    /// How far ahead of now the theoretical arrival time may run: `burst` intervals.
    pub fn tolerance_us(&self) -> u64 {
        self.interval_us().saturating_mul(u64::from(self.burst))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            _ => "day",
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst != self.count {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_unit_of_the_drf_syntax_is_accepted() {
        for (text, seconds) in [
            ("10/s", 1),
            ("10/sec", 1),
            ("10/second", 1),
            ("5/min", 60),
            ("5/minute", 60),
            ("100/hour", 3600),
            ("1000/day", 86_400),
            (" 7 / hour ", 3600),
        ] {
            let rate = Rate::parse(text).unwrap();
            assert_eq!(rate.period, Duration::from_secs(seconds), "{text}");
            assert_eq!(rate.burst, rate.count);
        }
    }

    #[test]
    fn nonsense_is_refused() {
        for text in [
            "",
            "10",
            "10/fortnight",
            "ten/min",
            "-1/s",
            "0/s",
            "10/",
            "/s",
        ] {
            assert!(Rate::parse(text).is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_count_and_unit_round_trips(count in 1u32..1_000_000, unit in prop::sample::select(vec!["second", "minute", "hour", "day"])) {
            let rate = Rate::parse(&format!("{count}/{unit}")).unwrap();
            prop_assert_eq!(rate.count, count);
            prop_assert_eq!(Rate::parse(&rate.to_string()).unwrap(), rate);
            prop_assert!(rate.interval_us() >= 1);
            prop_assert!(rate.tolerance_us() >= rate.interval_us());
        }
    }
}
