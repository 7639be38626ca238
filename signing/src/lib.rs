//! The Edgewise plugin format, shared by the gateway and by plugin authors' tooling.
//!
//! Today this crate holds the plugin manifest (`plugin.toml`) and the MQTT topic rules the
//! manifest is checked against. Bundles, signatures and keyrings join it next; it will never
//! depend on wasmtime or tokio, so a plugin author's CI can check and sign a plugin without the
//! gateway.

pub mod manifest;
pub mod topic;

pub use manifest::{HOST_API_VERSION, Limits, Manifest, ManifestError, ModelSpec};
pub use topic::{TopicError, TopicFilter};
