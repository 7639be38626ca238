#!/usr/bin/env python3
"""Writes a small convolutional network as ONNX: a model that takes over a millisecond on a
2-core gateway, to measure the plugin's overhead on heavy inference. Its weights are small
(about 60 KB), so the measurement is about compute, not about where 30 MB of weights happen
to land in memory. Input `image` f32 [1, 3, 96, 96] -> output `embedding` f32 [1, 32].
Usage: make-bench-model.py OUT.onnx. Random weights, fixed seed.

`make-bench-model.py OUT.onnx mlp2mb` writes instead an MLP whose weights are 2 MiB
(features f32 [1, 8] -> 512 -> 1024 -> probabilities [1, 4]), for the hot-swap benchmark's
"plugin with a 2 MB model"."""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(1)

if len(sys.argv) > 2 and sys.argv[2] == "mlp2mb":
    sizes = [8, 512, 1024, 4]
    nodes, init, x = [], [], "features"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        init += [numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}")]
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]))
        x = f"m{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1))
    graph = helper.make_graph(nodes, "bench_mlp2mb", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 4])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, sys.argv[1])
    sys.exit(0)

layers = [(3, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1)]  # (in, out, stride), 3x3 kernels
nodes, init, x = [], [], "image"
for i, (cin, cout, stride) in enumerate(layers):
    w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
    init += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
    nodes += [
        helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride, stride]),
        helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
    ]
    x = f"r{i}"
nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["embedding"])]
graph = helper.make_graph(nodes, "bench_convnet", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 96, 96])],
                          [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 32])], init)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
