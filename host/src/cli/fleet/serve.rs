//! `edgewise fleet serve`: a read-only web page of one fleet group, for a screen in a control
//! room. It subscribes to every gateway's retained status and to their metrics (the heartbeat:
//! each gateway publishes them every `metrics.publish-interval-s`), and serves one
//! self-contained HTML page (no asset, no script from elsewhere) that reads `/fleet.json`
//! every two seconds: gateways, plugins, versions and states, the roll-out's progress, and the
//! gateways that went silent.
//!
//! A status is whatever a client with publish rights on `edgewise/<id>/status` wrote: the page
//! puts every string from it into the document as text, never as markup.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use edgewise_signing::namespace;
use rumqttc::{Event, Packet, QoS};
use serde_json::{Value, json};

use crate::cli::ctl::{Connection, client, current_thread_runtime};

/// The page, served as it is.
const PAGE: &str = include_str!("page.html");

/// What the page shows of a group, kept from the retained statuses and heartbeats.
pub(super) struct View {
    group: String,
    /// Online, yet nothing heard for this long: stale.
    stale_after: Duration,
    gateways: BTreeMap<String, Seen>,
}

/// A gateway's last status, and when it was last heard from (status or metrics).
struct Seen {
    status: Value,
    heard: Instant,
}

impl View {
    pub(super) fn new(group: &str, stale_after: Duration) -> Self {
        Self {
            group: group.to_owned(),
            stale_after,
            gateways: BTreeMap::new(),
        }
    }

    /// Takes a message from the broker: a status (an empty one is a gateway pruned), or
    /// metrics (a heartbeat). Anything else, or a status that is not JSON, is ignored.
    pub(super) fn receive(&mut self, topic: &str, payload: &[u8], now: Instant) {
        let Some(rest) = topic.strip_prefix("edgewise/") else {
            return;
        };
        if let Some(id) = rest.strip_suffix("/status") {
            if payload.is_empty() {
                self.gateways.remove(id);
            } else if let Ok(status) = serde_json::from_slice::<Value>(payload) {
                let seen = Seen { status, heard: now };
                self.gateways.insert(id.to_owned(), seen);
            }
        } else if let Some(id) = rest.strip_suffix("/metrics")
            && let Some(seen) = self.gateways.get_mut(id)
        {
            seen.heard = now;
        }
    }

    /// The group as `/fleet.json` serves it.
    pub(super) fn summary(&self, now: Instant) -> Value {
        let members: Vec<(&String, &Seen)> = self
            .gateways
            .iter()
            .filter(|(_, seen)| seen.status["fleet"]["group"].as_str() == Some(&self.group))
            .collect();
        // The roll-out is the newest desired state any member has seen.
        let version = members
            .iter()
            .filter_map(|(_, seen)| seen.status["fleet"]["version"].as_u64())
            .max();
        let count = |state: &str| {
            members
                .iter()
                .filter(|(_, seen)| {
                    let fleet = &seen.status["fleet"];
                    fleet["version"].as_u64() == version && fleet["state"] == state
                })
                .count()
        };
        let gateways: Vec<Value> = members
            .iter()
            .map(|(id, seen)| {
                let status = &seen.status;
                let silent = now.saturating_duration_since(seen.heard);
                let online = status["state"] == "online";
                json!({
                    "id": id,
                    "state": status["state"],
                    "reason": status["reason"],
                    "stale": online && silent > self.stale_after,
                    "silent_s": silent.as_secs(),
                    "desired": {
                        "version": status["fleet"]["version"],
                        "state": status["fleet"]["state"],
                        "error": status["fleet"]["error"],
                    },
                    "plugins": status["plugins"].as_array().map_or_else(Vec::new, |plugins| {
                        plugins.iter().map(|p| json!({
                            "name": p["name"],
                            "version": p["version"],
                            "state": p["state"],
                            "reason": p.get("reason").or(p.get("error")).unwrap_or(&Value::Null),
                        })).collect()
                    }),
                })
            })
            .collect();
        let stale = gateways.iter().filter(|g| g["stale"] == true).count();
        let offline = gateways.iter().filter(|g| g["state"] == "offline").count();
        json!({
            "group": self.group,
            "stale_after_s": self.stale_after.as_secs(),
            "rollout": {
                "version": version,
                "converged": count("converged"),
                "applying": count("applying"),
                "failed": count("failed") + count("refused"),
                "total": gateways.len(),
            },
            "offline": offline,
            "stale": stale,
            "gateways": gateways,
        })
    }
}

