//! Answers to an operator's request for a device's logs or a diagnosis (`edgecd device
//! logs|diagnose`, [`edgecd_api::protocol::DeviceRequest`]): the agent's own recent log
//! lines ([`crate::logbuf`]) and the runtime's (`podman logs --tail`, or the file named by
//! `--runtime-log`), redacted ([`edgecd_api::redact`]) and bounded to
//! [`MAX_LOG_BYTES`] (newest kept); the slots, free disk and other facts of a diagnosis.

use edgecd_api::protocol::{LogLine, MAX_LOG_BYTES, SlotReport};
use edgecd_api::redact::redact;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Longest line sent (longer ones are cut).
const MAX_LINE: usize = 4096;

pub fn rfc3339(secs: u64) -> String {
    edgecd_bundle::release::rfc3339_utc(secs)
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_LINE {
        return s.to_string();
    }
    let mut end = MAX_LINE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The last `n` lines of a text file the runtime writes (reads at most its last 1 MiB);
/// stamped `at` (the file's lines carry no time the agent knows how to read).
pub fn file_tail(path: &Path, n: usize, at: u64) -> Vec<(String, String)> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![];
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(1 << 20);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return vec![];
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return vec![];
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // a partial first line
    }
    let skip = lines.len().saturating_sub(n);
    lines[skip..]
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (rfc3339(at), l.to_string()))
        .collect()
}

/// `podman logs --timestamps` output as `(ts, line)`: the leading timestamp is kept as
/// podman wrote it.
pub fn podman_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_once(' ') {
            Some((ts, rest)) if ts.len() >= 20 && ts.as_bytes()[4] == b'-' => {
                (ts.to_string(), rest.to_string())
            }
            _ => (String::new(), l.to_string()),
        })
        .collect()
}

/// The newest of `lines` whose text fits in `budget` bytes, oldest first; bytes used and
/// whether any were left out.
fn newest_within(lines: &[LogLine], budget: usize) -> (Vec<LogLine>, usize, bool) {
    let mut used = 0;
    let mut from = lines.len();
    while from > 0 && used + lines[from - 1].line.len() <= budget {
        from -= 1;
        used += lines[from].line.len();
    }
    (lines[from..].to_vec(), used, from > 0)
}

/// The report's lines: the agent's newest `n` and the runtime's, redacted, in time order,
/// within [`MAX_LOG_BYTES`]: each source is sure of half of it (a chatty runtime cannot
/// crowd out the agent), the rest goes to whichever needs it; `true` when lines were left
/// out.
pub fn lines(
    agent: Vec<(u64, String)>,
    runtime: Vec<(String, String)>,
    now: u64,
) -> (Vec<LogLine>, bool) {
    let agent: Vec<LogLine> = agent
        .into_iter()
        .map(|(at, l)| LogLine {
            ts: rfc3339(at),
            source: "agent".into(),
            line: cut(&redact(&l)),
        })
        .collect();
    let runtime: Vec<LogLine> = runtime
        .into_iter()
        .map(|(ts, l)| LogLine {
            ts: if ts.is_empty() { rfc3339(now) } else { ts },
            source: "runtime".into(),
            line: cut(&redact(&l)),
        })
        .collect();
    let (mut a, mut a_used, mut a_cut) = newest_within(&agent, MAX_LOG_BYTES / 2);
    let (r, r_used, r_cut) = newest_within(&runtime, MAX_LOG_BYTES - a_used);
    if a_cut {
        (a, a_used, a_cut) = newest_within(&agent, MAX_LOG_BYTES - r_used);
    }
    debug_assert!(a_used + r_used <= MAX_LOG_BYTES);
    let mut out = a;
    out.extend(r);
    out.sort_by(|x, y| x.ts.cmp(&y.ts)); // stable: each source keeps its order
    (out, a_cut || r_cut)
}

