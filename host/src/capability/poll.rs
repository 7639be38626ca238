//! `wasi:io/poll` bounded by the call's deadline.
//!
//! Every blocking WASI call of a plugin (`std::thread::sleep`, waiting on a stream) ends in
//! `poll` or `pollable.block`, and epoch interruption cannot stop a thread waiting inside the
//! host. This replaces wasmtime-wasi's two blocking functions with ones that wait at most until
//! the call's [`Deadline`], then trap with [`Exceeded::Deadline`]; a pollable that is ready is
//! still reported as ready, even past the deadline. `ready` and `drop` never wait and are
//! wasmtime-wasi's own.

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::poll;
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::poll::DynPollable;

use super::budget::{Deadline, Exceeded};

/// The view `wasi:io/poll` works on: the instance's resources and its current deadline.
pub struct BoundedPoll<'a> {
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
    /// When the current call must be over.
    pub deadline: Deadline,
}

/// Marks [`BoundedPoll`] as the data the poll bindings get.
pub struct HasBoundedPoll;

impl HasData for HasBoundedPoll {
    type Data<'a> = BoundedPoll<'a>;
}

/// Waits for `work`, at most until `deadline`.
fn within<T>(
    deadline: Deadline,
    during: &str,
    work: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    in_tokio(async {
        match deadline.instant() {
            None => work.await,
            Some(at) => match tokio::time::timeout_at(at.into(), work).await {
                Ok(done) => done,
                Err(_) => Err(Exceeded::Deadline {
                    during: during.to_owned(),
                }
                .into()),
            },
        }
    })
}

impl poll::Host for BoundedPoll<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let table = &mut *self.table;
        within(
            self.deadline,
            "waiting in wasi:io/poll (a sleep or a blocking read)",
            async_poll::Host::poll(table, pollables),
        )
    }
}

impl poll::HostPollable for BoundedPoll<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        let table = &mut *self.table;
        in_tokio(async_poll::HostPollable::ready(table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let table = &mut *self.table;
        within(
            self.deadline,
            "blocked on a wasi:io pollable (a sleep or a blocking read)",
            async_poll::HostPollable::block(table, pollable),
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.table, pollable)
    }
}
