//! Publishing, settings and the clock: the `edgewise:plugin/host` imports, typed.

use std::fmt;
use std::str::FromStr;

use crate::__bindings::edgewise::plugin::{host, types};

/// Why the gateway refused a [`publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The topic is not in the manifest's `publish` list.
    NotGranted,
    /// The payload is over the plugin's `max-payload-bytes` limit.
    TooLarge,
    /// The topic is not a valid MQTT topic name.
    InvalidTopic,
    /// This message already published `max-publishes-per-message` times.
    TooMany,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishError::NotGranted => "topic not granted by the manifest's `publish` list",
            PublishError::TooLarge => "payload larger than the plugin's max-payload-bytes",
            PublishError::InvalidTopic => "not a valid MQTT topic name",
            PublishError::TooMany => "more publishes than max-publishes-per-message",
        })
    }
}

impl std::error::Error for PublishError {}

/// Publishes `payload` to `topic`. It leaves when the current `on_message` returns `Ok`.
pub fn publish(topic: &str, payload: impl AsRef<[u8]>) -> Result<(), PublishError> {
    host::publish(topic, payload.as_ref()).map_err(|e| match e {
        types::PublishError::NotGranted => PublishError::NotGranted,
        types::PublishError::TooLarge => PublishError::TooLarge,
        types::PublishError::InvalidTopic => PublishError::InvalidTopic,
        types::PublishError::TooMany => PublishError::TooMany,
    })
}

/// Publishes `value` serialised as JSON.
#[cfg(feature = "json")]
pub fn publish_json<T: serde::Serialize>(topic: &str, value: &T) -> crate::Result<()> {
    publish(topic, serde_json::to_vec(value)?)?;
    Ok(())
}

/// A setting's text, from the manifest's `[settings]` or the gateway's override.
pub fn config(key: &str) -> Option<String> {
    host::config(key)
}

/// A setting parsed as `T`, or `default` when it is not set; a value that does not parse is an
/// error naming the key.
pub fn setting<T>(key: &str, default: T) -> crate::Result<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match host::config(key) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|e| crate::Error::msg(format!("setting `{key}` = {text:?}: {e}"))),
    }
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    host::now_ms()
}
