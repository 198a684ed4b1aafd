#!/usr/bin/env python3
"""Writes two tiny TFLite models with the `tflite` package's flatbuffer builders.

usage: make_tflite.py OUT_DIR
  add.tflite         y = x + [1, 2, 3, 4]   (x: float32 [1, 4]); tract-tflite runs it
  quantize.tflite    y = QUANTIZE(x)        (int8, scale 0.5); tract-tflite has no QUANTIZE
  dequantize.tflite  y = DEQUANTIZE(x)      (x: int8, scale 0.5)  } operator codes written as
  prelu.tflite       y = PRELU(x, alpha)    (alpha: [0.1] * 4)    } old converters did: only
                     `deprecated_builtin_code`, so `builtin_code` reads as its default 0 (ADD);
                     tract-tflite has neither operator
Then checks add.tflite with LiteRT (ai-edge-litert) when it is installed.
"""
import os
import sys

import importlib

import flatbuffers
import numpy as np

# The package's __init__ shadows each module with its class: take the modules (builder functions).
(AddOptions, Buffer, Model, Operator, OperatorCode, QuantizationParameters, SubGraph, Tensor) = (
    importlib.import_module("tflite." + m) for m in
    ["AddOptions", "Buffer", "Model", "Operator", "OperatorCode", "QuantizationParameters", "SubGraph", "Tensor"])
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType


def vec(b, start, items, kind):
    start(b, len(items))
    for x in reversed(items):
        if kind == "i32":
            b.PrependInt32(x)
        elif kind == "f32":
            b.PrependFloat32(x)
        elif kind == "i64":
            b.PrependInt64(x)
        elif kind == "u8":
            b.PrependUint8(x)
        else:
            b.PrependUOffsetTRelative(x)
    return b.EndVector()


def tensor(b, name, shape, ttype, buffer, quant=None):
    n = b.CreateString(name)
    sh = vec(b, Tensor.TensorStartShapeVector, shape, "i32")
    Tensor.TensorStart(b)
    Tensor.TensorAddShape(b, sh)
    Tensor.TensorAddType(b, ttype)
    Tensor.TensorAddBuffer(b, buffer)
    Tensor.TensorAddName(b, n)
    if quant is not None:
        Tensor.TensorAddQuantization(b, quant)
    return Tensor.TensorEnd(b)


