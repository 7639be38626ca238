//! What every plugin shares: the wasmtime engine, the linker, and the epoch ticker.
//!
//! One `Runtime` per process. The engine compiles with cranelift and instantiates from a
//! pooling allocator; the ticker thread advances the engine's epoch every [`TICK`] so that a
//! guest call past its deadline traps. Owns that one thread; never touches the network.
//!
//! Inside: a [`plugin::CompiledPlugin`] is one plugin checked, compiled and linked once (its
//! machine code kept in the [`cache::Cache`]); an [`instance::Instance`] is one live sandbox
//! of it; a [`failure::Failure`] says why a call did not return normally.

pub mod cache;
pub mod failure;
pub mod instance;
pub mod plugin;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use edgewise_signing::Limits;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capability::{self, HostState};

/// How often the epoch advances: the granularity of every deadline.
pub const TICK: Duration = Duration::from_millis(5);

/// Host-wide caps: a manifest may ask for less, never for more.
pub fn default_caps() -> Limits {
    Limits {
        memory_mib: 256,
        time_per_message_ms: 10_000,
        init_time_ms: 30_000,
        max_payload_bytes: 1024 * 1024,
        max_publishes_per_message: 1000,
        host_memory_mib: 256,
    }
}

/// Errors setting up the runtime itself.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine or linker could not be built.
    #[error("setting up the wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The epoch ticker thread could not start.
    #[error("starting the epoch ticker: {0}")]
    Ticker(std::io::Error),
}

/// What compiles signed bundles into plugins: the runtime and, with a store, its compiled
/// cache.
#[derive(Clone)]
pub struct Compiler {
    /// The runtime plugins are compiled for.
    pub runtime: Arc<Runtime>,
    /// The compiled cache, if there is a store.
    pub cache: Option<Arc<cache::Cache>>,
}

impl Compiler {
    /// `bundle` compiled (or taken from the cache) and linked, with `settings` overriding its
    /// manifest's.
    pub fn plugin(
        &self,
        bundle: &edgewise_signing::VerifiedBundle,
        settings: &std::collections::BTreeMap<String, String>,
    ) -> Result<plugin::CompiledPlugin, plugin::LoadError> {
        plugin::CompiledPlugin::from_bundle(&self.runtime, bundle, settings, self.cache.as_deref())
    }
}

/// The engine, linker and ticker shared by all plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    caps: Limits,
    ticker: Arc<EpochTicker>,
}

impl Runtime {
    /// A runtime whose plugins are limited by `caps`; room for `max_instances` live instances.
    pub fn new(caps: Limits, max_instances: u32) -> Result<Self, RuntimeError> {
        let engine =
            Engine::new(&engine_config(&caps, max_instances)).map_err(RuntimeError::Engine)?;
        let mut linker = Linker::new(&engine);
        capability::add_to_linker(&mut linker).map_err(RuntimeError::Engine)?;
        let ticker = EpochTicker::start(engine.clone()).map_err(RuntimeError::Ticker)?;
        Ok(Self {
            engine,
            linker,
            caps,
            ticker: Arc::new(ticker),
        })
    }

    /// The epoch ticker, for a plugin to hold: its deadlines trap only while the ticker runs,
    /// so it stops only when the runtime and every plugin compiled by it are gone.
    pub(crate) fn ticker(&self) -> Arc<EpochTicker> {
        self.ticker.clone()
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How plugin code runs here: compiled to native code by Cranelift (x86-64, aarch64), or
    /// on the Pulley interpreter (32-bit hosts such as armv7, which Cranelift cannot target).
    pub fn plugin_code(&self) -> &'static str {
        if self.engine.is_pulley() {
            "pulley"
        } else {
            "cranelift"
        }
    }

    /// The linker holding every import a plugin may use.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// The host-wide limit caps.
    pub fn caps(&self) -> &Limits {
        &self.caps
    }
}

/// Epoch ticks to allow for `ms` milliseconds: never less than the time asked for.
pub fn deadline_ticks(ms: u64) -> u64 {
    let tick = TICK.as_millis() as u64;
    ms.div_ceil(tick) + 1
}

fn engine_config(caps: &Limits, max_instances: u32) -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(allocation_strategy(caps, max_instances))
        // Deep recursion traps as a stack overflow long before the host's stack is at risk.
        .max_wasm_stack(1024 * 1024);
    // `EDGEWISE_PERF_MAP=1` names plugin functions for `perf` (in /tmp/perf-<pid>.map).
    if std::env::var_os("EDGEWISE_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// On 64-bit hosts, a pool: every instance's slots reserved up front, so a swap or a restart
/// instantiates in microseconds. A 32-bit host (armv7, where plugins run on Pulley) has 3 GiB
/// of address space in all, too little for a pool of `max_instances` memories of
/// `memory-mib` each: there each instance is allocated when it is made.
fn allocation_strategy(caps: &Limits, max_instances: u32) -> InstanceAllocationStrategy {
    if cfg!(target_pointer_width = "32") {
        return InstanceAllocationStrategy::OnDemand;
    }
    let mut pool = PoolingAllocationConfig::default();
    // A Rust wasm32-wasip2 component holds a few core instances and at most two memories.
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 8)
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 4)
        .total_stacks(max_instances)
        .max_memory_size(caps.memory_mib as usize * 1024 * 1024);
    InstanceAllocationStrategy::Pooling(pool)
}

/// Advances the engine's epoch every [`TICK`] until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_and_never_undershoot() {
        assert_eq!(deadline_ticks(0), 1);
        assert_eq!(deadline_ticks(5), 2);
        assert_eq!(deadline_ticks(6), 3);
        assert!(deadline_ticks(100) * TICK.as_millis() as u64 > 100);
    }
}
