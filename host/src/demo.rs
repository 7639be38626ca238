//! `edgewise demo`: a gateway, a broker and sensor streams on one machine, nothing installed.
//!
//! Starts an embedded broker (rumqttd) on a free local port, packs the example plugins into
//! bundles signed with a throwaway release key and installs them in a temporary store (the
//! path every production plugin takes), runs the gateway against the broker, and plays simulated streams into it: oven temperatures (smart home,
//! `threshold`), accelerometer windows from pumps (industrial IoT, `vibration-fault`), and a
//! kitchen recording in 32 ms frames (smart home, `voice-activity`). A watcher prints what the
//! plugins publish. Stops on Ctrl-C, or after a set time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::TcpStream;
use tokio::sync::watch;

use edgewise_signing::bundle::{self, PackError};
use edgewise_signing::{Keyring, SecretKey};

use crate::config::Config;
use crate::gateway::{self, Gateway, GatewayError};
use crate::management::store::{Admit, Store, StoreError};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// No free port, or the embedded broker did not come up.
    #[error("embedded broker: {0}")]
    Broker(String),
    /// The generated gateway configuration was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The gateway failed.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// An example plugin could not be packed.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// The demo's store or key could not be set up.
    #[error("demo store: {0}")]
    Store(String),
}

impl From<StoreError> for DemoError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

/// The example plugins the demo runs.
const EXAMPLES: [&str; 3] = ["threshold", "vibration-fault", "voice-activity"];

/// What the watcher shows: everything the example plugins publish, and the gateway's status.
const WATCHED: [&str; 5] = [
    "alerts/#",
    "plant/+/vibration/diagnosis",
    "audio/+/vad",
    "edgewise/demo/dead-letter/#",
    "edgewise/demo/status",
];

/// Runs the demo with the plugins in `plugins` until `stop` completes.
pub async fn run(
    plugins: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| DemoError::Broker(format!("no free port: {e}")))?
        .port();
    start_embedded_broker(port)?;
    wait_for_port(port).await?;
    println!(
        "embedded MQTT broker on 127.0.0.1:{port}; gateway `demo` with the plugins in {}",
        plugins.display()
    );

    let workdir = tempfile::tempdir().map_err(|e| DemoError::Store(e.to_string()))?;
    let keyring = install_examples(plugins, workdir.path())?;
    let config = Config::parse(
        &format!(
            "gateway-id = \"demo\"\nkeyring = \"{}\"\nstore = \"{}\"\n[broker]\nurl = \"mqtt://127.0.0.1:{port}\"\n[metrics]\npublish-interval-s = 0\n",
            keyring.display(),
            workdir.path().join("store").display(),
        ),
        Path::new("demo.toml"),
    )?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let options = gateway::Options::default();
    let gateway = Gateway::start(config, options).await?;
    let gateway = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let (offline_tx, offline_rx) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(watch_outputs(port, offline_tx));
    let players = [
        tokio::spawn(play_oven(port)),
        tokio::spawn(play_pumps(
            port,
            plugins.join("vibration-fault/eval/heldout.jsonl"),
        )),
        tokio::spawn(play_audio(
            port,
            plugins.join("voice-activity/testdata/speech.wav"),
        )),
    ];

    stop.await;
    println!("stopping");
    for player in players {
        player.abort();
    }
    let _ = stop_tx.send(true);
    let result = gateway
        .await
        .map_err(|e| DemoError::Broker(format!("gateway task: {e}")))?;
    // Show the gateway's goodbye (its offline status) before leaving, if it comes soon.
    let _ = tokio::time::timeout(Duration::from_secs(3), offline_rx).await;
    watcher.abort();
    result.map_err(DemoError::from)
}

/// Signs the examples with a new throwaway key and installs them in `<dir>/store`; returns the
/// keyring that trusts that key.
fn install_examples(plugins: &Path, dir: &Path) -> Result<PathBuf, DemoError> {
    let key = SecretKey::generate().map_err(|e| DemoError::Store(e.to_string()))?;
    let keyring_path = dir.join("keyring.toml");
    let text = format!(
        "version = 1\n\n[[keys]]\nname = \"demo\"\nrole = \"release\"\npublic-key = \"{}\"\n",
        key.public()
    );
    std::fs::write(&keyring_path, &text).map_err(|e| DemoError::Store(e.to_string()))?;
    let keyring =
        Keyring::parse(&text, &keyring_path).map_err(|e| DemoError::Store(e.to_string()))?;
    let store = Store::open(&dir.join("store"), keyring, bundle::DEFAULT_MAX_BYTES)?;
    for name in EXAMPLES {
        let packed = bundle::pack(&plugins.join(name), &key, false, &mut |_| {})?;
        store.install(&packed.to_bytes(), Path::new(name), Admit::Update)?;
    }
    println!(
        "packed {} into bundles signed by a throwaway release key ({}), installed in a temporary store",
        EXAMPLES.join(", "),
        key.public().id()
    );
    Ok(keyring_path)
}

