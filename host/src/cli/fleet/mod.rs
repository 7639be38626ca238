//! `edgewise fleet`: what the gateways of a group report (`status`, `--watch`, and a web page
//! with `serve`), keeping the group's desired state fresh (`refresh`), and clearing what
//! decommissioned gateways left retained (`prune`). Pushing to a group is `edgewise push
//! --group` (ctl.rs).

mod serve;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use edgewise_signing::namespace;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};

use super::ctl::{Connection, client, current_thread_runtime, publish_desired};

/// See what a fleet runs; keep its desired state fresh.
#[derive(clap::Subcommand)]
pub enum FleetCommand {
    /// Re-sign the group's desired state as it is, with a new issue time and expiry: run it
    /// within the gateways' freshness window (`trust.desired-freshness-h`), so that a gateway
    /// shown an old one can tell.
    Refresh {
        /// The group.
        #[arg(long)]
        group: String,
        /// Days the re-signed desired state is valid.
        #[arg(long, default_value_t = 30)]
        valid_days: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Summarise what every gateway of a group reports in its retained status (a gateway
    /// of the group is listed from its first connection, before any desired state).
    #[command(
        after_help = "Example:\n  edgewise fleet status --group line --broker mqtts://broker:8883 --ca-file ca.pem --username ops\n  edgewise fleet status --group line --watch"
    )]
    Status {
        /// The group.
        #[arg(long)]
        group: String,
        /// Seconds to collect statuses for.
        #[arg(long, default_value_t = 2)]
        seconds: u64,
        /// Keep watching: the table again whenever a gateway's status changes, until Ctrl-C.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Serve a read-only web page of a group: gateways, plugins, versions and states, the
    /// roll-out's progress, and gateways gone silent (online, yet no status or metrics within
    /// --stale-after-s; a gateway's metrics are its heartbeat).
    #[command(
        after_help = "Example:\n  edgewise fleet serve --group line --listen 0.0.0.0:9480 --broker mqtts://broker:8883 --ca-file ca.pem\n  then open http://<this host>:9480/"
    )]
    Serve {
        /// The group.
        #[arg(long)]
        group: String,
        /// Where to serve the page (address:port).
        #[arg(long, default_value = "127.0.0.1:9480")]
        listen: std::net::SocketAddr,
        /// Seconds without a status or metrics after which an online gateway is stale (keep
        /// it above the gateways' `metrics.publish-interval-s`, default 60).
        #[arg(long, default_value_t = 180)]
        stale_after_s: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print the decryption keys of a group's gateways, from their retained statuses: one
    /// `<key>  # <gateway>` line each, a file `pack --encrypt-for` reads. A gateway without a
    /// key is named on stderr (exit 1). Statuses are as trustworthy as the broker's ACLs:
    /// compare the key ids with `edgewise keygen --gateway`'s output when in doubt.
    #[command(
        after_help = "Example:\n  edgewise fleet keys --group line > line.keys\n  edgewise pack plugins/plate-reader --key release.key --encrypt-for line.keys"
    )]
    Keys {
        /// The group.
        #[arg(long)]
        group: String,
        /// Seconds to collect statuses for.
        #[arg(long, default_value_t = 2)]
        seconds: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Clear what the broker retains for decommissioned gateways (status, keyring update):
    /// one named gateway, or every offline gateway of a group. An online gateway is never
    /// touched.
    #[command(
        after_help = "Examples:\n  edgewise fleet prune --gateway line-7\n  edgewise fleet prune --group line --offline"
    )]
    Prune {
        /// The gateway to clear.
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        gateway: Option<String>,
        /// The group whose offline gateways to clear (with --offline).
        #[arg(long, requires = "offline")]
        group: Option<String>,
        /// With --group: every gateway of the group whose status says offline.
        #[arg(long)]
        offline: bool,
        /// Seconds to collect statuses for.
        #[arg(long, default_value_t = 2)]
        seconds: u64,
        #[command(flatten)]
        connection: Connection,
    },
}

/// The gateways of `group`, by their retained statuses (collected for `seconds`).
pub(crate) fn members(
    connection: &Connection,
    group: &str,
    seconds: u64,
) -> anyhow::Result<Vec<String>> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let (client, mut eventloop) = client(connection, "edgewise-members")?;
        let statuses = statuses(&client, &mut eventloop, seconds).await?;
        Ok(statuses
            .into_iter()
            .filter(|(_, s)| s["fleet"]["group"].as_str() == Some(group))
            .map(|(id, _)| id)
            .collect())
    })
}

/// The retained statuses on the broker, by gateway id, collected for `seconds`.
async fn statuses(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    seconds: u64,
) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    client
        .subscribe(namespace::EVERY_STATUS, QoS::AtLeastOnce)
        .await?;
    let mut statuses = BTreeMap::new();
    let collect = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(collect);
    loop {
        tokio::select! {
            () = &mut collect => return Ok(statuses),
            event = eventloop.poll() => {
                if let Event::Incoming(Packet::Publish(p)) = event?
                    && let Ok(status) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                    && let Some(id) = p.topic.strip_prefix("edgewise/").and_then(|t| t.strip_suffix("/status"))
                {
                    statuses.insert(id.to_owned(), status);
                }
            }
        }
    }
}

