"""The gateway benchmark's Python baseline: what a user writes instead of an Edgewise plugin.

A paho-mqtt subscriber on `plant/+/vibration` that computes the same 8 features (the
training script's own numpy code), runs the same `vibration.onnx` with onnxruntime, and
publishes the diagnosis at QoS 1 to `plant/<machine>/vibration/diagnosis`: the work of the
vibration-fault plugin. Prints `ready` once subscribed.

    python3 paho_onnxruntime.py <port> <model-dir>
"""

import json
import sys

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt

port, model_dir = int(sys.argv[1]), sys.argv[2]
sys.path.insert(0, model_dir)
from train import CLASSES, features  # noqa: E402  (the model's own feature code)

session = ort.InferenceSession(f"{model_dir}/vibration.onnx", providers=["CPUExecutionProvider"])


def on_message(client, _userdata, msg):
    machine = msg.topic.split("/")[1]
    window = json.loads(msg.payload)
    x = np.asarray(window["samples"], dtype=np.float64)
    f = np.asarray([features(window["rpm"], x)], dtype=np.float32)
    (probabilities,) = session.run(["probabilities"], {"features": f})
    p = probabilities[0]
    best = int(np.argmax(p))
    diagnosis = {
        "machine": machine,
        "class": CLASSES[best],
        "confidence": round(float(p[best]), 4),
        "probabilities": {c: round(float(v), 4) for c, v in zip(CLASSES, p)},
    }
    client.publish(f"plant/{machine}/vibration/diagnosis", json.dumps(diagnosis), qos=1)


def on_subscribe(_client, _userdata, _mid, _reason_codes, _properties):
    print("ready", flush=True)


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="python-baseline")
client.on_message = on_message
client.on_subscribe = on_subscribe
client.max_queued_messages_set(0)
client.connect("127.0.0.1", port)
client.subscribe("plant/+/vibration", qos=1)
client.loop_forever()
