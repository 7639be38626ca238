//! Smart home: detects speech in a 16 kHz audio stream with the Silero VAD model.
//!
//! Input on `audio/<device>/pcm`: `audio/pcm; rate=16000; channels=1; format=s16le`, raw
//! samples in chunks of any size (an odd byte waits for the next chunk). A chunk that is plainly
//! something else (a WAV, Ogg, FLAC or MP3 file, JSON) is refused: its message goes to the dead
//! letters, and the stream goes on. Every 512 new samples (32 ms) the `silero-vad` model runs on
//! them with the 64 samples before as context and its recurrent state carried over; the
//! [`segmenter`] turns the probabilities into speech segments (threshold with hysteresis,
//! minimum speech, minimum silence, maximum length). Publishes to `audio/<device>/vad`:
//!
//! - `{"event": "speech-start", "at_ms", "time_ms"}`
//! - `{"event": "speech-end", "at_ms", "start_ms", "time_ms", "start_time_ms", "cut"}`
//!
//! `at_ms`/`start_ms` are ms of audio since this plugin instance began the device's stream
//! (they restart with the instance: a restart, a swap); `time_ms`/`start_time_ms` are the
//! wall-clock times (ms since the Unix epoch) of those samples, reckoned from when the gateway
//! received the chunk that holds the newest sample. `cut` says the segment reached
//! `max-speech-ms` and a new one starts where it ends. At most `max-devices` streams are kept;
//! the one heard from least recently is dropped for a new device.

mod segmenter;

use std::collections::HashMap;

use edgewise_guest::nn::{Model, Tensor};
use edgewise_guest::{Error, Message, Plugin, Result, export_plugin, publish_json, setting};
use serde::Serialize;

use self::segmenter::{Change, Rules, Segmenter};

const RATE_HZ: u64 = 16_000;
const FRAME: usize = 512;
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

/// The input format, as refusals name it.
const FORMAT: &str = "audio/pcm; rate=16000; channels=1; format=s16le";

#[derive(Serialize)]
struct Event {
    event: &'static str,
    at_ms: u64,
    time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cut: Option<bool>,
}

/// One device's audio stream.
struct Stream {
    /// Samples waiting for a full frame.
    pending: Vec<f32>,
    /// The odd byte of the last chunk, waiting for its pair.
    carry: Option<u8>,
    /// The last `CONTEXT` samples of the previous frame.
    context: [f32; CONTEXT],
    /// The model's recurrent state.
    state: Vec<f32>,
    /// Samples consumed by the model so far.
    position: u64,
    segmenter: Segmenter,
    /// When the message that last fed it arrived (for dropping the stalest stream).
    heard_at: u64,
}

impl Stream {
    fn new() -> Self {
        Stream {
            pending: Vec::with_capacity(2 * FRAME),
            carry: None,
            context: [0.0; CONTEXT],
            state: vec![0.0; STATE_LEN],
            position: 0,
            segmenter: Segmenter::default(),
            heard_at: 0,
        }
    }

    /// Appends a chunk's samples, with the odd byte of the last chunk in front.
    fn feed(&mut self, bytes: &[u8]) {
        let mut bytes = bytes.iter().copied();
        let mut pair = |first: u8, second: u8| {
            self.pending
                .push(f32::from(i16::from_le_bytes([first, second])) / 32768.0)
        };
        if let Some(first) = self.carry.take() {
            match bytes.next() {
                Some(second) => pair(first, second),
                None => {
                    self.carry = Some(first);
                    return;
                }
            }
        }
        loop {
            match (bytes.next(), bytes.next()) {
                (Some(first), Some(second)) => pair(first, second),
                (Some(odd), None) => {
                    self.carry = Some(odd);
                    return;
                }
                _ => return,
            }
        }
    }
}

struct VoiceActivity {
    model: Model,
    rules: Rules,
    max_devices: usize,
    streams: HashMap<String, Stream>,
}

