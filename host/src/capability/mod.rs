//! Everything a plugin can import, and the per-instance state behind it.
//!
//! [`add_to_linker`] is the complete list of what a plugin can reach: WASI with nothing granted
//! (no preopened directories, no socket addresses, no environment, no stdin; stdout and stderr
//! become log lines), wasi-nn served by [`nn`], and the Edgewise [`host`] interface. A
//! component that imports anything else fails to link when it is loaded. What the host spends
//! for a plugin inside those calls, time and memory, is bounded by its [`budget`]: blocking
//! WASI calls go through [`poll`], which stops at the call's deadline.

pub mod budget;
pub mod host;
pub mod log;
pub mod nn;
pub mod poll;
pub mod stdio;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::edgewise::plugin as wit;
use crate::bindings::wasi::nn as wasi_nn;
use budget::{Deadline, HostMemory};

/// Most resources (pollables, tensors, errors, streams) one instance may hold at once.
pub const MAX_RESOURCES: usize = 10_000;

/// The state of one plugin instance: its capabilities and its budgets.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    models: nn::ModelSet,
    /// The `edgewise:plugin/host` capability: publishing, logging, settings.
    pub plugin: host::PluginCtx,
    /// The linear-memory cap; [`MemoryCap::was_hit`] tells whether a trap came from it.
    pub memory: MemoryCap,
    /// What the host holds for this instance.
    pub host_memory: Arc<HostMemory>,
    /// When the current call must be over.
    pub deadline: Deadline,
}

impl HostState {
    /// State for a new instance of a plugin granted `grants`, whose models are `models`.
    pub fn new(grants: host::Grants, models: &nn::ModelSet) -> Self {
        let limits = grants.limits;
        let host_memory = HostMemory::new(limits.host_memory_mib);
        let plugin = host::PluginCtx::new(grants, host_memory.clone());
        let wasi = WasiCtx::builder()
            .stdout(stdio::LogStream::new(plugin.log().clone(), "stdout"))
            .stderr(stdio::LogStream::new(plugin.log().clone(), "stderr"))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            wasi,
            table,
            models: models.clone(),
            plugin,
            memory: MemoryCap::new(limits.memory_mib as usize * 1024 * 1024),
            host_memory,
            deadline: Deadline::default(),
        }
    }

    fn nn(&mut self) -> nn::wit::NnView<'_> {
        nn::wit::NnView {
            table: &mut self.table,
            models: &self.models,
            memory: &self.host_memory,
            deadline: self.deadline,
            plugin: self.plugin.log().plugin(),
        }
    }

    fn poll(&mut self) -> poll::BoundedPoll<'_> {
        poll::BoundedPoll {
            table: &mut self.table,
            deadline: self.deadline,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Adds every import a plugin may use to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // wasmtime-wasi's blocking `poll` and `block` wait without end; these stop at the deadline.
    linker.allow_shadowing(true);
    wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<_, poll::HasBoundedPoll>(
        linker,
        HostState::poll,
    )?;
    linker.allow_shadowing(false);
    wasi_nn::tensor::add_to_linker::<_, nn::wit::HasNn>(linker, HostState::nn)?;
    wasi_nn::graph::add_to_linker::<_, nn::wit::HasNn>(linker, HostState::nn)?;
    wasi_nn::inference::add_to_linker::<_, nn::wit::HasNn>(linker, HostState::nn)?;
    wasi_nn::errors::add_to_linker::<_, nn::wit::HasNn>(linker, HostState::nn)?;
    wit::types::add_to_linker::<_, HasSelf<host::PluginCtx>>(linker, |s| &mut s.plugin)?;
    wit::host::add_to_linker::<_, HasSelf<host::PluginCtx>>(linker, |s| &mut s.plugin)?;
    Ok(())
}

/// Caps an instance's linear memory: growth past the cap fails as `memory.grow` does (the
/// guest sees -1), and the cap remembers it was hit so a later trap can be explained.
pub struct MemoryCap {
    max_bytes: usize,
    hit: bool,
    peak: usize,
}

impl MemoryCap {
    /// A cap of `max_bytes` per linear memory.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            hit: false,
            peak: 0,
        }
    }

    /// The largest linear memory the instance has had, in bytes (what `edgewise eval`
    /// reports as peak memory).
    pub fn peak_bytes(&self) -> usize {
        self.peak
    }

    /// Whether the instance tried to grow a memory past the cap since the last [`MemoryCap::clear`].
    pub fn was_hit(&self) -> bool {
        self.hit
    }

    /// Forgets earlier refusals: a plugin that handled a failed `memory.grow` and later traps
    /// for another reason must not be blamed on the cap.
    pub fn clear(&mut self) {
        self.hit = false;
    }

    /// The cap in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.hit |= !allowed;
        if allowed {
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        // Tables hold function references; a million is far beyond any honest plugin.
        Ok(desired <= 1_000_000)
    }
}
