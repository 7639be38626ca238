//! The Edgewise gateway host: runs third-party WebAssembly inference plugins in sandboxes.
//!
//! The path of one message through the host:
//!
//! 1. The [`gateway`] (MQTT, through [`mqtt`] and [`router`]) or [`replay`] (files) turns
//!    input into a [`worker::Message`] and queues it in the plugin's [`mailbox`]. Under
//!    `edgewise run` the message is first written to the [`journal`] and acknowledged in
//!    arrival order ([`flow`]); each plugin works through its own backlog there, and its
//!    outputs go back through the journal's outbox to the broker. The gateway's own topics
//!    (`edgewise/...`) go to [`control`] instead, never to a plugin.
//! 2. A [`worker::Worker`] owns one plugin: it admits the message (size, backoff), makes sure a
//!    live [`instance::Instance`] exists, and calls the plugin's `on-message`.
//! 3. Inside the call the plugin reaches the host only through [`capability`]: `publish` into
//!    the per-message outbox, `log`, `config`, the clock, and wasi-nn backed by tract.
//! 4. The worker returns the outbox as the message's outputs, or a [`failure::Failure`] that
//!    names what went wrong; a trap drops the instance and the [`supervisor`] decides when a
//!    fresh one may start.
//!
//! [`runtime::Runtime`] holds what all plugins share: the engine, the linker and the epoch
//! ticker that enforces deadlines. [`plugin::CompiledPlugin`] is one plugin checked, compiled
//! and linked once, with its models loaded: from a signed bundle verified by the [`store`], or
//! in development from a plain directory.

pub mod capability;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod echoes;
pub mod failure;
pub mod flow;
pub mod gateway;
pub mod instance;
pub mod journal;
pub mod mailbox;
pub mod management;
pub mod metrics;
pub mod mqtt;
pub mod plugin;
pub mod replay;
pub mod router;
pub mod runtime;
pub mod store;
pub mod supervisor;
pub mod vitals;
pub mod worker;

/// Host-side bindings generated from `wit/`.
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        // Every host function may trap: that is how a plugin over its budget is stopped.
        imports: { default: trappable },
        with: {
            "wasi:nn/graph.graph": crate::capability::nn::wit::NnGraph,
            "wasi:nn/inference.graph-execution-context": crate::capability::nn::wit::NnContext,
            "wasi:nn/tensor.tensor": crate::capability::nn::wit::NnTensor,
            "wasi:nn/errors.error": crate::capability::nn::wit::NnError,
        },
    });
}