impl Plugin for VoiceActivity {
    fn init() -> Result<Self> {
        let samples = |ms: u64| ms * RATE_HZ / 1000;
        let threshold: f32 = setting("threshold", 0.5)?;
        let hysteresis: f32 = setting("hysteresis", 0.15)?;
        if threshold - hysteresis <= 0.0 {
            // The probability never falls below zero: speech would never end.
            return Err(Error::msg(format!(
                "threshold {threshold} with hysteresis {hysteresis}: speech would never end; the threshold must be above the hysteresis"
            )));
        }
        let min_speech_ms: u64 = setting("min-speech-ms", 250)?;
        let max_speech_ms: u64 = setting("max-speech-ms", 30_000)?;
        if max_speech_ms <= min_speech_ms {
            return Err(Error::msg(format!(
                "max-speech-ms {max_speech_ms} must be above min-speech-ms {min_speech_ms}"
            )));
        }
        Ok(VoiceActivity {
            model: Model::by_name("silero-vad")?,
            rules: Rules {
                threshold,
                hysteresis,
                min_speech: samples(min_speech_ms),
                min_silence: samples(setting("min-silence-ms", 300)?),
                max_speech: samples(max_speech_ms),
            },
            max_devices: setting("max-devices", 32)?,
            streams: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        check_format(&msg.payload).map_err(|what| {
            Error::msg(format!(
                "the chunk on {} is {what}, not {FORMAT}: send the samples alone",
                msg.topic
            ))
        })?;
        let device = msg.topic.split('/').nth(1).unwrap_or("unknown").to_owned();
        self.make_room_for(&device);
        let stream = self
            .streams
            .entry(device.clone())
            .or_insert_with(Stream::new);
        stream.heard_at = msg.received_at_ms;
        stream.feed(&msg.payload);
        // The newest sample was heard when the chunk arrived: earlier ones before it.
        let newest = stream.position + stream.pending.len() as u64;
        let wall = |at: u64| {
            msg.received_at_ms
                .saturating_sub(newest.saturating_sub(at) * 1000 / RATE_HZ)
        };
        let mut changes = Vec::new();
        while stream.pending.len() >= FRAME {
            let frame: Vec<f32> = stream.pending.drain(..FRAME).collect();
            let mut input = Vec::with_capacity(CONTEXT + FRAME);
            input.extend_from_slice(&stream.context);
            input.extend_from_slice(&frame);
            let out = self.model.run(&[
                (
                    "input",
                    Tensor::f32(&[1, (CONTEXT + FRAME) as u32], &input)?,
                ),
                ("state", Tensor::f32(&[2, 1, 128], &stream.state)?),
            ])?;
            let probability = out.f32("output")?.first().copied().unwrap_or(0.0);
            stream.state = out.f32("stateN")?;
            stream.context.copy_from_slice(&frame[FRAME - CONTEXT..]);
            let at = stream.position;
            stream.position += FRAME as u64;
            stream
                .segmenter
                .step(probability, at, stream.position, &self.rules, &mut changes);
        }
        let ms = |samples: u64| samples * 1000 / RATE_HZ;
        for change in changes {
            let event = match change {
                Change::Start(at) => Event {
                    event: "speech-start",
                    at_ms: ms(at),
                    time_ms: wall(at),
                    start_ms: None,
                    start_time_ms: None,
                    cut: None,
                },
                Change::End { from, at, cut } => Event {
                    event: "speech-end",
                    at_ms: ms(at),
                    time_ms: wall(at),
                    start_ms: Some(ms(from)),
                    start_time_ms: Some(wall(from)),
                    cut: Some(cut),
                },
            };
            publish_json(&format!("audio/{device}/vad"), &event)?;
        }
        Ok(())
    }
}

impl VoiceActivity {
    /// Drops the stream heard from least recently when a new device would pass `max-devices`:
    /// the plugin's memory stays bounded whatever device names arrive.
    fn make_room_for(&mut self, device: &str) {
        if self.streams.contains_key(device) || self.streams.len() < self.max_devices {
            return;
        }
        let stalest = self
            .streams
            .iter()
            .min_by_key(|(_, s)| s.heard_at)
            .map(|(name, _)| name.clone());
        if let Some(name) = stalest {
            self.streams.remove(&name);
            edgewise_guest::warn!(
                "{} devices at once (max-devices): dropped the stream of `{name}`, heard from least recently, for `{device}`",
                self.max_devices
            );
        }
    }
}

/// What a chunk is, if it is plainly not raw samples.
fn check_format(payload: &[u8]) -> std::result::Result<(), &'static str> {
    let what = if payload.starts_with(b"RIFF") && payload.get(8..12) == Some(b"WAVE") {
        "a WAV file"
    } else if payload.starts_with(b"OggS") {
        "an Ogg file"
    } else if payload.starts_with(b"fLaC") {
        "a FLAC file"
    } else if payload.starts_with(b"ID3") {
        "an MP3 file"
    } else if matches!(payload.first(), Some(b'{' | b'['))
        && std::str::from_utf8(payload).is_ok_and(|t| t.trim_end().ends_with(['}', ']']))
    {
        "JSON text"
    } else {
        return Ok(());
    };
    Err(what)
}

export_plugin!(VoiceActivity);
