//! Everything a plugin can import, and the per-instance state behind it.
//!
//! [`add_to_linker`] is the complete list of what a plugin can reach: WASI with nothing granted
//! (no preopened directories, no socket addresses, no environment, no stdin; stdout and stderr
//! become log lines), wasi-nn served by [`nn`], and the Edgewise [`host`] interface. A
//! component that imports anything else fails to link when it is loaded.

pub mod host;
pub mod nn;
pub mod stdio;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_nn::wit::{WasiNnCtx, WasiNnView};

use crate::bindings::edgewise::plugin as wit;

/// The state of one plugin instance: its capabilities and its memory cap.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    nn: WasiNnCtx,
    /// The `edgewise:plugin/host` capability: publishing, logging, settings.
    pub plugin: host::PluginCtx,
    /// The linear-memory cap; [`MemoryCap::was_hit`] tells whether a trap came from it.
    pub memory: MemoryCap,
}

impl HostState {
    /// State for a new instance of `plugin`, whose models are `models`.
    pub fn new(plugin: host::PluginCtx, models: &nn::ModelSet, memory_bytes: usize) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(stdio::LogStream::new(plugin.name(), "stdout"))
            .stderr(stdio::LogStream::new(plugin.name(), "stderr"))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            nn: models.context(),
            plugin,
            memory: MemoryCap::new(memory_bytes),
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
    wasmtime_wasi_nn::wit::add_to_linker(linker, |s| WasiNnView::new(&mut s.table, &mut s.nn))?;
    wit::types::add_to_linker::<_, HasSelf<host::PluginCtx>>(linker, |s| &mut s.plugin)?;
    wit::host::add_to_linker::<_, HasSelf<host::PluginCtx>>(linker, |s| &mut s.plugin)?;
    Ok(())
}

/// Caps an instance's linear memory: growth past the cap fails as `memory.grow` does (the
/// guest sees -1), and the cap remembers it was hit so a later trap can be explained.
pub struct MemoryCap {
    max_bytes: usize,
    hit: bool,
}

impl MemoryCap {
    /// A cap of `max_bytes` per linear memory.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            hit: false,
        }
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
