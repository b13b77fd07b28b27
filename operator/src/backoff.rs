//! The backoff of objects whose reconciles, or whose status writes, keep failing: each
//! retry waits twice as long as the one before, up to 5 minutes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flaskmongo_crd::FlaskMongoApp;
use kube::runtime::reflector::ObjectRef;

/// Longest wait between attempts for an object that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Consecutive transient failures of each object, and when its retry is due.
#[derive(Debug, Default)]
pub struct Failures(HashMap<ObjectRef<FlaskMongoApp>, Backoff>);

/// The backoff of one failing object.
#[derive(Debug)]
struct Backoff {
    /// Failures counted so far.
    attempts: u32,
    /// When the retry after the last counted failure is due.
    retry_at: Instant,
}

impl Failures {
    /// Records a failure of `object` at `now` and returns the wait before its retry. A
    /// failure before the retry is due comes from an attempt that a watch event started
    /// (often the failing reconcile's own status write): it keeps the retry's time rather
    /// than doubling the wait, so a few events cannot push it to minutes. The backoffs of
    /// the objects that `exists` no longer finds are forgotten first: a deleted object may
    /// never be reconciled again to reset its own.
    pub fn record(
        &mut self,
        object: &ObjectRef<FlaskMongoApp>,
        now: Instant,
        exists: impl Fn(&ObjectRef<FlaskMongoApp>) -> bool,
    ) -> (u32, Duration) {
        self.0.retain(|key, _| key == object || exists(key));
        let backoff = self.0.entry(object.clone()).or_insert(Backoff {
            attempts: 0,
            retry_at: now,
        });
        if now < backoff.retry_at {
            return (backoff.attempts, backoff.retry_at - now);
        }
        backoff.attempts = backoff.attempts.saturating_add(1);
        let delay = backoff_delay(backoff.attempts);
        backoff.retry_at = now + delay;
        (backoff.attempts, delay)
    }

    /// Forgets the failures of `object`.
    pub fn reset(&mut self, object: &ObjectRef<FlaskMongoApp>) {
        self.0.remove(object);
    }
}

#[cfg(test)]
impl Failures {
    /// The objects whose failures are counted.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectRef<FlaskMongoApp>> {
        self.0.keys()
    }
}

/// Delay before retry number `attempt` (counted from 1).
pub fn backoff_delay(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failures_of_deleted_objects_are_forgotten() {
        let (a, b) = (
            ObjectRef::new("a").within("ns"),
            ObjectRef::new("b").within("ns"),
        );
        let now = Instant::now();
        let mut failures = Failures::default();
        let attempts = |(attempts, _): (u32, Duration)| attempts;
        assert_eq!(attempts(failures.record(&a, now, |_| true)), 1);
        assert_eq!(attempts(failures.record(&b, now, |_| true)), 1);
        let later = now + MAX_BACKOFF;
        assert_eq!(attempts(failures.record(&a, later, |_| true)), 2);
        // `b` was deleted: the next failure of another object forgets it.
        let later = later + MAX_BACKOFF;
        assert_eq!(
            attempts(failures.record(&a, later, |object| *object != b)),
            3
        );
        assert_eq!(failures.objects().collect::<Vec<_>>(), [&a]);
        assert_eq!(
            attempts(failures.record(&b, later, |_| true)),
            1,
            "b starts afresh"
        );
        failures.reset(&a);
        assert_eq!(failures.objects().collect::<Vec<_>>(), [&b]);
    }

    #[test]
    fn failures_before_the_retry_is_due_keep_its_time() {
        let a = ObjectRef::new("a").within("ns");
        let start = Instant::now();
        let mut failures = Failures::default();
        let seconds = |secs| Duration::from_secs(secs);
        assert_eq!(failures.record(&a, start, |_| true), (1, seconds(1)));
        let retry = start + seconds(1);
        assert_eq!(failures.record(&a, retry, |_| true), (2, seconds(2)));
        // Watch events start reconciles that fail again before the retry is due.
        for millis in [100, 500, 1_900] {
            assert_eq!(
                failures.record(&a, retry + Duration::from_millis(millis), |_| true),
                (2, Duration::from_millis(2_000 - millis)),
                "a failure {millis} ms after the last counted one"
            );
        }
        assert_eq!(
            failures.record(&a, retry + seconds(2), |_| true),
            (3, seconds(4)),
            "the retry itself failed: the wait doubles"
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), MAX_BACKOFF);
    }
}
