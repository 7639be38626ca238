//! One live instance of a plugin: a wasmtime store plus the plugin's exports.
//!
//! An instance lives across messages, so a plugin keeps state between them. Each call runs
//! under one deadline, enforced in wasm by the epoch and in the host by the call's
//! [`Deadline`], and under the instance's memory caps; a trap is classified into a
//! [`TrapKind`] and the caller must drop the instance (its state may be torn). A panic in the
//! host while it works for the plugin is caught here and is a trap of this instance only.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use crate::bindings::Plugin;
use crate::bindings::edgewise::plugin::types::Message;
use crate::capability::HostState;
use crate::capability::budget::{Deadline, Exceeded};
use crate::capability::host::Publish;
use crate::capability::nn::wit::panic_text;
use crate::runtime::deadline_ticks;
use crate::runtime::failure::{Failure, TrapKind};
use crate::runtime::plugin::CompiledPlugin;

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
        let state = HostState::new(plugin.grants().clone(), plugin.models());
        let mut store = Store::new(plugin.pre().engine(), state);
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_trap();
        Self::begin_call(&mut store, limits.init_time_ms);
        let bindings = catch_unwind(AssertUnwindSafe(|| plugin.pre().instantiate(&mut store)))
            .unwrap_or_else(|panic| Err(host_panic(panic.as_ref())))
            .map_err(|e| Failure::Start(format!("instantiation failed: {e:#}")))?;
        let mut instance = Self {
            store,
            bindings,
            budget_ms: limits.time_per_message_ms,
            memory_mib: limits.memory_mib,
        };
        let init = catch_unwind(AssertUnwindSafe(|| {
            instance
                .bindings
                .edgewise_plugin_handler()
                .call_init(&mut instance.store)
        }))
        .unwrap_or_else(|panic| Err(host_panic(panic.as_ref())));
        instance.store.data_mut().deadline = Deadline::default();
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

    /// The largest linear memory this instance has had, in bytes.
    pub fn peak_memory_bytes(&self) -> usize {
        self.store.data().memory.peak_bytes()
    }

    /// Calls `on-message`; on success returns what the plugin published.
    pub fn handle(&mut self, msg: &Message) -> Result<Vec<Publish>, Failure> {
        Self::begin_call(&mut self.store, self.budget_ms);
        self.store.data_mut().memory.clear();
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.bindings
                .edgewise_plugin_handler()
                .call_on_message(&mut self.store, msg)
        }))
        .unwrap_or_else(|panic| Err(host_panic(panic.as_ref())));
        self.store.data_mut().deadline = Deadline::default();
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

    /// Arms both halves of a call's deadline, `ms` from now: the epoch for wasm, the
    /// [`Deadline`] for the host.
    fn begin_call(store: &mut Store<HostState>, ms: u64) {
        store.set_epoch_deadline(deadline_ticks(ms));
        store.data_mut().deadline = Deadline::at(Instant::now() + Duration::from_millis(ms));
    }

    fn classify(&self, error: wasmtime::Error, budget_ms: u64) -> TrapKind {
        if let Some(exceeded) = error.downcast_ref::<Exceeded>() {
            return match exceeded {
                Exceeded::Deadline { .. } => TrapKind::Deadline { ms: budget_ms },
                other => TrapKind::Host(other.clone()),
            };
        }
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

/// A panic caught while the host worked for the plugin, as the error that traps it.
fn host_panic(panic: &(dyn std::any::Any + Send)) -> wasmtime::Error {
    Exceeded::HostPanic(panic_text(panic)).into()
}
