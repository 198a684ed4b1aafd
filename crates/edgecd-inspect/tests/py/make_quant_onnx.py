"""Builds small int8-quantized ONNX test models for edgecd-inspect's tests.

Usage: make_quant_onnx.py OUT_DIR
Writes OUT_DIR/float.onnx (a float Conv/Relu/GlobalAveragePool/Flatten/MatMul/Add model built
with onnx.helper), then quantizes it with onnxruntime.quantization.quantize_static into
qdq_s8.onnx (QDQ, int8 activations and weights, per-tensor), qdq_u8_perchannel.onnx (QDQ,
uint8 activations, per-channel int8 weights) and qop_u8.onnx (QOperator: QLinearConv,
QLinearMatMul, ...). Prints the written paths, one per line.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)


def float_model(path):
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (8,)).astype(np.float32)
    m = rng.normal(0, 0.3, (8, 4)).astype(np.float32)
    mb = rng.normal(0, 0.1, (4,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["mm"]),
        helper.make_node("Add", ["mm", "mb"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(a, n) for a, n in [(w, "w"), (b, "b"), (m, "m"), (mb, "mb")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgecd-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


class Reader(CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(11)
        self.data = iter([{"x": rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.data, None)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    f = os.path.join(out, "float.onnx")
    float_model(f)
    paths = [f]
    variants = [
        ("qdq_s8.onnx", QuantFormat.QDQ, QuantType.QInt8, False),
        ("qdq_u8_perchannel.onnx", QuantFormat.QDQ, QuantType.QUInt8, True),
        ("qop_u8.onnx", QuantFormat.QOperator, QuantType.QUInt8, False),
    ]
    for name, fmt, act, per_channel in variants:
        p = os.path.join(out, name)
        quantize_static(
            f,
            p,
            Reader(),
            quant_format=fmt,
            activation_type=act,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
        )
        paths.append(p)
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
