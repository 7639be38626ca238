//! Per-plugin counters and histograms, and the journal's gauges, in Prometheus text format.
//!
//! One [`Metrics`] per gateway; each plugin gets a [`PluginMetrics`] of cheap cloned handles,
//! updated by the message path (drops, queue depth, dropped outputs) and the plugin's worker
//! thread (everything else); the message path keeps the [`JournalMetrics`], the gateway task
//! its [`GatewayMetrics`] (connection, reconnects, store size). `crate::http` answers scrapes
//! on the configured address; the gateway also publishes the same text over MQTT. Never blocks the message path: updates are atomic adds.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::capability::log::HostCounters;
use crate::runtime::plugin::CompiledPlugin;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Plugin {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JournalPart {
    part: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Document {
    document: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowCount {
    plugin: String,
    count: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginState {
    plugin: String,
    state: &'static str,
}

/// The states a plugin's `edgewise_plugin_state` gauge takes, as in the status document.
pub const STATES: [&str; 7] = [
    "starting", "running", "failing", "resting", "stuck", "failed", "stopped",
];

type Histograms = Family<Plugin, Histogram, fn() -> Histogram>;

/// 10 µs to about 10 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.0, 21))
}

/// All of a gateway's metrics.
pub struct Metrics {
    registry: Registry,
    messages_in: Family<Plugin, Counter>,
    messages_out: Family<Plugin, Counter>,
    failures: Family<Plugin, Counter>,
    traps: Family<Plugin, Counter>,
    drops: Family<Plugin, Counter>,
    publishes_refused: Family<Plugin, Counter>,
    log_lines_dropped: Family<Plugin, Counter>,
    queue_depth: Family<Plugin, Gauge>,
    outputs_dropped: Family<Plugin, Counter>,
    state: Family<PluginState, Gauge>,
    handling: Histograms,
    inference: Histograms,
    journal_bytes: Family<JournalPart, Gauge>,
    outputs_waiting: Gauge,
    trust_stale: Family<Document, Gauge>,
    shadow: Family<ShadowCount, Gauge>,
    gateway: GatewayMetrics,
}

/// The whole gateway's own gauges, kept by the gateway task.
#[derive(Clone, Default)]
pub struct GatewayMetrics {
    /// 1 while connected to a broker.
    pub connected: Gauge,
    /// Connections lost (or refused) since the start.
    pub reconnects: Counter,
    /// Bytes the store's files take.
    pub store_bytes: Gauge,
}

/// The journal's gauges, and the count of outputs its outbox dropped.
#[derive(Clone)]
pub struct JournalMetrics {
    /// Bytes the plugins' backlogs hold.
    pub backlog_bytes: Gauge,
    /// Bytes the outputs waiting for the broker hold.
    pub outbox_bytes: Gauge,
    /// Outputs waiting for the broker (kept, sent and not yet acknowledged).
    pub outputs_waiting: Gauge,
    outputs_dropped: Family<Plugin, Counter>,
}

impl JournalMetrics {
    /// Counts an output of `plugin` dropped by the outbox's overflow policy.
    pub fn output_dropped(&self, plugin: &str) {
        let label = Plugin {
            plugin: plugin.to_owned(),
        };
        self.outputs_dropped.get_or_create(&label).inc();
    }
}

/// One plugin's metric handles.
#[derive(Clone)]
pub struct PluginMetrics {
    /// Messages handed to the plugin.
    pub messages_in: Counter,
    /// Messages the plugin published.
    pub messages_out: Counter,
    /// Messages the plugin failed on (each also goes to the dead-letter topic).
    pub failures: Counter,
    /// Instances that trapped or failed to start.
    pub traps: Counter,
    /// Messages dropped by the queue's overflow policy.
    pub drops: Counter,
    /// Publishes the host refused (not granted, too large, too many, over host memory).
    pub publishes_refused: Counter,
    /// Plugin log lines dropped by the rate limit.
    pub log_lines_dropped: Counter,
    /// Messages waiting in the plugin's queue.
    pub queue_depth: Gauge,
    /// Time to handle one message, in seconds.
    pub handling: Histogram,
    /// Time of one model inference, in seconds.
    pub inference: Histogram,
}

impl Metrics {
    /// An empty set of metrics, registered under `edgewise_`.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("edgewise");
        let m = Metrics {
            messages_in: Family::default(),
            messages_out: Family::default(),
            failures: Family::default(),
            traps: Family::default(),
            drops: Family::default(),
            publishes_refused: Family::default(),
            log_lines_dropped: Family::default(),
            queue_depth: Family::default(),
            outputs_dropped: Family::default(),
            journal_bytes: Family::default(),
            outputs_waiting: Gauge::default(),
            trust_stale: Family::default(),
            shadow: Family::default(),
            state: Family::default(),
            handling: Family::new_with_constructor(seconds),
            inference: Family::new_with_constructor(seconds),
            gateway: GatewayMetrics::default(),
            registry: Registry::default(),
        };
        let build: Family<Build, Gauge> = Family::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The edgewise version (label version); always 1",
            build,
        );
        let started = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        started.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        registry.register(
            "start_time_seconds",
            "When the gateway process started, in seconds since the epoch (uptime: time() minus this)",
            started,
        );
        registry.register(
            "broker_connected",
            "1 while the gateway is connected to a broker",
            m.gateway.connected.clone(),
        );
        registry.register(
            "reconnects",
            "Broker connections lost or refused since the gateway started",
            m.gateway.reconnects.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes the gateway's store takes on disk (bundles, journal, compiled cache)",
            m.gateway.store_bytes.clone(),
        );
        registry.register(
            "messages_in",
            "Messages handed to a plugin",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages a plugin published",
            m.messages_out.clone(),
        );
        registry.register(
            "failures",
            "Messages a plugin failed on",
            m.failures.clone(),
        );
        registry.register(
            "traps",
            "Plugin instances that trapped or failed to start",
            m.traps.clone(),
        );
        registry.register(
            "drops",
            "Messages dropped by a full queue's overflow policy",
            m.drops.clone(),
        );
        registry.register(
            "publishes_refused",
            "Publishes the host refused a plugin",
            m.publishes_refused.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Plugin log lines dropped by the rate limit",
            m.log_lines_dropped.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages waiting in a plugin's queue",
            m.queue_depth.clone(),
        );
        registry.register(
            "outputs_dropped",
            "Outputs of a plugin dropped unsent by the outbox's overflow policy",
            m.outputs_dropped.clone(),
        );
        registry.register(
            "journal_bytes",
            "Bytes the journal holds, by part (backlog: messages plugins have yet to handle; outbox: outputs the broker does not have yet)",
            m.journal_bytes.clone(),
        );
        registry.register(
            "outputs_waiting",
            "Outputs the broker does not have yet",
            m.outputs_waiting.clone(),
        );
        registry.register(
            "trust_stale",
            "1 when the gateway's trust in a document (keyring, desired-state) is stale: expired, about to, or older than its freshness window",
            m.trust_stale.clone(),
        );
        registry.register(
            "shadow_messages",
            "A plugin's shadow trial: messages compared, agreed on, skipped (the shadow was behind) and failed by the candidate (label count)",
            m.shadow.clone(),
        );
        registry.register(
            "plugin_state",
            "1 for the state a plugin is in (label state), 0 for the others",
            m.state.clone(),
        );
        registry.register(
            "handling_seconds",
            "Time to handle one message",
            m.handling.clone(),
        );
        registry.register(
            "inference_seconds",
            "Time of one model inference",
            m.inference.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// The handles for `plugin`.
    pub fn plugin(&self, plugin: &str) -> PluginMetrics {
        let label = Plugin {
            plugin: plugin.to_owned(),
        };
        PluginMetrics {
            messages_in: self.messages_in.get_or_create(&label).clone(),
            messages_out: self.messages_out.get_or_create(&label).clone(),
            failures: self.failures.get_or_create(&label).clone(),
            traps: self.traps.get_or_create(&label).clone(),
            drops: self.drops.get_or_create(&label).clone(),
            publishes_refused: self.publishes_refused.get_or_create(&label).clone(),
            log_lines_dropped: self.log_lines_dropped.get_or_create(&label).clone(),
            queue_depth: self.queue_depth.get_or_create(&label).clone(),
            handling: self.handling.get_or_create(&label).clone(),
            inference: self.inference.get_or_create(&label).clone(),
        }
    }

    /// The gateway task's handles.
    pub fn gateway(&self) -> GatewayMetrics {
        self.gateway.clone()
    }

    /// The journal's handles.
    pub fn journal(&self) -> JournalMetrics {
        // One at a time: `get_or_create` holds the family's lock until its guard is dropped.
        let part = |part| {
            self.journal_bytes
                .get_or_create(&JournalPart { part })
                .clone()
        };
        let backlog_bytes = part("backlog");
        let outbox_bytes = part("outbox");
        JournalMetrics {
            backlog_bytes,
            outbox_bytes,
            outputs_waiting: self.outputs_waiting.clone(),
            outputs_dropped: self.outputs_dropped.clone(),
        }
    }

    /// Records whether the gateway's trust in `document` is stale.
    pub fn set_stale(&self, document: &'static str, stale: bool) {
        self.trust_stale
            .get_or_create(&Document { document })
            .set(i64::from(stale));
    }

    /// Records how `plugin`'s shadow trial is doing.
    pub fn set_shadow(&self, plugin: &str, s: &crate::worker::shadow::Snapshot) {
        for (count, value) in [
            ("compared", s.compared),
            ("agreed", s.agreed),
            ("skipped", s.skipped),
            ("failed", s.failed),
        ] {
            let label = ShadowCount {
                plugin: plugin.to_owned(),
                count,
            };
            self.shadow
                .get_or_create(&label)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Records that `plugin` is in `state` (one of [`STATES`]).
    pub fn set_state(&self, plugin: &str, state: &str) {
        for s in STATES {
            let label = PluginState {
                plugin: plugin.to_owned(),
                state: s,
            };
            self.state.get_or_create(&label).set(i64::from(s == state));
        }
    }

    /// Points what `plugin` does on the host at its metrics: inference times, refused
    /// publishes, dropped log lines.
    pub fn instrument(&self, plugin: &CompiledPlugin) {
        let m = self.plugin(plugin.name());
        let inference = m.inference.clone();
        plugin.observe_inference(Box::new(move |elapsed| observe(&inference, elapsed)));
        plugin.count_into(HostCounters {
            log_lines_dropped: m.log_lines_dropped,
            publishes_refused: m.publishes_refused,
        });
    }

    /// Everything, in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Records `elapsed` in seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_the_grafana_dashboard_queries_is_one_the_gateway_serves() {
        let metrics = Metrics::new();
        let plugin = metrics.plugin("p");
        observe(&plugin.handling, Duration::from_micros(40));
        observe(&plugin.inference, Duration::from_micros(40));
        let journal = metrics.journal();
        journal.output_dropped("p");
        metrics.set_state("p", "running");
        metrics.set_stale("keyring", false);
        let served = metrics.render();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/grafana-dashboard.json"))
                .unwrap_or_else(|e| panic!("docs/grafana-dashboard.json: {e}"));
        let mut queried = Vec::new();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                for (at, _) in expr.match_indices("edgewise_") {
                    let name: String = expr[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    queried.push(name);
                }
            }
        }
        assert!(queried.len() > 10, "{queried:?}");
        for name in queried {
            assert!(
                served
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "the dashboard queries {name}, which /metrics does not serve:\n{served}"
            );
        }
    }

    #[test]
    fn counters_render_per_plugin() {
        let metrics = Metrics::new();
        let a = metrics.plugin("threshold");
        a.messages_in.inc_by(3);
        a.drops.inc();
        observe(&a.handling, Duration::from_micros(40));
        let text = metrics.render();
        assert!(
            text.contains(r#"edgewise_messages_in_total{plugin="threshold"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"edgewise_drops_total{plugin="threshold"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"edgewise_handling_seconds_count{plugin="threshold"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_journals_gauges_render_by_part_and_dropped_outputs_by_plugin() {
        let metrics = Metrics::new();
        let journal = metrics.journal();
        journal.backlog_bytes.set(10);
        journal.outbox_bytes.set(20);
        journal.output_dropped("threshold");
        let text = metrics.render();
        for line in [
            r#"edgewise_journal_bytes{part="backlog"} 10"#,
            r#"edgewise_journal_bytes{part="outbox"} 20"#,
            r#"edgewise_outputs_dropped_total{plugin="threshold"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
