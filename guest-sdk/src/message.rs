//! The message a plugin receives.

use crate::__bindings::edgewise::plugin::types;

/// One MQTT message on a topic the plugin subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// The payload, as published.
    pub payload: Vec<u8>,
    /// When the gateway received it, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

impl Message {
    /// The payload as UTF-8 text.
    pub fn text(&self) -> crate::Result<&str> {
        std::str::from_utf8(&self.payload)
            .map_err(|e| crate::Error::msg(format!("payload on {} is not UTF-8: {e}", self.topic)))
    }

    /// The payload parsed as JSON into `T`.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            crate::Error::msg(format!(
                "payload on {} is not the JSON expected: {e}",
                self.topic
            ))
        })
    }

    /// The payload as little-endian `i16` samples (the usual PCM audio layout).
    pub fn pcm_i16(&self) -> Vec<i16> {
        self.payload
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }
}

impl From<types::Message> for Message {
    fn from(m: types::Message) -> Self {
        Message {
            topic: m.topic,
            payload: m.payload,
            received_at_ms: m.received_at_ms,
        }
    }
}
