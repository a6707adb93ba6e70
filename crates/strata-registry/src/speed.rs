//! The low-speed limit ([`crate::LowSpeedLimit`]): curl's `--speed-limit`/`--speed-time`.

use std::time::{Duration, Instant};

use crate::LowSpeedLimit;

/// Bytes against time spent waiting for them. Time the caller spends between reads is not
/// counted (a slow consumer is not a slow server): [`SpeedCheck::waiting`] starts the clock
/// when a read has to wait, [`SpeedCheck::arrived`] stops it.
pub(crate) struct SpeedCheck {
    limit: LowSpeedLimit,
    window_bytes: u64,
    window_wait: Duration,
    waiting_since: Option<Instant>,
}

impl SpeedCheck {
    pub(crate) fn new(limit: LowSpeedLimit) -> SpeedCheck {
        SpeedCheck {
            limit,
            window_bytes: 0,
            window_wait: Duration::ZERO,
            waiting_since: None,
        }
    }

    /// A read found nothing yet and will wait.
    pub(crate) fn waiting(&mut self) {
        if self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
    }

    /// `n` bytes arrived. `Err` names the rate when, over a full window, it stayed below the
    /// limit.
    pub(crate) fn arrived(&mut self, n: u64) -> Result<(), String> {
        if let Some(since) = self.waiting_since.take() {
            self.window_wait += since.elapsed();
        }
        self.window_bytes += n;
        let time = self.limit.time;
        if self.limit.bytes_per_second == 0 || time.is_zero() || self.window_wait < time {
            return Ok(());
        }
        let rate = self.window_bytes as f64 / self.window_wait.as_secs_f64();
        let slow = rate < self.limit.bytes_per_second as f64;
        self.window_bytes = 0;
        self.window_wait = Duration::ZERO;
        if slow {
            return Err(format!(
                "body slower than {} bytes/s for {}s ({rate:.0} bytes/s)",
                self.limit.bytes_per_second,
                time.as_secs_f32()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_time_spent_waiting_counts() {
        let limit = LowSpeedLimit {
            bytes_per_second: 1000,
            time: Duration::from_millis(50),
        };
        let mut check = SpeedCheck::new(limit);
        // Bytes that never had to be waited for: no window ever fills, whatever the pauses
        // between reads.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(30));
            assert!(check.arrived(1).is_ok());
        }
        // 2 bytes after 60 ms of waiting: 33 bytes/s.
        check.waiting();
        std::thread::sleep(Duration::from_millis(60));
        let err = check.arrived(2).unwrap_err();
        assert!(err.contains("slower than 1000 bytes/s"), "{err}");
        // Fast enough: 1 MB after a wait of 60 ms.
        check.waiting();
        std::thread::sleep(Duration::from_millis(60));
        assert!(check.arrived(1_000_000).is_ok());
    }
}
