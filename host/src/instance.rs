//! One live instance of a plugin: a wasmtime store plus the plugin's exports.
//!
//! An instance lives across messages, so a plugin keeps state between them. Each call runs
//! under an epoch deadline and the instance's memory cap; a trap is classified into a
//! [`TrapKind`] and the caller must drop the instance (its state may be torn).

use wasmtime::{Store, Trap};

use crate::bindings::Plugin;
use crate::bindings::edgewise::plugin::types::Message;
use crate::capability::HostState;
use crate::capability::host::{PluginCtx, Publish};
use crate::failure::{Failure, TrapKind};
use crate::plugin::CompiledPlugin;
use crate::runtime::deadline_ticks;

const MIB: usize = 1024 * 1024;

/// A started plugin instance.
pub struct Instance {
    store: Store<HostState>,
    bindings: Plugin,
    budget_ms: u64,
    memory_mib: u32,
}

impl Instance {
    /// Instantiates `plugin` and runs its `init` within the init deadline.
    pub fn start(plugin: &CompiledPlugin) -> Result<Self, Failure> {
        let limits = plugin.limits();
        let state = HostState::new(
            PluginCtx::new(plugin.grants().clone()),
            plugin.models(),
            limits.memory_mib as usize * MIB,
        );
        let mut store = Store::new(plugin.pre().engine(), state);
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(limits.init_time_ms));
        let bindings = plugin
            .pre()
            .instantiate(&mut store)
            .map_err(|e| Failure::Start(format!("instantiation failed: {e:#}")))?;
        let mut instance = Self {
            store,
            bindings,
            budget_ms: limits.time_per_message_ms,
            memory_mib: limits.memory_mib,
        };
        let init = instance
            .bindings
            .edgewise_plugin_handler()
            .call_init(&mut instance.store);
        // Publishing belongs to messages; anything published from `init` is dropped.
        instance.store.data_mut().plugin.discard_outbox();
        match init {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(Failure::Start(format!("init returned an error: {message}"))),
            Err(trap) => {
                let kind = instance.classify(trap, limits.init_time_ms);
                Err(Failure::Start(format!("init trapped: {kind}")))
            }
        }
    }

    /// Calls `on-message`; on success returns what the plugin published.
    pub fn handle(&mut self, msg: &Message) -> Result<Vec<Publish>, Failure> {
        self.store
            .set_epoch_deadline(deadline_ticks(self.budget_ms));
        self.store.data_mut().memory.clear();
        let result = self
            .bindings
            .edgewise_plugin_handler()
            .call_on_message(&mut self.store, msg);
        let plugin = &mut self.store.data_mut().plugin;
        match result {
            Ok(Ok(())) => Ok(plugin.take_outbox()),
            Ok(Err(message)) => {
                plugin.discard_outbox();
                Err(Failure::Rejected(message))
            }
            Err(trap) => Err(Failure::Trap(self.classify(trap, self.budget_ms))),
        }
    }

    fn classify(&self, error: wasmtime::Error, budget_ms: u64) -> TrapKind {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => TrapKind::Deadline { ms: budget_ms },
            Some(Trap::StackOverflow) => TrapKind::StackOverflow,
            // A failed `memory.grow` is seen by the guest, which then aborts: blame the cap.
            _ if self.store.data().memory.was_hit() => TrapKind::MemoryLimit {
                mib: self.memory_mib,
            },
            Some(trap) => {
                tracing::debug!("trap detail: {error:?}");
                TrapKind::Other(trap.to_string())
            }
            None => TrapKind::Other(format!("{error:#}")),
        }
    }
}
