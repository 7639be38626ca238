#!/usr/bin/env python3
"""Writes the tiny ONNX models the tests use; the outputs are committed (beside this script, and
plugins/hostile/model/square_512.onnx). One more is committed here that this script does not
write: vibration.int8.onnx, the vibration-fault classifier quantised to int8 by
`scripts/quantize vibration-fault` (the test command does not install onnxruntime).

  double_i64.onnx  `ids` i64 [1, 4] -> `doubled` i64 [1, 4] = ids * 2, and
                   `as_float` f32 [1, 4] = float(ids): i64 in, i64 and f32 out.
"""
import pathlib

import onnx
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).resolve().parent
graph = helper.make_graph(
    [
        helper.make_node("Mul", ["ids", "two"], ["doubled"]),
        helper.make_node("Cast", ["ids"], ["as_float"], to=TensorProto.FLOAT),
    ],
    "double_i64",
    [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
    [
        helper.make_tensor_value_info("doubled", TensorProto.INT64, [1, 4]),
        helper.make_tensor_value_info("as_float", TensorProto.FLOAT, [1, 4]),
    ],
    [helper.make_tensor("two", TensorProto.INT64, [], [2])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, HERE / "double_i64.onnx")


def matmuls(name, count):
    """`x` f32 [512, 512] multiplied by itself `count` times: no weights, so a tiny file whose
    one compute costs as much as `count` products of 512 x 512 matrices."""
    nodes, last = [], "x"
    for i in range(count):
        out = "y" if i == count - 1 else f"t{i}"
        nodes.append(helper.make_node("MatMul", [last, "x"], [out]))
        last = out
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 512])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


# The hostile plugin's model: one product, a few milliseconds, a 1 MiB output.
onnx.save(matmuls("square_512", 1), HERE.parent.parent / "plugins/hostile/model/square_512.onnx")
# Forty products: one compute far longer than a 20 ms deadline, refused at load.
onnx.save(matmuls("matmul_chain", 40), HERE / "matmul_chain.onnx")
