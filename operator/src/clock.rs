//! The operator's business clock: what "now" is for quota windows, metering, budgets, cutover
//! windows and settlement. It is the system clock unless `yunzhang --clock INSTANT …` (or
//! `YZ_CLOCK`; any subcommand: the operator, the reports) starts it at another instant, from
//! which it runs at real speed. Tests set it to the instant their fixture needs; Kubernetes
//! bookkeeping (leases, condition and Event times, certificates) always uses the system clock.

use std::sync::OnceLock;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};

/// Where the clock was started, and when (on the monotonic clock).
struct Start {
    at: DateTime<Utc>,
    when: Instant,
}

static START: OnceLock<Start> = OnceLock::new();

/// Start the business clock at `at`. Only the first call counts (the process sets it once,
/// before any controller runs); returns whether this call set it.
pub fn start_at(at: DateTime<Utc>) -> bool {
    START
        .set(Start {
            at,
            when: Instant::now(),
        })
        .is_ok()
}

/// Where `--clock` started the business clock, if it did.
pub fn started_at() -> Option<DateTime<Utc>> {
    START.get().map(|start| start.at)
}

/// An RFC 3339 instant as `--clock` takes it.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}: expected an RFC 3339 instant such as 2027-01-15T09:00:00+08:00"))
}

/// The business clock's current instant.
pub fn now() -> DateTime<Utc> {
    match START.get() {
        Some(start) => shifted(start.at, start.when.elapsed()),
        None => Utc::now(),
    }
}

/// `at` plus `elapsed`, saturating at the end of time.
fn shifted(at: DateTime<Utc>, elapsed: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(elapsed)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_clock_runs_on_from_its_start() {
        let at = DateTime::parse_from_rfc3339("2031-06-30T12:00:00+08:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(shifted(at, std::time::Duration::ZERO), at);
        assert_eq!(
            shifted(at, std::time::Duration::from_secs(90)),
            at + TimeDelta::seconds(90)
        );
        assert_eq!(
            shifted(DateTime::<Utc>::MAX_UTC, std::time::Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