def model(op_code, build_tensors, buffers_data, op_inputs, options=None, old_codes=False):
    b = flatbuffers.Builder(1024)
    bufs = []
    for data in buffers_data:
        d = vec(b, Buffer.BufferStartDataVector, list(data), "u8") if data else None
        Buffer.BufferStart(b)
        if d is not None:
            Buffer.BufferAddData(b, d)
        bufs.append(Buffer.BufferEnd(b))
    tensors = build_tensors(b)
    opts = options(b) if options else None
    ins = vec(b, Operator.OperatorStartInputsVector, op_inputs, "i32")
    outs = vec(b, Operator.OperatorStartOutputsVector, [len(tensors) - 1], "i32")
    Operator.OperatorStart(b)
    Operator.OperatorAddOpcodeIndex(b, 0)
    Operator.OperatorAddInputs(b, ins)
    Operator.OperatorAddOutputs(b, outs)
    if opts is not None:
        Operator.OperatorAddBuiltinOptionsType(b, opts[0])
        Operator.OperatorAddBuiltinOptions(b, opts[1])
    op = Operator.OperatorEnd(b)
    tv = vec(b, SubGraph.SubGraphStartTensorsVector, tensors, "off")
    gi = vec(b, SubGraph.SubGraphStartInputsVector, [0], "i32")
    go = vec(b, SubGraph.SubGraphStartOutputsVector, [len(tensors) - 1], "i32")
    ov = vec(b, SubGraph.SubGraphStartOperatorsVector, [op], "off")
    name = b.CreateString("main")
    SubGraph.SubGraphStart(b)
    SubGraph.SubGraphAddTensors(b, tv)
    SubGraph.SubGraphAddInputs(b, gi)
    SubGraph.SubGraphAddOutputs(b, go)
    SubGraph.SubGraphAddOperators(b, ov)
    SubGraph.SubGraphAddName(b, name)
    sg = SubGraph.SubGraphEnd(b)
    OperatorCode.OperatorCodeStart(b)
    OperatorCode.OperatorCodeAddDeprecatedBuiltinCode(b, min(op_code, 127))
    if not old_codes:
        OperatorCode.OperatorCodeAddBuiltinCode(b, op_code)
    OperatorCode.OperatorCodeAddVersion(b, 1)
    oc = OperatorCode.OperatorCodeEnd(b)
    ocv = vec(b, Model.ModelStartOperatorCodesVector, [oc], "off")
    sgv = vec(b, Model.ModelStartSubgraphsVector, [sg], "off")
    bv = vec(b, Model.ModelStartBuffersVector, bufs, "off")
    desc = b.CreateString("edgecd-infer test model")
    Model.ModelStart(b)
    Model.ModelAddVersion(b, 3)
    Model.ModelAddOperatorCodes(b, ocv)
    Model.ModelAddSubgraphs(b, sgv)
    Model.ModelAddBuffers(b, bv)
    Model.ModelAddDescription(b, desc)
    b.Finish(Model.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def add_model():
    bias = np.array([1, 2, 3, 4], np.float32).tobytes()

    def tensors(b):
        return [tensor(b, "x", [1, 4], TensorType.FLOAT32, 1),
                tensor(b, "bias", [4], TensorType.FLOAT32, 2),
                tensor(b, "y", [1, 4], TensorType.FLOAT32, 3)]

    def options(b):
        AddOptions.AddOptionsStart(b)
        return BuiltinOptions.AddOptions, AddOptions.AddOptionsEnd(b)

    return model(BuiltinOperator.ADD, tensors, [b"", b"", bias, b""], [0, 1], options)


def quantize_model():
    def tensors(b):
        sc = vec(b, QuantizationParameters.QuantizationParametersStartScaleVector, [0.5], "f32")
        zp = vec(b, QuantizationParameters.QuantizationParametersStartZeroPointVector, [0], "i64")
        QuantizationParameters.QuantizationParametersStart(b)
        QuantizationParameters.QuantizationParametersAddScale(b, sc)
        QuantizationParameters.QuantizationParametersAddZeroPoint(b, zp)
        q = QuantizationParameters.QuantizationParametersEnd(b)
        return [tensor(b, "x", [1, 4], TensorType.FLOAT32, 1),
                tensor(b, "y", [1, 4], TensorType.INT8, 2, q)]

    return model(BuiltinOperator.QUANTIZE, tensors, [b"", b"", b""], [0])


def quant_params(b, scale, zero_point):
    sc = vec(b, QuantizationParameters.QuantizationParametersStartScaleVector, [scale], "f32")
    zp = vec(b, QuantizationParameters.QuantizationParametersStartZeroPointVector, [zero_point], "i64")
    QuantizationParameters.QuantizationParametersStart(b)
    QuantizationParameters.QuantizationParametersAddScale(b, sc)
    QuantizationParameters.QuantizationParametersAddZeroPoint(b, zp)
    return QuantizationParameters.QuantizationParametersEnd(b)


def dequantize_model():
    def tensors(b):
        q = quant_params(b, 0.5, 0)
        return [tensor(b, "x", [1, 4], TensorType.INT8, 1, q),
                tensor(b, "y", [1, 4], TensorType.FLOAT32, 2)]

    return model(BuiltinOperator.DEQUANTIZE, tensors, [b"", b"", b""], [0], old_codes=True)


def prelu_model():
    alpha = np.full(4, 0.1, np.float32).tobytes()

    def tensors(b):
        return [tensor(b, "x", [1, 4], TensorType.FLOAT32, 1),
                tensor(b, "alpha", [4], TensorType.FLOAT32, 2),
                tensor(b, "y", [1, 4], TensorType.FLOAT32, 3)]

    return model(BuiltinOperator.PRELU, tensors, [b"", b"", alpha, b""], [0, 1], old_codes=True)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    add = add_model()
    open(os.path.join(out, "add.tflite"), "wb").write(add)
    open(os.path.join(out, "quantize.tflite"), "wb").write(quantize_model())
    dequantize, prelu = dequantize_model(), prelu_model()
    open(os.path.join(out, "dequantize.tflite"), "wb").write(dequantize)
    open(os.path.join(out, "prelu.tflite"), "wb").write(prelu)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return
    it = Interpreter(model_content=add)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.array([[0.5, -1, 2, 0]], np.float32))
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.allclose(y, [[1.5, 1, 5, 4]]), y
    # LiteRT reads the old-style operator codes as DEQUANTIZE and PRELU (not ADD).
    for content, x, want in [(dequantize, np.array([[2, -4, 0, 6]], np.int8), [[1, -2, 0, 3]]),
                             (prelu, np.array([[1, -2, 3, -4]], np.float32), [[1, -0.2, 3, -0.4]])]:
        it = Interpreter(model_content=content)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        y = it.get_tensor(it.get_output_details()[0]["index"])
        assert np.allclose(y, want), y


if __name__ == "__main__":
    main()
