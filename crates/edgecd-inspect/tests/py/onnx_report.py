"""Independent reference report of ONNX models, computed with the `onnx` package.

Usage: onnx_report.py MODEL.onnx...  → prints one JSON object {path: report} on stdout.
Each report has the fields edgecd-inspect's ModelInfo carries for ONNX (opset, producer,
inputs, outputs, operators, weight_dtypes, quantization). Only the top-level graph is read.
Scales are given as float32 bit patterns (`scale_bits`) so Rust can compare them exactly.
Tensor values are decoded with onnx.numpy_helper (not with edgecd's decoder).
"""
import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

DEFAULT = ("", "ai.onnx")


def dtype_name(code):
    if code == TensorProto.FLOAT:
        return "float32"
    if code == TensorProto.DOUBLE:
        return "float64"
    try:
        return TensorProto.DataType.Name(code).lower()
    except ValueError:
        return f"dtype{code}"


def signature(vi):
    t = vi.type
    kind = t.WhichOneof("value")
    sig = {"name": vi.name, "dtype": "unknown", "shape": [], "dim_names": []}
    if kind in ("tensor_type", "sparse_tensor_type"):
        tt = getattr(t, kind)
        sig["dtype"] = dtype_name(tt.elem_type) if tt.HasField("elem_type") else "unknown"
        if tt.HasField("shape"):
            names = []
            for d in tt.shape.dim:
                which = d.WhichOneof("value")
                if which == "dim_value":
                    sig["shape"].append(d.dim_value)
                    names.append("")
                else:
                    sig["shape"].append(None)
                    names.append(d.dim_param if which == "dim_param" else "")
            if any(names):
                sig["dim_names"] = names
    elif kind is not None:
        sig["dtype"] = {"sequence_type": "sequence", "map_type": "map", "optional_type": "optional"}.get(kind, "unknown")
    return sig


def constant_tensor(node):
    if not node.attribute:
        return None
    a = node.attribute[0]
    h = onnx.helper
    if a.name == "value":
        return a.t
    if a.name == "sparse_value":
        return a.sparse_tensor.values
    if a.name == "value_float":
        return h.make_tensor(node.output[0], TensorProto.FLOAT, [], [a.f])
    if a.name == "value_floats":
        return h.make_tensor(node.output[0], TensorProto.FLOAT, [len(a.floats)], list(a.floats))
    if a.name == "value_int":
        return h.make_tensor(node.output[0], TensorProto.INT64, [], [a.i])
    if a.name == "value_ints":
        return h.make_tensor(node.output[0], TensorProto.INT64, [len(a.ints)], list(a.ints))
    if a.name == "value_string":
        return h.make_tensor(node.output[0], TensorProto.STRING, [], [a.s])
    if a.name == "value_strings":
        return h.make_tensor(node.output[0], TensorProto.STRING, [len(a.strings)], list(a.strings))
    return None


# (tensor slot, scale input, zp input, axis rule); slot = ("in"|"out", index);
# axis rule: "attr" | ("chan", axis) | None.  Positions from the ONNX and com.microsoft specs.
def triples(node):
    ms = node.domain == "com.microsoft"
    onnx_dom = node.domain in DEFAULT
    op = node.op_type
    I = lambda i: ("in", i)  # noqa: E731
    O = lambda i: ("out", i)  # noqa: E731
    if op == "QuantizeLinear" and (onnx_dom or ms):
        return [(O(0), 1, 2, "attr")]
    if op == "DequantizeLinear" and (onnx_dom or ms):
        return [(I(0), 1, 2, "attr")]
    if op == "QLinearConv" and (onnx_dom or ms):
        return [(I(0), 1, 2, None), (I(3), 4, 5, ("chan", 0)), (O(0), 6, 7, None)]
    if op == "QLinearConvTranspose" and ms:
        return [(I(0), 1, 2, None), (I(3), 4, 5, ("chan", 1)), (O(0), 6, 7, None)]
    if op == "QLinearMatMul" and (onnx_dom or ms):
        return [(I(0), 1, 2, None), (I(3), 4, 5, ("chan", -1)), (O(0), 6, 7, None)]
    if op in ("QLinearAdd", "QLinearMul") and ms:
        return [(I(0), 1, 2, None), (I(3), 4, 5, None), (O(0), 6, 7, None)]
    if op in ("QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearAveragePool",
              "QLinearGlobalAveragePool", "QLinearReduceMean") and ms:
        return [(I(0), 1, 2, None), (O(0), 3, 4, None)]
    if op == "QGemm" and ms:
        r = [(I(0), 1, 2, None), (I(3), 4, 5, ("chan", -1))]
        if len(node.input) > 7:
            r.append((O(0), 7, 8, None))
        return r
    if op == "QLinearConcat" and ms:
        r = [(O(0), 0, 1, None)]
        for i in range(2, len(node.input), 3):
            r.append((I(i), i + 1, i + 2, None))
        return r
    if op == "DynamicQuantizeLinear" and onnx_dom:
        return [(O(0), None, None, None)]
    if op == "MatMulInteger" and onnx_dom:
        return [(I(0), None, 2, None), (I(1), None, 3, ("chan", -1))]
    if op == "ConvInteger" and onnx_dom:
        return [(I(0), None, 2, None), (I(1), None, 3, ("chan", 0))]
    if op == "MatMulIntegerToFloat" and ms:
        return [(I(0), 2, 4, None), (I(1), 3, 5, ("chan", -1))]
    if op == "DynamicQuantizeMatMul" and ms:
        return [(I(1), 2, 3, ("chan", -1))]
    return None


