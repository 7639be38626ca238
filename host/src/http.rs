//! The gateway's HTTP listener (`[metrics] listen`): Prometheus scrapes on `/metrics`, and
//! liveness and readiness for whatever supervises the process on `/healthz` and `/readyz`.
//!
//! Read-only, and off the message path: the gateway task keeps [`Health`] up to date with a
//! few atomic stores as things change, and a request only reads it. `/healthz` answers 200
//! while the process serves at all; `/readyz` answers 200 only when the gateway can do its job
//! (connected to a broker, the journal not full, no plugin failed for good) and 503 with the
//! reasons otherwise; any other path is 404.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What `/readyz` reports, as the gateway task last set it.
#[derive(Debug)]
pub struct Health {
    /// `edgewise_broker_connected`: the one record of the connection.
    connected: Gauge,
    journal_full: AtomicBool,
    failed: Mutex<BTreeSet<String>>,
}

impl Health {
    /// Readiness over the connection gauge the gateway keeps (`GatewayMetrics::connected`).
    pub fn new(connected: Gauge) -> Self {
        Self {
            connected,
            journal_full: AtomicBool::new(false),
            failed: Mutex::new(BTreeSet::new()),
        }
    }

    /// Whether the journal is full (the gateway takes no new messages).
    pub fn set_journal_full(&self, full: bool) {
        self.journal_full.store(full, Ordering::Relaxed);
    }

    /// The plugins that failed for good (state `failed`).
    pub fn set_failed(&self, plugins: BTreeSet<String>) {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = plugins;
    }

    /// Why the gateway is not ready; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.connected.get() != 1 {
            problems.push("not connected to a broker".to_owned());
        }
        if self.journal_full.load(Ordering::Relaxed) {
            problems.push("the journal is full: new messages wait at the broker".to_owned());
        }
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        problems.extend(failed.iter().map(|p| format!("plugin `{p}` failed")));
        problems
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Shared { metrics, health });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics listener: {e}");
    }
}

async fn scrape(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    let problems = shared.health.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        let mut text = String::from("not ready:\n");
        for problem in problems {
            text.push_str(&format!("- {problem}\n"));
        }
        (StatusCode::SERVICE_UNAVAILABLE, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_connected_with_room_and_no_failed_plugin() {
        let connected = Gauge::default();
        let health = Health::new(connected.clone());
        assert_eq!(health.problems(), ["not connected to a broker"]);
        connected.set(1);
        assert!(health.problems().is_empty());
        health.set_journal_full(true);
        health.set_failed(BTreeSet::from(["vad".to_owned()]));
        assert_eq!(health.problems().len(), 2, "{:?}", health.problems());
        assert!(health.problems()[1].contains("`vad`"));
    }
}