/// Starts the embedded broker (rumqttd, MQTT 3.1.1) on `127.0.0.1:port`, on a thread of its
/// own for the life of the process. rumqttd is strict where Mosquitto is lenient (it drops a
/// client that acknowledges out of order), which is why the tests run against it too.
#[cfg(feature = "demo-broker")]
pub fn start_embedded_broker(port: u16) -> Result<(), DemoError> {
    let config: rumqttd::Config = toml::from_str(&format!(
        r#"
        id = 0
        [router]
        id = 0
        max_connections = 100
        max_outgoing_packet_count = 200
        max_segment_size = 10485760
        max_segment_count = 10
        [v4.1]
        name = "v4-1"
        listen = "127.0.0.1:{port}"
        next_connection_delay_ms = 1
        [v4.1.connections]
        connection_timeout_ms = 60000
        max_payload_size = 1048576
        max_inflight_count = 100
        dynamic_filters = true
        "#
    ))
    .map_err(|e| DemoError::Broker(format!("configuration: {e}")))?;
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = rumqttd::Broker::new(config).start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| DemoError::Broker(format!("thread: {e}")))?;
    Ok(())
}

/// Built without the `demo-broker` feature: there is no broker to start.
#[cfg(not(feature = "demo-broker"))]
pub fn start_embedded_broker(_port: u16) -> Result<(), DemoError> {
    Err(DemoError::Broker(
        "this edgewise was built without its embedded broker (the `demo-broker` feature): \
         run the demo from a default build (`scripts/demo`)"
            .into(),
    ))
}

async fn wait_for_port(port: u16) -> Result<(), DemoError> {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(DemoError::Broker(format!("nothing listens on port {port}")))
}

fn client(port: u16, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(2 << 20, 2 << 20);
    AsyncClient::new(options, 256)
}

/// Polls a client's event loop forever, so that its publishes go out.
fn drive(mut eventloop: rumqttc::EventLoop) {
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
}

async fn watch_outputs(port: u16, offline: tokio::sync::oneshot::Sender<()>) {
    let mut offline = Some(offline);
    let (watcher, mut eventloop) = client(port, "edgewise-demo-watcher");
    for filter in WATCHED {
        let _ = watcher.subscribe(filter, QoS::AtMostOnce).await;
    }
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let text = String::from_utf8_lossy(&p.payload);
                let text: String = text.chars().take(160).collect();
                println!("  {:<36} {text}", p.topic);
                if p.topic == "edgewise/demo/status" && text.contains("offline") {
                    offline.take().map(|tx| tx.send(()));
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// An oven heating past 80 °C and cooling down, a reading every half second.
async fn play_oven(port: u16) {
    let (player, eventloop) = client(port, "edgewise-demo-oven");
    drive(eventloop);
    let profile = [
        21.5, 40.0, 65.0, 79.0, 81.2, 84.9, 83.0, 79.1, 76.4, 50.0, 22.3,
    ];
    for value in profile.iter().cycle() {
        let payload = format!("{{\"value\": {value}}}");
        let _ = player
            .publish("sensors/oven/reading", QoS::AtLeastOnce, false, payload)
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Accelerometer windows from the vibration model's held-out set, one a second.
async fn play_pumps(port: u16, windows: PathBuf) {
    let Ok(text) = std::fs::read_to_string(&windows) else {
        println!(
            "(no pump data: {} is missing; run scripts/prepare-models)",
            windows.display()
        );
        return;
    };
    let (player, eventloop) = client(port, "edgewise-demo-pumps");
    drive(eventloop);
    for line in text.lines().cycle() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(topic), Some(payload)) = (message["topic"].as_str(), message.get("payload"))
        else {
            continue;
        };
        let _ = player
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The kitchen recording in 32 ms frames, in real time, on a loop.
async fn play_audio(port: u16, wav: PathBuf) {
    let pcm = match std::fs::read(&wav)
        .map_err(|e| e.to_string())
        .and_then(|b| wav_pcm(&b))
    {
        Ok((_, pcm)) => pcm,
        Err(e) => {
            println!("(no audio: {}: {e})", wav.display());
            return;
        }
    };
    let (player, eventloop) = client(port, "edgewise-demo-audio");
    drive(eventloop);
    let mut tick = tokio::time::interval(Duration::from_millis(32));
    for frame in pcm.chunks(1024).cycle() {
        tick.tick().await;
        let _ = player
            .publish("audio/kitchen/pcm", QoS::AtMostOnce, false, frame.to_vec())
            .await;
    }
}

/// The sample rate and the samples (little-endian bytes) of a 16-bit PCM WAV file.
pub fn wav_pcm(bytes: &[u8]) -> Result<(u32, Vec<u8>), String> {
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err("not a WAV file".into());
    }
    let (mut at, mut rate, mut data) = (12, None, None);
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let body = bytes.get(at + 8..at + 8 + len).ok_or("truncated chunk")?;
        match &header[..4] {
            b"fmt " if body.len() >= 16 => {
                if u16::from_le_bytes([body[14], body[15]]) != 16 {
                    return Err("not 16-bit PCM".into());
                }
                rate = Some(u32::from_le_bytes([body[4], body[5], body[6], body[7]]));
            }
            b"data" => data = Some(body.to_vec()),
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    Ok((rate.ok_or("no fmt chunk")?, data.ok_or("no data chunk")?))
}
