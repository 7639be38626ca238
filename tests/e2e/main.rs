//! End-to-end tests: real plugins built from `plugins/`, real ONNX models through wasi-nn,
//! and the real `edgewise` binary.
//!
//! - `bundles`: signed bundles, the author and operator commands, the store, every refusal.
//! - `gateway`: `edgewise run` against a real Mosquitto: routing, dead letters, a kill -9.
//! - `examples`: each example plugin produces the right outputs on real data.
//! - `sandbox`: a hostile plugin cannot escape or exhaust the host, nor disturb a neighbour.
//! - `containment`: the same under `edgewise run`, each offender beside a healthy stream.
//! - `nn`: inference through wasi-nn equals tract called directly, bit for bit.
//! - `management`: signed commands over MQTT, hot swaps under load, automatic rollbacks.
//! - `message_path`: oversized (poison) messages, the reserved namespace, twin gateway ids.
//! - `loading`: every kind of bad plugin directory is refused with an error that says why.
//! - `replay`: the `edgewise replay` command's behaviour at its edges.

mod bundles;
mod containment;
mod examples;
mod gateway;
mod loading;
mod management;
mod message_path;
mod nn;
mod replay;
mod sandbox;
