//! A plugin's stdout and stderr, turned into log lines tagged with its name.
//!
//! Bytes are buffered until a newline and then logged as one line through the plugin's
//! [`PluginLog`] (cut, escaped, rate limited); a line longer than [`MAX_LINE`] is logged in
//! pieces, so a plugin that prints without end cannot grow host memory.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi_io::bytes::Bytes;

use super::log::{MAX_LINE, PluginLog};
use crate::bindings::edgewise::plugin::host::Level;

/// One of a plugin's output streams.
#[derive(Clone)]
pub struct LogStream {
    log: Arc<PluginLog>,
    stream: &'static str,
    // Shared: WASI may open several handles on one stream and they must form one text.
    pending: Arc<Mutex<Vec<u8>>>,
}

impl LogStream {
    /// The stream `stream` ("stdout" or "stderr") of the plugin whose log is `log`.
    pub fn new(log: Arc<PluginLog>, stream: &'static str) -> Self {
        Self {
            log,
            stream,
            pending: Arc::default(),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        pending.extend_from_slice(bytes);
        while let Some(line) = next_line(&mut pending) {
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.log.line(Level::Info, self.stream, line);
    }
}

/// Takes the next complete line (without its newline) off the front of `pending`, or the
/// first [`MAX_LINE`] bytes if no newline comes that soon.
fn next_line(pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let (len, newline) = match pending.iter().position(|&b| b == b'\n') {
        Some(at) if at < MAX_LINE => (at, 1),
        _ if pending.len() >= MAX_LINE => (MAX_LINE, 0),
        _ => return None,
    };
    Some(pending.drain(..len + newline).take(len).collect())
}

impl Drop for LogStream {
    fn drop(&mut self) {
        // The last handle logs what was left without a newline.
        if Arc::strong_count(&self.pending) == 1
            && let Ok(pending) = self.pending.lock()
            && !pending.is_empty()
        {
            self.emit(&pending);
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[async_trait::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(mut pending: Vec<u8>) -> (Vec<String>, Vec<u8>) {
        let mut out = Vec::new();
        while let Some(line) = next_line(&mut pending) {
            out.push(String::from_utf8_lossy(&line).into_owned());
        }
        (out, pending)
    }

    #[test]
    fn complete_lines_are_taken_and_a_partial_one_waits() {
        let (out, rest) = lines(b"one\ntwo\n\nthr".to_vec());
        assert_eq!(out, ["one", "two", ""]);
        assert_eq!(rest, b"thr");
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_maximum() {
        let (out, rest) = lines(vec![b'x'; MAX_LINE * 2 + 5]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(rest.len(), 5);
    }
}
