#!/usr/bin/env bash
# Python test tools: independent readers and verifiers (onnx, onnxruntime, CycloneDX validator,
# PyNaCl for cosign keys, LiteRT for TFLite) in a venv under $EDGECD_TEST_CACHE.
set -euo pipefail
cache="${EDGECD_TEST_CACHE:?}"
req="$(dirname "$0")/requirements-test.txt"
stamp="$cache/venv/.req-$(sha256sum "$req" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x "$cache/venv/bin/python" ] || python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  touch "$stamp"
fi
mkdir -p "$cache/wheels"
ls "$cache"/wheels/rapidocr_onnxruntime-1.4.4-*.whl >/dev/null 2>&1 ||
  "$cache/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$cache/wheels" rapidocr-onnxruntime==1.4.4