/// Bytes of the files under `dir` (symlinks not followed).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// `(free, total)` bytes of the file system holding `dir`.
#[cfg(unix)]
pub fn disk(dir: &Path) -> (Option<u64>, Option<u64>) {
    match rustix::fs::statvfs(dir) {
        Ok(st) => (
            Some(st.f_bavail.saturating_mul(st.f_frsize)),
            Some(st.f_blocks.saturating_mul(st.f_frsize)),
        ),
        Err(_) => (None, None),
    }
}

#[cfg(not(unix))]
pub fn disk(_dir: &Path) -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// Both slots: what the agent's state says each holds, whether `current` points there, and
/// its size on disk.
pub fn slots(data_dir: &Path, state: &crate::machine::State) -> Vec<SlotReport> {
    use crate::machine::Slot;
    let current = std::fs::read_link(data_dir.join("current")).ok();
    [Slot::A, Slot::B]
        .into_iter()
        .map(|s| {
            let dir = data_dir.join("slots").join(s.name());
            let release = [state.active.as_ref(), state.previous.as_ref()]
                .into_iter()
                .flatten()
                .find(|i| i.slot == s)
                .map(|i| i.label())
                .or_else(|| {
                    state
                        .target
                        .as_ref()
                        .filter(|t| t.slot == s)
                        .map(|t| format!("{} (installing)", t.label()))
                });
            SlotReport {
                slot: s.name().to_string(),
                release,
                current: current
                    .as_ref()
                    .is_some_and(|c| c.file_name() == dir.file_name() || *c == dir),
                bytes: dir_bytes(&dir),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redacted_ordered_and_bounded() {
        let agent = vec![(10, "a password=x".to_string()), (30, "c".to_string())];
        let runtime = vec![(
            "1970-01-01T00:00:20Z".to_string(),
            "b Bearer t0k".to_string(),
        )];
        let (l, truncated) = lines(agent, runtime, 40);
        assert!(!truncated);
        let text: Vec<(&str, &str)> = l
            .iter()
            .map(|l| (l.source.as_str(), l.line.as_str()))
            .collect();
        assert_eq!(
            text,
            [
                ("agent", "a password=[REDACTED]"),
                ("runtime", "b Bearer [REDACTED]"),
                ("agent", "c")
            ]
        );
        let many: Vec<(u64, String)> = (0..200)
            .map(|i| (i, format!("{i} {}", "y".repeat(3000))))
            .collect();
        let (l, truncated) = lines(many.clone(), vec![], 0);
        assert!(truncated);
        assert!(l.iter().map(|l| l.line.len()).sum::<usize>() <= MAX_LOG_BYTES);
        assert!(l.len() > 80, "alone, the agent gets the whole budget");
        assert!(l.last().expect("line").line.starts_with("199 "));
        // A chatty runtime does not crowd the agent out: each keeps at least half.
        let rt: Vec<(String, String)> = (0..200)
            .map(|i| {
                (
                    "2099-01-01T00:00:00Z".to_string(),
                    format!("rt {i} {}", "z".repeat(3000)),
                )
            })
            .collect();
        let (l, truncated) = lines(many, rt, 0);
        assert!(truncated);
        let bytes = |src: &str| -> usize {
            l.iter()
                .filter(|l| l.source == src)
                .map(|l| l.line.len())
                .sum()
        };
        assert!(bytes("agent") + bytes("runtime") <= MAX_LOG_BYTES);
        assert!(
            bytes("agent") >= MAX_LOG_BYTES / 2 - 3100,
            "{}",
            bytes("agent")
        );
        assert!(
            bytes("runtime") >= MAX_LOG_BYTES / 2 - 3100,
            "{}",
            bytes("runtime")
        );
    }

    #[test]
    fn podman_timestamps_are_kept() {
        let v = podman_lines("2026-01-01T10:00:00.123456789Z ready\nno stamp\n");
        assert_eq!(
            v[0],
            (
                "2026-01-01T10:00:00.123456789Z".to_string(),
                "ready".to_string()
            )
        );
        assert_eq!(v[1], (String::new(), "no stamp".to_string()));
    }
}