def report(path):
    model = onnx.load(path, load_external_data=False)
    g = model.graph
    producer = f"{model.producer_name.strip()} {model.producer_version.strip()}".strip() or None
    opsets = [o.version for o in model.opset_import if o.domain in DEFAULT]
    weights = {}
    consts = {}
    for t in g.initializer:
        weights[dtype_name(t.data_type)] = weights.get(dtype_name(t.data_type), 0) + 1
        consts[t.name] = t
    for s in g.sparse_initializer:
        weights[dtype_name(s.values.data_type)] = weights.get(dtype_name(s.values.data_type), 0) + 1
    for n in g.node:
        if n.op_type == "Constant" and n.domain in DEFAULT:
            t = constant_tensor(n)
            if t is not None:
                weights[dtype_name(t.data_type)] = weights.get(dtype_name(t.data_type), 0) + 1
                if n.output:
                    consts[n.output[0]] = t
    init_names = {t.name for t in g.initializer}
    types = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.HasField("elem_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for name, t in consts.items():
        types[name] = t.data_type

    def value(name):
        t = consts.get(name)
        if t is None or t.data_location == TensorProto.EXTERNAL:
            return None, None
        return numpy_helper.to_array(t), t

    quant = []
    for n in g.node:
        tr = triples(n)
        if tr is None:
            continue
        for slot, si, zi, axis_rule in tr:
            lst = n.input if slot[0] == "in" else n.output
            if slot[1] >= len(lst) or not lst[slot[1]]:
                continue
            tensor = lst[slot[1]]
            sname = n.input[si] if si is not None and si < len(n.input) and n.input[si] else None
            zname = n.input[zi] if zi is not None and zi < len(n.input) and n.input[zi] else None
            sarr, st = value(sname) if sname else (None, None)
            zarr, zt = value(zname) if zname else (None, None)
            scale_bits = [] if sarr is None else [int(b) for b in np.asarray(sarr, dtype=np.float32).reshape(-1).view(np.uint32)]
            zps = [] if zarr is None else [int(v) for v in np.asarray(zarr).reshape(-1).astype(np.int64)]
            code = types.get(zname) if zname else None
            if code is None and n.op_type == "QuantizeLinear":
                od = [a.i for a in n.attribute if a.name == "output_dtype"]
                code = od[0] if od and od[0] != 0 else None
            if code is None:
                code = types.get(tensor)
            if code is None and n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"):
                code = TensorProto.UINT8
            axis = None
            if axis_rule == "attr":
                if st is not None and len(st.dims) >= 1:
                    ax = [a.i for a in n.attribute if a.name == "axis"]
                    axis = ax[0] if ax else 1
            elif axis_rule is not None:
                ref = st if st is not None else zt
                if ref is not None and len(ref.dims) >= 1 and int(np.prod(ref.dims)) > 1:
                    axis = axis_rule[1]
            quant.append({
                "tensor": tensor,
                "source": n.op_type,
                "scale_bits": scale_bits,
                "zero_point": zps,
                "dtype": dtype_name(code) if code is not None else "unknown",
                "axis": axis,
            })
    ops = sorted({n.op_type if n.domain in DEFAULT else f"{n.domain}:{n.op_type}" for n in g.node})
    return {
        "producer": producer,
        "opset": max(opsets) if opsets else None,
        "inputs": [signature(v) for v in g.input if v.name not in init_names],
        "outputs": [signature(v) for v in g.output],
        "operators": ops,
        "weight_dtypes": dict(sorted(weights.items())),
        "quantization": quant,
    }


if __name__ == "__main__":
    print(json.dumps({p: report(p) for p in sys.argv[1:]}))
