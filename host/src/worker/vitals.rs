//! What the gateway knows of a plugin's thread: its state, why, and whether it is stuck.
//!
//! The plugin's thread writes [`Vitals`] around every message; the gateway's loop reads them on
//! a timer and renders them into the plugin's entry of the status document, so the status is
//! true even when the thread cannot speak: a thread still inside one message past its whole
//! time allowance is `stuck`, whatever it last said. The states, in the order an operator
//! meets them: `starting`, `running`, `failing` (failed within the supervisor's window),
//! `resting` (with the time left), `failed` (for good, with the last reason) and `stuck`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::worker::{State, Worker};

/// What a plugin's thread last reported.
#[derive(Debug, Default)]
pub struct Vitals {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `None` until the thread has tried to start the plugin.
    state: Option<State>,
    reported_at: Option<Instant>,
    last_failure: Option<String>,
    in_call_since: Option<Instant>,
}

impl Vitals {
    /// The thread takes a message (or starts the plugin).
    pub fn entering_call(&self) {
        self.lock().in_call_since = Some(Instant::now());
    }

    /// The thread is done with a message: record how the worker is doing now.
    pub fn left_call(&self, worker: &Worker) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.in_call_since = None;
        inner.state = Some(worker.state(now));
        inner.reported_at = Some(now);
        inner.last_failure = worker.last_failure().map(str::to_owned);
    }

    /// The status fields: `state`, and `reason`, `resting_ms` or `stuck_ms` where they apply.
    /// A call running for longer than `allowance` is reported as stuck.
    pub fn render(&self, allowance: Duration) -> Map<String, Value> {
        let now = Instant::now();
        let inner = self.lock();
        let state = match (&inner.state, inner.reported_at) {
            // A rest reported earlier has that much less left now.
            (Some(State::Resting { left }), Some(at)) => match left.checked_sub(now - at) {
                Some(left) if !left.is_zero() => State::Resting { left },
                _ => State::Failing { failures: 0 },
            },
            (state, _) => state.clone().unwrap_or(State::Running),
        };
        let mut fields = Map::new();
        let name = match inner.in_call_since {
            Some(since) if now - since > allowance => {
                fields.insert("stuck_ms".into(), json!((now - since).as_millis() as u64));
                "stuck"
            }
            _ if inner.state.is_none() => "starting",
            _ => state.name(),
        };
        fields.insert("state".into(), json!(name));
        if let State::Resting { left } = state {
            fields.insert("resting_ms".into(), json!(left.as_millis() as u64));
        }
        let reason = match name {
            "running" => Value::Null,
            _ => inner
                .last_failure
                .clone()
                .map_or(Value::Null, Value::String),
        };
        fields.insert("reason".into(), reason);
        fields
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
