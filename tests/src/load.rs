//! A load generator and sink for the benchmarks: rumqttc clients that send numbered messages,
//! paced or as a flood, and time each one's output.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// What one run saw.
pub struct Figures {
    /// Messages sent.
    pub sent: usize,
    /// Outputs received.
    pub received: usize,
    /// From the first send to the last output.
    pub elapsed: Duration,
    /// Each received message's latency, publisher to sink.
    pub latencies: Vec<Duration>,
}

impl Figures {
    /// Outputs per second.
    pub fn per_second(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `p` (0 to 1).
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let ix = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(ix).copied().unwrap_or_default()
    }
}

/// One kind of load: where message `i` goes, what it carries, and where its output comes back.
pub struct Load<'a> {
    /// The topic of message `i`.
    pub input_topic: &'a dyn Fn(usize) -> String,
    /// The payload of message `i`.
    pub payload: &'a dyn Fn(usize) -> Vec<u8>,
    /// Where the outputs come back.
    pub output_filter: String,
    /// The sequence number an output topic answers, if it is one of this run's.
    pub sequence_of: &'a dyn Fn(&str) -> Option<usize>,
}

/// Client options for the load generator and the sink.
pub fn options(id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// A client and its event loop with TCP_NODELAY, as the gateway connects.
pub fn client(options: MqttOptions, capacity: usize) -> (AsyncClient, rumqttc::EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options, capacity);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Sends `count` messages of `load` at QoS 1, paced at `rate` per second or as fast as the
/// broker takes them, and waits for their outputs (until 20 s pass without one).
pub async fn drive(
    port: u16,
    run: &str,
    load: &Load<'_>,
    count: usize,
    rate: Option<f64>,
) -> Figures {
    let (sink, mut sink_loop) = client(options(&format!("sink-{run}"), port), 1000);
    sink.subscribe(load.output_filter.clone(), QoS::AtLeastOnce)
        .await
        .expect("sink subscribes");
    loop {
        match sink_loop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("sink: {e}"),
        }
    }
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let sink_task = tokio::spawn(async move {
        while let Ok(event) = sink_loop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = arrivals_tx.send((p.topic, Instant::now()));
            }
        }
    });

    let (source, mut source_loop) = client(options(&format!("source-{run}"), port), 100);
    let source_task = tokio::spawn(async move { while source_loop.poll().await.is_ok() {} });
    let mut sent_at = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        if let Some(rate) = rate {
            tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into())
                .await;
        }
        sent_at.push(Instant::now());
        source
            .publish(
                (load.input_topic)(i),
                QoS::AtLeastOnce,
                false,
                (load.payload)(i),
            )
            .await
            .expect("source publishes");
    }

    let mut received_at: HashMap<usize, Instant> = HashMap::new();
    while received_at.len() < count {
        match tokio::time::timeout(Duration::from_secs(20), arrivals.recv()).await {
            Ok(Some((topic, at))) => {
                if let Some(seq) = (load.sequence_of)(&topic) {
                    received_at.entry(seq).or_insert(at);
                }
            }
            _ => break,
        }
    }
    sink_task.abort();
    source_task.abort();
    let last = received_at.values().max().copied().unwrap_or(start);
    let latencies = received_at
        .iter()
        .map(|(seq, at)| at.duration_since(sent_at[*seq]))
        .collect();
    Figures {
        sent: count,
        received: received_at.len(),
        elapsed: last.duration_since(start),
        latencies,
    }
}
