#!/usr/bin/env python3
"""Writes the tiny ONNX models the tests use; the outputs are committed beside this script.

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
