#!/usr/bin/env python3
"""Reference outputs from onnxruntime for edgecd-infer's parity tests.

usage: reference.py OUT_DIR MODEL[@SHAPE] ...
       reference.py OUT_DIR --light            (every onnx/backend/test/data/light/*.onnx)
       reference.py OUT_DIR --wheel WHEEL.whl  (the PP-OCR models inside rapidocr_onnxruntime)

SHAPE (e.g. 1x3x96x96) replaces the first input's shape; otherwise symbolic dimensions are 1.
For each model it draws deterministic float inputs (uniform [0, 1), numpy seed 0; the PP-OCR
models get a text-like page instead), runs
onnxruntime with one thread and writes OUT_DIR/<stem>.in<i>.npy, <stem>.out<i>.npy and a
manifest.json listing them.
"""
import glob
import json
import os
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)

PPOCR = {
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": "1x3x48x192",
    "ch_PP-OCRv4_det_infer.onnx": "1x3x96x96",
    "ch_PP-OCRv4_rec_infer.onnx": "1x3x48x160",
}
DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def text_like(shape, rng):
    """A white page with dark glyph-sized bars, normalized like PP-OCR ((x - 0.5) / 0.5), plus a
    little noise: the detector's probability map then spans 0..1 instead of being all zeros."""
    n, c, h, w = shape
    img = np.ones((h, w), np.float32)
    for r in range(h // 8, h - 8, 16):
        for col in range(4, w - 4, 6):
            img[r:r + 8, col:col + 4] = 0.0
    x = np.broadcast_to(img, (n, c, h, w)) + rng.random(shape) * 0.05
    return ((x - 0.5) / 0.5).astype(np.float32)


def run(out_dir, path, shape_override, text=False):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    stem = os.path.splitext(os.path.basename(path))[0]
    feeds, in_files = {}, []
    for i, inp in enumerate(sess.get_inputs()):
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if i == 0 and shape_override:
            shape = [int(d) for d in shape_override.split("x")]
        dt = DTYPES[inp.type]
        if text and i == 0 and len(shape) == 4:
            a = text_like(shape, rng).astype(dt)
        elif np.issubdtype(dt, np.floating):
            a = rng.random(shape, dtype=np.float64).astype(dt)
        else:
            a = rng.integers(0, 10, size=shape).astype(dt)
        feeds[inp.name] = a
        f = f"{stem}.in{i}.npy"
        np.save(os.path.join(out_dir, f), a)
        in_files.append(f)
    outs = sess.run(None, feeds)
    out_files = []
    for i, o in enumerate(outs):
        f = f"{stem}.out{i}.npy"
        np.save(os.path.join(out_dir, f), np.ascontiguousarray(o))
        out_files.append(f)
    return {"name": stem, "model": os.path.abspath(path), "inputs": in_files, "outputs": out_files}


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    args = sys.argv[2:]
    models = []
    if args[:1] == ["--light"]:
        light = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
        models = [(p, None, False) for p in sorted(glob.glob(os.path.join(light, "*.onnx")))]
    elif args[:1] == ["--wheel"]:
        with zipfile.ZipFile(args[1]) as z:
            for name in z.namelist():
                base = os.path.basename(name)
                if base in PPOCR:
                    dst = os.path.join(out_dir, base)
                    with open(dst, "wb") as f:
                        f.write(z.read(name))
                    models.append((dst, PPOCR[base], True))
        if len(models) != len(PPOCR):
            sys.exit(f"expected {len(PPOCR)} PP-OCR models in {args[1]}, found {len(models)}")
    else:
        for a in args:
            p, _, s = a.partition("@")
            models.append((p, s or None, False))
    manifest = [run(out_dir, p, s, t) for p, s, t in models]
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