/// `fleet keys`: the group's decryption keys, as a file `pack --encrypt-for` reads.
fn keys(group: &str, seconds: u64, connection: &Connection) -> anyhow::Result<ExitCode> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let (client, mut eventloop) = client(connection, "edgewise-fleet")?;
        let statuses = statuses(&client, &mut eventloop, seconds).await?;
        let mut out = std::io::stdout().lock();
        let mut missing = 0;
        for (id, status) in statuses
            .iter()
            .filter(|(_, s)| s["fleet"]["group"].as_str() == Some(group))
        {
            match status["decryption_key"].as_str() {
                Some(key) => writeln!(out, "{key}  # {id}")?,
                None => {
                    missing += 1;
                    eprintln!(
                        "gateway {id} has no decryption key: run `edgewise keygen --gateway` on it"
                    );
                }
            }
        }
        Ok(match missing {
            0 => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        })
    })
}

/// `fleet prune`: empty retained messages on every retained topic of the gateways chosen.
fn prune(
    gateway: Option<String>,
    group: Option<String>,
    seconds: u64,
    connection: &Connection,
) -> anyhow::Result<ExitCode> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let (client, mut eventloop) = client(connection, "edgewise-fleet")?;
        let statuses = statuses(&client, &mut eventloop, seconds).await?;
        let chosen: Vec<String> = match (&gateway, &group) {
            (Some(id), _) => {
                match statuses.get(id).map(|s| s["state"].as_str()) {
                    None => bail!("no gateway `{id}` has a status on {}", connection.broker),
                    Some(Some("offline")) => {}
                    Some(_) => bail!("gateway `{id}` is online: stop it first (`systemctl disable --now edgewise` on it)"),
                }
                vec![id.clone()]
            }
            (None, Some(group)) => statuses
                .iter()
                .filter(|(_, s)| s["fleet"]["group"].as_str() == Some(group) && s["state"] == "offline")
                .map(|(id, _)| id.clone())
                .collect(),
            (None, None) => bail!("give --gateway, or --group with --offline"),
        };
        let mut cleared = 0;
        for id in &chosen {
            for topic in [namespace::status(id), namespace::keyring(id)] {
                client.publish(topic, QoS::AtLeastOnce, true, Vec::new()).await?;
                cleared += 1;
            }
            println!("cleared gateway {id}: its status and keyring update");
        }
        let mut acked = 0;
        while acked < cleared {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                acked += 1;
            }
        }
        if chosen.is_empty() {
            println!("nothing to clear");
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn fleet(command: FleetCommand) -> anyhow::Result<ExitCode> {
    let (group, connection, seconds, watch) = match command {
        FleetCommand::Refresh {
            group,
            valid_days,
            connection,
        } => {
            let desired = publish_desired(&connection, &group, valid_days, None)?;
            println!(
                "group {group}: desired state re-signed as version {}, valid until {}",
                desired.version,
                edgewise_signing::keyring::rfc3339(desired.expires_at_ms)
            );
            return Ok(ExitCode::SUCCESS);
        }
        FleetCommand::Status {
            group,
            seconds,
            watch,
            connection,
        } => (group, connection, seconds, watch),
        FleetCommand::Prune {
            gateway,
            group,
            seconds,
            connection,
            ..
        } => return prune(gateway, group, seconds, &connection),
        FleetCommand::Keys {
            group,
            seconds,
            connection,
        } => return keys(&group, seconds, &connection),
        FleetCommand::Serve {
            group,
            listen,
            stale_after_s,
            connection,
        } => {
            let stale_after = Duration::from_secs(stale_after_s);
            return serve::serve(&group, listen, stale_after, &connection);
        }
    };
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let (client, mut eventloop) = client(&connection, "edgewise-fleet")?;
        let statuses = statuses(&client, &mut eventloop, seconds).await?;
        // Written, not printed: `| head` ends the output, not the process with a panic.
        write!(
            std::io::stdout().lock(),
            "{}",
            fleet_table(&group, &statuses)
        )?;
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        // Live: the table again whenever a status changes, until Ctrl-C.
        let mut statuses = statuses;
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let stop = super::shutdown_signal();
        tokio::pin!(stop);
        loop {
            let event = tokio::select! {
                () = &mut stop => return Ok(ExitCode::SUCCESS),
                event = eventloop.poll() => event?,
            };
            if let Event::Incoming(Packet::Publish(p)) = event
                && let Some(id) = p
                    .topic
                    .strip_prefix("edgewise/")
                    .and_then(|t| t.strip_suffix("/status"))
            {
                match serde_json::from_slice::<serde_json::Value>(&p.payload) {
                    Ok(status) => statuses.insert(id.to_owned(), status),
                    Err(_) => statuses.remove(id), // cleared (pruned)
                };
                let table = fleet_table(&group, &statuses);
                let mut out = std::io::stdout().lock();
                if terminal {
                    write!(out, "\x1b[2J\x1b[H{table}")?;
                } else {
                    write!(out, "\n{table}")?;
                }
                out.flush()?;
            }
        }
    })
}

/// The members of `group` among `statuses`, a line each: id, state, desired-state progress,
/// plugins with versions and states.
fn fleet_table(group: &str, statuses: &BTreeMap<String, serde_json::Value>) -> String {
    let members: Vec<&serde_json::Value> = statuses
        .values()
        .filter(|s| s["fleet"]["group"].as_str() == Some(group))
        .collect();
    let mut table = format!("group {group}: {} gateways\n", members.len());
    for s in members {
        let plugins: Vec<String> = s["plugins"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        format!(
                            "{} {} ({})",
                            p["name"].as_str().unwrap_or("?"),
                            p["version"].as_str().unwrap_or("?"),
                            p["state"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let role = if s["fleet"]["canary"] == true {
            " [canary]"
        } else {
            ""
        };
        table.push_str(&format!(
            "  {:<20} {:<8} desired v{}{role} {}{}  {}\n",
            s["gateway"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            s["fleet"]["version"],
            s["fleet"]["state"].as_str().unwrap_or("-"),
            s["fleet"]["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            plugins.join(", ")
        ));
    }
    table
}
