#!/usr/bin/env python3
"""Makes speech.jsonl, voice-activity's evaluation set, from ../testdata/speech.wav and
../testdata/speech.json. Run once; the output is committed.

Two streams, as `edgewise replay` messages of raw PCM (s16le, 16 kHz, mono) in 100 ms chunks:

  audio/kitchen/pcm  the spoken commands of speech.wav; its first line's `expect` lists the
                     labelled speech segments [start_ms, end_ms]
  audio/hall/pcm     6 s of low background noise (seeded, so the file is the same every run);
                     `expect` is [], so any speech found there is false speech time
"""
import base64
import json
import pathlib
import random
import struct
import wave

HERE = pathlib.Path(__file__).resolve().parent
TESTDATA = HERE.parent / "testdata"
RATE = 16000
CHUNK = RATE // 10  # samples: 100 ms


def lines(topic, pcm, expect):
    for i, at in enumerate(range(0, len(pcm), CHUNK * 2)):
        line = {"topic": topic, "payload_base64": base64.b64encode(pcm[at:at + CHUNK * 2]).decode()}
        if i == 0:
            line["expect"] = expect
        yield json.dumps(line)


def main():
    with wave.open(str(TESTDATA / "speech.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        speech = w.readframes(w.getnframes())
    segments = [[s["start_ms"], s["end_ms"]] for s in json.loads((TESTDATA / "speech.json").read_text())["segments"]]
    rng = random.Random(20261205)
    noise = struct.pack(f"<{6 * RATE}h", *(int(rng.gauss(0, 120)) for _ in range(6 * RATE)))
    out = list(lines("audio/kitchen/pcm", speech, segments)) + list(lines("audio/hall/pcm", noise, []))
    (HERE / "speech.jsonl").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
