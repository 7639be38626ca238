//! End-to-end tests: real plugins built from `plugins/`, real ONNX models through wasi-nn,
//! and the real `edgewise` binary.
//!
//! - `bundles`: signed bundles, the author and operator commands, the store, every refusal.
//! - `encryption`: models encrypted for chosen gateways, refused elsewhere, never at rest.
//! - `gateway`: `edgewise run` against Mosquitto and rumqttd: routing, dead letters, a kill -9.
//! - `examples`: each example plugin produces the right outputs on real data.
//! - `traffic`: the plate reader on gate frames, live through a broker and replayed.
//! - `evaluation`: `edgewise eval` on the examples' evaluation sets, and the gateway's gate
//!   refusing or passing an update under a live stream.
//! - `languages`: plugins in Python behave as their Rust twins; their errors are dead letters.
//! - `fleet_page`: `edgewise fleet serve`'s page, rendered by headless Chromium.
//! - `sandbox`: a hostile plugin cannot escape or exhaust the host, nor disturb a neighbour.
//! - `containment`: the same under `edgewise run`, each offender beside a healthy stream.
//! - `nn`: inference through wasi-nn equals tract called directly, bit for bit.
//! - `management`: signed commands over MQTT, hot swaps under load, automatic rollbacks.
//! - `message_path`: the journal (kills, power cuts, cut links, outages), poison messages,
//!   twin gateway ids.
//! - `loading`: every kind of bad plugin directory is refused with an error that says why.
//! - `replay`: the `edgewise replay` command's behaviour at its edges.
//! - `trust`: keyrings, counters, expiry, rollbacks and the compiled cache under attack.

/// Defines each test twice, `<name>::on_mosquitto` and `<name>::on_rumqttd`: against
/// Mosquitto, and against rumqttd, which drops a client that breaks MQTT's ordering rules where
/// Mosquitto lets it pass. A test written once this way holds for a strict peer and a lenient
/// one alike.
macro_rules! on_both_brokers {
    ($($(#[$meta:meta])* fn $name:ident($broker:ident: Broker) $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            use super::*;

            fn run($broker: Broker) $body

            #[test]
            fn on_mosquitto() {
                run(Broker::start())
            }

            #[test]
            fn on_rumqttd() {
                run(Broker::start_rumqttd())
            }
        }
    )*};
}

mod authoring;
mod bundles;
mod cli;
mod containment;
mod encryption;
mod evaluation;
mod examples;
mod fleet_page;
mod gateway;
mod languages;
mod loading;
mod management;
mod message_path;
mod nn;
mod packaging;
mod replay;
mod sandbox;
mod traffic;
mod trust;
