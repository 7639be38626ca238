//! `edgewise replay`: feed one plugin a JSON Lines file of messages, print what it publishes.
//!
//! The plugin author's inner loop, with no broker. Each input line is an object:
//! `{"topic": "t", "payload": ...}` where `payload` is a string (sent as its UTF-8 bytes) or
//! any other JSON value (sent as its JSON text), or `{"topic": "t", "payload_base64": "..."}`
//! for binary payloads; `received_at_ms` is optional. Each output line is
//! `{"topic": "t", "payload": "text"}`, or `payload_base64` when the payload is not UTF-8.
//! An `expect` member (an evaluation set's label, see [`crate::evaluate`]) is allowed and
//! ignored.
//! A malformed line is reported with its line number and skipped; the rest still run.

use std::io::{self, BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use crate::capability::host::Publish;
use crate::worker::{Message, Worker};

/// One input line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    topic: String,
    payload: Option<serde_json::Value>,
    payload_base64: Option<String>,
    received_at_ms: Option<u64>,
    /// What the message should produce, in an evaluation set (see `evaluate`); replay
    /// ignores it, so an evaluation set replays as it is.
    expect: Option<serde_json::Value>,
}

/// Replays every line of `input` (named `source` in errors) through `worker`, writing
/// publishes to `out` as JSON Lines. Returns how many lines could not be read as a message;
/// what the plugin did is in [`Worker::stats`].
pub fn replay(
    worker: &mut Worker,
    input: impl BufRead,
    source: &str,
    out: &mut impl Write,
) -> io::Result<u64> {
    let mut malformed = 0;
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let msg = match parse_line(&line) {
            Ok((msg, _expect)) => msg,
            Err(problem) => {
                tracing::error!("{source}:{}: {problem}; line skipped", number + 1);
                malformed += 1;
                continue;
            }
        };
        // A failure is logged and counted by the worker.
        if let Ok(published) = worker.handle(&msg) {
            for publish in &published {
                writeln!(out, "{}", render(publish))?;
            }
        }
    }
    out.flush()?;
    Ok(malformed)
}

/// One line as a message and what it should produce, or what is wrong with it.
pub(crate) fn parse_line(line: &str) -> Result<(Message, Option<serde_json::Value>), String> {
    let line: Line =
        serde_json::from_str(line).map_err(|e| format!("not a message object: {e}"))?;
    let payload = match (line.payload, line.payload_base64) {
        (Some(serde_json::Value::String(text)), None) => text.into_bytes(),
        (Some(value), None) => value.to_string().into_bytes(),
        (None, Some(b64)) => BASE64
            .decode(b64.trim())
            .map_err(|e| format!("`payload_base64`: {e}"))?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => return Err("give `payload` or `payload_base64`, not both".into()),
    };
    let received_at_ms = line.received_at_ms.unwrap_or_else(crate::clock::now_ms);
    if let Err(e) = edgewise_signing::topic::validate_name(&line.topic) {
        return Err(format!("`topic` {:?}: {e}", line.topic));
    }
    let message = Message {
        topic: line.topic,
        payload,
        received_at_ms,
    };
    Ok((message, line.expect))
}

fn render(publish: &Publish) -> serde_json::Value {
    match std::str::from_utf8(&publish.payload) {
        Ok(text) => serde_json::json!({ "topic": publish.topic, "payload": text }),
        Err(_) => {
            serde_json::json!({ "topic": publish.topic, "payload_base64": BASE64.encode(&publish.payload) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_come_as_text_json_or_base64() {
        assert_eq!(
            parse_line(r#"{"topic":"a","payload":"hi"}"#).map(|(m, _)| m.payload),
            Ok(b"hi".to_vec())
        );
        assert_eq!(
            parse_line(r#"{"topic":"a","payload":{"t":1}}"#).map(|(m, _)| m.payload),
            Ok(br#"{"t":1}"#.to_vec())
        );
        assert_eq!(
            parse_line(r#"{"topic":"a","payload_base64":"AAE="}"#).map(|(m, _)| m.payload),
            Ok(vec![0, 1])
        );
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        assert!(parse_line("{").is_err_and(|e| e.contains("not a message object")));
        assert!(parse_line(r#"{"topic":"a/+"}"#).is_err_and(|e| e.contains("wildcard")));
        assert!(
            parse_line(r#"{"topic":"a","payload_base64":"%%"}"#)
                .is_err_and(|e| e.contains("payload_base64"))
        );
        assert!(parse_line(r#"{"topik":"a"}"#).is_err_and(|e| e.contains("topik")));
    }

    #[test]
    fn binary_output_is_base64() {
        let p = Publish {
            topic: "t".into(),
            payload: vec![0xff, 0],
        };
        assert_eq!(render(&p)["payload_base64"], "/wA=");
    }
}
