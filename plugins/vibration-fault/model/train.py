#!/usr/bin/env python3
"""Trains the vibration-fault classifier from synthetic data and exports it as ONNX.

Synthetic accelerometer windows (512 samples at 2048 Hz from a machine turning at 1200-3000
rpm) carry one of four known fault signatures:

  healthy       small 1x shaft component and noise
  imbalance     a strong 1x component
  misalignment  a strong 2x component (with some 1x)
  bearing       impulses at the outer-race defect frequency (3.58x) ringing a 700 Hz resonance

Amplitudes and noise overlap between classes on purpose, so the task is not trivial. Each
window is reduced to the 8 features that the plugin computes the same way (see
../src/features.rs), and a small MLP (8-16-4, standardisation inside the graph) is trained
with plain numpy. Writes, next to this script:

  vibration.onnx  the model: input `features` f32 [1, 8] -> output `probabilities` f32 [1, 4]
  report.json     the classes, this script's prediction for every held-out window, its accuracy

and ../eval/heldout.jsonl, the held-out windows as `edgewise replay` messages, each with its
true class as `expect`: the plugin's evaluation set (`[evaluate]` in plugin.toml).

Deterministic: the same seed gives the same files.
"""
import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RATE_HZ = 2048
WINDOW = 512
CLASSES = ["healthy", "imbalance", "misalignment", "bearing"]
HERE = pathlib.Path(__file__).resolve().parent


def window(rng, label):
    rpm = rng.uniform(1200, 3000)
    f1 = rpm / 60.0
    t = np.arange(WINDOW) / RATE_HZ
    x = rng.normal(0, rng.uniform(0.05, 0.25), WINDOW)
    x += rng.uniform(0.05, 0.45) * np.sin(2 * np.pi * f1 * t + rng.uniform(0, 2 * np.pi))
    if label == 1:
        x += rng.uniform(0.35, 1.5) * np.sin(2 * np.pi * f1 * t + rng.uniform(0, 2 * np.pi))
    elif label == 2:
        x += rng.uniform(0.3, 1.2) * np.sin(2 * np.pi * 2 * f1 * t + rng.uniform(0, 2 * np.pi))
        x += rng.uniform(0.0, 0.3) * np.sin(2 * np.pi * 3 * f1 * t + rng.uniform(0, 2 * np.pi))
    elif label == 3:
        period = RATE_HZ / (3.58 * f1)
        strength = rng.uniform(0.3, 1.6)
        start = rng.uniform(0, period)
        for k in range(int(WINDOW / period) + 1):
            n0 = int(start + k * period)
            if n0 >= WINDOW:
                break
            n = np.arange(WINDOW - n0)
            x[n0:] += strength * np.exp(-n / 12.0) * np.sin(2 * np.pi * 700 * n / RATE_HZ)
    # Rounded as they are written to heldout.jsonl, so script and plugin see the same numbers.
    return round(rpm, 6), np.round(x, 6)


def goertzel_amplitude(x, freq):
    n = np.arange(len(x))
    phase = 2 * np.pi * freq * n / RATE_HZ
    re = np.sum(x * np.cos(phase))
    im = np.sum(x * np.sin(phase))
    return 2.0 * np.hypot(re, im) / len(x)


def features(rpm, x):
    """The 8 features, in float64; the plugin computes exactly these (features.rs)."""
    f1 = rpm / 60.0
    mean = np.mean(x)
    centred = x - mean
    rms = np.sqrt(np.mean(x * x))
    var = np.mean(centred ** 2)
    kurtosis = np.mean(centred ** 4) / (var * var)
    crest = np.max(np.abs(x)) / rms
    a1, a2, a3 = (goertzel_amplitude(x, k * f1) for k in (1, 2, 3))
    diff_rms = np.sqrt(np.mean(np.diff(x) ** 2))
    return [rms, crest, kurtosis, a1, a2, a3, diff_rms, a2 / (a1 + 1e-3)]


def dataset(rng, count):
    labels = rng.integers(0, len(CLASSES), count)
    raw = [window(rng, int(label)) for label in labels]
    feats = np.array([features(rpm, x) for rpm, x in raw])
    return raw, feats, labels


def train(X, y, hidden=16, epochs=3000, lr=0.05, seed=1):
    rng = np.random.default_rng(seed)
    mean, std = X.mean(0), X.std(0) + 1e-9
    Z = (X - mean) / std
    W1 = rng.normal(0, 1 / np.sqrt(Z.shape[1]), (Z.shape[1], hidden))
    b1 = np.zeros(hidden)
    W2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, len(CLASSES)))
    b2 = np.zeros(len(CLASSES))
    Y = np.eye(len(CLASSES))[y]
    params = [W1, b1, W2, b2]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for step in range(1, epochs + 1):
        H = np.maximum(Z @ W1 + b1, 0)
        logits = H @ W2 + b2
        P = np.exp(logits - logits.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        G = (P - Y) / len(Z)
        gW2, gb2 = H.T @ G, G.sum(0)
        GH = (G @ W2.T) * (H > 0)
        gW1, gb1 = Z.T @ GH, GH.sum(0)
        for i, g in enumerate([gW1, gb1, gW2, gb2]):  # Adam
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] -= lr * (m[i] / (1 - 0.9 ** step)) / (np.sqrt(v[i] / (1 - 0.999 ** step)) + 1e-8)
    return mean, std, W1, b1, W2, b2


def predict(model, X):
    mean, std, W1, b1, W2, b2 = model
    H = np.maximum(((X - mean) / std).astype(np.float32) @ W1.astype(np.float32) + b1.astype(np.float32), 0)
    return np.argmax(H @ W2.astype(np.float32) + b2.astype(np.float32), 1)


def export(model, path):
    mean, std, W1, b1, W2, b2 = (a.astype(np.float32) for a in model)
    init = [numpy_helper.from_array(a, name) for a, name in
            [(mean, "mean"), (std, "std"), (W1, "W1"), (b1, "b1"), (W2, "W2"), (b2, "b2")]]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "W2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "vibration_fault",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, len(CLASSES)])],
        init,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="edgewise-train.py")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def main():
    rng = np.random.default_rng(20261128)
    _, X_train, y_train = dataset(rng, 3000)
    raw_test, X_test, y_test = dataset(rng, 400)
    model = train(X_train, y_train)
    predictions = predict(model, X_test)
    accuracy = float(np.mean(predictions == y_test))
    export(model, HERE / "vibration.onnx")
    (HERE.parent / "eval").mkdir(exist_ok=True)
    with open(HERE.parent / "eval" / "heldout.jsonl", "w") as out:
        for i, ((rpm, x), label) in enumerate(zip(raw_test, y_test)):
            payload = {"machine": f"pump-{i % 7}", "rpm": rpm, "rate_hz": RATE_HZ,
                       "samples": [float(s) for s in x]}
            line = {"topic": f"plant/pump-{i % 7}/vibration", "payload": payload,
                    "expect": CLASSES[label]}
            out.write(json.dumps(line) + "\n")
    report = {"classes": CLASSES, "labels": [CLASSES[i] for i in y_test],
              "predictions": [CLASSES[i] for i in predictions], "accuracy": accuracy}
    (HERE / "report.json").write_text(json.dumps(report))
    print(f"vibration-fault: held-out accuracy {accuracy:.4f} on {len(y_test)} windows", file=sys.stderr)


if __name__ == "__main__":
    main()
