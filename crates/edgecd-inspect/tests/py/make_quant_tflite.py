"""Builds a small int8-quantized TFLite model with the `tflite`/`flatbuffers` packages, and
reports what an independent reader (ai-edge-litert's Interpreter) sees in it.

Usage:
  make_quant_tflite.py OUT.tflite   writes the model (float input → QUANTIZE → int8
                                    FULLY_CONNECTED with per-channel int8 weights and int32 bias
                                    → GELU (builtin code 150, > 127) → DEQUANTIZE → float output)
  make_quant_tflite.py --report M   prints JSON {version, description, tensors, inputs, outputs,
                                    ops} from Interpreter(M) (scales as float32 bit patterns).
"""
import importlib
import json
import sys

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator as Op
from tflite.TensorType import TensorType as TT


def mod(name):
    """The generated module `tflite.<name>` (the package re-exports classes under the same names)."""
    return importlib.import_module("tflite." + name)


def vec_i32(b, start, vals):
    start(b, len(vals))
    for v in reversed(vals):
        b.PrependInt32(v)
    return b.EndVector()


def vec_tables(b, start, offs):
    start(b, len(offs))
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def quant(b, scales, zps, dim=0):
    Q = mod('QuantizationParameters')
    Q.QuantizationParametersStartScaleVector(b, len(scales))
    for s in reversed(scales):
        b.PrependFloat32(s)
    sv = b.EndVector()
    Q.QuantizationParametersStartZeroPointVector(b, len(zps))
    for z in reversed(zps):
        b.PrependInt64(z)
    zv = b.EndVector()
    Q.QuantizationParametersStart(b)
    Q.QuantizationParametersAddScale(b, sv)
    Q.QuantizationParametersAddZeroPoint(b, zv)
    Q.QuantizationParametersAddQuantizedDimension(b, dim)
    return Q.QuantizationParametersEnd(b)


