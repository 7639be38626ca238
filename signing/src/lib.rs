//! The Edgewise plugin format, shared by the gateway and by plugin authors' tooling: the plugin
//! manifest (`plugin.toml`), the MQTT topic rules it is checked against, the gateway's own topic
//! names (which plugins may not reach), signed bundles, keys and keyrings. It never depends on
//! wasmtime or tokio, so a plugin author's CI can check, pack and sign a plugin without the
//! gateway.

pub mod bundle;
pub mod command;
pub mod encryption;
pub mod envelope;
pub mod evaluate;
pub mod keyring;
pub mod manifest;
pub mod namespace;
pub mod signature;
pub mod topic;

pub use bundle::{Bundle, BundleError, VerifiedBundle};
pub use keyring::{Keyring, KeyringError, Role};
pub use manifest::{HOST_API_VERSION, Limits, Manifest, ManifestError, ModelSpec};
pub use signature::{PayloadType, PublicKey, SecretKey, Signature};
pub use topic::{TopicError, TopicFilter};
