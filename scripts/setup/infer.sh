#!/usr/bin/env bash
# edgecd-infer test tools: promtool (Debian `prometheus`, service not started), the aarch64 cross
# toolchain and qemu-user for the Raspberry Pi 5 smoke test, and the rustup aarch64 target.
# Idempotent: each step is skipped when its tool is already present.
set -euo pipefail
cache="${EDGECD_TEST_CACHE:-$HOME/.cache/edgecd}"
mkdir -p "$cache"

sudo_cmd=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); fi
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ "${#need[@]}" -gt 0 ]; then
  apt_install "${need[@]}"
  # Only promtool is wanted: no Prometheus server may be left running (containers have no init
  # system, so the package starts none; under systemd, stop it).
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    "${sudo_cmd[@]}" systemctl stop prometheus || true
  fi
fi

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
    rustup target add aarch64-unknown-linux-gnu
fi

# The Python venv (onnx, onnxruntime, numpy) and the rapidocr wheel come from python.sh.
