//! A plugin's log lines on their way into the gateway's log: cut, escaped and rate limited.
//!
//! Both ways a plugin logs (the SDK's `host.log` and its stdout/stderr) end here. A line is cut
//! at [`MAX_LINE`] bytes and its control characters are escaped, so a plugin can neither flood
//! the log with one line nor forge a gateway line with a newline or a terminal escape. Each
//! plugin may log [`BURST`] lines at once and [`PER_SECOND`] a second after that (a token
//! bucket shared by all its instances); lines over that are dropped and counted, and the next
//! line that gets through says how many were.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use crate::bindings::edgewise::plugin::host::Level;

/// Longest line logged, in bytes; the rest is cut and marked.
pub const MAX_LINE: usize = 4096;
/// Lines a plugin may log at once.
pub const BURST: f64 = 200.0;
/// Lines a plugin may log per second, sustained.
pub const PER_SECOND: f64 = 50.0;

/// Where a plugin's host-side counters go (set by the gateway; unset in `replay`).
#[derive(Debug, Clone, Default)]
pub struct HostCounters {
    /// Log lines dropped by the rate limit.
    pub log_lines_dropped: Counter,
    /// Publishes the host refused.
    pub publishes_refused: Counter,
}

/// The log of one plugin, shared by all its instances and streams.
#[derive(Debug)]
pub struct PluginLog {
    plugin: Arc<str>,
    bucket: Mutex<Bucket>,
    counters: Arc<OnceLock<HostCounters>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl PluginLog {
    /// The log of `plugin`, counting into `counters` once they are set.
    pub fn new(plugin: Arc<str>, counters: Arc<OnceLock<HostCounters>>) -> Arc<Self> {
        Arc::new(Self {
            plugin,
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                refilled: Instant::now(),
                dropped: 0,
            }),
            counters,
        })
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &Arc<str> {
        &self.plugin
    }

    /// The plugin's counters, if the gateway set them.
    pub fn counters(&self) -> Option<&HostCounters> {
        self.counters.get()
    }

    /// Logs `line` from `source` (`host.log`, `stdout`, `stderr`) at `level`, if the rate
    /// limit allows.
    pub fn line(&self, level: Level, source: &str, line: &[u8]) {
        let Some(dropped) = self.admit() else {
            if let Some(c) = self.counters() {
                c.log_lines_dropped.inc();
            }
            return;
        };
        let text = sanitize(line);
        let plugin = &*self.plugin;
        if dropped > 0 {
            tracing::warn!(target: "plugin", plugin, dropped, "plugin logged too fast: {dropped} lines dropped");
        }
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, source, "{text}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, source, "{text}"),
            Level::Info => tracing::info!(target: "plugin", plugin, source, "{text}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, source, "{text}"),
            Level::Error => tracing::error!(target: "plugin", plugin, source, "{text}"),
        }
    }

    /// Takes a token: `Some(lines dropped since the last one admitted)`, or `None` to drop.
    fn admit(&self) -> Option<u64> {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(b.refilled).as_secs_f64() * PER_SECOND;
        b.tokens = (b.tokens + earned).min(BURST);
        b.refilled = now;
        if b.tokens < 1.0 {
            b.dropped += 1;
            return None;
        }
        b.tokens -= 1.0;
        Some(std::mem::take(&mut b.dropped))
    }
}

/// `line` as one line of text: at most [`MAX_LINE`] bytes of it, invalid UTF-8 replaced,
/// control characters (newlines, escapes) written as `\n`, `\u{1b}` and so on.
pub fn sanitize(line: &[u8]) -> String {
    let cut = line.len() > MAX_LINE;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
    let text = text.trim_end_matches(['\r', '\n']);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push_str(&format!(" [… cut: {} bytes in all]", line.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_or_an_escape_cannot_start_a_forged_line() {
        let text = sanitize(b"ok\n2026-01-01 ERROR gateway: fake\x1b[31m");
        assert_eq!(text, "ok\\n2026-01-01 ERROR gateway: fake\\u{1b}[31m");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_giant_line_is_cut_and_says_so() {
        let text = sanitize(&vec![b'x'; 10 * MAX_LINE]);
        assert!(text.len() < MAX_LINE + 64);
        assert!(text.ends_with(&format!("[… cut: {} bytes in all]", 10 * MAX_LINE)));
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_and_the_next_line_counts_the_dropped() {
        let log = PluginLog::new("p".into(), Arc::default());
        let admitted = (0..1000).filter(|_| log.admit().is_some()).count();
        // A few tokens may be earned back while the loop runs.
        assert!((BURST as usize..BURST as usize + 10).contains(&admitted));
        log.bucket.lock().expect("lock").tokens = 1.0;
        assert_eq!(log.admit(), Some(1000 - admitted as u64));
    }
}
