//! The agent's recent log lines, kept in memory for `edgecd device logs`: a bounded ring
//! ([`RING_BYTES`], oldest dropped) fed by [`Tee`], the writer the `tracing` subscriber
//! writes through (each event still goes to stderr as before).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

/// Most bytes of log text the ring keeps.
pub const RING_BYTES: usize = 512 * 1024;

struct Ring {
    lines: VecDeque<(u64, String)>,
    bytes: usize,
}

static RING: Mutex<Ring> = Mutex::new(Ring {
    lines: VecDeque::new(),
    bytes: 0,
});

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Appends one line (unix seconds `at`), dropping the oldest beyond [`RING_BYTES`].
pub fn push(at: u64, line: &str) {
    let mut r = RING.lock().unwrap_or_else(|e| e.into_inner());
    let line: String = line.chars().take(8192).collect();
    r.bytes += line.len();
    r.lines.push_back((at, line));
    while r.bytes > RING_BYTES {
        match r.lines.pop_front() {
            Some((_, l)) => r.bytes -= l.len(),
            None => break,
        }
    }
}

/// The newest `n` lines, oldest first: `(unix seconds, line)`.
pub fn recent(n: usize) -> Vec<(u64, String)> {
    let r = RING.lock().unwrap_or_else(|e| e.into_inner());
    let skip = r.lines.len().saturating_sub(n);
    r.lines.iter().skip(skip).cloned().collect()
}

/// A `tracing_subscriber` writer: stderr, and every complete line into the ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tee;

/// One event being written (the subscriber makes one per event).
pub struct TeeWriter(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = TeeWriter;
    fn make_writer(&'a self) -> TeeWriter {
        TeeWriter(Vec::new())
    }
}

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TeeWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let _ = std::io::stderr().write_all(&self.0);
        let now = unix_now();
        for l in String::from_utf8_lossy(&self.0).lines() {
            if !l.trim().is_empty() {
                push(now, l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_keeps_the_newest() {
        for i in 0..2000 {
            push(i, &format!("line {i} {}", "x".repeat(500)));
        }
        let all = recent(usize::MAX);
        let bytes: usize = all.iter().map(|(_, l)| l.len()).sum();
        assert!(bytes <= RING_BYTES, "{bytes}");
        assert!(all.last().expect("lines").1.starts_with("line 1999 "));
        let last3 = recent(3);
        assert_eq!(last3.len(), 3);
        assert!(last3[0].1.starts_with("line 1997 "));
    }
}
