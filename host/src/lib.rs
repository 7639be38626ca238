//! The Edgewise gateway host: runs third-party WebAssembly inference plugins in sandboxes.
//!
//! The path of one message through the host, one folder a stage:
//!
//! 1. [`gateway`]: under `edgewise run`, the broker connection ([`mqtt`]) delivers a message;
//!    the gateway's [`router`](gateway::router) names the plugins it goes to, and the
//!    [`flow`](gateway::flow) writes it to the [`journal`](gateway::journal) and acknowledges
//!    it to the broker in arrival order. Each plugin works through its own backlog there, a
//!    few messages at a time in its [`mailbox`](worker::mailbox). The gateway's own topics
//!    (`edgewise/...`) go to [`control`](gateway::control) and on to [`management`] instead,
//!    never to a plugin. [`replay`] feeds a plugin from a file instead of a broker.
//! 2. [`worker`]: a [`worker::Worker`] owns one plugin on its own thread: it admits the
//!    message (size, backoff), makes sure a live [`Instance`](runtime::instance::Instance)
//!    exists, and calls the plugin's `on-message`.
//! 3. [`capability`]: inside the call the plugin reaches the host only through these: `publish`
//!    into the per-message outbox, `log`, `config`, the clock, and wasi-nn backed by tract.
//! 4. Back out: the worker returns the outbox as the message's outputs, or a
//!    [`Failure`](runtime::failure::Failure) that names what went wrong (a trap drops the
//!    instance and the [`supervisor`](worker::supervisor) decides when a fresh one may start).
//!    The outputs go into the journal's outbox in the transaction that takes the message off
//!    the plugin's backlog, and from there to the broker.
//!
//! [`runtime`] holds what all plugins share: the engine, the linker and the epoch ticker that
//! enforces deadlines; a [`CompiledPlugin`](runtime::plugin::CompiledPlugin) is one plugin
//! checked, compiled and linked once, with its models loaded: from a signed bundle verified by
//! the [`store`](management::store), or in development from a plain directory. [`management`]
//! carries out signed commands and fleet roll-outs off the message path, and [`evaluate`]
//! runs a plugin over its labelled evaluation set and judges the gates an update must pass.

pub mod capability;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod durable_file;
pub mod evaluate;
pub mod gateway;
pub mod http;
pub mod management;
pub mod metrics;
pub mod mqtt;
pub mod replay;
pub mod runtime;
pub mod service;
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
