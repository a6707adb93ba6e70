//! For tests that check memory stays flat: large inputs made on the fly, and the process's
//! peak RSS.

use std::io::{self, Read};

/// `left` bytes of mixed, partly compressible data (xorshift words and runs of spaces),
/// produced as they are read: a large layer without a large buffer.
pub struct MixedBytes {
    pub left: u64,
    /// The generator's state; different seeds give different bytes.
    pub x: u64,
}

impl MixedBytes {
    pub fn new(len: u64, seed: u64) -> MixedBytes {
        MixedBytes {
            left: len,
            x: seed.max(1),
        }
    }
}

impl Read for MixedBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize & !7;
        let n = if n == 0 {
            (buf.len() as u64).min(self.left) as usize
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            let v = if self.x >> 62 == 0 {
                self.x
            } else {
                0x2020_2020_2020_2020
            };
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// This process's peak resident set size in KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value")
}
