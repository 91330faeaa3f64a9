//! Captured logs: log calls plus the guest's stdout and stderr, bounded.

use serde::Serialize;

/// Most log bytes kept per invocation (Lambda keeps 4 KiB of tail in its
/// invoke response; we keep more, still bounded so a chatty guest cannot
/// grow the host). Past it, lines are dropped and `truncated` is set.
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// Longest single log line kept; longer lines are cut.
pub const MAX_LOG_LINE_BYTES: usize = 4 * 1024;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal.
    Info,
    /// Suspicious.
    Warn,
    /// Failed.
    Error,
}

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Severity (stdout is `info`, stderr `error`).
    pub level: LogLevel,
    /// `log`, `stdout` or `stderr`.
    pub source: &'static str,
    /// The text, at most [`MAX_LOG_LINE_BYTES`].
    pub message: String,
}

/// The bounded log of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogBuffer {
    /// The lines kept.
    pub lines: Vec<LogLine>,
    /// Whether lines were dropped or cut.
    pub truncated: bool,
    #[serde(skip)]
    bytes: usize,
}

impl LogBuffer {
    /// Record a line, cutting or dropping it to stay within the caps.
    pub fn push(&mut self, level: LogLevel, source: &'static str, message: &str) {
        let mut text = truncate(message, MAX_LOG_LINE_BYTES);
        if text.len() < message.len() {
            self.truncated = true;
        }
        let room = MAX_LOG_BYTES.saturating_sub(self.bytes);
        if room == 0 {
            self.truncated = true;
            return;
        }
        if text.len() > room {
            text = truncate(text, room);
            self.truncated = true;
        }
        self.bytes += text.len();
        self.lines.push(LogLine { level, source, message: text.to_owned() });
    }

    /// Record captured stream output, one line per line.
    pub fn push_stream(&mut self, level: LogLevel, source: &'static str, bytes: &[u8]) {
        for line in String::from_utf8_lossy(bytes).lines() {
            self.push(level, source, line);
        }
    }
}

/// `s` cut to at most `max` bytes on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_within_caps_and_says_when_it_cut() {
        let mut logs = LogBuffer::default();
        logs.push(LogLevel::Info, "log", "hello");
        assert!(!logs.truncated);
        logs.push(LogLevel::Info, "log", &"é".repeat(MAX_LOG_LINE_BYTES));
        assert!(logs.truncated);
        assert!(logs.lines[1].message.len() <= MAX_LOG_LINE_BYTES);
        for _ in 0..100 {
            logs.push(LogLevel::Info, "log", &"x".repeat(MAX_LOG_LINE_BYTES));
        }
        let total: usize = logs.lines.iter().map(|l| l.message.len()).sum();
        assert!(total <= MAX_LOG_BYTES);
    }
}
