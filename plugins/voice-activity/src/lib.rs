//! Smart home: detects speech in a 16 kHz audio stream with the Silero VAD model.
//!
//! Input on `audio/<device>/pcm`: raw PCM, signed 16-bit little-endian, mono, 16 kHz, in
//! chunks of any size. Every 512 new samples (32 ms) the `silero-vad` model runs on them with
//! the 64 samples before as context and its recurrent state carried over. Speech starts when
//! the speech probability reaches `threshold`, and ends once it has stayed under
//! `threshold - 0.15` for `min-silence-ms`. Publishes to `audio/<device>/vad`:
//! `{"event": "speech-start", "at_ms"}` and `{"event": "speech-end", "at_ms", "start_ms"}`,
//! times in milliseconds of audio since the device's stream began.

use std::collections::HashMap;

use edgewise_guest::nn::{Model, Tensor};
use edgewise_guest::{Message, Plugin, Result, export_plugin, publish_json, setting};
use serde::Serialize;

const RATE_HZ: u64 = 16_000;
const FRAME: usize = 512;
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

#[derive(Serialize)]
struct Event {
    event: &'static str,
    at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_ms: Option<u64>,
}

/// One device's audio stream.
struct Stream {
    /// Samples waiting for a full frame.
    pending: Vec<f32>,
    /// The last `CONTEXT` samples of the previous frame.
    context: [f32; CONTEXT],
    /// The model's recurrent state.
    state: Vec<f32>,
    /// Samples consumed by the model so far.
    position: u64,
    /// Where the current speech began, if in speech.
    speech_from: Option<u64>,
    /// Where the current run of silence inside speech began.
    silence_from: Option<u64>,
}

impl Stream {
    fn new() -> Self {
        Stream {
            pending: Vec::with_capacity(2 * FRAME),
            context: [0.0; CONTEXT],
            state: vec![0.0; STATE_LEN],
            position: 0,
            speech_from: None,
            silence_from: None,
        }
    }
}

struct VoiceActivity {
    model: Model,
    threshold: f32,
    min_silence_samples: u64,
    streams: HashMap<String, Stream>,
}

impl Plugin for VoiceActivity {
    fn init() -> Result<Self> {
        let min_silence_ms: u64 = setting("min-silence-ms", 300)?;
        Ok(VoiceActivity {
            model: Model::by_name("silero-vad")?,
            threshold: setting("threshold", 0.5)?,
            min_silence_samples: min_silence_ms * RATE_HZ / 1000,
            streams: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        let device = msg.topic.split('/').nth(1).unwrap_or("unknown").to_owned();
        let stream = self
            .streams
            .entry(device.clone())
            .or_insert_with(Stream::new);
        stream
            .pending
            .extend(msg.pcm_i16().into_iter().map(|s| f32::from(s) / 32768.0));
        let mut events = Vec::new();
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
            let frame_start = stream.position;
            stream.position += FRAME as u64;
            events.extend(step(
                stream,
                probability,
                frame_start,
                self.threshold,
                self.min_silence_samples,
            ));
        }
        for event in events {
            publish_json(&format!("audio/{device}/vad"), &event)?;
        }
        Ok(())
    }
}

/// Advances the speech/silence state machine by one frame starting at sample `at`.
fn step(
    s: &mut Stream,
    probability: f32,
    at: u64,
    threshold: f32,
    min_silence: u64,
) -> Option<Event> {
    let ms = |samples: u64| samples * 1000 / RATE_HZ;
    match s.speech_from {
        None if probability >= threshold => {
            s.speech_from = Some(at);
            Some(Event {
                event: "speech-start",
                at_ms: ms(at),
                start_ms: None,
            })
        }
        None => None,
        Some(_) if probability >= threshold - 0.15 => {
            s.silence_from = None;
            None
        }
        Some(start) => {
            let silence_from = *s.silence_from.get_or_insert(at);
            if s.position - silence_from < min_silence {
                return None;
            }
            s.speech_from = None;
            s.silence_from = None;
            Some(Event {
                event: "speech-end",
                at_ms: ms(silence_from),
                start_ms: Some(ms(start)),
            })
        }
    }
}

export_plugin!(VoiceActivity);
