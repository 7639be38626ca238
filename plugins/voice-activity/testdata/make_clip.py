#!/usr/bin/env python3
"""Makes speech.wav, a 16 kHz mono clip of spoken commands between silences, and
speech.json, where the speech is. Run once; both files are committed.

Needs espeak-ng and sox (Debian packages). Each utterance is synthesised, resampled to 16 kHz,
and placed after a known stretch of silence with low background noise; its speech extent is
where the synthesised signal first and last exceeds 2% of full scale, so speech.json marks
only real speech, not the synthesiser's own padding.
"""
import json
import pathlib
import random
import struct
import subprocess
import tempfile
import wave

RATE = 16000
HERE = pathlib.Path(__file__).resolve().parent
# (silence before, in seconds; words)
SCRIPT = [
    (1.2, "Turn on the kitchen lights."),
    (1.5, "Set the living room temperature to twenty one degrees."),
    (1.8, "Is the garage door closed?"),
]
TAIL_SILENCE = 1.4


def synthesise(text):
    with tempfile.TemporaryDirectory() as tmp:
        raw, resampled = f"{tmp}/raw.wav", f"{tmp}/16k.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", raw, text], check=True)
        subprocess.run(["sox", raw, "-r", str(RATE), "-c", "1", "-b", "16", resampled], check=True)
        with wave.open(resampled) as w:
            frames = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(frames) // 2}h", frames))


def main():
    rng = random.Random(7)
    noise = lambda n: [int(rng.gauss(0, 30)) for _ in range(n)]  # about -60 dBFS
    samples, segments = [], []
    for silence, text in SCRIPT:
        samples += noise(int(silence * RATE))
        speech = synthesise(text)
        loud = [i for i, s in enumerate(speech) if abs(s) > 0.02 * 32767]
        start, end = len(samples) + loud[0], len(samples) + loud[-1]
        segments.append({"text": text, "start_ms": round(start * 1000 / RATE), "end_ms": round(end * 1000 / RATE)})
        samples += [max(-32768, min(32767, s + n)) for s, n in zip(speech, noise(len(speech)))]
    samples += noise(int(TAIL_SILENCE * RATE))
    with wave.open(str(HERE / "speech.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    (HERE / "speech.json").write_text(json.dumps({"rate_hz": RATE, "segments": segments}, indent=2) + "\n")


if __name__ == "__main__":
    main()
