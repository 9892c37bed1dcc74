//! Capped exponential backoff with full jitter, for a shipper's retries.
//!
//! Full jitter (a random wait between half the step and the step) keeps
//! fifty pods that lost the same database from coming back in lockstep.

use std::time::Duration;

/// The wait before the first retry.
pub const FIRST_STEP: Duration = Duration::from_millis(200);

/// Waits between tries: doubling from [`FIRST_STEP`] up to a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
    cap: Duration,
}

// === impl Backoff ===

impl Backoff {
    /// A backoff whose waits never exceed `cap`.
    pub fn new(cap: Duration) -> Self {
        Self {
            step: FIRST_STEP.min(cap),
            cap,
        }
    }

    /// The next wait: between half the current step and the step, then
    /// the step doubles (up to the cap).
    pub fn next_wait(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.cap);
        let half = step / 2;
        half + half.mul_f64(random_fraction())
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.step = FIRST_STEP.min(self.cap);
    }
}

/// A number in `[0, 1)` from the OS random source; 0.5 if it cannot be
/// read (the wait is then simply the three-quarter step).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_jitter_and_stop_at_the_cap() {
        let cap = Duration::from_secs(2);
        let mut backoff = Backoff::new(cap);
        let mut step = FIRST_STEP;
        for _ in 0..10 {
            let wait = backoff.next_wait();
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for step {step:?}"
            );
            step = (step * 2).min(cap);
        }
        assert_eq!(backoff.step, cap);
        backoff.reset();
        assert!(backoff.next_wait() <= FIRST_STEP);
    }

    #[test]
    fn a_cap_below_the_first_step_is_kept() {
        let mut backoff = Backoff::new(Duration::from_millis(50));
        for _ in 0..5 {
            assert!(backoff.next_wait() <= Duration::from_millis(50));
        }
    }
}