def build(path):
    b = flatbuffers.Builder(1024)
    T = mod('Tensor')
    in_scale, in_zp = 0.0235, -3
    w_scales = [0.0125, 0.00781, 0.0311]
    out_scale, out_zp = 0.0472, 5
    g_scale, g_zp = 0.0391, -12
    rng = np.random.default_rng(3)
    weights = rng.integers(-127, 128, (3, 4), dtype=np.int8)
    bias = np.array([100, -250, 37], dtype=np.int32)

    # buffers: 0 empty sentinel, 1 weights, 2 bias, others empty
    def buffer(data):
        if data is None:
            mod('Buffer').BufferStart(b)
            return mod('Buffer').BufferEnd(b)
        dv = b.CreateByteVector(data.tobytes())
        mod('Buffer').BufferStart(b)
        mod('Buffer').BufferAddData(b, dv)
        return mod('Buffer').BufferEnd(b)

    bufs = [buffer(None), buffer(weights), buffer(bias), buffer(None), buffer(None), buffer(None), buffer(None), buffer(None)]

    specs = [
        # name, type, shape, buffer, quant
        ("input", TT.FLOAT32, [1, 4], 3, None),
        ("input_q", TT.INT8, [1, 4], 4, ([in_scale], [in_zp], 0)),
        ("fc/weights", TT.INT8, [3, 4], 1, (w_scales, [0, 0, 0], 0)),
        ("fc/bias", TT.INT32, [3], 2, ([in_scale * s for s in w_scales], [0, 0, 0], 0)),
        ("fc_out", TT.INT8, [1, 3], 5, ([out_scale], [out_zp], 0)),
        ("gelu_out", TT.INT8, [1, 3], 6, ([g_scale], [g_zp], 0)),
        ("output", TT.FLOAT32, [1, 3], 7, None),
    ]
    tensors = []
    for name, ty, shape, buf, q in specs:
        n = b.CreateString(name)
        sh = vec_i32(b, T.TensorStartShapeVector, shape)
        qo = quant(b, *q) if q else None
        T.TensorStart(b)
        T.TensorAddShape(b, sh)
        T.TensorAddType(b, ty)
        T.TensorAddBuffer(b, buf)
        T.TensorAddName(b, n)
        if qo is not None:
            T.TensorAddQuantization(b, qo)
        tensors.append(T.TensorEnd(b))

    OC = mod('OperatorCode')
    codes = []
    for code in [Op.QUANTIZE, Op.FULLY_CONNECTED, Op.GELU, Op.DEQUANTIZE]:
        OC.OperatorCodeStart(b)
        OC.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, Op.PLACEHOLDER_FOR_GREATER_OP_CODES))
        OC.OperatorCodeAddBuiltinCode(b, code)
        OC.OperatorCodeAddVersion(b, 1 if code != Op.FULLY_CONNECTED else 4)
        codes.append(OC.OperatorCodeEnd(b))

    O = mod('Operator')
    ops = []
    for opcode, ins, outs in [(0, [0], [1]), (1, [1, 2, 3], [4]), (2, [4], [5]), (3, [5], [6])]:
        iv = vec_i32(b, O.OperatorStartInputsVector, ins)
        ov = vec_i32(b, O.OperatorStartOutputsVector, outs)
        opts = None
        if opcode == 1:
            mod('FullyConnectedOptions').FullyConnectedOptionsStart(b)
            opts = mod('FullyConnectedOptions').FullyConnectedOptionsEnd(b)
        O.OperatorStart(b)
        O.OperatorAddOpcodeIndex(b, opcode)
        O.OperatorAddInputs(b, iv)
        O.OperatorAddOutputs(b, ov)
        if opts is not None:
            O.OperatorAddBuiltinOptionsType(b, mod('BuiltinOptions').BuiltinOptions.FullyConnectedOptions)
            O.OperatorAddBuiltinOptions(b, opts)
        ops.append(O.OperatorEnd(b))

    S = mod('SubGraph')
    tv = vec_tables(b, S.SubGraphStartTensorsVector, tensors)
    iv = vec_i32(b, S.SubGraphStartInputsVector, [0])
    ov = vec_i32(b, S.SubGraphStartOutputsVector, [6])
    opv = vec_tables(b, S.SubGraphStartOperatorsVector, ops)
    sname = b.CreateString("main")
    S.SubGraphStart(b)
    S.SubGraphAddTensors(b, tv)
    S.SubGraphAddInputs(b, iv)
    S.SubGraphAddOutputs(b, ov)
    S.SubGraphAddOperators(b, opv)
    S.SubGraphAddName(b, sname)
    sg = S.SubGraphEnd(b)

    M = mod('Model')
    codes_v = vec_tables(b, M.ModelStartOperatorCodesVector, codes)
    sgs = vec_tables(b, M.ModelStartSubgraphsVector, [sg])
    bufs_v = vec_tables(b, M.ModelStartBuffersVector, bufs)
    desc = b.CreateString("edgecd test int8 fc")
    M.ModelStart(b)
    M.ModelAddVersion(b, 3)
    M.ModelAddOperatorCodes(b, codes_v)
    M.ModelAddSubgraphs(b, sgs)
    M.ModelAddDescription(b, desc)
    M.ModelAddBuffers(b, bufs_v)
    m = M.ModelEnd(b)
    b.Finish(m, file_identifier=b"TFL3")
    with open(path, "wb") as f:
        f.write(b.Output())


def report(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No default delegate: XNNPACK would replace the ops with a DELEGATE node.
    it = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    x = np.array([[0.5, -1.0, 0.25, 2.0]], dtype=np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()  # proves the model is a real, runnable one
    tensors = []
    for d in it.get_tensor_details():
        qp = d["quantization_parameters"]
        tensors.append({
            "index": int(d["index"]),
            "name": d["name"],
            "dtype": np.dtype(d["dtype"]).name,
            "shape": [int(v) for v in d["shape"]],
            "scale_bits": [int(v) for v in np.asarray(qp["scales"], dtype=np.float32).view(np.uint32)],
            "zero_point": [int(v) for v in qp["zero_points"]],
            "quantized_dimension": int(qp["quantized_dimension"]),
        })
    ops = sorted({o["op_name"] for o in it._get_ops_details()})
    # The model's version and description are read with the `tflite` package's reader.
    with open(path, "rb") as f:
        m = tflite.Model.GetRootAsModel(f.read(), 0)
    print(json.dumps({
        "version": int(m.Version()),
        "description": m.Description().decode(),
        "tensors": tensors,
        "inputs": [d["name"] for d in it.get_input_details()],
        "outputs": [d["name"] for d in it.get_output_details()],
        "ops": ops,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2])
    else:
        build(sys.argv[1])