type Shared = Arc<Mutex<View>>;

/// Serves the page on `listen` until Ctrl-C or SIGTERM, following the broker meanwhile (a
/// lost connection is retried every second; the page keeps what it had).
pub(super) fn serve(
    group: &str,
    listen: SocketAddr,
    stale_after: Duration,
    connection: &Connection,
) -> anyhow::Result<std::process::ExitCode> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let view: Shared = Arc::new(Mutex::new(View::new(group, stale_after)));
        let app = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/fleet.json", get(fleet_json))
            .with_state(view.clone());
        println!(
            "fleet {group}: http://{listen}/ (from {})",
            connection.broker
        );
        let (client, mut eventloop) = client(connection, "edgewise-fleet-serve")?;
        let follow = async {
            loop {
                match eventloop.poll().await {
                    // A clean session each time: subscribe again on every connection.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for filter in [namespace::EVERY_STATUS, "edgewise/+/metrics"] {
                            if let Err(e) = client.try_subscribe(filter, QoS::AtMostOnce) {
                                tracing::warn!("subscribing to {filter}: {e}");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut view = view.lock().unwrap_or_else(PoisonError::into_inner);
                        view.receive(&p.topic, &p.payload, Instant::now());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("broker {}: {e}; retrying in 1 s", connection.broker);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        };
        tokio::select! {
            served = axum::serve(listener, app) => served?,
            () = follow => {}
            () = crate::cli::shutdown_signal() => {}
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

async fn fleet_json(State(view): State<Shared>) -> impl IntoResponse {
    let view = view.lock().unwrap_or_else(PoisonError::into_inner);
    Json(view.summary(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gateway `id` of `group` retains a status: `state`, at desired `version` in `fleet_state`.
    fn retain(
        view: &mut View,
        id: &str,
        group: &str,
        state: &str,
        version: u64,
        fleet_state: &str,
        at: Instant,
    ) {
        let status = json!({
            "state": state,
            "gateway": id,
            "fleet": { "group": group, "version": version, "state": fleet_state },
            "plugins": [{ "name": "threshold", "version": "0.1.0", "state": "running" }],
        });
        view.receive(
            &format!("edgewise/{id}/status"),
            status.to_string().as_bytes(),
            at,
        );
    }

    #[test]
    fn a_group_shows_its_members_the_rollout_and_who_went_silent() {
        let start = Instant::now();
        let mut view = View::new("line", Duration::from_secs(60));
        retain(&mut view, "a", "line", "online", 3, "converged", start);
        retain(&mut view, "b", "line", "online", 3, "applying", start);
        retain(&mut view, "c", "line", "offline", 2, "converged", start);
        retain(&mut view, "y", "yard", "online", 9, "converged", start);
        view.receive("edgewise/z/status", b"not json", start);
        let later = start + Duration::from_secs(90);
        view.receive("edgewise/a/metrics", b"# EOF", later);

        let summary = view.summary(later);
        let ids: Vec<&str> = summary["gateways"]
            .as_array()
            .expect("gateways")
            .iter()
            .map(|g| g["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(
            summary["rollout"],
            json!({ "version": 3, "converged": 1, "applying": 1, "failed": 0, "total": 3 })
        );
        // b said nothing for 90 s while online; a sent metrics; c is offline, not stale.
        let stale: Vec<bool> = summary["gateways"]
            .as_array()
            .expect("gateways")
            .iter()
            .map(|g| g["stale"] == true)
            .collect();
        assert_eq!(stale, [false, true, false]);
        assert_eq!(
            (summary["stale"].clone(), summary["offline"].clone()),
            (json!(1), json!(1))
        );
    }

    #[test]
    fn a_pruned_gateway_leaves_the_page() {
        let now = Instant::now();
        let mut view = View::new("line", Duration::from_secs(60));
        retain(&mut view, "a", "line", "offline", 1, "converged", now);
        view.receive("edgewise/a/status", b"", now);
        assert_eq!(view.summary(now)["gateways"], json!([]));
    }
}
