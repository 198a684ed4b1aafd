#!/usr/bin/env python3
"""Writes int8 quantize/dequantize-wrapped Softmax models with the `onnx` package and
onnxruntime's outputs for them.

usage: make_qdq_softmax.py OUT_DIR
  qdq_softmax.onnx        x → QuantizeLinear(0.05, 0) → DequantizeLinear → Softmax(axis -1)
                          → QuantizeLinear(1/256, -128) → DequantizeLinear → y   (x: [N, 10])
  float_softmax.onnx      y = Softmax(x) (the same shapes; no quantization)
  qdq_softmax.in.npy      inputs, 3 rows spread over [-4, 4)
  qdq_softmax.out.npy     onnxruntime's output for qdq_softmax.onnx
  float_softmax.out.npy   onnxruntime's output for float_softmax.onnx
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def model(quantized):
    if quantized:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s_in", "zp_in"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s_in", "zp_in"], ["xd"]),
            helper.make_node("Softmax", ["xd"], ["p"], axis=-1),
            helper.make_node("QuantizeLinear", ["p", "s_out", "zp_out"], ["pq"]),
            helper.make_node("DequantizeLinear", ["pq", "s_out", "zp_out"], ["y"]),
        ]
        inits = [
            numpy_helper.from_array(np.array(0.05, np.float32), "s_in"),
            numpy_helper.from_array(np.array(0, np.int8), "zp_in"),
            numpy_helper.from_array(np.array(1 / 256, np.float32), "s_out"),
            numpy_helper.from_array(np.array(-128, np.int8), "zp_out"),
        ]
    else:
        nodes, inits = [helper.make_node("Softmax", ["x"], ["y"], axis=-1)], []
    g = helper.make_graph(
        nodes, "qdq_softmax" if quantized else "float_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    x = np.random.default_rng(0).uniform(-4, 4, size=(3, 10)).astype(np.float32)
    np.save(os.path.join(out, "qdq_softmax.in.npy"), x)
    for name, quantized in [("qdq_softmax", True), ("float_softmax", False)]:
        path = os.path.join(out, f"{name}.onnx")
        onnx.save(model(quantized), path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        np.save(os.path.join(out, f"{name}.out.npy"), sess.run(None, {"x": x})[0])


if __name__ == "__main__":
    main()
